"""Architectures of the CIFAR papers: ResNet-20/32/56/110 and the x4 variants (He et al. 2016;
CRD/mdistiller), Wide ResNets (Zagoruyko & Komodakis 2016), DenseNet-BC (Huang et al. 2017).

    from distill.models import create_model
    create_model(ModelConfig(name="wrn_28_10"), (3, 32, 32), 100)
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only
    from distill.config import ModelConfig
from distill.errors import ConfigError
from distill.models.parts import call_with, need_shape, no_key, register


# ---------------------------------------------------------------- CIFAR ResNet (He et al. 2016)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. Shortcut "A": subsample and zero-pad channels
    (no parameters, as in the paper's CIFAR models); "B": 1x1 conv + BN."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = 0  # option A: channels of zeros added to the subsampled input
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))
                self.stride = 1
            else:
                self.pad = planes - in_planes

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        x = self.shortcut(x)
        if self.stride != 1 or self.pad:
            x = x[:, :, ::self.stride, ::self.stride]
            x = nn.functional.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return torch.relu(out + x)


class CifarResNet(nn.Module):
    """conv3x3(16) -> layer1..3 of n BasicBlocks (16, 32, 64 channels; strides 1, 2, 2) -> avgpool -> head.
    depth = 6n + 2. `width` scales the stage widths (16 in the paper); `stem` is the first conv's
    width (default: width)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int = 16, shortcut: str = "A",
                 stem: int | None = None):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ConfigError(f"model.kwargs.shortcut: {shortcut!r} is not allowed; choose A or B")
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        stem = stem or width
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        in_planes = stem
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if j == 0 else 1, shortcut))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(self.pool(x))


def cifar_resnet(cfg: ModelConfig, input_shape: tuple, num_classes: int, depth: int) -> nn.Module:
    name = f"resnet{depth}"
    need_shape(name, input_shape, 3)
    if cfg.depth is not None and cfg.depth != depth:
        raise ConfigError(f"model.depth: {name} has depth {depth}; leave model.depth null or use "
                          f"model.name=resnet{cfg.depth}")
    return call_with(CifarResNet, name, cfg.kwargs, depth=depth, num_classes=num_classes,
                 in_channels=input_shape[0], width=cfg.width or 16)


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}")(partial(cifar_resnet, depth=_depth))


