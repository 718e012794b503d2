"""Exercise 08: the training step (exercises/train.py).

linear_warmup_lr is transformers.get_linear_schedule_with_warmup, step by step; train_step is
one optimizer step over several micro-batches (gradient accumulation), as the tutorial's
Trainer did with batch 4 × accumulation 4: the mean of the micro-batch losses is
backpropagated, the optimizer and the scheduler step once, and the gradients are zeroed after.

Models: a tiny fp32 OPT with LoRA (for exact gradient comparisons) and the same tiny OPT loaded
in 8-bit by exercise 07's load_in_8bit (for "only LoRA moves, the int8 weights stay put").
"""

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.raising import must_raise
from lora_kata.testing.training import (
    RecordingSGD,
    changed_entries,
    frozen_snapshot,
    lora_names,
    split_rows,
    tiny_lora_opt,
    token_batch,
)

train = implementation("train")
# What torch's GradScaler.update asserts when scaler.step(optimizer) did not run before it.
TORCH_SCALER_ASSERT = "No inf checks were recorded"
inject = implementation("inject")
int8 = implementation("int8")
data = implementation("data")

# Schedules: transformers computes base_lr * (step / warmup) in float64; so does the reference.
# A different but equivalent order of operations (base_lr * step / warmup) may differ in the
# last bit, hence rel=1e-12; an off-by-one step differs by at least 1/max_steps ≥ 1e-2.
SCHEDULE_REL = 1e-12


def schedule_kwargs(warmup_steps, max_steps, base_lr=1.0):
    return dict(base_lr=base_lr, warmup_steps=warmup_steps, max_steps=max_steps)


def transformers_lrs(base_lr, warmup_steps, max_steps, n_steps):
    """The lr that get_linear_schedule_with_warmup gives at optimizer steps 0 .. n_steps-1."""
    from transformers import get_linear_schedule_with_warmup

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, max_steps)
    lrs = []
    for _ in range(n_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def schedule_call(step, kwargs):
    """How the call reads in a message: linear_warmup_lr(3, base_lr=..., ...)."""
    return f"linear_warmup_lr({step}, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def learner_lr(step, kwargs, expected):
    """The learner's lr at `step`; a ZeroDivisionError fails naming the step and the settings
    (an unguarded denominator: transformers divides by max(1, ...) there)."""
    try:
        return train.linear_warmup_lr(step, **kwargs)
    except ZeroDivisionError as error:
        pytest.fail(
            msg(
                "08.schedule_divides_by_zero",
                where=schedule_call(step, kwargs),
                error=str(error),
                want=expected[step],
            ),
            pytrace=False,
        )


def schedule_mismatch(got, expected, step, kwargs):
    """The assertion message for a wrong lr, naming an off-by-one when it is one."""
    where = schedule_call(step, kwargs)
    shifted = [s for s in (step - 1, step + 1) if 0 <= s < len(expected)]
    if any(got == pytest.approx(expected[s], rel=SCHEDULE_REL) for s in shifted):
        return msg("08.schedule_off_by_one", where=where, got=got, step=step, want=expected[step])
    return msg("08.schedule_differs", where=where, got=got, want=expected[step])


def test_warmup_starts_at_zero_peaks_at_base_lr_and_decays_to_zero():
    kwargs = schedule_kwargs(warmup_steps=100, max_steps=200, base_lr=2e-4)  # the tutorial's
    got = train.linear_warmup_lr(0, **kwargs)
    assert got == 0.0, msg("08.step_0_has_lr_0", got=got)
    for step, expected in [(50, 1e-4), (100, 2e-4), (150, 1e-4), (199, 2e-6), (200, 0.0)]:
        got = train.linear_warmup_lr(step, **kwargs)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-20), msg(
            "08.tutorial_schedule", step=step, want=expected, got=got
        )
    for step in (201, 250, 1000):
        got = train.linear_warmup_lr(step, **kwargs)
        assert got == 0.0, msg("08.zero_after_max_steps", got=got)


@given(
    st.integers(0, 30),
    st.integers(0, 40),
    st.floats(1e-6, 1.0, allow_nan=False, allow_infinity=False),
)
def test_matches_transformers_linear_schedule_at_every_step(warmup_steps, extra, base_lr):
    max_steps = warmup_steps + extra  # extra = 0: max_steps == warmup_steps, an edge case
    kwargs = schedule_kwargs(warmup_steps, max_steps, base_lr)
    expected = transformers_lrs(base_lr, warmup_steps, max_steps, max_steps + 6)
    for step in range(len(expected)):
        got = learner_lr(step, kwargs, expected)
        assert got == pytest.approx(expected[step], rel=SCHEDULE_REL, abs=0), schedule_mismatch(
            got, expected, step, kwargs
        )


