"""Before and after: the loss on quotes the fine-tune never sees, and the generation.

A learner without a GPU must still see the adapter change the model, so the capstone holds a
few quotes out (seeded), measures the model's mean token loss on them before and after
training, and generates before and after. The held-out quotes are tokenized and batched with
the implementation's own tokenize_quotes and collate_for_causal_lm, like the training data.
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
    """The mean loss per predicted token over `dataset` (None when it is empty), in eval mode
    and without gradients; the model's mode and cache setting are put back afterwards."""
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
    was_training = model.training
    model.eval()
    total = tokens = 0.0
    try:
        with torch.no_grad(), autocast:
            for start in range(0, len(features), batch_size):
                batch = modules.data.collate_for_causal_lm(
                    features[start : start + batch_size], tokenizer.pad_token_id
                )
                batch = {key: value.to(device) for key, value in batch.items()}
                # The model's loss is a mean over the labels it predicts (all but each row's
                # first): weigh each batch by that count for a mean over every token.
                predicted = int((batch["labels"][:, 1:] != -100).sum())
                total += float(model(**batch).loss) * predicted
                tokens += predicted
    finally:
        model.train(was_training)
    return total / tokens if tokens else None
