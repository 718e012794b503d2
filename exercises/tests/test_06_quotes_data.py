"""Exercise 06: the quotes data pipeline (exercises/data.py).

load_quotes reads data/quotes.jsonl (or reports exactly what is wrong with a file),
tokenize_quotes is the tutorial's batched map plus one EOS at the end of every quote (kept when
truncating), collate_for_causal_lm right-pads and masks labels by attention_mask, so that EOS
stays a label. Each test name is the rule it checks. Broken files are written into
pytest's tmp_path; nothing touches the network.
"""

import functools
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.impl import implementation
from lora_kata.tiny import EOS_ID, PAD_ID, QUOTES_PATH

data = implementation("data")

GOOD_ROWS = [
    {"quote": "“Brevity is the soul of wit.”", "author": "William Shakespeare", "tags": ["wit"]},
    {"quote": "“Know thyself.”", "author": "Socrates", "tags": ["wisdom", "self"]},
    {"quote": "“Well begun is half done.”", "author": "Aristotle", "tags": []},
]


@pytest.fixture(autouse=True)
def private_datasets_cache(request, tmp_path_factory, monkeypatch):
    """Files a test writes are loaded with a cache of their own, not ~/.cache/huggingface."""
    if "tmp_path" in request.fixturenames:
        import datasets.config

        cache = tmp_path_factory.mktemp("datasets-cache")
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


