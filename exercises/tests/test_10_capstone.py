"""Exercise 10: the capstone (exercises/finetune.py).

The CPU dry run is the GPU run's code path (lora_kata/testing/capstone.py) on a tiny OPT
(hidden 32, 2 layers, vocab 512, random weights) loaded in 8-bit on the CPU — bitsandbytes
runs Linear8bitLt there — with your load_in_8bit → prepare_for_int8_training → inject_lora
(r=16, α=32, q_proj/v_proj, dropout 0.05), trained for a few steps in fp32.
The GPU test (marked `gpu`) runs it on CUDA with fp16 autocast, on the built-in small OPT or
on the model named by LORA_KATA_MODEL (e.g. facebook/opt-6.7b).

Loss thresholds come from measurements (10 seeds on a 2-core CPU, see DRY_* below): with
lr = 0 the per-step losses wander by at most ±0.011 and the fixed-batch loss does not move;
trained, both fall by at least 0.021.
"""

import json
import math
import os
import warnings
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from lora_kata.capstone.models import build_small_opt, input_device, load_prepared
from lora_kata.capstone.run import main as run_capstone
from lora_kata.capstone.settings import SMALL, SMALL_OPT, TUTORIAL
from lora_kata.catalog.impl import current, implementation
from lora_kata.messages import msg
from lora_kata.testing import capstone as cap

finetune = implementation("finetune")
adapter = implementation("adapter")
int8 = implementation("int8")
inject = implementation("inject")
PIECES = SimpleNamespace(int8=int8, inject=inject)  # what load_prepared uses

