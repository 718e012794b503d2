"""Exercise 15: many adapters on one base model, in one batch (exercises/multi.py).

Row i of a batch goes through the shared frozen base and adds s_n·B_n·A_n·x_i of its own
adapter n = route[i] (None: the base alone). The adapters here have different ranks and
scalings (r 2, 6, 3; α/r 2, 0.5, 4) and target different layers of the tiny OPT's attention,
so a row that borrowed another adapter's update, or none, or an unscaled one, shows.
The adapters target attention projections only: OPT flattens (batch, length) into one
dimension before fc1 and fc2, so those layers never see batch rows (lesson 15, pitfalls).
Tolerance: 1e-5 on logits of order 1 (the same terms, summed per row or per group of rows).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.lora_models import randomise_lora, token_batch
from lora_kata.testing.properties import distinct_dims, seeded_linear, seeded_randn
from lora_kata.testing.raising import must_raise

multi = implementation("multi")
inject = implementation("inject")
adapter = implementation("adapter")

ATOL = 1e-5
# name -> (r, lora_alpha, target_modules): scalings 2, 0.5 and 4.
ADAPTERS = {
    "fr": (2, 4, ["q_proj", "v_proj"]),
    "de": (6, 3, ["q_proj", "k_proj"]),
    "es": (3, 12, ["v_proj", "out_proj"]),
}
ROUTE = ["fr", None, "de", "es", "fr", "de", None, "es"]


def tolerance(*tensors):
    return ATOL * max(1.0, *(t.abs().max().item() for t in tensors))


def fresh_base(seed=0):
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(seed)


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory):
    """Three adapters in exercise 09's format, saved with 09's save_adapter (random A and B)."""
    root = tmp_path_factory.mktemp("adapters")
    dirs = {}
    for index, (name, (r, alpha, targets)) in enumerate(ADAPTERS.items()):
        model = fresh_base()
        config = inject.LoRAConfig(r=r, lora_alpha=alpha, target_modules=targets)
        inject.inject_lora(model, config)
        randomise_lora(model, 10 + index, scale=0.3)
        adapter.save_adapter(model, root / name, config)
        dirs[name] = root / name
    return dirs


def loaded(adapter_dirs):
    model = multi.load_adapters(fresh_base(), dict(adapter_dirs))
    assert model is not None, msg("15.load_returns_model")
    return model.eval()


def multi_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, multi.MultiLoRALinear)}


def single(adapter_dirs, name):
    """The base with one adapter, loaded by exercise 09's load_adapter (None: the base)."""
    model = fresh_base()
    if name is not None:
        adapter.load_adapter(model, adapter_dirs[name])
    return model.eval()


def shared_layer(k, d, ranks, seed=0):
    """A MultiLoRALinear on nn.Linear(k, d) with adapters a, b, c of the given ranks, random
    A and B, scalings 2, 0.5, 3."""
    layer = multi.MultiLoRALinear(seeded_linear(k, d, seed=seed))
    adapters = {}
    for i, (name, r, s) in enumerate(zip("abc", ranks, (2.0, 0.5, 3.0), strict=False)):
        A = seeded_randn(r, k, seed=seed + 10 * i + 1) * 0.5
        B = seeded_randn(d, r, seed=seed + 10 * i + 2) * 0.5
        layer.add_adapter(name, A, B, s)
        adapters[name] = (A, B, s)
    return layer, adapters


def expected_rows(layer, adapters, x, route):
    base = layer.base(x).detach()
    rows = []
    for i, name in enumerate(route):
        row = base[i]
        if name is not None:
            A, B, s = adapters[name]
            row = row + s * (x[i] @ A.T) @ B.T
        rows.append(row)
    return torch.stack(rows)


