"""Text from a language model, one token at a time: greedy, or sampled with a seeded generator.

    ids = generate(model, prompt_ids, max_new_tokens=50, temperature=0.8, top_k=40,
                   generator=torch.Generator().manual_seed(0), context=64)

`prompt_ids` (B, P) int64 -> (B, P + max_new_tokens): at every step the model reads the last
`context` tokens (all of them when context is None) and the next token is the argmax of the
last position's logits (temperature 0: greedy), or is drawn from softmax(logits / temperature)
restricted to the top_k most likely tokens (top_k 0: all of them) with `generator`. The model
is called as it is (the caller puts it in eval mode). The exported-program snippet of
docs/lm-checkpoints.md is this loop written with plain torch: the same tokens, greedy.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def next_token(logits: torch.Tensor, temperature: float, top_k: int,
               generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, V) of the last position -> the next token (B, 1)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int = 0, generator: Optional[torch.Generator] = None,
             context: Optional[int] = None) -> torch.Tensor:
    """prompt_ids (B, P) -> (B, P + max_new_tokens); see the module docstring."""
    if temperature < 0:
        raise ValueError(f"temperature {temperature} is negative; give 0 (greedy) or more")
    ids = prompt_ids
    for _ in range(max_new_tokens):
        window = ids if context is None else ids[:, -context:]
        ids = torch.cat([ids, next_token(model(window)[:, -1], temperature, top_k, generator)], dim=1)
    return ids