PROMPT = "Two things are infinite: "
# What the command line prints right before the generated text.
GENERATION_HEADER = "new tokens at most):"
# The dry run: 8 steps of 2 × 4 quotes. A random model needs a big step to move visibly in 8
# steps, hence lr 1e-2 (the tutorial's 2e-4 is for a pretrained 6.7B model).
DRY = {"max_steps": 8, "batch_size": 4, "grad_accum": 2, "lr": 1e-2, "warmup_steps": 2, "seed": 0}
# Measured over model/data seeds 0-9 with DRY: mean(first 2 steps) − mean(last 2 steps) was
# 0.023-0.044 (0.030 at seed 0), the fixed-batch loss fell 0.021-0.043; with lr = 0 the step
# difference was -0.007..0.011 and the fixed-batch loss did not move at all.
DRY_STEP_DROP = 0.015
DRY_EVAL_DROP = 0.01
# The built-in small OPT with the CLI's small-model settings (30 steps, lr 3e-3), measured on a
# CPU in fp32 over 6 seeds: first/last-10% drop 0.18-0.22, fixed-batch drop 0.17-0.21. Half of
# that leaves room for fp16 autocast; NOT measured on a GPU (this kata was built without one).
SMALL_STEP_DROP = 0.09
SMALL_EVAL_DROP = 0.08
# A pretrained model (LORA_KATA_MODEL) trained with the tutorial's settings: the fixed batch
# (8 training quotes) is seen ~6 times in 200 steps. A relative fall of 5% is a deliberately
# low bar, NOT measured on a GPU; the GPU CI's metrics.json records the real numbers.
PRETRAINED_RELATIVE_DROP = 0.05
# Peak GPU memory ≤ 1.6 × memory after loading + 1 GiB. facebook/opt-6.7b: 6.4 GiB in 8-bit
# + 0.4 GiB of embeddings cast to fp32 by the preparation ≈ 6.8 GiB, so ≤ ≈ 11.9 GiB, above
# stock transformers + peft's 10.0 GiB peak at 4 × 64 tokens (H100). Not measured on a GPU here.
PEAK_FACTOR, PEAK_SLACK = 1.6, 2**30


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """The tiny models' matmuls are too small to gain from threads, and on a busy 2-core machine
    OpenMP's spinning threads made them 5-10× slower (measured). One thread, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from lora_kata.models.tiny import save_tiny_opt

    return str(save_tiny_opt(tmp_path_factory.mktemp("tiny-opt")))


@pytest.fixture(scope="module")
def quotes():
    """The raw quotes Dataset (quote, author, tags), loaded the way load_quotes does."""
    import datasets

    from lora_kata.models.tiny import QUOTES_PATH

    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(QUOTES_PATH))["train"]


@pytest.fixture(scope="module")
def eval_quotes(quotes):
    return list(quotes["quote"][:8])


@pytest.fixture(scope="module")
def dry_run(tiny_dir, quotes, eval_quotes):
    """The dry run, made once by the first test that asks (and again if finetune raised)."""
    done = {}

    def run():
        if "run" not in done:
            prepared = cap.prepare_run(PIECES, tiny_dir, eval_quotes, DRY)
            done["run"] = cap.train_run(prepared, finetune, quotes)
        return done["run"]

    return run


def fresh(tiny_dir):
    model, tokenizer, _ = load_prepared(PIECES, tiny_dir)
    return model, tokenizer


class ForwardRecorder:
    """Records what each call of model(**batch) received, and the state around it."""

    def __init__(self, model):
        self.model = model
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        rows = []
        if ids is not None:
            for i in range(ids.shape[0]):
                keep = mask[i].bool() if mask is not None else slice(None)
                rows.append(tuple(ids[i][keep].tolist()))
        self.calls.append(
            SimpleNamespace(
                rows=rows,
                has_labels=kwargs.get("labels") is not None,
                use_cache=module.config.use_cache,
                training=module.training,
                autocast=torch.is_autocast_enabled("cpu"),
            )
        )

    def remove(self):
        self.handle.remove()


def finetune_recorded(model, tokenizer, dataset, **settings):
    """finetune(model, tokenizer, dataset, progress=False, **settings) with a ForwardRecorder on
    the model: (losses, recorded calls). Two raw errors from inside the learner's finetune are
    named for what they mean; any other error goes through untouched."""
    recorder = ForwardRecorder(model)
    try:
        losses = finetune.finetune(model, tokenizer, dataset, progress=False, **settings)
    except IndexError as error:
        # The pre-hook saw the rows before the model ran: a row past the model's positions makes
        # the position-embedding lookup fail ("index out of range in self").
        limit = model.config.max_position_embeddings
        longest = max((len(row) for call in recorder.calls for row in call.rows), default=0)
        if longest > limit:
            pytest.fail(
                msg("10.row_past_positions", longest=longest, limit=limit, error=str(error)),
                pytrace=False,
            )
        raise
    except (StopIteration, RuntimeError) as error:
        # next() on a finished batch iterator: StopIteration, or inside a generator (PEP 479)
        # RuntimeError("generator raised StopIteration") with the StopIteration as its cause.
        if isinstance(error, StopIteration) or isinstance(error.__cause__, StopIteration):
            steps, grad_accum = settings["max_steps"], settings["grad_accum"]
            batch_size = settings["batch_size"]
            pytest.fail(
                msg(
                    "10.data_ran_out",
                    steps=steps,
                    grad_accum=grad_accum,
                    batch_size=batch_size,
                    needed=steps * grad_accum,
                    quotes=len(dataset),
                    per_pass=len(dataset) // batch_size,
                    step=len(recorder.calls) // grad_accum + 1,
                    error=repr(error),
                ),
                pytrace=False,
            )
        raise
    finally:
        recorder.remove()
    return losses, recorder.calls


# ----------------------------------------------------------------------------- checks
# Shared by the CPU dry run and the GPU test: each says what it expected and what it found.


def check_losses_are_floats(run):
    losses = run.losses
    steps = run.settings["max_steps"]
    assert isinstance(losses, list), msg("10.losses_list", got=type(losses).__name__)
    assert len(losses) == steps, msg("10.losses_count", steps=steps, got=len(losses))
    kinds = {type(x).__name__ for x in losses}
    assert kinds == {"float"}, msg("10.losses_floats", kinds=sorted(kinds))
    assert all(math.isfinite(x) for x in losses), msg("10.losses_finite", losses=losses)


def check_loss_falls(run, step_drop, eval_drop, *, relative=False):
    losses = [float(x) for x in run.losses]
    k = max(2, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    before, after = run.eval_loss_before, run.eval_loss_after
    if relative:
        step_drop, eval_drop = step_drop * first, eval_drop * before
    assert first - last >= step_drop, msg(
        "10.training_loss_falls", step_drop=step_drop, k=k, first=first, last=last
    )
    assert before - after >= eval_drop, msg(
        "10.fixed_batch_loss_falls", eval_drop=eval_drop, before=before, after=after
    )


def check_only_lora_changed(run):
    after = cap.fingerprints(run.model)
    changed = sorted(
        n for n in run.fingerprints_before if after.get(n) != run.fingerprints_before[n]
    )
    assert not changed, msg("10.non_lora_changed", count=len(changed), examples=changed[:3])
    lora_after = cap.lora_tensors(run.model)
    moved = [n for n, t in lora_after.items() if not torch.equal(t, run.lora_before[n])]
    assert moved, msg("10.lora_unchanged")


def check_trainable_is_the_formula(run):
    assert run.trainable == run.formula, msg(
        "10.trainable_is_the_formula", trainable=run.trainable, formula=run.formula
    )
    now = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert now == run.trainable_names, msg(
        "10.trainable_names_changed",
        before_count=len(run.trainable_names),
        before=run.trainable_names[:2],
        after_count=len(now),
        after=now[:2],
    )
    count = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    assert count == run.formula, msg(
        "10.trainable_after_finetune", count=count, formula=run.formula
    )


def check_generation(model, tokenizer, prompt=PROMPT, max_new_tokens=12):
    model.train()  # as after training: generate must switch dropout off itself
    recorder = ForwardRecorder(model)
    try:
        text = finetune.generate(model, tokenizer, prompt, max_new_tokens)
    finally:
        recorder.remove()
    assert isinstance(text, str), msg("10.generate_returns_str", got=type(text).__name__)
    # Checked directly: a briefly trained tiny model may pick the same tokens with dropout on.
    in_training = sum(call.training for call in recorder.calls)
    assert recorder.calls and not in_training, msg(
        "10.generate_in_eval_mode", in_training=in_training, total=len(recorder.calls)
    )
    assert text.startswith(prompt), msg(
        "10.generation_starts_with_prompt", prompt=prompt, got=text[:60]
    )
    expected = cap.greedy_reference(model, tokenizer, prompt, max_new_tokens)
    assert text == expected, msg(
        "10.generate_greedily", max_new_tokens=max_new_tokens, expected=expected, got=text
    )
    again = finetune.generate(model, tokenizer, prompt, max_new_tokens)
    assert again == text, msg("10.greedy_is_repeatable")
    return text


def check_adapter_round_trip(run, model_path, directory, *, atol):
    """Save with save_adapter, reload on a fresh 8-bit base with load_adapter and with peft's
    PeftModel.from_pretrained: both must give the trained model's logits."""
    from peft import PeftModel

    adapter.save_adapter(run.model, directory, run.config, base_model_name_or_path=model_path)
    _, trained = cap.eval_outputs(run.model, run.eval_batch)

    def fresh_base():
        # Prepared like the trained model, so that norms and embeddings have the same dtype
        # (fp32; a hub checkpoint loads them in fp16) and only the adapter can differ.
        return int8.prepare_for_int8_training(int8.load_in_8bit(model_path))

    base = fresh_base()
    _, untouched = cap.eval_outputs(base, run.eval_batch)
    effect = (trained - untouched).abs().max().item()
    assert effect > max(100 * atol, 1e-4), msg("10.adapter_effect_too_small", effect=effect)
    ours = adapter.load_adapter(base, directory)
    _, reloaded = cap.eval_outputs(ours, run.eval_batch)
    gap = (reloaded - trained).abs().max().item()
    assert gap <= atol, msg("10.load_adapter_logits", gap=gap, atol=atol)
    del base, ours
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # one spare 8-bit copy at a time (opt-6.7b: 6.4 GiB each)
    peft_model = PeftModel.from_pretrained(fresh_base(), str(directory))
    _, theirs = cap.eval_outputs(peft_model, run.eval_batch)
    gap = (theirs - trained).abs().max().item()
    # peft computes B(A(x)) · s in a different order than x Aᵀ Bᵀ · s: fp32 rounding only.
    assert gap <= max(atol, 1e-5), msg("10.peft_logits", gap=gap)


