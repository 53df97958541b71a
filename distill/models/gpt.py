"""A small causal transformer language model (`model.name=gpt`), readable in one screen.

    model = GPT(vocab=256, context=64, width=128, depth=4, heads=4)
    logits = model(tokens)           # (B, L) int64 -> (B, L, vocab): position i predicts token i+1

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP 4x ->
residual), learned position embeddings, as in GPT-2
(Radford et al. 2019) and Karpathy's nanoGPT, except that the head is not tied to the
embedding (tied weights do not survive stacking K models' parameters). Attention is written out (scores, causal
mask, softmax) rather than calling a fused kernel, so `torch.func.vmap` stacks K models of
it like any other (born-again seeds and ensemble members train at once). No dropout by
default (dropout > 0 makes the model unstackable, as for every model here).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        b, length, width = h.shape
        q, k, v = self.qkv(h).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(k.shape[-1])               # (B, heads, L, L)
        future = torch.ones(length, length, dtype=torch.bool, device=h.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))                       # no look at the future
        out = self.drop(scores.softmax(-1)) @ v                                  # (B, heads, L, d)
        return self.proj(out.transpose(1, 2).reshape(b, length, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.drop(self.attend(self.ln1(h)))
        return h + self.drop(self.mlp(self.ln2(h)))


class GPT(nn.Module):
    def __init__(self, vocab: int, context: int, width: int = 128, depth: int = 4, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.context = context
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads, dropout) for _ in range(depth)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[-1]
        h = self.embed(tokens) + self.position.weight[:length]
        return self.head(self.ln(self.blocks(h)))
