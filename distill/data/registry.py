"""The dataset registry: names -> loaders of a dataset's original train and test sets.

    @register("digits")
    def load(cfg) -> RawData: ...

distill/data.py (offline datasets, splitting, normalising, batching) and
distill/data/images.py (torchvision's on-disk formats) register here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import Tensor

if TYPE_CHECKING:  # annotations only
    from distill.config import DatasetConfig


@dataclass
class RawData:
    """A dataset's original train and test sets, before splitting and normalising.

    `x_*` may be any numeric dtype (uint8 images stay uint8 until after the split, which
    saves memory on CIFAR); `x / scale` must lie in [0, 1] for images.
    """

    x_train: Tensor  # (N, *input_shape)
    y_train: Tensor  # (N,) int64
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    scale: float = 1.0


DATASETS: dict[str, Callable[[DatasetConfig], RawData]] = {}
AUTO_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "svhn": "crop"}  # others: none


def register(name: str):
    """Decorator: `@register("digits")` puts a raw loader `fn(cfg) -> RawData` in DATASETS."""

    def wrap(fn):
        DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return list(DATASETS)