# ----------------------------------------------------------------------------- CPU dry run


def test_quotes_longer_than_the_model_are_truncated_to_its_positions(tiny_dir, quotes):
    model, tokenizer = fresh(tiny_dir)
    limit = model.config.max_position_embeddings  # 128 for the tiny OPT
    lengths = [len(ids) for ids in tokenizer(list(quotes["quote"]))["input_ids"]]
    long_ones = [i for i, n in enumerate(lengths) if n > limit]
    assert long_ones, msg("10.long_quotes_exist")
    _, calls = finetune_recorded(
        model, tokenizer, quotes.select(long_ones), max_steps=1,
        batch_size=len(long_ones), grad_accum=1, warmup_steps=0,
    )  # fmt: skip
    longest = max(len(row) for call in calls for row in call.rows)
    assert longest == limit, msg(
        "10.truncated_to_positions", tokens=max(lengths), limit=limit, got=longest
    )


def test_finetune_returns_one_float_loss_per_step(dry_run):
    check_losses_are_floats(dry_run())


def test_the_loss_falls_on_the_quotes(dry_run):
    check_loss_falls(dry_run(), DRY_STEP_DROP, DRY_EVAL_DROP)


def test_only_lora_weights_change_and_int8_weights_stay_bit_identical(dry_run):
    run = dry_run()
    int8_tensors = [n for n, p in run.model.state_dict().items() if p.dtype == torch.int8]
    assert int8_tensors, msg("10.int8_weights_present")
    check_only_lora_changed(run)


