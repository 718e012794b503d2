"""Exercise 11: packing (exercises/pack.py, and finetune(packing=True) in exercises/finetune.py).

padding_waste measures what padding costs; pack_quotes puts whole quotes side by side in rows
with the mask, positions and labels that keep the maths unchanged. The central property: a
tiny OPT's mean loss and its LoRA gradients on a packed batch equal those on the same quotes
padded one per row (collate_for_causal_lm), under eager and sdpa attention (fp32, CPU).
Quotes here are built directly (BOS, random ordinary tokens, EOS), not with tokenize_quotes.
"""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.impl import implementation
from lora_kata.testing_training import lora_names, tiny_lora_opt

pack = implementation("pack")
data = implementation("data")
finetune = implementation("finetune")

PAD, EOS = 1, 2  # lora_kata.tiny's <pad> and </s> (OPT's BOS is </s> too)
VOCAB = 512
# fp32 on a tiny model: packed and padded differ by summation order only (measured ≤ 2e-8 on
# gradients of size ~0.1); a mask or label mistake moves the loss by ≥ 1e-2.
LOSS_RTOL = 1e-5
GRAD_ATOL = 1e-6
# finetune(packing=True), 6 steps of 2 × 2 packed rows at lr 1e-2 on a random tiny OPT: the loss
# on 8 fixed quotes fell by 0.028-0.052 over model seeds 1-6 (0.052 at seed 1); with lr 0 by 0.
FINETUNE_DROP = 0.015


