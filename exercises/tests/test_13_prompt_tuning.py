"""Exercise 13: prompt tuning and prefix tuning against LoRA (exercises/prompt.py).

PromptTuning is checked against peft's PromptTuningConfig on a tiny OPT (same logits and loss
once the same prompt is copied in; the same rows from a text), and the parameter counts
against peft's trainable counts for prompt tuning and prefix tuning, on the tiny OPT and on
opt-6.7b built on the meta device. Where PromptTuning calls its model, a hook records the
arguments, so that a misplaced prompt, mask or label is named rather than met as a crash.
"""

import contextlib
import copy
import inspect

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.raising import must_raise

prompt = implementation("prompt")
counting = implementation("counting")
data = implementation("data")

HIDDEN, LAYERS, VOCAB = 32, 2, 512  # the tiny OPT (lora_kata.models.tiny)
N = 5  # virtual tokens: distinct from the tiny OPT's sizes and from the batches below
INIT_TEXT = "Two things are infinite"  # the tutorial's generation prompt
OPT_6_7B_PARAMETERS = 6_658_473_984  # exercise 03: the tied lm_head counted once


def tiny_opt(**overrides):
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(**overrides)


@pytest.fixture(scope="module")
def untied_opt():
    """A tiny OPT whose lm_head is NOT its input embedding, so the two cannot be confused."""
    model = tiny_opt(tie_word_embeddings=False)
    assert model.lm_head.weight is not model.get_input_embeddings().weight, msg(
        "13.untied_opt_has_its_own_lm_head"
    )
    return model


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """The quotes tokenizer saved where peft's AutoTokenizer.from_pretrained finds it offline."""
    from lora_kata.models.tiny import quotes_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    quotes_tokenizer(VOCAB).save_pretrained(directory)
    return directory


def quotes_tokenizer():
    from lora_kata.models.tiny import quotes_tokenizer

    return quotes_tokenizer(VOCAB)


def peft_prompt_tuning(model, num_virtual_tokens, **options):
    """peft's prompt tuning on `model` (which it freezes and wraps), task CAUSAL_LM."""
    import warnings

    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens, **options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def peft_wrapped(model, config):
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def peft_trainable(model, config) -> int:
    return peft_wrapped(model, config).get_nb_trainable_parameters()[0]