def test_trainable_parameters_are_exactly_the_lora_formula(dry_run):
    run = dry_run()
    # tiny OPT: 2 layers × (q_proj + v_proj) × 16 × (32 + 32)
    expected = 2 * 2 * 16 * (32 + 32)
    assert run.formula == expected, msg("10.dry_run_formula", expected=expected, got=run.formula)
    check_trainable_is_the_formula(run)


def test_the_first_step_runs_at_learning_rate_zero_as_warmup_starts_at_zero(tiny_dir, quotes):
    model, tokenizer = fresh(tiny_dir)
    before = cap.lora_tensors(model)
    finetune.finetune(
        model, tokenizer, quotes, max_steps=1, batch_size=2, grad_accum=1, lr=1e-2,
        warmup_steps=1, progress=False,
    )  # fmt: skip
    moved = [n for n, t in cap.lora_tensors(model).items() if not torch.equal(t, before[n])]
    assert not moved, msg("10.warmup_starts_at_zero", count=len(moved), example=moved[0])
    model, tokenizer = fresh(tiny_dir)
    finetune.finetune(
        model, tokenizer, quotes, max_steps=1, batch_size=2, grad_accum=1, lr=1e-2,
        warmup_steps=0, progress=False,
    )  # fmt: skip
    moved = [n for n, t in cap.lora_tensors(model).items() if not torch.equal(t, before[n])]
    assert moved, msg("10.no_warmup_moves_weights")


