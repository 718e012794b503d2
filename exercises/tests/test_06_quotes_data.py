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

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.models.tiny import EOS_ID, PAD_ID, QUOTES_PATH

data = implementation("data")

GOOD_ROWS = [
    {"quote": "“Brevity is the soul of wit.”", "author": "William Shakespeare", "tags": ["wit"]},
    {"quote": "“Know thyself.”", "author": "Socrates", "tags": ["wisdom", "self"]},
    {"quote": "“Well begun is half done.”", "author": "Aristotle", "tags": []},
]
# Line 1 of a file, holding a JSON list instead of an object.
JSON_LIST_LINE = '["Brevity is the soul of wit.", "William Shakespeare"]'
# The author column of small_dataset(), row i.
FAKE_AUTHOR = "Author number {i} of the kata"


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


def value_error_from_load(path, what, accepted):
    """Call load_quotes(path); return the ValueError's text, or fail saying what happened
    (`accepted`: what returning rows for this file means)."""
    try:
        result = data.load_quotes(path)
    except ValueError as error:
        return str(error)
    except NotImplementedError:
        raise
    except Exception as error:
        pytest.fail(
            msg(
                "06.load_raised_another_error",
                what=what,
                error_type=type(error).__name__,
                error=str(error)[:200],
            )
        )
    rows = len(result) if hasattr(result, "__len__") else "?"
    pytest.fail(msg("06.load_returned_rows", what=what, rows=rows, why=accepted))


def shipped_rows():
    with open(QUOTES_PATH, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@functools.cache
def quotes_tokenizer():
    from lora_kata.models.tiny import quotes_tokenizer

    return quotes_tokenizer()


# ---------------------------------------------------------------- load_quotes


def test_load_quotes_reads_every_row_of_the_shipped_file_with_quote_author_tags():
    dataset = data.load_quotes()
    expected = shipped_rows()
    assert {"quote", "author", "tags"} <= set(dataset.column_names), msg(
        "06.shipped_columns", columns=dataset.column_names
    )
    assert len(dataset) == len(expected), msg(
        "06.shipped_row_count", want=len(expected), got=len(dataset)
    )
    for index in (0, len(expected) // 2, len(expected) - 1):
        row = {name: dataset[index][name] for name in ("quote", "author", "tags")}
        assert row == expected[index], msg(
            "06.shipped_row", index=index, want=expected[index], got=row
        )


def test_load_quotes_reads_any_path_it_is_given(tmp_path):
    path = write_lines(tmp_path, [*good_lines(), ""])  # a trailing blank line is fine
    dataset = data.load_quotes(path)
    rows = [{name: row[name] for name in ("quote", "author", "tags")} for row in dataset]
    assert rows == GOOD_ROWS, msg("06.path_rows", name=path.name, want=GOOD_ROWS, got=rows)


def test_missing_file_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "no_such_quotes.jsonl"
    message = value_error_from_load(
        path, msg("06.case_missing_file"), msg("06.missing_file_accepted")
    )
    assert "no_such_quotes.jsonl" in message, msg("06.missing_file_named", message=message)


def test_malformed_line_is_a_value_error_naming_the_file_and_line(tmp_path):
    lines = good_lines()
    lines.insert(2, '{"quote": "“Unfinished", "author": ')  # line 3 is cut short
    path = write_lines(tmp_path, lines, name="broken.jsonl")
    message = value_error_from_load(
        path, msg("06.case_malformed_line"), msg("06.bad_line_accepted")
    )
    assert "broken.jsonl" in message and "line 3" in message, msg(
        "06.malformed_line_named", message=message
    )


@pytest.mark.parametrize("column", ["quote", "author", "tags"])
def test_missing_column_is_a_value_error_naming_the_column_and_line(tmp_path, column):
    rows = [dict(row) for row in GOOD_ROWS]
    del rows[1][column]
    path = write_lines(tmp_path, [json.dumps(row, ensure_ascii=False) for row in rows])
    message = value_error_from_load(
        path, msg("06.case_missing_column", column=column), msg("06.missing_column_accepted")
    )
    # Naming the line (here "line 2") helps most, but the design asks for it only where known.
    assert column in message and "quotes.jsonl" in message, msg(
        "06.missing_column_named", column=column, message=message
    )


def test_a_line_that_is_not_a_json_object_is_a_value_error(tmp_path):
    lines = good_lines()
    lines[0] = JSON_LIST_LINE
    path = write_lines(tmp_path, lines)
    message = value_error_from_load(path, msg("06.case_json_list"), msg("06.bad_line_accepted"))
    assert "quotes.jsonl" in message, msg("06.json_list_file_named", message=message)


def test_an_empty_file_is_a_value_error(tmp_path):
    path = write_lines(tmp_path, ["", "  "], name="empty.jsonl")
    message = value_error_from_load(path, msg("06.case_empty_file"), msg("06.empty_file_accepted"))
    assert "empty.jsonl" in message, msg("06.empty_file_named", message=message)


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("tags", "wit", "list[str]"),
        ("tags", ["wit", 7], "list[str]"),
        ("quote", 42, "str"),
        ("author", None, "str"),
    ],
    ids=["tags_a_string", "tags_with_a_number", "quote_a_number", "author_null"],
)
def test_a_column_of_the_wrong_type_is_a_value_error_naming_the_file_and_line(
    tmp_path, column, value, kind
):
    rows = [dict(row) for row in GOOD_ROWS]
    rows[1][column] = value
    path = write_lines(tmp_path, [json.dumps(row, ensure_ascii=False) for row in rows])
    what = msg("06.case_wrong_type", column=column, value=json.dumps(value), kind=kind)
    message = value_error_from_load(path, what, msg("06.wrong_type_accepted"))
    assert "quotes.jsonl" in message and "line 2" in message, msg(
        "06.wrong_type_named", message=message
    )