def random_batch(batch, length, seed=0):
    """input_ids, a right-padded attention_mask (row 0 full) and labels (-100 on padding)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    attention_mask = (torch.arange(length) < lengths[:, None]).long()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


def model_call(wrapper, input_ids, attention_mask, labels) -> dict:
    """Run wrapper(input_ids, attention_mask=..., labels=...) and return the arguments (by
    name) that it called wrapper.model with. An error raised by the model after it was called
    (a mask of the wrong length, say) is not re-raised: the caller names the mistake instead."""
    seen = []

    def record(module, args, kwargs):
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        seen.append({**bound.arguments.pop("kwargs", {}), **bound.arguments})

    handle = wrapper.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        wrapper(input_ids, attention_mask=attention_mask, labels=labels)
    except Exception:
        if not seen:
            raise
    finally:
        handle.remove()
    assert seen, msg("13.model_called")
    return seen[0]


@contextlib.contextmanager
def mask_checked(wrapper, input_ids, n):
    """While in the block, an attention_mask that wrapper passes to wrapper.model must be
    (batch, n + length): another shape fails the test naming the mask, before the model meets
    it and crashes on sizes ("The size of tensor a (11) must match the size of tensor b (6)")."""
    batch, length = input_ids.shape
    want = (batch, n + length)

    def check(module, args, kwargs):
        try:
            bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        except TypeError:
            return  # an odd call: the model says what is wrong with it
        mask = {**bound.arguments.pop("kwargs", {}), **bound.arguments}.get("attention_mask")
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) != want:
            pytest.fail(msg("13.mask_shape", want=want, got=tuple(mask.shape)))

    handle = wrapper.model.register_forward_pre_hook(check, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def sizes():
    """(num_virtual_tokens, batch, length), all different."""
    return st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(2, 12)).filter(
        lambda s: len(set(s)) == 3
    )


def test_prompt_is_one_trainable_fp32_row_per_virtual_token():
    model = tiny_opt()
    wrapper = prompt.PromptTuning(model, N)
    assert wrapper.model is model, msg("13.model_kept")
    assert isinstance(wrapper.prompt, torch.nn.Parameter), msg(
        "13.prompt_is_a_parameter", found=type(wrapper.prompt).__name__
    )
    assert tuple(wrapper.prompt.shape) == (N, HIDDEN), msg(
        "13.prompt_shape", n=N, hidden=HIDDEN, got=tuple(wrapper.prompt.shape)
    )
    assert wrapper.prompt.dtype == torch.float32, msg(
        "13.prompt_is_fp32", dtype=wrapper.prompt.dtype
    )
    assert wrapper.prompt.requires_grad, msg("13.prompt_requires_grad")


def test_only_the_prompt_trains_and_the_model_is_frozen():
    model = tiny_opt()
    frozen_total = sum(p.numel() for p in model.parameters())
    wrapper = prompt.PromptTuning(model, N)
    still = [name for name, p in model.named_parameters() if p.requires_grad]
    assert not still, msg("13.model_frozen", count=len(still), example=still[0])
    trainable, total = counting.count_parameters(wrapper)
    assert (trainable, total) == (N * HIDDEN, frozen_total + N * HIDDEN), msg(
        "13.count_parameters_of_the_wrapper",
        want_trainable=N * HIDDEN,
        want_total=frozen_total + N * HIDDEN,
        n=N,
        hidden=HIDDEN,
        trainable=trainable,
        total=total,
    )


@pytest.mark.parametrize("num_virtual_tokens", [0, -3])
def test_fewer_than_one_virtual_token_is_a_value_error(num_virtual_tokens):
    refused = msg("13.fewer_than_one_refused", num_virtual_tokens=num_virtual_tokens)
    with must_raise(ValueError, refused) as raised:
        prompt.PromptTuning(tiny_opt(), num_virtual_tokens)
    assert str(raised.value).strip(), msg("13.fewer_than_one_says_why")


def test_init_text_without_a_tokenizer_is_refused():
    refused = msg("13.init_text_without_tokenizer_refused", n=N, init_text=INIT_TEXT)
    with must_raise((ValueError, TypeError), refused) as raised:
        prompt.PromptTuning(tiny_opt(), N, init_text=INIT_TEXT)
    assert str(raised.value).strip(), msg("13.init_text_without_tokenizer_says_why")


def test_random_init_copies_rows_of_the_input_embeddings(untied_opt):
    torch.manual_seed(0)
    wrapper = prompt.PromptTuning(untied_opt, N)
    inputs = untied_opt.get_input_embeddings().weight
    outputs = untied_opt.lm_head.weight
    rows = wrapper.prompt.detach()
    for i, row in enumerate(rows):
        if (row == inputs).all(dim=1).any():
            continue
        if (row == outputs).all(dim=1).any():
            raise AssertionError(msg("13.random_row_of_lm_head", row=i))
        raise AssertionError(msg("13.random_row_of_the_input_embeddings", row=i))
    before = inputs.detach().clone()
    with torch.no_grad():
        wrapper.prompt.add_(1.0)
    assert torch.equal(inputs, before), msg("13.prompt_is_a_copy")
    # The init this mirrors: peft's SAMPLE_VOCAB rows are input-embedding rows too.
    theirs = peft_prompt_tuning(copy.deepcopy(untied_opt), N, prompt_tuning_init="SAMPLE_VOCAB")
    peft_rows = theirs.prompt_encoder["default"].embedding.weight.detach()
    assert all((row == inputs).all(dim=1).any() for row in peft_rows), msg(
        "13.peft_sample_vocab_rows"
    )


@given(num_virtual_tokens=st.integers(1, 40))
def test_init_text_rows_are_its_token_embeddings_repeated_and_cut(untied_opt, num_virtual_tokens):
    tokenizer = quotes_tokenizer()
    wrapper = prompt.PromptTuning(
        untied_opt, num_virtual_tokens, init_text=INIT_TEXT, tokenizer=tokenizer
    )
    ids = tokenizer(INIT_TEXT)["input_ids"]
    repeated = [ids[i % len(ids)] for i in range(num_virtual_tokens)]
    weight = untied_opt.get_input_embeddings().weight.detach()
    expected = weight[repeated]
    rows = wrapper.prompt.detach()
    assert rows.shape == expected.shape, msg(
        "13.init_text_prompt_shape",
        count=len(ids),
        n=num_virtual_tokens,
        want=tuple(expected.shape),
        got=tuple(rows.shape),
    )
    if torch.equal(rows, expected):
        return
    bare = tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
    cause = msg("13.init_text_repeat_and_cut")
    if torch.equal(rows, weight[[bare[i % len(bare)] for i in range(num_virtual_tokens)]]):
        cause = msg("13.init_text_special_tokens_left_out")
    elif torch.equal(rows, untied_opt.lm_head.weight.detach()[repeated]):
        cause = msg("13.init_text_from_lm_head")
    raise AssertionError(msg("13.init_text_rows", init_text=INIT_TEXT, ids=ids, why=cause))


@pytest.mark.parametrize("how", ["cut", "exact", "repeated"])
def test_text_init_gives_the_same_rows_as_peft(untied_opt, tokenizer_dir, how):
    tokenizer = quotes_tokenizer()
    count = len(tokenizer(INIT_TEXT)["input_ids"])
    n = {"cut": count - 2, "exact": count, "repeated": 2 * count + 3}[how]
    ours = prompt.PromptTuning(untied_opt, n, init_text=INIT_TEXT, tokenizer=tokenizer).prompt
    theirs = (
        peft_prompt_tuning(
            copy.deepcopy(untied_opt),
            n,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=INIT_TEXT,
            tokenizer_name_or_path=str(tokenizer_dir),
        )
        .prompt_encoder["default"]
        .embedding.weight
    )
    assert ours.dtype == theirs.dtype == torch.float32, msg(
        "13.both_prompts_fp32", ours=ours.dtype, theirs=theirs.dtype
    )
    assert torch.equal(ours.detach(), theirs.detach()), msg(
        "13.text_init_rows_as_peft", n=n, count=count, how=how
    )


@given(sizes())
def test_the_prompt_comes_before_the_input(size):
    n, batch, length = size
    wrapper = prompt.PromptTuning(tiny_opt(), n)
    input_ids, attention_mask, labels = random_batch(batch, length, seed=n)
    seen = model_call(wrapper, input_ids, attention_mask, labels)
    embeds = seen.get("inputs_embeds")
    assert embeds is not None, msg("13.model_called_on_inputs_embeds")
    assert tuple(embeds.shape) == (batch, n + length, HIDDEN), msg(
        "13.inputs_embeds_shape", want=(batch, n + length, HIDDEN), got=tuple(embeds.shape)
    )
    with torch.no_grad():
        tokens = wrapper.model.get_input_embeddings()(input_ids)
    first = wrapper.prompt.detach().expand(batch, -1, -1)
    if not torch.equal(embeds[:, :n].detach(), first):
        rule = msg("13.prompt_comes_first", n=n)
        if torch.equal(embeds[:, -n:].detach(), first):
            raise AssertionError(msg("13.prompt_appended", rule=rule))
        raise AssertionError(rule)
    assert torch.equal(embeds[:, n:].detach(), tokens), msg("13.input_embeddings_after_the_prompt")


@given(sizes())
def test_attention_mask_is_one_on_the_prompt_then_the_inputs_mask(size):
    n, batch, length = size
    wrapper = prompt.PromptTuning(tiny_opt(), n)
    input_ids, attention_mask, labels = random_batch(batch, length, seed=n)
    seen = model_call(wrapper, input_ids, attention_mask, labels)
    mask = seen.get("attention_mask")
    expected = torch.cat([torch.ones(batch, n, dtype=torch.long), attention_mask], dim=1)
    assert mask is not None, msg("13.mask_passed")
    assert tuple(mask.shape) == tuple(expected.shape), msg(
        "13.mask_shape", want=tuple(expected.shape), got=tuple(mask.shape)
    )
    if not torch.equal(mask.long(), expected):
        rule = msg("13.mask_ones_first", n=n, found=mask.tolist())
        appended = torch.equal(mask.long(), torch.cat([attention_mask, expected[:, :n]], dim=1))
        raise AssertionError(msg("13.mask_ones_appended", rule=rule) if appended else rule)


@given(sizes())
def test_labels_are_minus_100_on_the_prompt_then_the_inputs_labels(size):
    n, batch, length = size
    wrapper = prompt.PromptTuning(tiny_opt(), n)
    input_ids, attention_mask, labels = random_batch(batch, length, seed=n)
    seen = model_call(wrapper, input_ids, attention_mask, labels)
    got = seen.get("labels")
    assert got is not None, msg("13.labels_passed")
    assert tuple(got.shape) == (batch, n + length), msg(
        "13.labels_shape", want=(batch, n + length), got=tuple(got.shape)
    )
    if not (got[:, :n] == -100).all():
        raise AssertionError(msg("13.labels_masked_on_the_prompt", n=n, found=got[:, :n].tolist()))
    assert torch.equal(got[:, n:], labels), msg("13.input_labels_after_the_prompt")


def test_the_prompt_is_fp32_even_on_a_bfloat16_model():
    model = tiny_opt().to(torch.bfloat16)
    wrapper = prompt.PromptTuning(model, N)
    assert wrapper.prompt.dtype == torch.float32, msg(
        "13.prompt_fp32_on_bf16", dtype=wrapper.prompt.dtype
    )
    input_ids, _, _ = random_batch(2, 7)
    try:
        logits = wrapper(input_ids).logits
    except NotImplementedError:
        raise
    except RuntimeError as error:  # the bf16 layers refusing an fp32 input: "mixed dtype"
        pytest.fail(msg("13.forward_on_bf16_raised", error=str(error)[:200]))
    assert logits.shape == (2, N + 7, VOCAB) and torch.isfinite(logits).all(), msg(
        "13.forward_on_bf16"
    )


def test_gradients_reach_only_the_prompt():
    model = tiny_opt()
    wrapper = prompt.PromptTuning(model, N)
    input_ids, attention_mask, labels = random_batch(3, 6)
    with mask_checked(wrapper, input_ids, N):
        out = wrapper(input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    grad = wrapper.prompt.grad
    assert grad is not None and grad.abs().sum() > 0, msg("13.prompt_gets_a_gradient")
    moved = [name for name, p in model.named_parameters() if p.grad is not None]
    assert not moved, msg("13.model_gets_no_gradient", count=len(moved), example=moved[0])


def quotes_batch(tokenizer, count=3, max_length=24):
    """A right-padded batch of the first quotes (cut to fit the tiny OPT's 128 positions with
    the prompt), collated by exercise 06's collate."""
    from lora_kata.models.tiny import PAD_ID, quote_texts

    features = [
        dict(tokenizer(text, truncation=True, max_length=max_length))
        for text in quote_texts()[:count]
    ]
    return data.collate_for_causal_lm(features, PAD_ID)


