"""Small OPT models and a tokenizer built offline, for the tests and the CLI's fallback.

Nothing here downloads: the model comes from an OPTConfig with seeded random weights, and the
tokenizer is a byte-level BPE trained in milliseconds on data/quotes.jsonl, with OPT's
special tokens (<s>=0, <pad>=1, </s>=2, <unk>=3; like OPT, "</s>" is also the BOS token and
is put in front of every sequence).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from lora_kata import REPO_ROOT

QUOTES_PATH = REPO_ROOT / "data" / "quotes.jsonl"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
PAD_ID, EOS_ID = 1, 2


def quote_texts(path: Path = QUOTES_PATH) -> list[str]:
    """The `quote` field of every line of the quotes file (no datasets import needed)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["quote"] for line in handle if line.strip()]


@cache
def _tokenizer_json(vocab_size: int, path: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(quote_texts(Path(path)), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", EOS_ID)]
    )
    return tokenizer.to_str()


def quotes_tokenizer(vocab_size: int = 512, path: Path = QUOTES_PATH):
    """A fresh PreTrainedTokenizerFast trained on the quotes (same result every call)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json(vocab_size, str(path)))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
    )


def tiny_opt_config(vocab_size: int = 512, **overrides):
    """An OPT with every size distinct and small: hidden 32, ffn 48, 2 layers, 4 heads."""
    from transformers import OPTConfig

    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=48,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        pad_token_id=PAD_ID,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layerdrop=0.0,
    )
    settings.update(overrides)
    return OPTConfig(**settings)


def build_tiny_opt(seed: int = 0, vocab_size: int = 512, **overrides):
    """A tiny OPTForCausalLM with seeded random weights, fp32, in eval mode."""
    import torch
    from transformers import OPTForCausalLM

    torch.manual_seed(seed)
    model = OPTForCausalLM(tiny_opt_config(vocab_size, **overrides))
    return model.eval()


def save_tiny_opt(
    directory: str | Path, seed: int = 0, with_tokenizer: bool = True, **overrides
) -> Path:
    """Save a tiny OPT (and the quotes tokenizer) where from_pretrained can load it offline."""
    directory = Path(directory)
    model = build_tiny_opt(seed, **overrides)
    model.save_pretrained(directory)
    if with_tokenizer:
        quotes_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return directory


def opt_6_7b_config():
    """facebook/opt-6.7b's shape: hidden 4096, 32 layers, ffn 16384, 32 heads, vocab 50272."""
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=50272,
        hidden_size=4096,
        num_hidden_layers=32,
        ffn_dim=16384,
        num_attention_heads=32,
        max_position_embeddings=2048,
        word_embed_proj_dim=4096,
        do_layer_norm_before=True,
        pad_token_id=PAD_ID,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
    )


def build_on_meta(config):
    """An OPTForCausalLM on the meta device: real shapes and parameter counts, no memory."""
    import torch
    from transformers import OPTForCausalLM

    with torch.device("meta"):
        return OPTForCausalLM(config)
