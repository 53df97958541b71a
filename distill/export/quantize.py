"""int8 weight-only quantisation of Linear layers that `torch.export` can save.

    from distill.export.quantize import quantize_int8
    small, layers = quantize_int8(model)     # a copy; every nn.Linear now an Int8Linear

Each Linear weight is stored as int8 with one float32 scale per output unit (symmetric:
scale = max |w| / 127 of that row) and dequantised in the forward pass; activations stay
float32. The weights take a quarter of the bytes; the arithmetic is the float32 model's.
torch's dynamic quantisation (`torch.ao.quantization.quantize_dynamic`) is not used: its
packed-weight modules cannot be saved by `torch.export`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from distill.errors import UserError


class Int8Linear(nn.Module):
    """A Linear layer whose weight is stored as int8 with one float scale per output unit."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("weight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x):
        return nn.functional.linear(x, self.weight.to(x.dtype) * self.scale[:, None], self.bias)


def quantize_int8(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` with every nn.Linear weight-only int8: (copy, layers replaced)."""
    quantized = copy.deepcopy(model)
    names = [name for name, m in quantized.named_modules() if isinstance(m, nn.Linear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, child, Int8Linear(getattr(parent, child)))
    if not names:
        raise UserError("--quantize int8: the model has no Linear layers to quantise")
    return quantized.eval(), len(names)
