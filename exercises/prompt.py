"""Prompt tuning, and what prefix tuning would cost (exercise 13).

The tutorial names Prefix Tuning and Prompt Tuning beside LoRA. Prompt tuning (Lester et al.
2021) freezes the whole model and learns only n "virtual tokens": n rows of input embeddings
put in front of every input. With E the model's input embedding (V, h):

    inputs_embeds  = [P; E[input_ids]]          (batch, n + length, h),  P: (n, h) trainable
    attention_mask = [1 … 1; attention_mask]     (batch, n + length)
    labels         = [-100 … -100; labels]       (batch, n + length)

Prefix tuning (Li & Liang 2021) learns, instead, a key and a value for every virtual token in
every layer's attention: n · 2 · layers · h parameters (peft's PrefixTuningConfig with
prefix_projection=False). LoRA r=16 on q_proj and v_proj of opt-6.7b trains 8,388,608;
20 virtual tokens of prompt tuning train 81,920; of prefix tuning, 5,242,880.

Lesson: lessons/en/13-prompt-tuning.md.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptTuning(nn.Module):
    """A frozen causal LM (an OPTForCausalLM, say) behind `num_virtual_tokens` trainable rows."""

    def __init__(
        self,
        model: nn.Module,
        num_virtual_tokens: int,
        *,
        init_text: str | None = None,
        tokenizer=None,
    ):
        """Freeze `model` and create the prompt.

        - num_virtual_tokens < 1 → ValueError saying what was wrong. init_text without a
          tokenizer → ValueError (or TypeError) saying a tokenizer is needed.
        - self.model = model, with requires_grad False on every one of its parameters.
        - self.prompt = nn.Parameter of shape (num_virtual_tokens, h), dtype float32, where
          E = model.get_input_embeddings() and h = E.weight.shape[1]. It is the only trainable
          parameter, and a copy: training it never changes E.
        - init_text given: ids = tokenizer(init_text)["input_ids"] (special tokens included, as
          peft does; OPT puts "</s>" first), repeated and cut to num_virtual_tokens, so row i is
          E.weight[ids[i % len(ids)]] (peft's PromptTuningInit.TEXT).
        - else: row i is E.weight[j] for a randomly chosen vocabulary id j (torch.randint).
        """
        super().__init__()
        # TODO(13): validate, freeze model, pick the token ids, copy their embedding rows to fp32.
        raise NotImplementedError("Exercise 13: PromptTuning.__init__")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ):
        """Call self.model on the prompt followed by the input's embeddings.

        input_ids: (batch, length) → inputs_embeds = cat([prompt cast to E's dtype and
        expanded to (batch, n, h), E(input_ids)], dim=1). The prompt comes FIRST.
        attention_mask (batch, length), if given → cat([ones (batch, n), attention_mask]).
        labels (batch, length), if given → cat([full (batch, n) of -100, labels]).
        Return self.model(inputs_embeds=..., attention_mask=..., labels=...) unchanged: its
        logits have shape (batch, n + length, vocab), and its loss ignores the prompt.
        """
        # TODO(13): build inputs_embeds, the extended mask and labels; call the model.
        raise NotImplementedError("Exercise 13: PromptTuning.forward")


def prompt_tuning_parameter_count(num_virtual_tokens: int, hidden_size: int) -> int:
    """Trainable parameters of prompt tuning: one embedding row (h values) per virtual token.

    prompt_tuning_parameter_count(20, 4096) == 81920.
    """
    # TODO(13): n rows of h values.
    raise NotImplementedError("Exercise 13: prompt_tuning_parameter_count")


def prefix_tuning_parameter_count(
    num_virtual_tokens: int, num_layers: int, hidden_size: int
) -> int:
    """Trainable parameters of prefix tuning (no reparameterisation): in every layer, each
    virtual token has a key AND a value, h values each.

    prefix_tuning_parameter_count(20, 32, 4096) == 5242880.
    """
    # TODO(13): a key and a value per layer per virtual token.
    raise NotImplementedError("Exercise 13: prefix_tuning_parameter_count")