def diagnose_row(layer, adapters, x, i, name, got_row):
    """The likely mistake behind a wrong row i."""
    base = layer.base(x[i : i + 1]).detach()[0]
    if name is None:
        return msg("15.base_row_changed")
    if torch.allclose(got_row, base, atol=tolerance(base)):
        return msg("15.row_got_the_base_alone")
    A, B, _ = adapters[name]
    if torch.allclose(got_row, base + (x[i] @ A.T) @ B.T, atol=tolerance(base)):
        return msg("15.update_unscaled")
    for other, (A2, B2, s2) in adapters.items():
        if other != name and torch.allclose(
            got_row, base + s2 * (x[i] @ A2.T) @ B2.T, atol=tolerance(base)
        ):
            return msg("15.row_got_another_adapter", other=other)
    return msg("15.row_other")


routes = st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=7)


# ---------------------------------------------------------------- one layer


@given(distinct_dims(max_rank=6), st.integers(1, 7), routes)
def test_a_shared_layer_adds_each_rows_own_adapter_update(dims, r2, route):
    k, d, r = dims
    ranks = (r, r2 if r2 != r else r + 1, r + 2)  # ranks differ, so shapes differ
    layer, adapters = shared_layer(k, d, ranks)
    x = seeded_randn(len(route), 3, k, seed=4)
    layer.route = list(route)
    with torch.no_grad():
        got = layer(x)
    want = expected_rows(layer, adapters, x, route)
    assert got.shape == want.shape, msg(
        "15.output_shape", got=tuple(got.shape), want=tuple(want.shape)
    )
    for i, name in enumerate(route):
        assert torch.allclose(got[i], want[i], atol=tolerance(want[i])), msg(
            "15.row_update",
            row=i,
            name=str(name),
            difference=(got[i] - want[i]).abs().max().item(),
            why=diagnose_row(layer, adapters, x, i, name, got[i]),
        )


def test_add_adapter_keeps_a_float32_copy_of_each_adapter_with_its_own_rank_and_scaling():
    layer, _ = shared_layer(9, 5, (2, 4, 3))
    for name, r, s in (("a", 2, 2.0), ("b", 4, 0.5), ("c", 3, 3.0)):
        A, B = layer.lora_A[name], layer.lora_B[name]
        assert tuple(A.shape) == (r, 9) and tuple(B.shape) == (5, r), msg(
            "15.adapter_shapes", name=name, a=tuple(A.shape), b=tuple(B.shape), r=r
        )
        assert A.dtype == B.dtype == torch.float32, msg("15.adapter_dtype", name=name)
        assert layer.scaling[name] == s, msg(
            "15.adapter_scaling", name=name, want=s, got=layer.scaling.get(name)
        )
    assert isinstance(layer.lora_A, torch.nn.ParameterDict), msg("15.parameter_dict")
    assert not any(p.requires_grad for p in layer.base.parameters()), msg("15.base_frozen")


def test_without_a_route_or_on_none_rows_the_layer_is_its_base():
    layer, _ = shared_layer(7, 4, (2, 3, 5))
    x = seeded_randn(3, 2, 7, seed=6)
    with torch.no_grad():
        want = layer.base(x)
        layer.route = None
        plain = layer(x)
        layer.route = [None, None, None]
        nones = layer(x)
    assert torch.equal(plain, want), msg("15.no_route_is_base")
    assert torch.allclose(nones, want, atol=tolerance(want)), msg("15.none_rows_are_base")


