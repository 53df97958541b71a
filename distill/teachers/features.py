"""White-box helpers: reading named layers' outputs, and FitNet's projections.

    logits, feats = capture(model, ["features.2"], x, "distill.layers", "student")

Layer names are those of `model.named_modules()`; a name that does not exist is a one-line
ConfigError listing the layers there are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.errors import ConfigError


def resolve_layers(model: nn.Module, names: list[str], key: str, who: str) -> list[nn.Module]:
    """Modules of `model` named `names`; a ConfigError naming the available layers otherwise."""
    modules = dict(getattr(model, "_orig_mod", model).named_modules())
    for name in names:
        if name not in modules or name == "":
            available = ", ".join(n for n in modules if n)
            raise ConfigError(f"{key}: the {who} has no layer {name!r}; its layers are {available}")
    return [modules[n] for n in names]


def capture(model: nn.Module, layers: list[str], x: torch.Tensor, key: str, who: str):
    """model(x) and the outputs of the named layers, in order (forward hooks, removed after)."""
    found: dict[int, torch.Tensor] = {}
    modules = resolve_layers(model, layers, key, who)
    handles = [m.register_forward_hook(lambda _m, _i, out, i=i: found.__setitem__(i, out))
               for i, m in enumerate(modules)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    feats = []
    for i, name in enumerate(layers):
        out = found.get(i)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"{key}: the {who}'s layer {name!r} did not give one tensor in its forward pass; "
                              f"pick another layer")
        feats.append(out)
    return logits, feats


def probe_shapes(model: nn.Module, layers: list[str], data, key: str, who: str) -> list[tuple]:
    """Output shapes (without the batch) of the named layers on two training examples."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        _, feats = capture(model, layers, data.x["train"][:2].to(device), key, who)
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in feats]


class Projection(nn.Module):
    """FitNet regressor: a 1x1 conv when the layouts agree, else flatten -> Linear -> reshape."""

    def __init__(self, student_shape: tuple, teacher_shape: tuple):
        super().__init__()
        self.teacher_shape = tuple(teacher_shape)
        same_layout = len(student_shape) == len(teacher_shape) and student_shape[1:] == teacher_shape[1:]
        self.flat = not (same_layout and len(student_shape) in (2, 3))
        if self.flat:
            self.map = nn.Linear(math.prod(student_shape), math.prod(teacher_shape))
        elif len(student_shape) == 2:
            self.map = nn.Conv1d(student_shape[0], teacher_shape[0], 1)
        else:
            self.map = nn.Conv2d(student_shape[0], teacher_shape[0], 1)

    def forward(self, features):
        if self.flat:
            return self.map(features.flatten(1)).view(-1, *self.teacher_shape)
        return self.map(features)


def white_box_parts(method: str, student_layers: list[str], teacher_layers: list[str], teacher: nn.Module,
                    student: nn.Module, data, seed: int):
    """FitNet's projections (or None) for these layers, checking every layer name and shape."""
    if len(teacher_layers) != len(student_layers):
        raise ConfigError(f"distill.teacher_layers: {len(teacher_layers)} layers but distill.layers has "
                          f"{len(student_layers)}; give one teacher layer per student layer")
    teacher_shapes = probe_shapes(teacher, teacher_layers, data, "distill.teacher_layers", "teacher")
    student_shapes = probe_shapes(student, student_layers, data, "distill.layers", "student")
    if method == "attention":
        for s_name, t_name, s, t in zip(student_layers, teacher_layers, student_shapes, teacher_shapes):
            if s[1:] != t[1:]:
                raise ConfigError(f"distill.layers: attention transfer needs the same spatial size, but student "
                                  f"layer {s_name!r} gives {s} and teacher layer {t_name!r} gives {t}; pick "
                                  f"layers of equal resolution")
    if method != "fitnet":
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.ModuleList(Projection(s, t) for s, t in zip(student_shapes, teacher_shapes))
