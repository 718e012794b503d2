"""Shared helpers for the exercise tests: Hypothesis strategies and seeded inputs.

Sizes are drawn pairwise distinct (in ≠ out ≠ r) so that a transposed matrix or a swapped
dimension can never pass by accident.
"""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def distinct_dims(draw, max_features: int = 24, max_rank: int = 8) -> tuple[int, int, int]:
    """(in_features, out_features, r), all different."""
    in_features = draw(st.integers(2, max_features))
    out_features = draw(st.integers(2, max_features).filter(lambda d: d != in_features))
    r = draw(st.integers(1, max_rank).filter(lambda n: n not in (in_features, out_features)))
    return in_features, out_features, r


def seeded_linear(
    in_features: int, out_features: int, *, seed: int = 0, bias: bool = True, dtype=None
):
    """A torch.nn.Linear with reproducible random weights (and a non-zero bias)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.3)
        if bias:
            layer.bias.copy_(torch.randn(out_features, generator=generator) * 0.1)
    return layer.to(dtype) if dtype is not None else layer


def seeded_randn(*shape: int, seed: int = 1, dtype=None):
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(*shape, generator=generator)
    return tensor.to(dtype) if dtype is not None else tensor