@pytest.fixture(scope="module")
def recorded(tiny_dir, quotes):
    """finetune on 6 quotes, 3 steps of 2 micro-batches of 2: 12 rows, two passes."""
    done = {}

    def run():
        if "calls" not in done:
            model, tokenizer = fresh(tiny_dir)
            subset = quotes.select(range(6))
            cache_before = model.config.use_cache
            losses, calls = finetune_recorded(
                model, tokenizer, subset, max_steps=3, batch_size=2, grad_accum=2,
                lr=1e-3, warmup_steps=1, seed=0,
            )  # fmt: skip
            limit, eos = model.config.max_position_embeddings, tokenizer.eos_token_id
            # What tokenize_quotes makes of each quote (06): its ids, one EOS, EOS kept last.
            full = [(*tokenizer(q)["input_ids"], eos) for q in subset["quote"]]
            expected = [row if len(row) <= limit else (*row[: limit - 1], eos) for row in full]
            done.update(
                calls=calls,
                losses=losses,
                expected=expected,
                cache_before=cache_before,
                cache_after=model.config.use_cache,
                training_after=model.training,
            )
        return SimpleNamespace(**done)

    return run


def test_each_step_takes_grad_accum_micro_batches_of_batch_size_from_shuffled_cycled_data(
    recorded,
):
    r = recorded()
    sizes = [len(call.rows) for call in r.calls]
    assert sizes == [2] * 6, msg("10.micro_batches", passes=len(sizes), sizes=sizes)
    assert all(call.has_labels for call in r.calls), msg("10.micro_batches_carry_labels")
    seen = Counter(row for call in r.calls for row in call.rows)
    unknown = [row for row in seen if row not in r.expected]
    assert not unknown, msg("10.rows_are_quotes")
    counts = [seen[row] for row in r.expected]
    assert counts == [2] * 6, msg("10.two_passes", counts=counts)
    first_pass = [row for call in r.calls for row in call.rows][:6]
    order = [r.expected.index(row) for row in first_pass]
    assert order != list(range(6)), msg("10.shuffled")


def test_training_runs_in_train_mode_without_cache_or_cpu_autocast_and_restores_the_cache(
    recorded,
):
    r = recorded()
    assert all(call.training for call in r.calls), msg("10.train_mode")
    assert not any(call.use_cache for call in r.calls), msg("10.no_cache_while_training")
    assert not any(call.autocast for call in r.calls), msg("10.no_autocast_on_cpu")
    assert r.cache_before and r.cache_after, msg("10.cache_restored")


def test_the_same_seed_gives_the_same_losses_and_another_seed_others(tiny_dir, quotes):
    settings = {"max_steps": 3, "batch_size": 2, "grad_accum": 1, "lr": 1e-2, "warmup_steps": 0}
    runs = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        torch.manual_seed(1234)  # the same LoRA A (drawn from the global RNG by inject_lora)
        model, tokenizer = fresh(tiny_dir)
        torch.manual_seed(99 + len(runs))  # finetune must seed itself, not rely on this state
        runs[name] = finetune.finetune(
            model, tokenizer, quotes, seed=seed, progress=False, **settings
        )
    assert runs["first"] == runs["again"], msg(
        "10.same_seed_same_losses", first=runs["first"], again=runs["again"]
    )
    assert runs["first"] != runs["other"], msg("10.other_seed_other_losses")


def test_generate_decodes_greedily_and_starts_with_the_prompt(dry_run):
    run = dry_run()
    check_generation(run.model, run.tokenizer)
    check_generation(run.model, run.tokenizer, prompt="Nature ", max_new_tokens=5)