def write_lines(tmp_path, lines, name="quotes.jsonl"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good_lines():
    return [json.dumps(row, ensure_ascii=False) for row in GOOD_ROWS]


def value_error_from_load(path, what):
    """Call load_quotes(path); return the ValueError's text, or fail saying what happened."""
    try:
        result = data.load_quotes(path)
    except ValueError as error:
        return str(error)
    except NotImplementedError:
        raise
    except Exception as error:
        pytest.fail(
            f"{what}: expected a ValueError naming the file, got {type(error).__name__}: "
            f"{str(error)[:200]} (check the file yourself and raise ValueError, do not let "
            "datasets' or open()'s own error escape)"
        )
    rows = len(result) if hasattr(result, "__len__") else "?"
    pytest.fail(
        f"{what}: expected a ValueError naming the file and line, but load_quotes returned "
        f"{rows} rows: the bad line was silently skipped (or the column silently filled in)"
    )


def shipped_rows():
    with open(QUOTES_PATH, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@functools.cache
def quotes_tokenizer():
    from lora_kata.tiny import quotes_tokenizer

    return quotes_tokenizer()


# ---------------------------------------------------------------- load_quotes


def test_load_quotes_reads_every_row_of_the_shipped_file_with_quote_author_tags():
    dataset = data.load_quotes()
    expected = shipped_rows()
    assert {"quote", "author", "tags"} <= set(dataset.column_names), (
        f"columns quote, author, tags expected, found {dataset.column_names}"
    )
    assert len(dataset) == len(expected), (
        f"data/quotes.jsonl has {len(expected)} rows, load_quotes returned {len(dataset)}"
    )
    for index in (0, len(expected) // 2, len(expected) - 1):
        row = {name: dataset[index][name] for name in ("quote", "author", "tags")}
        assert row == expected[index], (
            f"row {index} should be {expected[index]} (UTF-8, curly quotes kept), got {row}"
        )


def test_load_quotes_reads_any_path_it_is_given(tmp_path):
    path = write_lines(tmp_path, [*good_lines(), ""])  # a trailing blank line is fine
    dataset = data.load_quotes(path)
    rows = [{name: row[name] for name in ("quote", "author", "tags")} for row in dataset]
    assert rows == GOOD_ROWS, (
        f"load_quotes({path.name!r}) should return that file's 3 rows {GOOD_ROWS}, got {rows} "
        "(is the path ignored in favour of the default file?)"
    )


def test_missing_file_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "no_such_quotes.jsonl"
    message = value_error_from_load(path, "a missing file")
    assert "no_such_quotes.jsonl" in message, (
        f"the ValueError for a missing file should name it (no_such_quotes.jsonl), got: {message}"
    )


def test_malformed_line_is_a_value_error_naming_the_file_and_line(tmp_path):
    lines = good_lines()
    lines.insert(2, '{"quote": "“Unfinished", "author": ')  # line 3 is cut short
    path = write_lines(tmp_path, lines, name="broken.jsonl")
    message = value_error_from_load(path, "a malformed line 3")
    assert "broken.jsonl" in message and "line 3" in message, (
        f"the ValueError should name the file (broken.jsonl) and 'line 3', got: {message}"
    )


@pytest.mark.parametrize("column", ["quote", "author", "tags"])
def test_missing_column_is_a_value_error_naming_the_column_and_line(tmp_path, column):
    rows = [dict(row) for row in GOOD_ROWS]
    del rows[1][column]
    path = write_lines(tmp_path, [json.dumps(row, ensure_ascii=False) for row in rows])
    message = value_error_from_load(path, f"line 2 without a {column} column")
    # Naming the line (here "line 2") helps most, but the design asks for it only where known.
    assert column in message and "quotes.jsonl" in message, (
        f"the ValueError should name the missing column {column!r} and the file (and, best, "
        f"'line 2'), got: {message}"
    )


def test_a_line_that_is_not_a_json_object_is_a_value_error(tmp_path):
    lines = good_lines()
    lines[0] = '["Brevity is the soul of wit.", "William Shakespeare"]'
    path = write_lines(tmp_path, lines)
    message = value_error_from_load(path, "line 1 holding a JSON list")
    assert "quotes.jsonl" in message, f"the ValueError should name the file, got: {message}"


def test_an_empty_file_is_a_value_error(tmp_path):
    path = write_lines(tmp_path, ["", "  "], name="empty.jsonl")
    message = value_error_from_load(path, "a file with no rows")
    assert "empty.jsonl" in message, f"the ValueError should name the file, got: {message}"


# ---------------------------------------------------------------- tokenize_quotes


def small_dataset():
    from datasets import Dataset

    quotes = [row["quote"] for row in shipped_rows()[:40]]
    return Dataset.from_dict(
        {
            "quote": quotes,
            "author": [f"Author number {i} of the kata" for i in range(len(quotes))],
            "tags": [["tag"] for _ in quotes],
        }
    )


def with_one_eos(ids, eos, max_length=None):
    """The rule: ids, then eos unless ids already end with it; cut to max_length, EOS last."""
    ids = list(ids) if ids and ids[-1] == eos else [*ids, eos]
    if max_length is not None and len(ids) > max_length:
        ids = [*ids[: max_length - 1], eos]
    return ids


def eos_mistake(got, plain, eos, max_length=None):
    """Name the usual EOS mistake that turns `plain` (the tokenizer's ids) into `got`."""
    truncated = max_length is not None and len(plain) >= max_length
    if truncated and got == plain[:max_length] and plain[-1:] != [eos]:
        return (
            "EOS lost by truncation (or never appended): the row was cut to max_length with no "
            "EOS last; keep the first max_length - 1 tokens, then EOS"
        )
    if got == plain and plain[-1:] != [eos]:
        return (
            "EOS missing: the row ends without tokenizer.eos_token_id (OPT's tokenizer puts "
            "</s> only in front); append it to every quote, or the model never learns to stop"
        )
    if len(got) >= 2 and got[-2:] == [eos, eos] and plain[-1:] == [eos]:
        return (
            "EOS appended twice: this tokenizer already ends each row with eos; append it only "
            "when the row does not end with it"
        )
    if max_length is not None and len(got) > max_length:
        return (
            f"the row has {len(got)} tokens, more than max_length={max_length}: is max_length "
            "ignored, or EOS appended after truncating to max_length?"
        )
    if max_length is not None and len(got) == max_length and got[-1:] != [eos]:
        return (
            "EOS lost by truncation: the row was cut to max_length after EOS was appended; keep "
            "the first max_length - 1 tokens, then EOS"
        )
    return "each row should be tokenizer(quote)['input_ids'] plus one EOS, cut to max_length"


def check_rows(tokenized, dataset, tokenizer, max_length=None, where=""):
    """Every row is the rule applied to tokenizer(quote), with a mask of ones as long."""
    eos = tokenizer.eos_token_id
    assert len(tokenized) == len(dataset), "one tokenized row per quote, in the same order"
    for index, quote in enumerate(dataset["quote"]):
        plain = tokenizer(quote)["input_ids"]
        expected = with_one_eos(plain, eos, max_length)
        got = list(tokenized[index]["input_ids"])
        if got != expected:
            pytest.fail(
                f"{where}row {index}: {eos_mistake(got, plain, eos, max_length)}. Expected "
                f"{len(expected)} tokens ...{expected[-4:]}, got {len(got)} tokens ...{got[-4:]}"
                + (" (tokenizing another column, such as author?)" if got[:3] != plain[:3] else "")
            )
        mask = list(tokenized[index]["attention_mask"])
        assert mask == [1] * len(got), (
            f"{where}row {index}: attention_mask should be {len(got)} ones (one per token, EOS "
            f"included), got {mask}"
        )


def eos_appending_tokenizer():
    """The quotes tokenizer, but ending every text with </s> itself (as LLaMA's tokenizer does
    with add_eos_token=True)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(quotes_tokenizer().backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="</s> $A </s>", special_tokens=[("</s>", EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def test_tokenize_adds_input_ids_and_attention_mask_from_the_quote_column():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    assert {"input_ids", "attention_mask"} <= set(tokenized.column_names), (
        f"tokenize_quotes should add input_ids and attention_mask, got {tokenized.column_names}"
    )
    check_rows(tokenized, dataset, tokenizer)


def test_every_quote_ends_with_exactly_one_eos():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    eos = tokenizer.eos_token_id
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    for index, ids in enumerate(tokenized["input_ids"]):
        plain = tokenizer(dataset[index]["quote"])["input_ids"]
        assert ids[-1:] == [eos] and ids[-2:-1] != [eos], (
            f"row {index} should end with one EOS ({eos}), it ends with {ids[-3:]}: "
            f"{eos_mistake(ids, plain, eos)}"
        )


def test_a_tokenizer_that_already_appends_eos_gets_no_second_one():
    dataset, tokenizer = small_dataset(), eos_appending_tokenizer()
    assert tokenizer("Know thyself.")["input_ids"][-1] == EOS_ID, "test setup: no EOS appended"
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    check_rows(tokenized, dataset, tokenizer, where="with a tokenizer that appends EOS itself, ")


def test_tokenize_keeps_the_text_columns_and_the_row_order():
    dataset = small_dataset()
    tokenized = data.tokenize_quotes(dataset, quotes_tokenizer())
    assert {"quote", "author", "tags"} <= set(tokenized.column_names), (
        f"keep quote, author and tags (the collator ignores them), got {tokenized.column_names}"
    )
    assert tokenized["quote"] == dataset["quote"], "the rows must keep their order"


class RecordingTokenizer:
    """Passes calls through to the real tokenizer, remembering what each call was given."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.inputs = []

    def __call__(self, text, *args, **kwargs):
        self.inputs.append(type(text).__name__)
        return self.tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_tokenize_maps_in_batches_like_the_tutorial():
    dataset = small_dataset()
    recording = RecordingTokenizer(quotes_tokenizer())
    data.tokenize_quotes(dataset, recording)
    assert recording.inputs, "tokenize_quotes never called the tokenizer it was given"
    calls, kinds = len(recording.inputs), set(recording.inputs)
    assert kinds == {"list"} and calls < len(dataset), (
        f"the tokenizer should get lists of quotes (map(..., batched=True)), but it got "
        f"{sorted(kinds)} — {calls} calls for "
        f"{len(dataset)} quotes: mapping row by row is the tutorial's batched=True left out"
    )


def test_tokenize_truncates_to_max_length_only_when_given():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    full = data.tokenize_quotes(dataset, tokenizer)
    lengths = [len(ids) for ids in full["input_ids"]]
    cut = sorted(lengths)[len(lengths) // 2]  # about half the quotes are longer than this
    assert max(lengths) > cut, "the test needs some quotes longer than the cut"
    check_rows(full, dataset, tokenizer, where="without max_length (nothing is truncated), ")
    truncated = data.tokenize_quotes(dataset, tokenizer, max_length=cut)
    check_rows(truncated, dataset, tokenizer, max_length=cut, where=f"with max_length={cut}, ")


def test_truncation_keeps_eos_as_the_last_token():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    cut = 8  # far shorter than most quotes
    truncated = data.tokenize_quotes(dataset, tokenizer, max_length=cut)
    eos = tokenizer.eos_token_id
    for index, ids in enumerate(truncated["input_ids"]):
        plain = tokenizer(dataset[index]["quote"])["input_ids"]
        assert len(ids) <= cut and ids[-1:] == [eos], (
            f"with max_length={cut}, row {index} should have at most {cut} tokens with EOS "
            f"last, got {len(ids)} ending {ids[-3:]}: {eos_mistake(ids, plain, eos, cut)}"
        )
        mask_length = len(truncated[index]["attention_mask"])
        assert mask_length == len(ids), (
            f"row {index}: the attention_mask should be as long as input_ids ({len(ids)}), got "
            f"{mask_length} (truncated input_ids but not the mask?)"
        )


# ---------------------------------------------------------------- collate_for_causal_lm


def shifted_by(labels, input_ids, attention_mask, step):
    """True when labels[i, t] == input_ids[i, t + step] at every real next (or previous) token."""
    if labels.shape != input_ids.shape or labels.shape[1] < 2:
        return False
    if step > 0:
        got, want, real = labels[:, :-step], input_ids[:, step:], attention_mask[:, step:]
    else:
        got, want, real = labels[:, -step:], input_ids[:, :step], attention_mask[:, :step]
    return bool(real.any()) and torch.equal(got[real == 1], want[real == 1])


def diagnose(labels, input_ids, attention_mask, pad_id):
    """Name the usual mistake that produces these labels, if one does."""
    if (input_ids == -100).any():
        return (
            "input_ids contains -100: labels = input_ids without .clone(), then writing -100 "
            "into labels, overwrote input_ids too"
        )
    if labels.shape == input_ids.shape and torch.equal(
        labels, input_ids.masked_fill(input_ids == pad_id, -100)
    ):
        return "labels are masked by pad id; mask by attention_mask == 0 instead"
    if labels.shape[1] == input_ids.shape[1] - 1:
        return "labels are shifted (one shorter); do not shift, the model shifts them itself"
    if shifted_by(labels, input_ids, attention_mask, 1):
        return "labels are shifted left by one; do not shift, the model shifts them itself"
    if shifted_by(labels, input_ids, attention_mask, -1):
        return "labels are shifted right by one; do not shift, the model shifts them itself"
    if labels.shape == input_ids.shape and torch.equal(labels, input_ids):
        return "padding is not masked: labels must be -100 where attention_mask == 0"
    return "labels must be input_ids with -100 where attention_mask == 0, unshifted"


def check_batch(batch, sequences, pad_id):
    """Check the collated batch against the rule, with messages that name the mistake."""
    assert set(batch) >= {"input_ids", "attention_mask", "labels"}, (
        f"return input_ids, attention_mask and labels; got {sorted(batch)}"
    )
    input_ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if (input_ids == -100).any():
        pytest.fail(diagnose(labels, input_ids, mask, pad_id))
    width = max(len(s) for s in sequences)
    for name, tensor in batch.items():
        assert tensor.dtype == torch.long, f"{name} should be torch.long, got {tensor.dtype}"
        if name == "labels" and tuple(tensor.shape) == (len(sequences), width - 1):
            pytest.fail(diagnose(labels, input_ids, mask, pad_id))
        assert tuple(tensor.shape) == (len(sequences), width), (
            f"{name} should have shape (batch, longest) = ({len(sequences)}, {width}), got "
            f"{tuple(tensor.shape)}: pad to the longest sequence in this batch"
        )
    for i, seq in enumerate(sequences):
        n = len(seq)
        row = input_ids[i].tolist()
        expected_row = list(seq) + [pad_id] * (width - n)
        if row != expected_row:
            left = [pad_id] * (width - n) + list(seq)
            mistake = "left padding; pad on the right" if row == left else "wrong padding"
            pytest.fail(
                f"{mistake}: input_ids[{i}] should be the sequence then pad ({pad_id}) up to "
                f"length {width}: {expected_row}, got {row}"
            )
        expected_mask = [1] * n + [0] * (width - n)
        assert mask[i].tolist() == expected_mask, (
            f"attention_mask[{i}] should be {n} ones then zeros: {expected_mask}, got "
            f"{mask[i].tolist()} (padding must get 0)"
        )
    expected_labels = input_ids.masked_fill(mask == 0, -100)
    if not torch.equal(labels, expected_labels):
        pytest.fail(
            f"{diagnose(labels, input_ids, mask, pad_id)}: expected labels "
            f"{expected_labels.tolist()}, got {labels.tolist()}"
        )


def features_of(sequences):
    return [{"input_ids": list(s), "attention_mask": [1] * len(s)} for s in sequences]


def test_collate_right_pads_to_the_longest_and_masks_only_the_padding():
    sequences = [[2, 11, 12, 13, 14], [2, 21], [2, 31, 32]]
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    check_batch(batch, sequences, PAD_ID)


def test_with_pad_equal_to_eos_a_real_eos_stays_a_label():
    # The gotcha of DataCollatorForLanguageModeling: with pad == eos, masking by pad id also
    # masks every real EOS, and the model never learns to stop.
    sequences = [[0, 11, 12, 13, EOS_ID], [0, 21, EOS_ID]]
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=EOS_ID)
    check_batch(batch, sequences, EOS_ID)
    assert batch["labels"][1, 2].item() == EOS_ID, (
        "labels are masked by pad id: the real EOS of row 1 (attention_mask 1) was masked "
        "because pad == eos; mask where attention_mask == 0, not where input_ids == pad"
    )


def test_labels_are_not_shifted_the_model_shifts_them():
    sequences = [[2, 11, 12, 13], [2, 21, 22, 23]]  # no padding: labels == input_ids exactly
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    if not torch.equal(batch["labels"], batch["input_ids"]):
        pytest.fail(
            f"{diagnose(batch['labels'], batch['input_ids'], batch['attention_mask'], PAD_ID)}"
            f": without padding labels equal input_ids {batch['input_ids'].tolist()}, got "
            f"{batch['labels'].tolist()}"
        )


ragged = st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=12), min_size=1, max_size=6)


@given(ragged, st.integers(0, 40))
def test_collate_pads_and_masks_any_ragged_batch(sequences, pad_id):
    # Token ids may equal pad_id inside a sequence: such a real token stays a label.
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=pad_id)
    check_batch(batch, sequences, pad_id)