@pytest.mark.parametrize(
    ("warmup_steps", "max_steps"),
    [(0, 10), (10, 10), (0, 0), (1, 1), (7, 3), (100, 200)],
    ids=[
        "no-warmup",
        "warmup-is-everything",
        "zero-steps",
        "one-step",
        "warmup-past-max",
        "tutorial",
    ],
)
def test_edge_cases_match_transformers(warmup_steps, max_steps):
    kwargs = schedule_kwargs(warmup_steps, max_steps, base_lr=3e-4)
    expected = transformers_lrs(3e-4, warmup_steps, max_steps, max_steps + 6)
    for step in range(len(expected)):
        got = learner_lr(step, kwargs, expected)
        assert got == pytest.approx(expected[step], rel=SCHEDULE_REL, abs=0), msg(
            "08.edge_case", mismatch=schedule_mismatch(got, expected, step, kwargs)
        )


def test_a_lambda_lr_built_on_it_is_the_transformers_scheduler():
    """What the capstone does: LambdaLR multiplies the optimizer's lr by the lambda's value,
    so the lambda is the schedule with base_lr = 1."""
    from torch.optim.lr_scheduler import LambdaLR

    warmup_steps, max_steps, lr = 5, 12, 2e-4
    kwargs = schedule_kwargs(warmup_steps, max_steps, base_lr=1.0)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = LambdaLR(optimizer, lambda step: train.linear_warmup_lr(step, **kwargs))
    expected = transformers_lrs(lr, warmup_steps, max_steps, max_steps + 4)
    for step, want in enumerate(expected):
        got = optimizer.param_groups[0]["lr"]
        assert got == pytest.approx(want, rel=SCHEDULE_REL, abs=0), msg(
            "08.lambda_lr", got=got, step=step, want=want
        )
        optimizer.step()
        scheduler.step()


# ---------------------------------------------------------------- train_step on fp32 LoRA


def fresh_setup(seed=0, lr=0.0):
    """A tiny fp32 OPT with LoRA (random A and B), and a recording SGD over its LoRA weights."""
    model, _ = tiny_lora_opt(seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return model, RecordingSGD(trainable, lr=lr)


def test_rejects_an_empty_list_of_micro_batches():
    model, optimizer = fresh_setup()
    refused = msg(
        "common.accepted_bad_input",
        call="train_step(model, [], optimizer)",
        expected="ValueError",
        why=msg("08.no_micro_batches"),
    )
    with must_raise(ValueError, refused):
        train.train_step(model, [], optimizer)


def test_returns_the_mean_of_the_micro_batch_losses():
    model, optimizer = fresh_setup()
    micro_batches = [token_batch(3, 10, seed=s) for s in range(4)]
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        losses = [reference(**batch).loss.item() for batch in micro_batches]
    expected = sum(losses) / len(losses)
    got = train.train_step(model, micro_batches, optimizer)
    assert isinstance(got, float), msg("08.returns_a_float", got_type=type(got).__name__)
    ratio = got / expected
    # The same fp32 forward passes: only summation order differs (~1e-7 relative).
    assert got == pytest.approx(expected, rel=1e-5), msg(
        "08.mean_loss",
        got=got,
        want=expected,
        ratio=ratio,
        summed=msg("08.losses_summed") if abs(ratio - 4) < 0.01 else "",
    )


def test_accumulated_gradients_equal_one_big_batch():
    """4 micro-batches of 4 rows, all the same length (no padding), accumulated with
    loss / 4, give the gradient of one batch of all 16 rows: the mean of equal-sized means is
    the mean."""
    model, optimizer = fresh_setup(seed=1)
    big = token_batch(16, 12, seed=3)
    micro_batches = split_rows(big, 4)
    reference = copy.deepcopy(model).train()
    reference(**big).loss.backward()
    last_only = copy.deepcopy(model).train()
    (last_only(**micro_batches[-1]).loss / 4).backward()

    train.train_step(model, micro_batches, optimizer)
    assert optimizer.steps == 1, msg(
        "08.optimizer_steps_once", steps=optimizer.steps, micro_batches=4
    )
    got = optimizer.grads[0]
    expected = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    last = {n: p.grad for n, p in last_only.named_parameters() if p.requires_grad}
    for name, want in expected.items():
        have = got[name]
        assert have is not None, msg("08.no_gradient", name=name)
        # fp32 sums of the same terms in another order: ~1e-6 of the largest entry (measured
        # ≤ 8e-7 over 5 seeds); 1e-4 leaves room, a wrong factor or a lost micro-batch is ≥ 25%.
        tolerance = 1e-4 * want.abs().max().item()
        if torch.allclose(have, want, rtol=0, atol=tolerance):
            continue
        ratio = (have.norm() / want.norm()).item()
        if torch.allclose(have, last[name], rtol=0, atol=tolerance) or torch.allclose(
            have, 4 * last[name], rtol=0, atol=4 * tolerance
        ):
            diagnosis = msg("08.zeroed_between_micro_batches")
        elif abs(ratio - 4) < 0.05:
            diagnosis = msg("08.gradients_4x")
        else:
            diagnosis = msg("08.zeroed_or_summed")
        pytest.fail(
            msg("08.one_big_batch_gradient", name=name, ratio=ratio, why=diagnosis),
            pytrace=False,
        )


def test_steps_the_optimizer_once_and_zeroes_the_gradients_after():
    model, optimizer = fresh_setup()
    micro_batches = [token_batch(2, 8, seed=s) for s in range(3)]
    train.train_step(model, micro_batches, optimizer)
    assert optimizer.steps == 1, msg(
        "08.optimizer_steps_once", steps=optimizer.steps, micro_batches=3
    )
    left = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and torch.count_nonzero(p.grad) > 0
    ]
    assert not left, msg("08.gradients_left", left=left[:3])


