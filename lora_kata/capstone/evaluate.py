"""Before and after: what the model expects of quotes the fine-tune never sees.

A learner without a GPU must still see the adapter change the model, so the capstone holds a
few quotes out (seeded) and measures, before and after training, the model's mean token loss
on them and what a reader can check: how likely it finds a quote's opening, its stopping
there, and how often its first guess is the next token (held_out_stats). The held-out quotes
are tokenized and batched with the implementation's own tokenize_quotes and
collate_for_causal_lm, like the training data.
"""

from __future__ import annotations

import contextlib

HELD_OUT_FRACTION = 0.05  # 27 of the 548 quotes


def split_held_out(dataset, seed: int = 0, fraction: float = HELD_OUT_FRACTION):
    """(train, held_out): a seeded split of the quotes Dataset; held_out has at least 1 row."""
    if len(dataset) < 2:
        return dataset, dataset.select([])
    count = max(1, round(fraction * len(dataset)))
    parts = dataset.train_test_split(test_size=count, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def held_out_loss(modules, model, tokenizer, dataset, *, batch_size: int = 8) -> float | None:
    """The mean loss per predicted token over `dataset` (None when it is empty)."""
    stats = held_out_stats(modules, model, tokenizer, dataset, batch_size=batch_size)
    return stats["loss"] if stats else None


def held_out_stats(modules, model, tokenizer, dataset, *, batch_size: int = 8) -> dict | None:
    """What the model expects of `dataset`'s quotes, in eval mode and without gradients (the
    model's mode is put back afterwards); None when it is empty. Keys:

    loss: the mean loss per predicted token; per_token: exp(-loss), the geometric mean of the
    probabilities it gives the quotes' tokens; top1: the share of tokens it ranks first;
    first: the mean probability of a quote's first token right after BOS (None when the
    tokenizer puts no BOS in front); eos: the mean probability of EOS right after a quote's
    last token (None when no row ends in EOS), i.e. of stopping where the quote stops.
    """
    import math

    import torch

    if len(dataset) == 0:
        return None
    max_length = getattr(model.config, "max_position_embeddings", None)
    tokenized = modules.data.tokenize_quotes(dataset, tokenizer, max_length=max_length)
    features = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(tokenized["input_ids"], tokenized["attention_mask"], strict=True)
    ]
    device = model.get_input_embeddings().weight.device
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    sums = dict.fromkeys(("loss", "tokens", "top1", "first", "rows", "eos", "ends"), 0.0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            for start in range(0, len(features), batch_size):
                batch = modules.data.collate_for_causal_lm(
                    features[start : start + batch_size], tokenizer.pad_token_id
                )
                batch = {key: value.to(device) for key, value in batch.items()}
                output = model(**batch)
                _add_batch(sums, batch, output, tokenizer)
    finally:
        model.train(was_training)
    if not sums["tokens"]:
        return None
    loss = sums["loss"] / sums["tokens"]
    return {
        "loss": loss,
        "per_token": math.exp(-loss),
        "top1": sums["top1"] / sums["tokens"],
        "first": sums["first"] / sums["rows"] if sums["rows"] else None,
        "eos": sums["eos"] / sums["ends"] if sums["ends"] else None,
    }


def _add_batch(sums: dict, batch: dict, output, tokenizer) -> None:
    """Add one batch's token-weighted loss, top-1 hits, first-token and EOS probabilities."""
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    # The model's loss is a mean over the labels it predicts (all but each row's first):
    # weigh each batch by that count for a mean over every token.
    predicted = int(mask.sum())
    sums["loss"] += float(output.loss) * predicted
    sums["tokens"] += predicted
    logits = output.logits[:, :-1].float()
    sums["top1"] += int(((logits.argmax(-1) == targets) & mask).sum())
    probs = logits.softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    bos = tokenizer.bos_token_id
    if bos is not None and bool((batch["input_ids"][:, 0] == bos).all()):
        sums["first"] += float(probs[:, 0][mask[:, 0]].sum())
        sums["rows"] += int(mask[:, 0].sum())
    ends = mask & (targets == tokenizer.eos_token_id)
    sums["eos"] += float(probs[ends].sum())
    sums["ends"] += int(ends.sum())