# ---------------------------------------------------------------- tokenize_quotes


def small_dataset():
    from datasets import Dataset

    quotes = [row["quote"] for row in shipped_rows()[:40]]
    return Dataset.from_dict(
        {
            "quote": quotes,
            "author": [FAKE_AUTHOR.format(i=i) for i in range(len(quotes))],
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
        return msg("06.eos_cut_off_or_never_appended")
    if got == plain and plain[-1:] != [eos]:
        return msg("06.eos_missing")
    if len(got) >= 2 and got[-2:] == [eos, eos] and plain[-1:] == [eos]:
        return msg("06.eos_appended_twice")
    if max_length is not None and len(got) > max_length:
        return msg("06.row_longer_than_max_length", length=len(got), max_length=max_length)
    if max_length is not None and len(got) == max_length and got[-1:] != [eos]:
        return msg("06.eos_cut_off_after_appending")
    return msg("06.eos_rule")


def check_rows(tokenized, dataset, tokenizer, max_length=None, where=""):
    """Every row is the rule applied to tokenizer(quote), with a mask of ones as long."""
    eos = tokenizer.eos_token_id
    assert len(tokenized) == len(dataset), msg("06.one_row_per_quote")
    for index, quote in enumerate(dataset["quote"]):
        plain = tokenizer(quote)["input_ids"]
        expected = with_one_eos(plain, eos, max_length)
        got = list(tokenized[index]["input_ids"])
        if got != expected:
            pytest.fail(
                msg(
                    "06.row_ids",
                    where=where,
                    index=index,
                    why=eos_mistake(got, plain, eos, max_length),
                    want_length=len(expected),
                    want_end=expected[-4:],
                    got_length=len(got),
                    got_end=got[-4:],
                    other_column=msg("06.another_column") if got[:3] != plain[:3] else "",
                )
            )
        mask = list(tokenized[index]["attention_mask"])
        assert mask == [1] * len(got), msg(
            "06.row_mask", where=where, index=index, length=len(got), mask=mask
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
    assert {"input_ids", "attention_mask"} <= set(tokenized.column_names), msg(
        "06.tokenized_columns", columns=tokenized.column_names
    )
    check_rows(tokenized, dataset, tokenizer)


def test_every_quote_ends_with_exactly_one_eos():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    eos = tokenizer.eos_token_id
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    for index, ids in enumerate(tokenized["input_ids"]):
        plain = tokenizer(dataset[index]["quote"])["input_ids"]
        assert ids[-1:] == [eos] and ids[-2:-1] != [eos], msg(
            "06.ends_with_one_eos",
            index=index,
            eos=eos,
            end=ids[-3:],
            why=eos_mistake(ids, plain, eos),
        )


def test_a_tokenizer_that_already_appends_eos_gets_no_second_one():
    dataset, tokenizer = small_dataset(), eos_appending_tokenizer()
    assert tokenizer("Know thyself.")["input_ids"][-1] == EOS_ID, msg("06.setup_no_eos_appended")
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    check_rows(tokenized, dataset, tokenizer, where=msg("06.where_tokenizer_appends_eos"))


def test_tokenize_keeps_the_text_columns_and_the_row_order():
    dataset = small_dataset()
    tokenized = data.tokenize_quotes(dataset, quotes_tokenizer())
    assert {"quote", "author", "tags"} <= set(tokenized.column_names), msg(
        "06.text_columns_kept", columns=tokenized.column_names
    )
    assert tokenized["quote"] == dataset["quote"], msg("06.row_order_kept")


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
    assert recording.inputs, msg("06.tokenizer_never_called")
    calls, kinds = len(recording.inputs), set(recording.inputs)
    assert kinds == {"list"} and calls < len(dataset), msg(
        "06.batched_map", kinds=sorted(kinds), calls=calls, quotes=len(dataset)
    )


def test_tokenize_truncates_to_max_length_only_when_given():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    full = data.tokenize_quotes(dataset, tokenizer)
    lengths = [len(ids) for ids in full["input_ids"]]
    cut = sorted(lengths)[len(lengths) // 2]  # about half the quotes are longer than this
    assert max(lengths) > cut, msg("06.setup_quotes_longer_than_cut")
    check_rows(full, dataset, tokenizer, where=msg("06.where_no_max_length"))
    truncated = data.tokenize_quotes(dataset, tokenizer, max_length=cut)
    where = msg("06.where_max_length", cut=cut)
    check_rows(truncated, dataset, tokenizer, max_length=cut, where=where)


def test_truncation_keeps_eos_as_the_last_token():
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    cut = 8  # far shorter than most quotes
    truncated = data.tokenize_quotes(dataset, tokenizer, max_length=cut)
    eos = tokenizer.eos_token_id
    for index, ids in enumerate(truncated["input_ids"]):
        plain = tokenizer(dataset[index]["quote"])["input_ids"]
        assert len(ids) <= cut and ids[-1:] == [eos], msg(
            "06.truncated_ends_with_eos",
            cut=cut,
            index=index,
            length=len(ids),
            end=ids[-3:],
            why=eos_mistake(ids, plain, eos, cut),
        )
        mask_length = len(truncated[index]["attention_mask"])
        assert mask_length == len(ids), msg(
            "06.truncated_mask_length", index=index, want=len(ids), got=mask_length
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
        shared = labels.untyped_storage().data_ptr() == input_ids.untyped_storage().data_ptr()
        return (
            msg("06.labels_without_clone") if shared else msg("06.input_ids_padded_with_minus_100")
        )
    if labels.shape == input_ids.shape and torch.equal(
        labels, input_ids.masked_fill(input_ids == pad_id, -100)
    ):
        return msg("06.labels_masked_by_pad_id")
    if labels.shape[1] == input_ids.shape[1] - 1:
        return msg("06.labels_one_shorter")
    if shifted_by(labels, input_ids, attention_mask, 1):
        return msg("06.labels_shifted_left")
    if shifted_by(labels, input_ids, attention_mask, -1):
        return msg("06.labels_shifted_right")
    if labels.shape == input_ids.shape and torch.equal(labels, input_ids):
        return msg("06.padding_not_masked")
    return msg("06.labels_rule")


COLLATED = ("input_ids", "attention_mask", "labels")


def check_keys(batch):
    assert set(batch) >= set(COLLATED), msg("06.batch_keys", keys=sorted(batch))


def check_tensors(batch, sequences, pad_id, names=COLLATED, long_names=None):
    """Shape of each tensor `names` of a collated batch, and torch.long dtype of `long_names`
    (default: all of `names`): what indexing it, or handing it to the model, needs (else the
    learner reads torch's IndexError or the loss's ValueError, not the mistake)."""
    check_keys(batch)
    input_ids, mask, labels = (batch[name] for name in COLLATED)
    width = max(len(s) for s in sequences)
    for name in names:
        tensor = batch[name]
        if long_names is None or name in long_names:
            assert tensor.dtype == torch.long, msg("06.batch_dtype", name=name, dtype=tensor.dtype)
        if name == "labels" and tuple(tensor.shape) == (len(sequences), width - 1):
            pytest.fail(
                msg(
                    "06.labels_shape_one_shorter",
                    why=diagnose(labels, input_ids, mask, pad_id),
                    got=tuple(tensor.shape),
                    want=tuple(input_ids.shape),
                )
            )
        assert tuple(tensor.shape) == (len(sequences), width), msg(
            "06.batch_shape",
            name=name,
            rows=len(sequences),
            width=width,
            got=tuple(tensor.shape),
        )


def check_input_ids_untouched(batch, pad_id):
    """-100 in input_ids: labels share input_ids' storage (no clone), the model's embedding
    would raise 'index out of range in self'."""
    input_ids, mask, labels = (batch[name] for name in COLLATED)
    if (input_ids == -100).any():
        pytest.fail(diagnose(labels, input_ids, mask, pad_id))


def check_batch(batch, sequences, pad_id):
    """Check the collated batch against the rule, with messages that name the mistake."""
    check_keys(batch)
    check_input_ids_untouched(batch, pad_id)
    check_tensors(batch, sequences, pad_id, names=list(batch))
    input_ids, mask, labels = (batch[name] for name in COLLATED)
    width = max(len(s) for s in sequences)
    for i, seq in enumerate(sequences):
        n = len(seq)
        row = input_ids[i].tolist()
        expected_row = list(seq) + [pad_id] * (width - n)
        if row != expected_row:
            left = [pad_id] * (width - n) + list(seq)
            mistake = msg("06.left_padding") if row == left else msg("06.wrong_padding")
            pytest.fail(
                msg(
                    "06.padded_row",
                    mistake=mistake,
                    i=i,
                    pad_id=pad_id,
                    width=width,
                    want=expected_row,
                    got=row,
                )
            )
        expected_mask = [1] * n + [0] * (width - n)
        assert mask[i].tolist() == expected_mask, msg(
            "06.padded_mask", i=i, n=n, want=expected_mask, got=mask[i].tolist()
        )
    expected_labels = input_ids.masked_fill(mask == 0, -100)
    if not torch.equal(labels, expected_labels):
        pytest.fail(
            msg(
                "06.batch_labels",
                why=diagnose(labels, input_ids, mask, pad_id),
                want=expected_labels.tolist(),
                got=labels.tolist(),
            )
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
    assert batch["labels"][1, 2].item() == EOS_ID, msg("06.real_eos_masked")


def test_labels_are_not_shifted_the_model_shifts_them():
    sequences = [[2, 11, 12, 13], [2, 21, 22, 23]]  # no padding: labels == input_ids exactly
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    if not torch.equal(batch["labels"], batch["input_ids"]):
        pytest.fail(
            msg(
                "06.unpadded_labels",
                why=diagnose(batch["labels"], batch["input_ids"], batch["attention_mask"], PAD_ID),
                want=batch["input_ids"].tolist(),
                got=batch["labels"].tolist(),
            )
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
        assert ours[name].dtype == theirs[name].dtype, msg(
            "06.collator_dtype", name=name, got=ours[name].dtype, want=theirs[name].dtype
        )
        if not torch.equal(ours[name], theirs[name]):
            hint = diagnose(ours["labels"], ours["input_ids"], ours["attention_mask"], PAD_ID)
            pytest.fail(
                msg(
                    "06.collator_differs",
                    name=name,
                    hint=hint,
                    want=theirs[name].tolist(),
                    got=ours[name].tolist(),
                )
            )


def test_collate_ignores_the_text_columns_of_tokenized_rows():
    tokenizer = quotes_tokenizer()
    rows = [dict(row, **tokenizer(row["quote"])) for row in GOOD_ROWS]  # text columns kept
    batch = data.collate_for_causal_lm(rows, pad_token_id=tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}, msg(
        "06.only_tensor_keys", keys=sorted(batch)
    )
    check_batch(batch, [row["input_ids"] for row in rows], tokenizer.pad_token_id)


def test_every_training_row_ends_with_an_eos_that_is_a_label():
    # The whole pipeline, with pad == eos (the usual GPT-2 / LLaMA recipe) and pad != eos.
    dataset, tokenizer = small_dataset(), quotes_tokenizer()
    eos = tokenizer.eos_token_id
    rows = list(data.tokenize_quotes(dataset, tokenizer, max_length=24))
    for pad_id in (PAD_ID, eos):
        batch = data.collate_for_causal_lm(rows[:8], pad_token_id=pad_id)
        check_tensors(batch, [row["input_ids"] for row in rows[:8]], pad_id)
        lengths = batch["attention_mask"].sum(dim=1)
        for i, n in enumerate(lengths.tolist()):
            token, label = batch["input_ids"][i, n - 1].item(), batch["labels"][i, n - 1].item()
            why = (
                msg(
                    "06.last_token_why",
                    why=diagnose(
                        batch["labels"], batch["input_ids"], batch["attention_mask"], pad_id
                    ),
                )
                if label != token
                else ""
            )
            assert token == eos and label == eos, msg(
                "06.last_token_is_eos_label",
                pad_id=pad_id,
                i=i,
                eos=eos,
                token=token,
                label=label,
                why=why,
            )


# The file's slowest test (2-5 s): importing OPT's modelling code dominates.
def test_the_models_loss_on_a_collated_batch_is_the_next_token_loss_over_real_tokens():
    # Shows why labels are not shifted: OPT's loss compares logits[t] with labels[t + 1].
    sequences = [[2, 11, 12, 13, 14, 15], [2, 21, 22]]
    batch = data.collate_for_causal_lm(features_of(sequences), pad_token_id=PAD_ID)
    check_keys(batch)
    check_input_ids_untouched(batch, PAD_ID)
    # What the model needs: ids and labels of integers, every tensor (rows, longest). OPT takes
    # a float attention_mask; the collator tests ask for torch.long.
    check_tensors(batch, sequences, PAD_ID, long_names=("input_ids", "labels"))
    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(seed=3)
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), ignore_index=-100)
    # Same fp32 numbers in the same order, up to the reduction's rounding.
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5), msg(
        "06.model_loss", got=out.loss.item(), want=expected.item()
    )