def make_quotes(lengths, seed=0):
    """One feature per length: BOS, random ordinary tokens, EOS (length ≥ 2). Random tokens
    make every quote's contents unique, so a quote can be found again in a packed row."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for n in lengths:
        ids = torch.randint(4, VOCAB, (n,), generator=generator)
        ids[0], ids[-1] = EOS, EOS
        features.append({"input_ids": ids.tolist(), "attention_mask": [1] * n})
    return features


def fit_rows(lengths, max_length, *, first_fit=True):
    """Quote indices per row: first fit (any row with room) or next fit (only the last row)."""
    rows, used = [], []
    for i, n in enumerate(lengths):
        candidates = range(len(rows)) if first_fit else range(len(rows) - 1, len(rows))
        target = next((r for r in candidates if r >= 0 and used[r] + n <= max_length), None)
        if target is None:
            rows.append([i])
            used.append(n)
        else:
            rows[target].append(i)
            used[target] += n
    return rows


def expected_batch(features, max_length):
    """What DESIGN.md's pack_quotes returns, built independently: (ids, labels, positions,
    allowed, spans) with allowed[r, i, j] True where token i of row r may attend to j."""
    lengths = [len(f["input_ids"]) for f in features]
    rows = fit_rows(lengths, max_length)
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool)
    spans = []  # (row, start, end) of every real quote
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            end = start + lengths[i]
            quote = torch.tensor(features[i]["input_ids"])
            ids[r, start:end] = quote
            labels[r, start + 1 : end] = quote[1:]
            positions[r, start:end] = torch.arange(lengths[i])
            allowed[r, start:end, start:end] = torch.ones(lengths[i], lengths[i]).tril().bool()
            spans.append((r, start, end))
            start = end
    return ids, labels, positions, allowed, spans


def packed(features, max_length):
    batch = pack.pack_quotes(features, max_length, PAD)
    assert isinstance(batch, dict), f"pack_quotes should return a dict, got {type(batch)}"
    missing = {"input_ids", "labels", "position_ids", "attention_mask"} - set(batch)
    assert not missing, f"pack_quotes' dict lacks {sorted(missing)} (found {sorted(batch)})"
    return batch


def quote_lengths(max_quote=12):
    return st.lists(st.integers(2, max_quote), min_size=1, max_size=9)


# ----------------------------------------------------------------------------- padding_waste


def test_padding_waste_is_the_fraction_of_pad_slots():
    cases = [
        ([3, 5, 2, 2], 2, 2 / 14),  # batches [3, 5] → 10 slots, [2, 2] → 4 slots; 12 tokens
        ([4, 1, 1], 3, 6 / 12),  # one batch padded to 4: 12 slots, 6 tokens
        ([4, 1, 1], 1, 0.0),  # one sequence per batch: never any padding
        ([7, 7, 7, 7], 4, 0.0),  # equal lengths: nothing to pad
        ([2, 6, 3], 2, 4 / 15),  # the last batch [3] is alone: 12 + 3 slots
    ]
    for lengths, batch_size, expected in cases:
        got = pack.padding_waste(lengths, batch_size)
        assert got == pytest.approx(expected, abs=1e-12), (
            f"padding_waste({lengths}, {batch_size}) should be {expected:.4f} (pad slots / all "
            f"slots, each batch padded to its own longest), got {got!r}: padded to the global "
            "longest, counted the last short batch as full, or returned the used fraction?"
        )


@given(quote_lengths(max_quote=40), st.integers(1, 6))
def test_padding_waste_equals_the_pads_collate_for_causal_lm_adds(lengths, batch_size):
    got = pack.padding_waste(lengths, batch_size)
    features = make_quotes(lengths)
    pads = slots = 0
    for start in range(0, len(features), batch_size):
        mask = data.collate_for_causal_lm(features[start : start + batch_size], PAD)[
            "attention_mask"
        ]
        pads += int((mask == 0).sum())
        slots += mask.numel()
    assert got == pytest.approx(pads / slots, abs=1e-12), (
        f"padding_waste({lengths}, {batch_size}) = {got!r}, but collating consecutive batches "
        f"of {batch_size} adds {pads} pads to {slots} slots ({pads / slots:.4f})"
    )


def test_padding_waste_rejects_a_batch_size_of_zero():
    # ZeroDivisionError is what Python itself says; a ValueError naming batch_size is kinder.
    with pytest.raises((ValueError, ZeroDivisionError)):
        pack.padding_waste([3, 4], 0)


# ----------------------------------------------------------------------------- pack_quotes


def check_layout(features, max_length, batch):
    ids, *_ = expected_batch(features, max_length)
    got = batch["input_ids"]
    if got.shape == ids.shape and torch.equal(got, ids):
        return
    lengths = [len(f["input_ids"]) for f in features]
    where = f"lengths {lengths}, max_length {max_length}"
    rows = [row[row != PAD].tolist() for row in got]
    for f in features:
        quote = f["input_ids"]
        whole = any(
            any(row[k : k + len(quote)] == quote for k in range(len(row) - len(quote) + 1))
            for row in rows
        )
        assert whole, (
            f"a quote of {len(quote)} tokens is not whole in any row ({where}): quotes split "
            "across rows. Pack whole quotes only; a quote that fits in no row opens a new row"
        )
    assert got.shape[1] <= max_length, (
        f"rows of {got.shape[1]} tokens exceed max_length={max_length} ({where})"
    )
    next_rows = fit_rows(lengths, max_length, first_fit=False)
    if len(got) == len(next_rows) != len(fit_rows(lengths, max_length)):
        raise AssertionError(
            f"{len(got)} rows for {where}: that is next fit (only the last row is tried). "
            "First fit puts each quote into the FIRST row with room, earlier rows included, "
            f"which needs {ids.shape[0]} rows"
        )
    assert got.shape == ids.shape, (
        f"input_ids should have shape {tuple(ids.shape)} (rows × the longest row, right-padded), "
        f"got {tuple(got.shape)} ({where}). Next fit instead of first fit? Padded to "
        "max_length instead of the longest row?"
    )
    raise AssertionError(
        f"input_ids differ from first fit in order ({where}):\nexpected {ids.tolist()}\n"
        f"got      {got.tolist()}\nEach quote goes after the quotes already in the first row "
        "with room (next fit, or a sorted order, places them elsewhere); padding on the right "
        "with pad_token_id"
    )


def test_pack_quotes_places_whole_quotes_first_fit_and_pads_to_the_longest_row():
    # max_length 10: 6 → row 0; 5 → row 1; 4 → row 0 (full); 3 → row 1; 2 → row 1 (full).
    # Next fit would need 3 rows: [6], [5, 4], [3, 2].
    features = make_quotes([6, 5, 4, 3, 2])
    batch = packed(features, 10)
    check_layout(features, 10, batch)
    assert batch["input_ids"].dtype == torch.long, (
        f"input_ids should be torch.long, got {batch['input_ids'].dtype}"
    )


@given(quote_lengths(), st.integers(12, 30))
def test_pack_quotes_first_fit_holds_for_any_quote_lengths(lengths, max_length):
    features = make_quotes(lengths)
    check_layout(features, max_length, packed(features, max_length))


@given(quote_lengths(), st.integers(12, 30))
def test_labels_are_ids_except_padding_and_each_quotes_first_token(lengths, max_length):
    features = make_quotes(lengths)
    batch = packed(features, max_length)
    ids, labels, *_ = expected_batch(features, max_length)
    got = batch["labels"]
    if got.shape == labels.shape and torch.equal(got, labels):
        return
    assert got.shape == labels.shape, (
        f"labels: shape {tuple(got.shape)}, expected {tuple(labels.shape)}"
    )
    firsts = (labels == -100) & (ids != PAD)
    if (got[firsts] != -100).any():
        raise AssertionError(
            "labels cross quotes: the first token of a quote is not -100. The model shifts "
            "labels itself, so the previous quote's last token (EOS) would be trained to "
            "predict the next quote's first token; set labels to -100 at every quote's start"
        )
    assert (got[ids == PAD] == -100).all(), "labels: padding must be -100 (ignored by the loss)"
    raise AssertionError(
        f"labels should be input_ids (unshifted: the model shifts them) with -100 on padding "
        f"and on each quote's first token:\nexpected {labels.tolist()}\ngot      {got.tolist()}"
    )


@given(quote_lengths(), st.integers(12, 30))
def test_position_ids_restart_at_zero_for_each_quote(lengths, max_length):
    features = make_quotes(lengths)
    batch = packed(features, max_length)
    *_, positions, _, spans = expected_batch(features, max_length)
    got = batch["position_ids"]
    assert got.shape == positions.shape, (
        f"position_ids: shape {tuple(got.shape)}, expected {tuple(positions.shape)}"
    )
    for r, start, end in spans:  # padding positions are free (any value the model has)
        run = got[r, start:end].tolist()
        assert run == list(range(end - start)), (
            f"position_ids do not restart at 0 for each quote: a quote at columns "
            f"{start}..{end - 1} of row {r} got {run}. Each quote should see positions "
            "0, 1, ..., as if it stood alone (OPT learns one embedding per position)"
        )


def test_the_attention_mask_is_4d_float_causal_within_each_quote_closed_elsewhere():
    features = make_quotes([4, 3, 5, 2, 3])
    batch = packed(features, 9)
    *_, allowed, _ = expected_batch(features, 9)
    mask = batch["attention_mask"]
    assert mask.dtype != torch.bool, (
        "attention_mask is a boolean mask: OPT's eager attention ADDS the mask to the scores, "
        "so True/False become +1/+0 and nothing is masked. Use a float mask: 0 where a token may "
        "attend, torch.finfo(dtype).min elsewhere"
    )
    assert mask.is_floating_point(), (
        f"attention_mask should be a float tensor (torch.float32), got {mask.dtype}: an additive "
        "mask, 0 where a token may attend, torch.finfo(dtype).min elsewhere"
    )
    rows, width = allowed.shape[0], allowed.shape[1]
    assert mask.shape == (rows, 1, width, width), (
        f"attention_mask should be 4-D (rows, 1, L, L) = {(rows, 1, width, width)}, got "
        f"{tuple(mask.shape)}: one L × L (query × key) mask per row, one head dimension"
    )
    closed = torch.finfo(mask.dtype).min
    values = set(mask.unique().tolist())
    assert values <= {0.0, closed}, (
        f"attention_mask should hold only 0 and torch.finfo({mask.dtype}).min = {closed:g}, "
        f"found {sorted(values)[:6]}: -inf makes fully closed padding rows NaN; 1/0 is a "
        "boolean mask in disguise"
    )
    opened = mask[:, 0] == 0
    leaks = opened & ~allowed
    if leaks.any():
        r, i, j = (int(x) for x in leaks.nonzero()[0])
        raise AssertionError(
            f"row {r}: token {i} may attend to token {j}, which it must not: "
            + (
                "a later token (the mask must be causal, j ≤ i)"
                if j > i
                else "another quote or padding (quotes must not attend to each other)"
            )
        )
    shut = allowed & ~opened
    if shut.any():
        r, i, j = (int(x) for x in shut.nonzero()[0])
        raise AssertionError(
            f"row {r}: token {i} may not attend to token {j} of its own quote (j ≤ i): "
            "within a quote the mask must be open (0) on and below the diagonal"
        )


def test_a_quote_longer_than_max_length_is_a_value_error():
    features = make_quotes([3, 9, 2])
    with pytest.raises(ValueError):
        pack.pack_quotes(features, 8, PAD)
    batch = packed(features, 9)  # exactly max_length fits, alone in its row
    assert batch["input_ids"].shape[1] == 9, "a quote of exactly max_length tokens fits a row"


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def models():
    """The same tiny LoRA OPT (fp32, B ≠ 0 so every LoRA matrix gets a gradient) under eager
    and under sdpa attention."""
    return {impl: tiny_lora_opt(seed=0, attn_implementation=impl)[0] for impl in ("eager", "sdpa")}


def loss_and_lora_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@given(lengths=quote_lengths(), max_length=st.integers(12, 30))
def test_packed_loss_and_lora_gradients_equal_padded_one_quote_per_row(
    models, attention, lengths, max_length
):
    features = make_quotes(lengths, seed=len(lengths))
    batch = packed(features, max_length)
    model = models[attention]
    packed_loss, packed_grads = loss_and_lora_grads(model, batch)
    padded = data.collate_for_causal_lm(features, PAD)
    padded_loss, padded_grads = loss_and_lora_grads(model, padded)
    assert packed_loss == pytest.approx(padded_loss, rel=LOSS_RTOL), (
        f"{attention} attention, lengths {lengths}, max_length {max_length}: the mean loss on "
        f"the packed batch is {packed_loss:.6f}, on the same quotes padded one per row "
        f"{padded_loss:.6f}. Packing must not change the maths: quotes attending to each other "
        "(mask), positions not restarting, or a quote's first token still a label?"
    )
    names = lora_names(model)
    assert sorted(packed_grads) == sorted(names), "every LoRA matrix should get a gradient"
    for name in names:
        gap = (packed_grads[name] - padded_grads[name]).abs().max().item()
        assert gap <= GRAD_ATOL, (
            f"{attention} attention: the gradient of {name} on the packed batch differs from "
            f"the padded one by {gap:.3g} (tolerance {GRAD_ATOL:g}), though the losses agree"
        )


def separate_logits(model, features):
    """Each quote alone, one row, no padding: the truth packing must reproduce."""
    with torch.no_grad():
        return [model(input_ids=torch.tensor([f["input_ids"]])).logits[0] for f in features]


def packed_logits_per_quote(model, batch, features, max_length, **overrides):
    *_, spans = expected_batch(features, max_length)
    with torch.no_grad():
        logits = model(**{**{k: v for k, v in batch.items() if k != "labels"}, **overrides}).logits
    return [logits[r, start:end] for r, start, end in spans]


def largest_gap(ours, truth):
    return max((a - b).abs().max().item() for a, b in zip(ours, truth, strict=True))


def test_a_boolean_mask_is_wrong_under_eager_attention_though_sdpa_takes_it(models):
    features = make_quotes([5, 7, 3, 6])
    batch = packed(features, 12)
    allowed = batch["attention_mask"] == 0  # the same mask as booleans: True = may attend
    gaps = {}
    for impl, model in models.items():
        truth = separate_logits(model, features)
        float_gap = largest_gap(packed_logits_per_quote(model, batch, features, 12), truth)
        assert float_gap <= 1e-5, (
            f"{impl}: your packed logits differ from each quote alone by {float_gap:.3g}"
        )
        gaps[impl] = largest_gap(
            packed_logits_per_quote(model, batch, features, 12, attention_mask=allowed), truth
        )
    # transformers 5.24 hands a 4-D mask to the attention as is: sdpa reads a boolean mask as
    # "True may attend", eager adds it to the scores (+1 / +0), which masks nothing.
    assert gaps["sdpa"] <= 1e-5, f"sdpa with a boolean mask should be right, gap {gaps['sdpa']}"
    assert gaps["eager"] > 1e-3, (
        f"eager with a boolean mask should be wrong (it adds 1/0 to the scores), gap "
        f"{gaps['eager']}: has transformers' OPT started converting boolean masks?"
    )


def test_position_ids_alone_let_quotes_attend_to_each_other(models):
    """transformers' DataCollatorWithFlattening packs with position_ids and no mask; OPT
    (transformers 5.24) does not derive a mask from them, so the quotes see each other."""
    from transformers import DataCollatorWithFlattening

    features = make_quotes([5, 7, 3])
    ours = packed(features, 15)
    model = models["sdpa"]
    truth = separate_logits(model, features)
    gap = largest_gap(packed_logits_per_quote(model, ours, features, 15), truth)
    assert gap <= 1e-5, (
        f"your packed batch (position_ids and 4-D mask) should match each quote alone, off by "
        f"{gap:.3g}: fix pack_quotes first (see the mask and position tests)"
    )
    flat = DataCollatorWithFlattening()([{"input_ids": f["input_ids"]} for f in features])
    assert "attention_mask" not in flat, f"the flattening collator now sends {sorted(flat)}"
    # transformers' mask code can read quote boundaries from restarting positions ...
    from transformers.masking_utils import find_packed_sequence_indices

    sequence = find_packed_sequence_indices(flat["position_ids"]).tolist()
    assert sequence == [[0] * 5 + [1] * 7 + [2] * 3], f"packed sequence indices {sequence}"
    with torch.no_grad():
        logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits[0]
    lengths = [len(f["input_ids"]) for f in features]
    first = lengths[0]
    assert (logits[:first] - truth[0]).abs().max() <= 1e-5, "the first quote sees no other"
    second = logits[first : first + lengths[1]]
    assert (second - truth[1]).abs().max() > 1e-3, (
        "with position_ids alone the second quote should see the first (OPT builds a plain "
        "causal mask); if it no longer does, transformers learned packed sequences for OPT"
    )
    # ... and without position_ids OPT derives positions from the mask, which a 4-D mask breaks.
    with pytest.raises(IndexError), torch.no_grad():
        model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"])


def test_float32_min_overflows_fp16_so_the_given_helper_opens_padding_rows():
    """finfo(float32).min is beyond fp16's range: under fp16 autocast the mask's closed
    entries become -inf, and a padding row closed everywhere gives NaN. pack.packed_batches
    (given) lets each padding token attend to itself; real tokens are untouched."""
    features = make_quotes([6, 3, 5])  # max_length 8: rows [6], [3, 5] → row 0 has 2 pads
    mask = packed(features, 8)["attention_mask"]
    assert torch.isnan(torch.softmax(mask.half().float(), dim=-1)).any(), (
        "expected padding rows of your mask to be closed everywhere (finfo(dtype).min), which "
        "fp16 turns into -inf and softmax into NaN"
    )
    given = next(pack.packed_batches(features, iter(range(3)), 2, 8, PAD))["attention_mask"]
    assert not torch.isnan(torch.softmax(given.half().float(), dim=-1)).any(), (
        "pack.packed_batches (given) should open each padding token to itself, so that fp16 "
        "softmax has no NaN row; did the given helper change?"
    )
    real = mask[:, 0].diagonal(dim1=-2, dim2=-1) == 0  # real tokens see themselves
    assert torch.equal(given[:, 0][real], mask[:, 0][real]), "real tokens' rows must not change"


# ----------------------------------------------------------------------------- finetune


@pytest.fixture(scope="module")
def quotes_and_tokenizer():
    import datasets

    from lora_kata.tiny import quote_texts, quotes_tokenizer

    datasets.disable_progress_bars()
    return datasets.Dataset.from_dict({"quote": quote_texts()[:24]}), quotes_tokenizer()


class Recorder:
    """What each forward pass of finetune received."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append({k: v for k, v in kwargs.items() if torch.is_tensor(v)})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def call_finetune(model, tokenizer, dataset, **settings):
    try:
        return finetune.finetune(model, tokenizer, dataset, progress=False, **settings)
    except TypeError as error:
        if "packing" in str(error) or "max_length" in str(error):
            raise AssertionError(
                f"finetune does not take packing / max_length ({error}): add `packing: bool = "
                "False, max_length: int | None = None` after progress in exercises/finetune.py"
            ) from error
        raise