class EosAtThirdToken:
    """Makes the model's 3rd new token EOS (only the 3rd): a stand-in for a model fine-tuned on
    quotes that end with EOS. Records every token the model picks (lm_head is called once per
    generated token, on the last position)."""

    def __init__(self, model, eos):
        self.eos, self.picked = eos, []
        self.handle = model.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, module, args, output):
        if len(self.picked) == 2:
            output = output.clone()
            output[..., -1, self.eos] = output[..., -1, :].max() + 10.0
        self.picked.append(output[..., -1, :].argmax(dim=-1)[0].item())
        return output

    def remove(self):
        self.handle.remove()


def check_stops_at_eos(model, tokenizer, what):
    max_new = 12
    ids = tokenizer(PROMPT)["input_ids"]
    eos = tokenizer.eos_token_id
    spy = EosAtThirdToken(model, eos)
    try:
        text = finetune.generate(model, tokenizer, PROMPT, max_new)
    finally:
        spy.remove()
    assert spy.picked[2:3] == [eos], msg("10.third_token_is_eos", picked=spy.picked)
    expected = tokenizer.decode(ids + spy.picked[:3], skip_special_tokens=True)
    assert len(spy.picked) == 3 and text == expected, msg(
        "10.stops_at_eos",
        what=what,
        expected=expected,
        count=len(spy.picked),
        max_new=max_new,
        got=text,
    )


def test_generate_stops_when_the_model_emits_eos(tiny_dir):
    model, tokenizer = fresh(tiny_dir)
    check_stops_at_eos(model, tokenizer, msg("10.with_own_generation_config"))


def test_generate_stops_at_the_tokenizers_eos_even_when_the_model_config_names_none(tiny_dir):
    model, tokenizer = fresh(tiny_dir)
    # Some checkpoints' generation configs name no EOS; the tokenizer's is what training used.
    model.generation_config.eos_token_id = None
    check_stops_at_eos(model, tokenizer, msg("10.with_no_eos_in_generation_config"))


def test_generate_restores_the_models_mode_and_use_cache(tiny_dir):
    # As in a sample generated in the middle of training: train mode, cache off. And in eval
    # mode, so that "always model.train() afterwards" shows too.
    model, tokenizer = fresh(tiny_dir)
    for training, use_cache in ((True, False), (False, False)):
        model.train(training)
        model.config.use_cache = use_cache
        modes = {name: module.training for name, module in model.named_modules()}
        finetune.generate(model, tokenizer, PROMPT, max_new_tokens=3)
        changed = [name for name, module in model.named_modules() if module.training != modes[name]]
        assert not changed, msg(
            "10.generate_restores_mode",
            before=training,
            after=model.training,
            changed=len(changed),
            total=len(modes),
        )
        assert model.config.use_cache == use_cache, msg(
            "10.generate_restores_use_cache", before=use_cache, after=model.config.use_cache
        )


def test_the_saved_adapter_reloads_to_identical_logits_with_ours_and_with_peft(
    dry_run, tiny_dir, tmp_path
):
    run = dry_run()
    # The same int8 base, the same fp32 LoRA weights, the same CPU kernels: bit for bit.
    check_adapter_round_trip(run, tiny_dir, tmp_path / "adapter", atol=0.0)