def test_steps_the_scheduler_once_per_train_step():
    from torch.optim.lr_scheduler import LambdaLR

    model, optimizer = fresh_setup()
    base_lr = optimizer.param_groups[0]["lr"] = 0.1
    scheduler = LambdaLR(optimizer, lambda step: 0.5**step)
    micro_batches = [token_batch(2, 8, seed=s) for s in range(2)]
    for done in range(1, 4):
        train.train_step(model, micro_batches, optimizer, scheduler=scheduler)
        steps = scheduler.last_epoch
        if steps == 0:
            note = msg("08.scheduler_never_called")
        elif steps > done:
            note = msg("08.scheduler_per_micro_batch")
        else:
            note = ""
        assert steps == done, msg("08.scheduler_steps", done=done, steps=steps, note=note)
        lr = optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(base_lr * 0.5**done), msg(
            "08.scheduled_lr", done=done, lr=lr, want=base_lr * 0.5**done
        )


def test_uses_the_grad_scaler_and_steps_with_unscaled_gradients():
    """fp16 training scales the loss up (so small gradients survive fp16) and the gradients
    back down before the step. A GradScaler works on the CPU too; a power-of-two scale makes
    the unscaled gradients exactly those of the unscaled loss."""
    model, _ = fresh_setup(seed=2)
    twin = copy.deepcopy(model)
    micro_batches = [token_batch(2, 8, seed=s) for s in range(2)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    with_scaler = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    plain = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.1)
    try:
        train.train_step(model, micro_batches, with_scaler, scaler=scaler)
    except AssertionError as error:  # torch's own assert in GradScaler.update, not a test's
        if TORCH_SCALER_ASSERT not in str(error):
            raise
        pytest.fail(msg("08.scaler_updated_without_its_step", error=str(error)), pytrace=False)
    train.train_step(twin, micro_batches, plain)
    assert scaler.get_scale() == 2.0**11, msg("08.scaler_unused", scale=scaler.get_scale())
    start = dict(fresh_setup(seed=2)[0].named_parameters())
    for name, param in model.named_parameters():
        if param.requires_grad:
            other = dict(twin.named_parameters())[name]
            # Scaling by 2**10 and back is exact in fp32: differences only from summation order.
            step, plain_step = (param - start[name]).norm(), (other - start[name]).norm()
            ratio = (step / plain_step).item() if plain_step > 0 else float("inf")
            assert torch.allclose(param, other, rtol=1e-5, atol=1e-6), msg(
                "08.scaler_step_differs",
                name=name,
                ratio=ratio,
                why=msg("08.scaler_paths_average_differently")
                if abs(ratio * len(micro_batches) - 1) < 1e-3
                or abs(ratio - len(micro_batches)) < 1e-3
                else msg("08.step_through_the_scaler"),
            )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_dtype_applies_to_the_forward_pass(dtype):
    model, optimizer = fresh_setup()
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    loss = train.train_step(model, [token_batch(2, 8)], optimizer, autocast_dtype=dtype)
    assert seen, msg("08.forward_never_ran")
    assert seen[-1] == dtype, msg("08.autocast_dtype", dtype=dtype, got=seen[-1])
    assert isinstance(loss, float) and loss == loss, msg("08.finite_loss", loss=loss)
    seen.clear()
    train.train_step(model, [token_batch(2, 8)], optimizer)
    assert seen[-1] == torch.float32, msg("08.no_autocast_is_fp32", got=seen[-1])


