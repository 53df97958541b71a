"""The model registry and the small helpers every architecture module shares.

    @register("mlp")
    def mlp(cfg, input_shape, num_classes) -> nn.Module: ...

Architectures live in distill/models.py (MLP, CNNs, language models, torchvision) and
distill/models/cifar.py (the CIFAR papers' ResNets, Wide ResNets, DenseNet-BC); both import
this module, and `distill.models.create_model` is the one entry point.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Callable

from torch import nn

if TYPE_CHECKING:  # annotations only
    from distill.config import ModelConfig
from distill.errors import ConfigError

Builder = Callable[["ModelConfig", tuple, int], nn.Module]

MODELS: dict[str, Builder] = {}


def register(name: str):
    """Decorator: `@register("mlp")` puts a builder `(cfg, input_shape, num_classes) -> Module` in MODELS."""

    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return add


# ---------------------------------------------------------------- helpers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_batchnorm(model: nn.Module) -> bool:
    """True if any module keeps batch statistics (such models cannot be packed with torch.func.vmap)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def need_shape(name: str, input_shape: tuple, ndim: int) -> None:
    """Raise a one-line ConfigError unless one example has `ndim` dims (2: (C, L), 3: (C, H, W))."""
    if len(input_shape) == ndim:
        return
    if ndim == 3:
        raise ConfigError(f"model.name: {name} takes images (channels, height, width) but the dataset gives "
                          f"examples of shape {tuple(input_shape)}; use cnn1d or mlp for 1-D data")
    raise ConfigError(f"model.name: {name} takes 1-D signals (channels, length) but the dataset gives examples "
                      f"of shape {tuple(input_shape)}; use cnn2d, a ResNet or mlp for images")


def no_key(cfg: ModelConfig, name: str, key: str, why: str) -> None:
    """Raise if `cfg.<key>` is set for a model that fixes it otherwise (width/depth)."""
    if getattr(cfg, key) is not None:
        raise ConfigError(f"model.{key}: {name} {why}; leave model.{key} null")


def call_with(cls, name: str, kwargs: dict, **fixed):
    """cls(**fixed, **kwargs) where unknown or clashing `model.kwargs` keys are a ConfigError."""
    params = inspect.signature(cls).parameters
    allowed = [p for p in params if p not in fixed and p != "self"]
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"model.kwargs.{key}: {name} has no option {key!r}; "
                              f"its options are {', '.join(allowed) or 'none'}")
    return cls(**fixed, **kwargs)


def make_activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
    if name not in acts:
        raise ConfigError(f"model.kwargs.activation: {name!r} is not allowed; choose one of {', '.join(acts)}")
    return acts[name]()


def make_norm(name: str, channels: int, dims: int) -> nn.Module | None:
    """none, batch (BatchNorm: running statistics, not vmap-packable), group (GroupNorm, 8 groups or
    fewer) or layer (GroupNorm with one group: per-example over channels and positions)."""
    if name == "none":
        return None
    if name == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    raise ConfigError(f"model.kwargs.norm: {name!r} is not allowed; choose one of none, batch, group, layer")
