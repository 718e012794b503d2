"""Prompt tuning, and what prefix tuning would cost (exercise 13).

Prompt tuning (Lester et al. 2021, arXiv:2104.08691) freezes the whole model and learns only
n "virtual tokens": n rows of input embeddings put in front of every input.

    inputs_embeds = [P; E[input_ids]]    P: (n, h) trainable,  E: the frozen embedding (V, h)
    attention_mask = [1…1; attention_mask]      labels = [-100…-100; labels]

Prefix tuning (Li & Liang 2021, arXiv:2101.00190) learns, instead, a key and a value for each
virtual token in every layer: n · 2 · layers · h parameters (peft, prefix_projection=False).
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100  # cross-entropy's ignore_index: no loss on the virtual tokens


class PromptTuning(nn.Module):
    """A frozen causal LM behind `num_virtual_tokens` trainable input embeddings.

    prompt: (num_virtual_tokens, h) fp32 with h = the input embedding's width. Initialised from
    the embeddings of `init_text`'s token ids (tokenizer(init_text)["input_ids"], repeated and
    cut to num_virtual_tokens: peft's PromptTuningInit.TEXT), else from the embeddings of
    randomly chosen vocabulary ids (peft's SAMPLE_VOCAB).
    """

    def __init__(
        self,
        model: nn.Module,
        num_virtual_tokens: int,
        *,
        init_text: str | None = None,
        tokenizer=None,
    ):
        super().__init__()
        if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int):
            raise ValueError(
                f"num_virtual_tokens must be a whole number ≥ 1, got {num_virtual_tokens!r}"
            )
        if num_virtual_tokens < 1:
            raise ValueError(
                f"num_virtual_tokens must be ≥ 1 (how many prompt rows to learn), "
                f"got {num_virtual_tokens}"
            )
        if init_text is not None and tokenizer is None:
            raise ValueError(
                "init_text needs the model's tokenizer to turn it into token ids: "
                "pass tokenizer=..., or leave init_text out for a random vocabulary init"
            )
        self.model = model
        self.num_virtual_tokens = num_virtual_tokens
        # Freeze everything first: the prompt, added after, is the only thing that trains.
        for param in model.parameters():
            param.requires_grad_(False)
        embedding = model.get_input_embeddings()
        vocab_size = embedding.weight.shape[0]
        if init_text is not None:
            # Special tokens included (OPT's "</s>" in front), exactly what peft embeds.
            ids = list(tokenizer(init_text)["input_ids"])
            if not ids:
                raise ValueError(f"init_text {init_text!r} has no tokens; give a longer text")
            # Repeat the text's ids, then cut: row i is the embedding of ids[i % len(ids)].
            ids = (ids * -(-num_virtual_tokens // len(ids)))[:num_virtual_tokens]
            ids = torch.tensor(ids, dtype=torch.long, device=embedding.weight.device)
        else:
            ids = torch.randint(
                0, vocab_size, (num_virtual_tokens,), device=embedding.weight.device
            )
        # A copy (detach + clone), in fp32 whatever the model's dtype: the rows start where
        # real tokens live, and training them never touches the frozen embedding.
        rows = embedding.weight.detach()[ids].clone().to(torch.float32)
        self.prompt = nn.Parameter(rows)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ):
        """The model on [prompt; embed(input_ids)]: logits of shape (batch, n + length, vocab)."""
        batch = input_ids.shape[0]
        n = self.num_virtual_tokens
        embeds = self.model.get_input_embeddings()(input_ids)
        # The prompt goes first, so every real token can attend to it (causal attention only
        # looks back); cast to the model's dtype as peft does.
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        inputs_embeds = torch.cat([prompt, embeds], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones((batch, n))
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        if labels is not None:
            ignored = labels.new_full((batch, n), IGNORE_INDEX)
            labels = torch.cat([ignored, labels], dim=1)
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)


def prompt_tuning_parameter_count(num_virtual_tokens: int, hidden_size: int) -> int:
    """Trainable parameters of prompt tuning: one input embedding per virtual token, n · h."""
    return num_virtual_tokens * hidden_size


def prefix_tuning_parameter_count(
    num_virtual_tokens: int, num_layers: int, hidden_size: int
) -> int:
    """Trainable parameters of prefix tuning without reparameterisation: n · 2 · layers · h.

    Each virtual token gets its own key and its own value (h each) in every layer's attention.
    """
    return num_virtual_tokens * 2 * num_layers * hidden_size