class MatmulCount:
    """Counts matrix products (aten mm, bmm, addmm, baddbmm, matmul) run inside the block."""

    OPS = ("mm", "bmm", "addmm", "baddbmm", "matmul", "addbmm")

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in MatmulCount.OPS:
                    counter.calls += 1
                return func(*args, **(kwargs or {}))

        self.calls = 0
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def test_each_adapter_runs_once_over_its_own_rows_only():
    from torch.utils.flop_counter import FlopCounterMode

    k, d, ranks = 40, 24, (8, 12, 16)
    layer, _ = shared_layer(k, d, ranks)
    calls = {}
    for rows in (6, 60):
        route = [("a", "b", "c")[i % 3] for i in range(rows)]
        layer.route = route
        x = seeded_randn(rows, 2, k, seed=3)
        with torch.no_grad(), MatmulCount() as count:
            layer(x)
        calls[rows] = count.calls
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            layer(x)
        base = 2 * rows * 2 * k * d
        own = sum(2 * (rows // 3) * 2 * (k * r + r * d) for r in ranks)
        lora = flops.get_total_flops() - base
        assert lora <= 1.5 * own, msg(
            "15.adapter_over_its_rows_only", rows=rows, got=lora, want=own, every=3 * own
        )
    assert calls[6] == calls[60], msg("15.loop_over_rows", few=calls[6], many=calls[60])


# ---------------------------------------------------------------- a model


def test_load_adapters_puts_one_shared_layer_at_each_target_holding_every_adapter_for_it(
    adapter_dirs,
):
    model = loaded(adapter_dirs)
    layers = multi_layers(model)
    want = {}
    for name, (r, alpha, targets) in ADAPTERS.items():
        for i in range(2):
            for target in targets:
                want.setdefault(f"model.decoder.layers.{i}.self_attn.{target}", {})[name] = (
                    r,
                    alpha / r,
                )
    assert sorted(layers) == sorted(want), msg(
        "15.shared_layers_where_targeted", got=sorted(layers)[:4], want=sorted(want)[:4]
    )
    for module_name, adapters in want.items():
        layer = layers[module_name]
        held = {n: (layer.lora_A[n].shape[0], layer.scaling[n]) for n in layer.lora_A}
        assert held == adapters, msg(
            "15.adapters_of_a_layer", layer=module_name, got=held, want=adapters
        )
    assert isinstance(model.get_submodule("model.decoder.layers.0.fc1"), torch.nn.Linear), msg(
        "15.untargeted_untouched"
    )


def test_a_mixed_batch_equals_each_row_run_alone_with_its_own_adapter(adapter_dirs):
    model = loaded(adapter_dirs)
    ids = token_batch(len(ROUTE), 9, seed=5)
    with torch.no_grad(), multi.routed(model, ROUTE):
        mixed = model(input_ids=ids).logits
    for name in dict.fromkeys(ROUTE):
        alone = single(adapter_dirs, name)
        for i in (i for i, n in enumerate(ROUTE) if n == name):
            with torch.no_grad():
                want = alone(input_ids=ids[i : i + 1]).logits[0]
            assert torch.allclose(mixed[i], want, rtol=0, atol=tolerance(want)), msg(
                "15.mixed_row_equals_alone",
                row=i,
                name=str(name),
                difference=(mixed[i] - want).abs().max().item(),
            )


def test_the_route_is_cleared_after_the_block_also_on_error(adapter_dirs):
    model = loaded(adapter_dirs)
    ids = token_batch(3, 5)
    with multi.routed(model, ["fr", "de", None]):
        routes = {n: layer.route for n, layer in multi_layers(model).items()}
    assert all(r == ["fr", "de", None] for r in routes.values()), msg(
        "15.route_set_inside", got=sorted({str(r) for r in routes.values()})
    )
    left = [n for n, layer in multi_layers(model).items() if layer.route is not None]
    assert not left, msg("15.route_cleared", layers=left[:3])

    class Boom(Exception):
        pass

    with must_raise(Boom, msg("15.error_swallowed")):
        with multi.routed(model, ["es", "es", "fr"]):
            model(input_ids=ids)
            raise Boom
    left = [n for n, layer in multi_layers(model).items() if layer.route is not None]
    assert not left, msg("15.route_cleared_on_error", layers=left[:3])
    with torch.no_grad():
        after = model(input_ids=ids).logits
        plain = fresh_base().eval()(input_ids=ids).logits
    assert torch.allclose(after, plain, atol=tolerance(plain)), msg("15.base_after_block")


def test_an_unknown_adapter_name_is_a_value_error_listing_the_loaded_ones(adapter_dirs):
    model = loaded(adapter_dirs)
    with must_raise(
        ValueError,
        msg("15.unknown_name_accepted"),
        instead=lambda error: msg(
            "15.unknown_name_raised_instead", error_type=type(error).__name__, error=error
        ),
    ) as raised:
        with multi.routed(model, ["fr", "it"]):
            pass
    text = str(raised.value)
    missing = [name for name in ADAPTERS if name not in text]
    assert not missing, msg("15.unknown_name_lists_loaded", missing=missing, error=text)
    left = [n for n, layer in multi_layers(model).items() if layer.route is not None]
    assert not left, msg("15.refused_route_not_set", layers=left[:3])


def test_generate_inside_routed_gives_each_row_what_its_adapter_alone_generates(adapter_dirs):
    model = loaded(adapter_dirs)
    route = ["es", None, "fr", "de"]
    ids = token_batch(len(route), 6, seed=11)
    with multi.routed(model, route):
        out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    for i, name in enumerate(route):
        alone = single(adapter_dirs, name)
        want = alone.generate(input_ids=ids[i : i + 1], max_new_tokens=6, do_sample=False)[0]
        assert torch.equal(out[i], want), msg(
            "15.generate_row", row=i, name=str(name), got=out[i].tolist(), want=want.tolist()
        )


def test_bad_adapter_directories_raise_exercise_09s_errors_naming_the_adapter(
    adapter_dirs, tmp_path
):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "damaged"  # directories not named after their adapters
    broken.mkdir()
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        (broken / file).write_bytes((adapter_dirs["fr"] / file).read_bytes())
    tensors = load_file(broken / "adapter_model.safetensors")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, broken / "adapter_model.safetensors")
    cases = [
        ("nowhere", tmp_path / "no-such-directory", (FileNotFoundError, ValueError)),
        ("broken", broken, (ValueError,)),
    ]
    for name, directory, errors in cases:
        directories = {"fr": adapter_dirs["fr"], name: directory}
        with must_raise(
            errors,
            msg("15.bad_directory_accepted", name=name),
            instead=lambda error, name=name: msg(
                "15.bad_directory_raised_instead",
                name=name,
                error_type=type(error).__name__,
                error=error,
            ),
        ) as raised:
            multi.load_adapters(fresh_base(), directories)
        assert name in str(raised.value), msg(
            "15.bad_directory_names_adapter", name=name, error=raised.value
        )
    assert dropped in str(raised.value), msg(
        "15.missing_key_named", key=dropped, error=raised.value
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_a_mixed_batch_equals_peft_mixed_batch_inference_on_the_same_adapters(adapter_dirs):
    import warnings

    from peft import PeftModel

    model = loaded(adapter_dirs)
    ids = token_batch(len(ROUTE), 9, seed=5)
    with torch.no_grad(), multi.routed(model, ROUTE):
        ours = model(input_ids=ids).logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = list(ADAPTERS)
        theirs = PeftModel.from_pretrained(
            fresh_base(), str(adapter_dirs[names[0]]), adapter_name=names[0]
        )
        for name in names[1:]:
            theirs.load_adapter(str(adapter_dirs[name]), adapter_name=name)
    peft_names = [name or "__base__" for name in ROUTE]
    theirs.eval()
    with torch.no_grad():
        want = theirs(input_ids=ids, adapter_names=peft_names).logits
    assert torch.allclose(ours, want, rtol=0, atol=tolerance(want)), msg(
        "15.peft_mixed_batch", difference=(ours - want).abs().max().item()
    )
    with multi.routed(model, ROUTE):
        generated = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    expected = theirs.generate(
        input_ids=ids, max_new_tokens=5, do_sample=False, adapter_names=peft_names
    )
    assert torch.equal(generated, expected), msg("15.peft_generate")
