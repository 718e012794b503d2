"""Helpers for the tests of exercises 08 (training step) and 09 (adapter files).

Models come from lora_kata.models.tiny (offline, seeded); LoRA is injected with the implementation
under test's inject.py (exercise 04, done before 08 and 09 start).
"""

from __future__ import annotations

import torch

from lora_kata.catalog.impl import implementation
from lora_kata.testing.lora_models import randomise_lora

inject = implementation("inject")

VOCAB = 512  # lora_kata.models.tiny's default vocabulary
FIRST_ORDINARY_TOKEN = 4  # 0..3 are <s>, <pad>, </s>, <unk>


def lora_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.endswith(("lora_A", "lora_B"))]


def tiny_lora_opt(
    seed: int = 0,
    *,
    r: int = 4,
    lora_alpha: float = 16,
    target_modules=("q_proj", "v_proj"),
    randomise: bool = True,
    **overrides,
):
    """(model, config): a tiny fp32 OPT with LoRA injected, optionally with random A and B."""
    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(seed, **overrides)
    target = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = inject.LoRAConfig(r=r, lora_alpha=lora_alpha, target_modules=target)
    inject.inject_lora(model, config)
    if randomise:
        randomise_lora(model, seed + 100, scale=0.1)
    return model, config


def token_batch(rows: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A causal-LM batch of ordinary random tokens, no padding: labels = input_ids."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(FIRST_ORDINARY_TOKEN, VOCAB, (rows, length), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": input_ids.clone(),
    }


def split_rows(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """The batch cut into `parts` micro-batches of equal row counts."""
    chunks = {k: v.chunk(parts) for k, v in batch.items()}
    return [{k: chunks[k][i] for k in batch} for i in range(parts)]


class RecordingSGD(torch.optim.SGD):
    """SGD that remembers, at each step(), the gradient of every parameter it holds (the
    gradients a training step produced, seen before they are zeroed)."""

    def __init__(self, named_params, lr: float = 0.0):
        named_params = list(named_params)
        self.names = [n for n, _ in named_params]
        super().__init__([p for _, p in named_params], lr=lr)
        self.steps = 0
        self.grads: list[dict[str, torch.Tensor | None]] = []

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        params = [p for group in self.param_groups for p in group["params"]]
        self.grads.append(
            {
                n: None if p.grad is None else p.grad.detach().clone()
                for n, p in zip(self.names, params, strict=True)
            }
        )
        return super().step(closure)


def frozen_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of everything that must not change while LoRA trains: every state_dict entry
    that is not a LoRA matrix (int8 weights, their SCB scales, biases, layer norms,
    embeddings), plus any quantisation state bitsandbytes keeps outside the state_dict."""
    snapshot = {
        name: tensor.detach().clone()
        for name, tensor in model.state_dict().items()
        if not name.endswith(("lora_A", "lora_B")) and torch.is_tensor(tensor)
    }
    for name, module in model.named_modules():
        weight, state = getattr(module, "weight", None), getattr(module, "state", None)
        for attribute in ("CB", "SCB"):
            # bitsandbytes keeps the int8 matrix (CB) and its per-row scales (SCB) on the
            # weight until the first forward, then moves them to the layer's MatmulLtState.
            value = getattr(state, attribute, None)
            if value is None:
                value = getattr(weight, attribute, None)
            if torch.is_tensor(value):
                snapshot[f"{name}.{attribute}"] = value.detach().clone()
    return snapshot


def changed_entries(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-identical (or that appeared or vanished)."""
    names = sorted(set(before) | set(after))
    return [
        n
        for n in names
        if n not in before
        or n not in after
        or before[n].dtype != after[n].dtype
        or before[n].shape != after[n].shape
        or not torch.equal(before[n], after[n])
    ]


UNPICKLED: list[str] = []  # what PickleBomb's unpickling recorded


def _record_unpickling(what: str) -> dict:
    UNPICKLED.append(what)
    return {}


class PickleBomb:
    """Unpickling this calls a function (here a harmless recorder): what a malicious
    adapter_model.bin could do with os.system instead. torch.load(weights_only=False) or
    pickle.load would run it; safetensors cannot."""

    def __reduce__(self):
        return (_record_unpickling, ("adapter_model.bin was unpickled",))