@given(ragged.map(lambda seqs: [[t if t != PAD_ID else 5 for t in s] for s in seqs]))
def test_collate_equals_DataCollatorForLanguageModeling_when_pad_differs_from_eos(sequences):
    from transformers import DataCollatorForLanguageModeling

    ours = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    theirs = DataCollatorForLanguageModeling(quotes_tokenizer(), mlm=False)(features_of(sequences))
    for name in ("input_ids", "attention_mask", "labels"):
        assert ours[name].dtype == theirs[name].dtype, (
            f"{name}: dtype {ours[name].dtype}, transformers' collator gives {theirs[name].dtype}"
        )
        if not torch.equal(ours[name], theirs[name]):
            hint = diagnose(ours["labels"], ours["input_ids"], ours["attention_mask"], PAD_ID)
            pytest.fail(
                f"{name} differs from DataCollatorForLanguageModeling(mlm=False) ({hint}): "
                f"expected {theirs[name].tolist()}, got {ours[name].tolist()}"
            )


def test_collate_ignores_the_text_columns_of_tokenized_rows():
    tokenizer = quotes_tokenizer()
    rows = [dict(row, **tokenizer(row["quote"])) for row in GOOD_ROWS]  # text columns kept
    batch = data.collate_for_causal_lm(rows, pad_token_id=tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}, (
        f"return exactly input_ids, attention_mask and labels (quote, author and tags cannot "
        f"become tensors), got {sorted(batch)}"
    )
    check_batch(batch, [row["input_ids"] for row in rows], tokenizer.pad_token_id)


