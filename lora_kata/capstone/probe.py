"""What a reader can judge before and after: continuations of the prompt, and how they end.

The tutorial prints one greedy continuation. A small model's greedy text soon repeats itself
(each step takes the likeliest token, and a loop is likely once begun), so the capstone also
prints a seeded sample (temperature 0.8, nucleus 0.9), the kind of text the model writes,
and says of each whether it stopped at EOS or ran to the token limit. Line breaks are shown
as ↵ so that text laid out like Python's documentation stays visible on one line.
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPERATURE, TOP_P = 0.8, 0.9


@dataclass
class Continuation:
    text: str  # decoded, prompt included, special tokens skipped
    new_tokens: int  # tokens generated, EOS included
    stopped: bool  # True when the model emitted EOS before the limit

    def ending(self, limit: int) -> str:
        if self.stopped:
            return f"stopped at EOS after {self.new_tokens} tokens"
        return f"no EOS: ran to the {limit}-token limit"


def continuation(model, tokenizer, prompt: str, max_new_tokens: int, *, seed=None):
    """Greedy (seed None) or sampled continuation of `prompt`, in eval mode without gradients;
    the model's mode and torch's random state are left as they were."""
    import contextlib

    import torch

    device = model.get_input_embeddings().weight.device
    encoded = tokenizer(prompt, return_tensors="pt")
    inputs = {key: encoded[key].to(device) for key in ("input_ids", "attention_mask")}
    sampling = {"do_sample": False}
    if seed is not None:
        sampling = {"do_sample": True, "temperature": TEMPERATURE, "top_p": TOP_P, "top_k": 0}
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast:
            if seed is not None:
                torch.manual_seed(seed)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
    finally:
        model.train(was_training)
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    stopped = tokenizer.eos_token_id in new
    if stopped:
        new = new[: new.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(
        output[0][: inputs["input_ids"].shape[1] + len(new)], skip_special_tokens=True
    )
    return Continuation(text, len(new), stopped)


def shown(text: str) -> str:
    """`text` on one line: line breaks as ↵ (the base writes documentation's layout)."""
    return text.replace("\r\n", "\n").replace("\n", "↵")


def continuations(model, tokenizer, prompt, max_new_tokens, seeds) -> dict:
    """The greedy continuation and one sample per seed, for printing and metrics.json."""
    greedy = continuation(model, tokenizer, prompt, max_new_tokens)
    samples = [continuation(model, tokenizer, prompt, max_new_tokens, seed=s) for s in seeds]
    return {"greedy": greedy, "samples": samples, "seeds": list(seeds)}


def describe(found: dict, generated: str, limit: int) -> str:
    """Printed before training: the implementation's own greedy text (the tutorial's
    generate), how it ended when it matches the capstone's greedy run, and the samples."""
    return "\n".join(
        [
            f"greedy (finetune.generate, as the tutorial{ending(found, generated, limit)}):",
            shown(generated),
            samples_text(found, limit),
        ]
    )


def ending(found: dict, generated: str, limit: int) -> str:
    """ "; stopped at EOS after N tokens" or "; no EOS: …", when the implementation's greedy
    text is the capstone's own greedy run (else it cannot tell: "")."""
    greedy = found["greedy"]
    return f"; {greedy.ending(limit)}" if greedy.text == generated else ""


def samples_text(found: dict, limit: int) -> str:
    lines = []
    for seed, sample in zip(found["seeds"], found["samples"], strict=True):
        lines.append(
            f"sampled (temperature {TEMPERATURE:g}, top-p {TOP_P:g}, seed {seed}; "
            f"{sample.ending(limit)}):"
        )
        lines.append(shown(sample.text))
    return "\n".join(lines)


def as_metrics(found: dict) -> dict:
    return {
        "greedy_stopped_at_eos": found["greedy"].stopped,
        "samples": [
            {"seed": s, "text": c.text, "new_tokens": c.new_tokens, "stopped_at_eos": c.stopped}
            for s, c in zip(found["seeds"], found["samples"], strict=True)
        ],
    }


def expectations_table(before: dict | None, after: dict | None, quotes: int) -> str:
    """held_out_stats before and after, as lines a reader can judge ("" without both)."""
    if not before or not after:
        return ""
    rows = [
        ("first", "probability of a quote's first token, after BOS"),
        ("eos", "probability of EOS after a quote's last token"),
        ("per_token", "probability per token (geometric mean: exp(-loss))"),
        ("top1", "tokens that are the model's top guess"),
    ]
    width = max(len(label) for _, label in rows)
    lines = [f"what the model expects of those {quotes} quotes, before → after:"]
    for key, label in rows:
        if before.get(key) is not None and after.get(key) is not None:
            lines.append(f"  {label:<{width}}  {before[key]:6.1%} → {after[key]:6.1%}")
    return "\n".join(lines)