@pytest.mark.parametrize("with_mask", [True, False], ids=["padded", "no-mask"])
def test_logits_and_loss_equal_peft_prompt_tuning_with_the_same_prompt(with_mask):
    base = tiny_opt()
    ours = prompt.PromptTuning(copy.deepcopy(base), N)
    theirs = peft_prompt_tuning(base, N)
    with torch.no_grad():
        ours.prompt.copy_(torch.randn(N, HIDDEN) * 0.5)  # a trained-looking prompt
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.prompt)
    batch = quotes_batch(quotes_tokenizer())
    if with_mask:
        assert (batch["attention_mask"] == 0).any(), msg("13.batch_has_padding")
        mask = batch["attention_mask"]
    else:
        mask = None
    with torch.no_grad(), mask_checked(ours, batch["input_ids"], N):
        got = ours(batch["input_ids"], attention_mask=mask, labels=batch["labels"])
        want = theirs(input_ids=batch["input_ids"], attention_mask=mask, labels=batch["labels"])
    rows, length = batch["input_ids"].shape
    assert got.logits.shape == want.logits.shape == (rows, N + length, VOCAB), msg(
        "13.logits_shape", want=(rows, N + length, VOCAB), got=tuple(got.logits.shape)
    )
    torch.testing.assert_close(
        got.logits,
        want.logits,
        atol=1e-5,
        rtol=1e-5,
        msg=lambda m: msg("13.logits_as_peft") + "\n" + m,
    )
    assert torch.allclose(got.loss, want.loss, atol=1e-6), msg(
        "13.loss_as_peft", got=got.loss.item(), want=want.loss.item()
    )