# ---------------------------------------------------------------- train_step on 8-bit LoRA


@pytest.fixture(scope="module")
def tiny_opt_dir(tmp_path_factory):
    """A tiny OPT saved in fp16, as opt-6.7b's checkpoint is. init_std=0.2 instead of OPT's
    0.02: with 0.02 the logits span only about ±0.1, and LoRA on q and v alone moves the loss
    by < 0.1 in 8 steps; with 0.2 the loss has room to fall (numbers in test_loss_falls)."""
    from lora_kata.testing.int8 import save_tiny_opt_fp16

    return save_tiny_opt_fp16(tmp_path_factory.mktemp("tiny-opt"), seed=0, init_std=0.2)


def int8_lora_model(directory, r=8, lora_alpha=16):
    """The capstone's recipe on the tiny OPT: 8-bit load, prepare, inject (q_proj, v_proj)."""
    model = int8.load_in_8bit(str(directory))
    model = int8.prepare_for_int8_training(model, use_gradient_checkpointing=True)
    config = inject.LoRAConfig(r=r, lora_alpha=lora_alpha, target_modules=["q_proj", "v_proj"])
    return inject.inject_lora(model, config)


def quote_micro_batches(n_micro=4, rows=4):
    """The first n_micro·rows quotes, tokenized and collated (right-padded) into micro-batches."""
    from lora_kata.models.tiny import PAD_ID, quote_texts, quotes_tokenizer

    tokenizer = quotes_tokenizer()
    texts = quote_texts()[: n_micro * rows]
    features = [tokenizer(text, truncation=True, max_length=48) for text in texts]
    return [
        data.collate_for_causal_lm(features[i * rows : (i + 1) * rows], PAD_ID)
        for i in range(n_micro)
    ]


def test_only_lora_weights_change_and_int8_weights_stay_bit_identical(tiny_opt_dir):
    model = int8_lora_model(tiny_opt_dir)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    micro_batches = quote_micro_batches(n_micro=2, rows=2)
    before = frozen_snapshot(model)
    assert any(t.dtype == torch.int8 for t in before.values()), msg("08.setup_no_int8_weight")
    names = set(lora_names(model))
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    for _ in range(3):
        train.train_step(model, micro_batches, optimizer)
    changed = changed_entries(before, frozen_snapshot(model))
    assert not changed, msg(
        "08.frozen_weights_changed",
        changed=changed[:4],
        more="..." if len(changed) > 4 else "",
    )
    params = dict(model.named_parameters())
    still = [n for n, value in lora_before.items() if torch.equal(value, params[n])]
    assert not still, msg("08.lora_did_not_change", still=still[:3])


# Measured with the reference (AdamW, lr 3e-2, 16 quotes in 4 micro-batches, r=8, α=16 on q_proj
# and v_proj): 6.809, 6.653, 6.488, 6.351, 6.232, 6.121, 6.021, 5.913 — a drop of 0.69 after 6
# steps. Requiring 0.3 leaves room for other CPUs' rounding; a loop that never steps drops 0.
STEPS = 6
MIN_DROP = 0.3


def test_loss_falls_on_fixed_data(tiny_opt_dir):
    """Overfitting 16 quotes is the smallest proof that the loop learns."""
    torch.manual_seed(0)
    model = int8_lora_model(tiny_opt_dir)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=3e-2)
    micro_batches = quote_micro_batches()
    losses = [train.train_step(model, micro_batches, optimizer) for _ in range(STEPS)]
    assert losses[-1] < losses[0] - MIN_DROP, msg(
        "08.loss_falls", steps=STEPS, losses=[round(x, 3) for x in losses]
    )