def cifar_resnet_x4(cfg: "ModelConfig", input_shape: tuple, num_classes: int, depth: int) -> nn.Module:
    """resnet8x4 / resnet32x4 of the CRD and mdistiller code (Tian et al. 2020): a 32-channel stem, stages
    of 64, 128, 256 channels (width, 2 width, 4 width), 1x1-conv shortcuts ("B"); 1.2M / 7.4M parameters
    for 100 classes."""
    name = f"resnet{depth}x4"
    need_shape(name, input_shape, 3)
    no_key(cfg, name, "depth", f"has depth {depth} (pick resnet8x4 or resnet32x4 by name)")
    width = cfg.width or 64
    kwargs = {"shortcut": "B", **cfg.kwargs}
    return call_with(CifarResNet, name, kwargs, depth=depth, num_classes=num_classes, in_channels=input_shape[0],
                 width=width, stem=max(1, width // 2))


for _depth in (8, 32):
    register(f"resnet{_depth}x4")(partial(cifar_resnet_x4, depth=_depth))


# ---------------------------------------------------------------- Wide ResNet (Zagoruyko & Komodakis 2016)


def _init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convolutions and zero biases for linear layers, as the WRN and
    DenseNet papers' code does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 + shortcut (1x1 conv when the
    shape changes, applied to the pre-activated input as in the reference code)."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
        act = torch.relu(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """conv3x3(16) -> block1..3 of n WideBlocks (16k, 32k, 64k channels; strides 1, 2, 2)
    -> BN-ReLU -> avgpool -> head. depth = 6n + 4, k = widen factor."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        in_planes = 16
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(WideBlock(in_planes, planes, stride if j == 0 else 1, dropout))
                in_planes = planes
            setattr(self, f"block{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x):
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        return self.head(self.pool(torch.relu(self.bn(x))))


_WRN_RULE = "a Wide ResNet needs depth 6n+4 >= 10 and widen >= 1, e.g. wrn_16_4, wrn_28_10, wrn_40_2"


def _wrn_ok(depth: int, widen: int) -> bool:
    return (depth - 4) % 6 == 0 and depth >= 10 and widen >= 1


def wide_resnet(cfg: ModelConfig, input_shape: tuple, num_classes: int, depth: int, widen: int) -> nn.Module:
    name = f"wrn_{depth}_{widen}"
    need_shape(name, input_shape, 3)
    if not _wrn_ok(depth, widen):
        raise ConfigError(f"model.name: {name} cannot be built; {_WRN_RULE}")
    no_key(cfg, name, "depth", f"has its depth in the name ({depth})")
    no_key(cfg, name, "width", f"has its widen factor in the name ({widen})")
    return call_with(WideResNet, name, cfg.kwargs, depth=depth, widen=widen, num_classes=num_classes,
                 in_channels=input_shape[0], dropout=cfg.dropout)


for _depth, _widen in ((16, 1), (16, 2), (16, 4), (16, 8), (28, 1), (28, 10), (40, 1), (40, 2), (40, 4)):
    register(f"wrn_{_depth}_{_widen}")(partial(wide_resnet, depth=_depth, widen=_widen))


# ---------------------------------------------------------------- DenseNet-BC (Huang et al. 2017)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), its k new channels concatenated to its input."""

    def __init__(self, in_planes: int, growth: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        out = self.dropout(self.conv1(torch.relu(self.bn1(x))))
        out = self.dropout(self.conv2(torch.relu(self.bn2(out))))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (compression) -> avgpool 2."""

    def __init__(self, in_planes: int, out_planes: int, dropout: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        x = self.dropout(self.conv(torch.relu(self.bn(x))))
        return nn.functional.avg_pool2d(x, 2, ceil_mode=True)  # ceil: odd sizes (7x7 on MNIST) keep a row


class DenseNetBC(nn.Module):
    """conv3x3(2k) -> block1 -> trans1 -> block2 -> trans2 -> block3 -> BN-ReLU -> avgpool -> head.

    Each dense block has n = (depth - 4) // 6 bottleneck layers. The division is floored so that the
    born-again paper's DenseNet-90-60, -80-80 and -80-120 (whose depth - 4 is not a multiple of 6) build;
    for depth 6n+4 (100, 112, 190, 250) it is exactly the paper's model.
    """

    def __init__(self, depth: int, growth: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0,
                 compression: float = 0.5):
        super().__init__()
        n = (depth - 4) // 6
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for i in range(1, 4):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(planes, growth, dropout))
                planes += growth
            setattr(self, f"block{i}", nn.Sequential(*layers))
            if i < 3:
                out = int(math.floor(planes * compression))
                setattr(self, f"trans{i}", Transition(planes, out, dropout))
                planes = out
        self.bn = nn.BatchNorm2d(planes)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(planes, num_classes)
        _init_weights(self)

    def forward(self, x):
        x = self.conv1(x)
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        x = self.block3(x)
        return self.head(self.pool(torch.relu(self.bn(x))))


@register("densenet_bc")
def densenet_bc(cfg: ModelConfig, input_shape: tuple, num_classes: int) -> nn.Module:
    need_shape("densenet_bc", input_shape, 3)
    depth = cfg.depth or 100
    if depth < 10:
        raise ConfigError(f"model.depth: densenet_bc needs depth >= 10 (6n+4, e.g. 40, 100, 112), got {depth}")
    no_key(cfg, "densenet_bc", "width", "sets its width with model.growth_rate")
    return call_with(DenseNetBC, "densenet_bc", cfg.kwargs, depth=depth, growth=cfg.growth_rate,
                 num_classes=num_classes, in_channels=input_shape[0], dropout=cfg.dropout)