def test_the_command_line_runs_the_whole_job(tmp_path, monkeypatch, capsys):
    # Whatever this machine has cached, take the built-in small OPT (random weights, --small):
    # a pipeline check in seconds.
    monkeypatch.setattr("lora_kata.capstone.models.cached_snapshot", lambda *args, **kwargs: None)
    out = tmp_path / "out"
    argv = ["--max-steps", "2", "--out", str(out), "--no-progress", "--max-new-tokens", "8",
            "--batch-size", "2", "--grad-accum", "2", "--small"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_capstone(current(), argv)
    assert code == 0, msg("10.exit_code", code=code)
    printed = capsys.readouterr().out
    # Python prints FutureWarnings by default: a deprecated checkpointing call would show.
    deprecated = [
        str(w.message)
        for w in caught
        if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)
    ]
    assert not deprecated, msg("10.deprecation_warning", warning=deprecated[0][:120])
    small = SMALL_OPT
    trainable = small["num_hidden_layers"] * 2 * 16 * (2 * small["hidden_size"])
    assert f"trainable params: {trainable} || all params: " in printed, msg(
        "10.prints_trainable_line", trainable=trainable, printed=printed
    )
    assert "built-in small OPT" in printed, msg("10.says_which_model", printed=printed)
    generation = printed.rsplit(GENERATION_HEADER, 1)[-1].strip()
    assert generation.startswith(PROMPT), msg("10.generation_follows_prompt", printed=printed)
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), msg("10.saves_under_out", name=name)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", msg("10.loss_png")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["losses"]) == 2, msg("10.two_losses", metrics=metrics)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.timeout(3600)
def test_the_capstone_on_a_gpu(tmp_path, quotes, eval_quotes, record_property):
    """The tutorial's job on CUDA (fp16 autocast + GradScaler), checked end to end.

    LORA_KATA_MODEL=facebook/opt-6.7b (any hub id or local path) runs the tutorial's settings
    (200 steps, LORA_KATA_GPU_STEPS to change); without it, the built-in small OPT runs the
    CLI's small-model settings. Metrics and the loss plot go to .lora_kata/capstone/.
    """
    reason = cap.gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    name = os.environ.get("LORA_KATA_MODEL", "").strip()
    if name:
        path, settings = name, dict(TUTORIAL, seed=0)
        steps = os.environ.get("LORA_KATA_GPU_STEPS")
        if steps:
            settings.update(max_steps=int(steps), warmup_steps=int(steps) // 2)
    else:
        path, settings = str(build_small_opt(tmp_path / "small-opt")), dict(SMALL, seed=0)

    run = cap.prepare_run(PIECES, path, eval_quotes, settings)
    assert input_device(run.model).type == "cuda", msg("10.model_on_cuda")
    cap.train_run(run, finetune, quotes)
    text = finetune.generate(run.model, run.tokenizer)
    loaded, peak = run.gpu_loaded_bytes, run.gpu_peak_bytes
    bound = PEAK_FACTOR * loaded + PEAK_SLACK
    summary = {
        "generation": text,
        "peak_bound_bytes": int(bound),
        "gpu": torch.cuda.get_device_name(),
        "implementation": current(),
    }
    where = cap.plot_and_record(run, cap.ARTIFACTS, summary)
    for key in ("gpu_memory_loaded_bytes", "gpu_memory_peak_bytes"):
        record_property(key, getattr(run, key.replace("memory_", "")))
    print(
        f"\n{path}: loaded {loaded / 2**30:.2f} GiB, peak {peak / 2**30:.2f} GiB "
        f"(bound {bound / 2**30:.2f} GiB), loss {run.losses[0]:.3f} → {run.losses[-1]:.3f}, "
        f"metrics and loss.png in {where}\n{text}"
    )

    check_losses_are_floats(run)
    check_trainable_is_the_formula(run)
    check_only_lora_changed(run)
    if name:
        check_loss_falls(run, PRETRAINED_RELATIVE_DROP, PRETRAINED_RELATIVE_DROP, relative=True)
    else:
        check_loss_falls(run, SMALL_STEP_DROP, SMALL_EVAL_DROP)
    assert 0 < peak <= bound, msg(
        "10.peak_gpu_memory",
        peak=peak / 2**30,
        loaded=loaded / 2**30,
        bound=bound / 2**30,
    )
    assert text.startswith(PROMPT), msg("10.gpu_generation_starts_with_prompt", text=text)
    # Two 8-bit copies of the same model on one GPU: cuBLAS may pick different kernels, so
    # allow fp16 rounding (1e-3 on logits of order 10); a wrong or missing adapter tensor moves
    # them by far more (checked inside). Not measured on a GPU.
    check_adapter_round_trip(run, path, tmp_path / "adapter", atol=1e-3)
