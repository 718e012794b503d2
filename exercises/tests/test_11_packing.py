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

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.raising import must_raise
from lora_kata.testing.training import lora_names, tiny_lora_opt

pack = implementation("pack")
data = implementation("data")
finetune = implementation("finetune")

PAD, EOS = 1, 2  # lora_kata.models.tiny's <pad> and </s> (OPT's BOS is </s> too)
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


def spans_in(features, batch):
    """(row, start, end) of every quote where the learner's own input_ids hold it, or None if a
    quote is not found whole: checks of positions, labels and masks then judge the learner's
    layout as it is (a wrong layout is the layout tests' finding, not theirs). Longest quotes
    are placed first and no token serves two quotes (a 2-token quote, BOS EOS, also matches
    where one quote ends and the next begins)."""
    rows = [row.tolist() for row in batch["input_ids"]]
    taken = [[False] * len(row) for row in rows]
    spans: list = [None] * len(features)
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    for i in order:
        quote = features[i]["input_ids"]
        n = len(quote)
        place = next(
            (
                (r, k)
                for r, row in enumerate(rows)
                for k in range(len(row) - n + 1)
                if row[k : k + n] == quote and not any(taken[r][k : k + n])
            ),
            None,
        )
        if place is None:
            return None
        r, k = place
        taken[r][k : k + n] = [True] * n
        spans[i] = (r, k, k + n)
    return spans