def test_every_training_row_ends_with_an_eos_that_is_a_label():
    # The whole pipeline, with pad == eos (the usual GPT-2 / LLaMA recipe) and pad != eos.
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    eos = tokenizer.eos_token_id
    rows = list(data.tokenize_quotes(dataset, tokenizer, max_length=24))
    for pad_id in (PAD_ID, eos):
        batch = data.collate_for_causal_lm(rows[:8], pad_token_id=pad_id)
        lengths = batch["attention_mask"].sum(dim=1)
        for i, n in enumerate(lengths.tolist()):
            token, label = batch["input_ids"][i, n - 1].item(), batch["labels"][i, n - 1].item()
            assert token == eos and label == eos, (
                f"pad id {pad_id}: row {i}'s last real token should be EOS ({eos}) with label "
                f"{eos}, got token {token} with label {label}"
                + (
                    ": "
                    + diagnose(batch["labels"], batch["input_ids"], batch["attention_mask"], pad_id)
                    if label != token
                    else ""
                )
            )


# The file's slowest test (2-5 s): importing OPT's modelling code dominates.
def test_the_models_loss_on_a_collated_batch_is_the_next_token_loss_over_real_tokens():
    # Shows why labels are not shifted: OPT's loss compares logits[t] with labels[t + 1].
    sequences = [[2, 11, 12, 13, 14, 15], [2, 21, 22]]
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    from lora_kata.tiny import build_tiny_opt

    model = build_tiny_opt(seed=3)
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), ignore_index=-100)
    # Same fp32 numbers in the same order, up to the reduction's rounding.
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5), (
        f"the model's loss on your batch ({out.loss.item():.5f}) should be the next-token "
        f"loss over real tokens ({expected.item():.5f}): are labels shifted, or is padding "
        "left unmasked?"
    )
