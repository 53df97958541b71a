"""The dataset registry: names -> loaders of a dataset's original train and test sets.

    from distill.data.registry import RawData, register

    @register("my_data")                      # or @register("my_images", augment="crop_flip")
    def load(cfg) -> RawData:                 # cfg: the config's dataset section (DatasetConfig)
        return RawData(x_train, y_train, x_test, y_test, num_classes=3, class_names=["a", "b", "c"])

A dataset of your own joins in one of two ways, and every process sees it (the command line,
Ray trials, `distill export`):

- `dataset.module: my_pkg.data` in the config: that module (importable: on PYTHONPATH) is
  imported whenever a config is checked (`distill.config.validate`, which every command and
  every trial runs) and by `load_data`; its `@register` lines run there;
- an entry point of an installed package, in the group `distill.datasets`, named as the
  dataset, pointing at its loader (`[project.entry-points."distill.datasets"]
  my_data = "my_pkg.data:load"`): listed as soon as `distill.data` is imported, the module
  imported only when the dataset is loaded.

distill/data/__init__.py (offline datasets, splitting, normalising, batching),
distill/data/images.py (torchvision's on-disk formats) and distill/data/own.py (image folders,
.npz arrays) register here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:  # annotations only
    from torch import Tensor

    from distill.config import DatasetConfig

ENTRY_POINTS = "distill.datasets"  # the entry-point group of datasets from installed packages


@dataclass
class RawData:
    """A dataset's original train and test sets, before splitting and normalising.

    `x_*` may be any numeric dtype (uint8 images stay uint8 until after the split, which
    saves memory on CIFAR); `x / scale` must lie in [0, 1] for images. Labels are 0 ..
    num_classes - 1; `class_names` (one per class, in label order) go into the export card,
    None = the label numbers.
    """

    x_train: Tensor  # (N, *input_shape)
    y_train: Tensor  # (N,) int64
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    scale: float = 1.0
    class_names: Optional[list[str]] = None


DATASETS: dict[str, Callable[[DatasetConfig], RawData]] = {}
AUTO_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "svhn": "crop"}  # others: none


def register(name: str, augment: Optional[str] = None):
    """Decorator: `@register("digits")` puts a raw loader `fn(cfg) -> RawData` in DATASETS;
    `augment` is what dataset.augment=auto means for it (none, crop_flip, crop, shift)."""

    def wrap(fn):
        DATASETS[name] = fn
        if augment is not None:
            AUTO_AUGMENT[name] = augment
        return fn

    return wrap


def list_datasets() -> list[str]:
    return list(DATASETS)


def register_entry_points() -> None:
    """Every entry point of the group `distill.datasets` as a dataset of its name (a built-in name
    is kept, with one warning line); its module is imported when the dataset is first loaded."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=ENTRY_POINTS)
    except Exception:  # noqa: BLE001 - a broken installed package must not stop every command
        return
    for point in found:
        if point.name in DATASETS:
            if getattr(DATASETS[point.name], "entry_point", None) != point.value:
                print(f"distill: warning: the entry point {point.name} = {point.value} ({ENTRY_POINTS}) is "
                      f"ignored: a dataset of that name is built in", file=sys.stderr)
            continue
        register(point.name)(_lazy(point))


def _lazy(point):
    def load(cfg):
        from distill.errors import UserError

        try:
            loader = point.load()
        except Exception as err:  # noqa: BLE001 - the package's own import failed
            raise UserError(f"dataset.name: {point.name} comes from the entry point {point.value}, which cannot "
                            f"be imported ({type(err).__name__}: {err}); reinstall that package") from None
        return loader(cfg)

    load.entry_point = point.value
    return load