def packed(features, max_length):
    batch = pack.pack_quotes(features, max_length, PAD)
    assert isinstance(batch, dict), msg("11.returns_a_dict", got=type(batch))
    missing = {"input_ids", "labels", "position_ids", "attention_mask"} - set(batch)
    assert not missing, msg("11.dict_keys", missing=sorted(missing), found=sorted(batch))
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
        assert got == pytest.approx(expected, abs=1e-12), msg(
            "11.waste_fraction", lengths=lengths, batch_size=batch_size, expected=expected, got=got
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
    assert got == pytest.approx(pads / slots, abs=1e-12), msg(
        "11.waste_equals_collate_pads",
        lengths=lengths,
        batch_size=batch_size,
        got=got,
        pads=pads,
        slots=slots,
        share=pads / slots,
    )


def test_padding_waste_rejects_a_batch_size_of_zero():
    # ZeroDivisionError is what Python itself says; a ValueError naming batch_size is kinder.
    with must_raise((ValueError, ZeroDivisionError), msg("11.batch_size_zero_accepted")):
        pack.padding_waste([3, 4], 0)


# ----------------------------------------------------------------------------- pack_quotes


def check_layout(features, max_length, batch):
    ids, *_ = expected_batch(features, max_length)
    got = batch["input_ids"]
    if got.shape == ids.shape and torch.equal(got, ids):
        return
    lengths = [len(f["input_ids"]) for f in features]
    where = msg("11.layout_where", lengths=lengths, max_length=max_length)
    rows = [row[row != PAD].tolist() for row in got]
    for f in features:
        quote = f["input_ids"]
        whole = any(
            any(row[k : k + len(quote)] == quote for k in range(len(row) - len(quote) + 1))
            for row in rows
        )
        assert whole, msg("11.quote_not_whole", n=len(quote), where=where)
    assert got.shape[1] <= max_length, msg(
        "11.rows_exceed_max_length", width=got.shape[1], max_length=max_length, where=where
    )
    next_rows = fit_rows(lengths, max_length, first_fit=False)
    if len(got) == len(next_rows) != len(fit_rows(lengths, max_length)):
        raise AssertionError(
            msg("11.next_fit", rows=len(got), where=where, first_fit_rows=ids.shape[0])
        )
    assert got.shape == ids.shape, msg(
        "11.input_ids_shape", want=tuple(ids.shape), got=tuple(got.shape), where=where
    )
    raise AssertionError(
        msg("11.input_ids_order", where=where, expected=ids.tolist(), got=got.tolist())
    )


def test_pack_quotes_places_whole_quotes_first_fit_and_pads_to_the_longest_row():
    # max_length 10: 6 → row 0; 5 → row 1; 4 → row 0 (full); 3 → row 1; 2 → row 1 (full).
    # Next fit would need 3 rows: [6], [5, 4], [3, 2].
    features = make_quotes([6, 5, 4, 3, 2])
    batch = packed(features, 10)
    check_layout(features, 10, batch)
    assert batch["input_ids"].dtype == torch.long, msg(
        "11.input_ids_dtype", got=batch["input_ids"].dtype
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
    assert got.shape == labels.shape, msg(
        "11.labels_shape", got=tuple(got.shape), want=tuple(labels.shape)
    )
    firsts = (labels == -100) & (ids != PAD)
    if (got[firsts] != -100).any():
        raise AssertionError(msg("11.labels_cross_quotes"))
    assert (got[ids == PAD] == -100).all(), msg("11.labels_padding")
    raise AssertionError(msg("11.labels_values", expected=labels.tolist(), got=got.tolist()))


@given(quote_lengths(), st.integers(12, 30))
def test_position_ids_restart_at_zero_for_each_quote(lengths, max_length):
    features = make_quotes(lengths)
    batch = packed(features, max_length)
    *_, positions, _, spans = expected_batch(features, max_length)
    own = spans_in(features, batch)
    got = batch["position_ids"]
    want = tuple(batch["input_ids"].shape) if own is not None else tuple(positions.shape)
    assert tuple(got.shape) == want, msg("11.position_ids_shape", got=tuple(got.shape), want=want)
    # Padding positions are free (any value the model has).
    for r, start, end in own if own is not None else spans:
        run = got[r, start:end].tolist()
        assert run == list(range(end - start)), msg(
            "11.positions_restart", start=start, last=end - 1, row=r, run=run
        )


def check_mask_form(mask, want):
    """A 4-D float mask of shape `want`, checked before a test hands it to OPT (a boolean or
    2-D mask there ends in the model's own error, not in the mistake's name)."""
    assert mask.dtype != torch.bool, msg("11.mask_is_boolean")
    assert mask.is_floating_point(), msg("11.mask_is_float", got=mask.dtype)
    assert tuple(mask.shape) == want, msg("11.mask_shape", want=want, got=tuple(mask.shape))


def test_the_attention_mask_is_4d_float_causal_within_each_quote_closed_elsewhere():
    features = make_quotes([4, 3, 5, 2, 3])
    batch = packed(features, 9)
    *_, allowed, _ = expected_batch(features, 9)
    mask = batch["attention_mask"]
    rows, width = allowed.shape[0], allowed.shape[1]
    check_mask_form(mask, (rows, 1, width, width))
    closed = torch.finfo(mask.dtype).min
    values = set(mask.unique().tolist())
    assert values <= {0.0, closed}, msg(
        "11.mask_values", dtype=mask.dtype, closed=closed, found=sorted(values)[:6]
    )
    opened = mask[:, 0] == 0
    leaks = opened & ~allowed
    if leaks.any():
        r, i, j = (int(x) for x in leaks.nonzero()[0])
        why = msg("11.leak_later_token") if j > i else msg("11.leak_other_quote")
        raise AssertionError(msg("11.mask_leaks", row=r, i=i, j=j, why=why))
    shut = allowed & ~opened
    if shut.any():
        r, i, j = (int(x) for x in shut.nonzero()[0])
        raise AssertionError(msg("11.mask_shut", row=r, i=i, j=j))


def test_a_quote_longer_than_max_length_is_a_value_error():
    features = make_quotes([3, 9, 2])
    with must_raise(ValueError, msg("11.long_quote_accepted")):
        pack.pack_quotes(features, 8, PAD)
    batch = packed(features, 9)  # exactly max_length fits, alone in its row
    assert batch["input_ids"].shape[1] == 9, msg("11.exact_max_length_fits")


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
    assert packed_loss == pytest.approx(padded_loss, rel=LOSS_RTOL), msg(
        "11.packed_loss",
        attention=attention,
        lengths=lengths,
        max_length=max_length,
        packed=packed_loss,
        padded=padded_loss,
    )
    names = lora_names(model)
    assert sorted(packed_grads) == sorted(names), msg("11.every_lora_matrix_gets_a_gradient")
    for name in names:
        gap = (packed_grads[name] - padded_grads[name]).abs().max().item()
        assert gap <= GRAD_ATOL, msg(
            "11.packed_gradient", attention=attention, name=name, gap=gap, tolerance=GRAD_ATOL
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
        assert float_gap <= 1e-5, msg("11.float_mask_logits", impl=impl, gap=float_gap)
        gaps[impl] = largest_gap(
            packed_logits_per_quote(model, batch, features, 12, attention_mask=allowed), truth
        )
    # transformers 5.24 hands a 4-D mask to the attention as is: sdpa reads a boolean mask as
    # "True may attend", eager adds it to the scores (+1 / +0), which masks nothing.
    assert gaps["sdpa"] <= 1e-5, msg("11.sdpa_boolean_mask_right", gap=gaps["sdpa"])
    assert gaps["eager"] > 1e-3, msg("11.eager_boolean_mask_wrong", gap=gaps["eager"])


def test_position_ids_alone_let_quotes_attend_to_each_other(models):
    """transformers' DataCollatorWithFlattening packs with position_ids and no mask; OPT
    (transformers 5.24) does not derive a mask from them, so the quotes see each other."""
    from transformers import DataCollatorWithFlattening

    features = make_quotes([5, 7, 3])
    ours = packed(features, 15)
    rows, width = ours["input_ids"].shape[0], ours["input_ids"].shape[-1]
    check_mask_form(ours["attention_mask"], (rows, 1, width, width))
    model = models["sdpa"]
    truth = separate_logits(model, features)
    gap = largest_gap(packed_logits_per_quote(model, ours, features, 15), truth)
    assert gap <= 1e-5, msg("11.packed_matches_each_quote_alone", gap=gap)
    flat = DataCollatorWithFlattening()([{"input_ids": f["input_ids"]} for f in features])
    assert "attention_mask" not in flat, msg("11.flattening_collator_sends", keys=sorted(flat))
    # transformers' mask code can read quote boundaries from restarting positions ...
    from transformers.masking_utils import find_packed_sequence_indices

    sequence = find_packed_sequence_indices(flat["position_ids"]).tolist()
    assert sequence == [[0] * 5 + [1] * 7 + [2] * 3], msg(
        "11.packed_sequence_indices", sequence=sequence
    )
    with torch.no_grad():
        logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits[0]
    lengths = [len(f["input_ids"]) for f in features]
    first = lengths[0]
    assert (logits[:first] - truth[0]).abs().max() <= 1e-5, msg("11.first_quote_sees_no_other")
    second = logits[first : first + lengths[1]]
    assert (second - truth[1]).abs().max() > 1e-3, msg("11.second_quote_sees_the_first")
    # ... and without position_ids OPT derives positions from the mask, which a 4-D mask breaks.
    with must_raise(IndexError, msg("11.no_position_ids_with_4d_mask")), torch.no_grad():
        model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"])


def test_float32_min_overflows_fp16_so_the_given_helper_opens_padding_rows():
    """finfo(float32).min is beyond fp16's range: under fp16 autocast the mask's closed
    entries become -inf, and a padding row closed everywhere gives NaN. pack.packed_batches
    (given) lets each padding token attend to itself; real tokens are untouched."""
    features = make_quotes([6, 3, 5])  # max_length 8: rows [6], [3, 5] → row 0 has 2 pads
    mask = packed(features, 8)["attention_mask"]
    assert torch.isnan(torch.softmax(mask.half().float(), dim=-1)).any(), msg(
        "11.padding_rows_closed"
    )
    given = next(pack.packed_batches(features, iter(range(3)), 2, 8, PAD))["attention_mask"]
    assert not torch.isnan(torch.softmax(given.half().float(), dim=-1)).any(), msg(
        "11.given_helper_opens_padding"
    )
    real = mask[:, 0].diagonal(dim1=-2, dim2=-1) == 0  # real tokens see themselves
    assert torch.equal(given[:, 0][real], mask[:, 0][real]), msg("11.real_rows_unchanged")


# ----------------------------------------------------------------------------- finetune


@pytest.fixture(scope="module")
def quotes_and_tokenizer():
    import datasets

    from lora_kata.models.tiny import quote_texts, quotes_tokenizer

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
            raise AssertionError(msg("11.finetune_lacks_packing", error=error)) from error
        raise


def quote_runs(call):
    """Token counts of the quotes in one packed micro-batch (restarts of position_ids)."""
    ids, positions = call["input_ids"], call.get("position_ids")
    assert positions is not None, msg("11.finetune_passes_position_ids")
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
    assert len(losses) == 6, msg("11.six_losses", got=len(losses))
    assert len(recorder.calls) == 12, msg("11.twelve_forward_passes", got=len(recorder.calls))
    for call in recorder.calls:
        rows, width = call["input_ids"].shape
        assert rows == 2, msg("11.micro_batch_rows", got=rows)
        assert width <= 64, msg("11.micro_batch_width", width=width)
        mask = call.get("attention_mask")
        assert mask is not None and mask.dim() == 4 and mask.is_floating_point(), msg(
            "11.micro_batch_mask", got=None if mask is None else (mask.dim(), mask.dtype)
        )
    quotes_seen = sum(len(quote_runs(call)) for call in recorder.calls)
    assert quotes_seen > 2 * len(recorder.calls), msg(
        "11.rows_not_packed", calls=len(recorder.calls), quotes=quotes_seen
    )
    after = fixed_batch_loss(model, tokenizer, dataset)
    assert before - after >= FINETUNE_DROP, msg(
        "11.packing_lowers_the_loss", drop=FINETUNE_DROP, before=before, after=after
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
        what = (
            msg("11.what_model_positions")
            if max_length is None
            else msg("11.what_max_length", max_length=max_length)
        )
        assert max(widths) <= limit, msg(
            "11.default_max_length", width=max(widths), what=what, limit=limit
        )
        assert longest_quote == limit, msg(
            "11.quotes_truncated", longest=longest_quote, what=what, limit=limit
        )
