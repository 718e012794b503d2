"""The capstone's fixed settings: the tutorial's, and the built-in small OPT's."""

from __future__ import annotations

from lora_kata import REPO_ROOT

PROMPT = "Two things are infinite: "
QUOTES = REPO_ROOT / "data" / "quotes.jsonl"
CACHED_DEFAULT = "facebook/opt-125m"

# The tutorial's LoraConfig (peft field names).
LORA_SETTINGS = {
    "r": 16,
    "lora_alpha": 32,
    "target_modules": ["q_proj", "v_proj"],
    "lora_dropout": 0.05,
    "bias": "none",
}
# The tutorial's TrainingArguments: the defaults for a real model.
TUTORIAL = {"max_steps": 200, "warmup_steps": 100, "batch_size": 4, "grad_accum": 4, "lr": 2e-4}
# The built-in small OPT has random weights: a run must finish in seconds on a laptop CPU, and
# a random model needs a larger step than 2e-4 for the loss to fall visibly in 30 steps
# (measured on a 2-core CPU: 2e-4 moves it 6.25 → 6.21, 3e-3 moves it 6.25 → 6.04).
SMALL = {"max_steps": 30, "warmup_steps": 15, "batch_size": 4, "grad_accum": 4, "lr": 3e-3}
# The demo base (lora_kata/models/demo_base.py) has learned English from Python's documentation: a
# short run at a larger step than the tutorial's moves it visibly towards the quotes on a CPU
# (measured, 2 cores: 60 steps at 2e-3 left the generation docs-like; 200 at 5e-3 use ~58 s of
# CPU time, drop the held-out loss 5.62 → 4.37 and raise the probability of EOS after a
# quote's last token 0.2 % → 91 %, so that the samples stop).
DEMO = {"max_steps": 200, "warmup_steps": 20, "batch_size": 4, "grad_accum": 4, "lr": 5e-3}
# hidden 128 (so that r = 16 is genuinely low rank), 4 layers, 4 heads, ffn 512, vocab 512.
SMALL_OPT = {
    "hidden_size": 128,
    "word_embed_proj_dim": 128,
    "ffn_dim": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
}
# --quant: the tutorial's 8-bit (exercise 07), or QLoRA's 4-bit NF4 (exercise 12).
QUANTS = ("8bit", "4bit")