@given(st.tuples(st.integers(1, 64), st.integers(1, 8192)).filter(lambda s: s[0] != s[1]))
def test_prompt_tuning_count_is_n_times_h(size):
    n, hidden = size
    got = prompt.prompt_tuning_parameter_count(n, hidden)
    assert got == n * hidden, msg(
        "13.prompt_tuning_count", n=n, hidden=hidden, want=n * hidden, got=got
    )
    assert type(got) is int, msg("13.count_is_an_int", found=type(got).__name__)


@given(
    st.tuples(st.integers(1, 64), st.integers(1, 96), st.integers(1, 8192)).filter(
        lambda s: len(set(s)) == 3
    )
)
def test_prefix_tuning_count_is_n_times_2_times_layers_times_h(size):
    n, layers, hidden = size
    got = prompt.prefix_tuning_parameter_count(n, layers, hidden)
    expected = n * 2 * layers * hidden
    rule = msg("13.prefix_tuning_count", n=n, layers=layers, hidden=hidden, want=expected, got=got)
    assert got == expected, (
        msg("13.prefix_tuning_count_missing_2", rule=rule) if got * 2 == expected else rule
    )
    assert type(got) is int, msg("13.count_is_an_int", found=type(got).__name__)


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_counts_equal_peft_trainable_parameters_on_the_tiny_opt():
    from peft import PrefixTuningConfig, PromptTuningConfig

    ours = prompt.prompt_tuning_parameter_count(N, HIDDEN)
    wrapped, _ = counting.count_parameters(prompt.PromptTuning(tiny_opt(), N))
    peft_prompt = peft_trainable(
        tiny_opt(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)
    )
    assert ours == wrapped == peft_prompt == N * HIDDEN, msg(
        "13.tiny_prompt_counts", n=N, hidden=HIDDEN, peft=peft_prompt, ours=ours, wrapped=wrapped
    )
    ours = prompt.prefix_tuning_parameter_count(N, LAYERS, HIDDEN)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)
    assert not config.prefix_projection, msg("13.peft_prefix_without_projection")
    prefix_model = peft_wrapped(tiny_opt(), config)
    peft_prefix = prefix_model.get_nb_trainable_parameters()[0]
    rule = msg(
        "13.tiny_prefix_count", n=N, layers=LAYERS, hidden=HIDDEN, peft=peft_prefix, ours=ours
    )
    assert ours == peft_prefix, (
        msg("13.missing_factor_2", rule=rule) if 2 * ours == peft_prefix else rule
    )
    # What those values are: a key/value cache of N positions in every layer, in front of the
    # input's own keys and values.
    cache = prefix_model.get_prompt(batch_size=1)
    assert cache.get_seq_length() == N and len(cache.layers) == LAYERS, msg(
        "13.peft_prefix_cache",
        n=N,
        layers=LAYERS,
        positions=cache.get_seq_length(),
        found_layers=len(cache.layers),
    )
    # Li & Liang's reparameterisation (prefix_projection=True) trains an MLP on top instead:
    # an (n, h) embedding, Linear(h, e), Linear(e, 2·layers·h), with biases.
    e = 24
    projected = peft_trainable(
        tiny_opt(),
        PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=N,
            prefix_projection=True,
            encoder_hidden_size=e,
        ),
    )
    kv = 2 * LAYERS * HIDDEN
    expected = N * HIDDEN + (HIDDEN * e + e) + (e * kv + kv)
    assert projected == expected > ours, msg(
        "13.peft_prefix_projection", want=expected, ours=ours, got=projected
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_opt_6_7b_20_virtual_tokens_train_81920_or_5242880_against_loras_8388608():
    from peft import PrefixTuningConfig, PromptTuningConfig

    from lora_kata.testing.lora_models import opt_6_7b_on_meta

    prompt_count = prompt.prompt_tuning_parameter_count(20, 4096)
    prefix_count = prompt.prefix_tuning_parameter_count(20, 32, 4096)
    lora_count = 32 * 2 * counting.lora_parameter_count(4096, 4096, 16)  # q_proj, v_proj
    config = dict(task_type="CAUSAL_LM", num_virtual_tokens=20)
    wrapped = peft_wrapped(opt_6_7b_on_meta(), PromptTuningConfig(**config))
    peft_prompt, prompt_total = wrapped.get_nb_trainable_parameters()
    wrapped = peft_wrapped(opt_6_7b_on_meta(), PrefixTuningConfig(**config))
    peft_prefix, prefix_total = wrapped.get_nb_trainable_parameters()
    # peft's "all params" is the frozen model plus what it trains.
    assert prompt_total == OPT_6_7B_PARAMETERS + peft_prompt, msg(
        "13.peft_all_params_prompt_tuning",
        frozen=OPT_6_7B_PARAMETERS,
        trained=peft_prompt,
        total=prompt_total,
    )
    assert prefix_total == OPT_6_7B_PARAMETERS + peft_prefix, msg(
        "13.peft_all_params_prefix_tuning",
        frozen=OPT_6_7B_PARAMETERS,
        trained=peft_prefix,
        total=prefix_total,
    )
    assert prompt_count == peft_prompt == 81_920, msg(
        "13.opt_prompt_count", peft=peft_prompt, ours=prompt_count
    )
    rule = msg("13.opt_prefix_count", peft=peft_prefix, ours=prefix_count)
    assert prefix_count == peft_prefix == 5_242_880, (
        msg("13.missing_factor_2", rule=rule) if 2 * prefix_count == peft_prefix else rule
    )
    assert lora_count == 8_388_608, msg("13.tutorial_lora_count", got=lora_count)
    assert prompt_count < prefix_count < lora_count, msg(
        "13.prompt_prefix_lora_order", prompt=prompt_count, prefix=prefix_count, lora=lora_count
    )