def quote_runs(call):
    """Token counts of the quotes in one packed micro-batch (restarts of position_ids)."""
    ids, positions = call["input_ids"], call.get("position_ids")
    assert positions is not None, (
        "finetune(packing=True) should pass position_ids to the model: use the given "
        "pack.packed_batches for the micro-batches"
    )
    runs = []
    for row, pos in zip(ids, positions, strict=True):
        real = pos[row != PAD].tolist()
        starts = [k for k, p in enumerate(real) if p == 0] + [len(real)]
        runs += [b - a for a, b in itertools.pairwise(starts)]
    return runs


def fixed_batch_loss(model, tokenizer, dataset):
    rows = tokenizer(dataset["quote"][:8], truncation=True, max_length=32)["input_ids"]
    batch = data.collate_for_causal_lm([{"input_ids": r} for r in rows], PAD)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_finetune_with_packing_trains_on_batch_size_packed_rows(quotes_and_tokenizer):
    dataset, tokenizer = quotes_and_tokenizer
    model, _ = tiny_lora_opt(seed=1, randomise=False)
    before = fixed_batch_loss(model, tokenizer, dataset)
    settings = dict(max_steps=6, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=0)
    with Recorder(model) as recorder:
        losses = call_finetune(model, tokenizer, dataset, packing=True, max_length=64, **settings)
    assert len(losses) == 6, f"6 steps should give 6 losses, got {len(losses)}"
    assert len(recorder.calls) == 12, (
        f"6 steps × grad_accum 2 should be 12 forward passes, got {len(recorder.calls)}"
    )
    for call in recorder.calls:
        rows, width = call["input_ids"].shape
        assert rows == 2, (
            f"with packing each micro-batch should be batch_size = 2 packed rows, got {rows}"
        )
        assert width <= 64, f"packed rows of {width} tokens exceed max_length=64"
        mask = call.get("attention_mask")
        assert mask is not None and mask.dim() == 4 and mask.is_floating_point(), (
            "packed micro-batches need pack_quotes' 4-D float attention_mask, got "
            f"{None if mask is None else (mask.dim(), mask.dtype)}"
        )
    quotes_seen = sum(len(quote_runs(call)) for call in recorder.calls)
    assert quotes_seen > 2 * len(recorder.calls), (
        f"{len(recorder.calls)} micro-batches of 2 rows carried only {quotes_seen} quotes: the "
        "rows are not packed (several whole quotes per row of up to max_length tokens)"
    )
    after = fixed_batch_loss(model, tokenizer, dataset)
    assert before - after >= FINETUNE_DROP, (
        f"training with packing should lower the loss on 8 of the quotes by ≥ {FINETUNE_DROP}: "
        f"{before:.4f} → {after:.4f}"
    )


def test_finetune_packing_max_length_defaults_to_the_models_positions(quotes_and_tokenizer):
    dataset, tokenizer = quotes_and_tokenizer
    settings = dict(max_steps=1, batch_size=2, grad_accum=2, lr=1e-3, warmup_steps=0)
    for max_length, positions in ((None, 40), (24, 128)):
        model, _ = tiny_lora_opt(seed=2, randomise=False, max_position_embeddings=positions)
        with Recorder(model) as recorder:
            call_finetune(
                model, tokenizer, dataset, packing=True, max_length=max_length, **settings
            )
        limit = max_length or positions
        widths = [call["input_ids"].shape[1] for call in recorder.calls]
        longest_quote = max(max(quote_runs(call)) for call in recorder.calls)
        what = "the model's positions" if max_length is None else f"max_length={max_length}"
        assert max(widths) <= limit, (
            f"packed rows of {max(widths)} tokens exceed {what} ({limit}): max_length defaults "
            "to model.config.max_position_embeddings"
        )
        assert longest_quote == limit, (
            f"the longest quote in the micro-batches has {longest_quote} tokens; quotes longer "
            f"than {what} should be truncated to {limit} when tokenizing "
            "(tokenize_quotes(..., max_length=max_length))"
        )
