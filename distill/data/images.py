"""Datasets in torchvision's on-disk formats, read from `dataset.root` (never downloaded unless
`dataset.download=true`): MNIST and Fashion-MNIST (idx files), CIFAR-10/100 (pickles), SVHN (.mat).
A missing or damaged file is a one-line UserError naming it.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only
    from distill.config import DatasetConfig
from distill.data.registry import RawData, register
from distill.errors import UserError


def _root(cfg: DatasetConfig) -> Path:
    return Path(cfg.root).expanduser().resolve()


def _require(root: Path, title: str, names: list[str]) -> list[Path]:
    """Paths of `names` under root (an idx file may also be name.gz); one-line UserError if any is missing."""
    found, missing = [], []
    for name in names:
        path = root / name
        candidates = [path, path.with_name(path.name + ".gz")] if "idx" in name else [path]
        hit = next((p for p in candidates if p.is_file()), None)
        (found if hit else missing).append(hit or name)
    if missing:
        what = f"no {title} files" if not found else f"incomplete {title} files"
        more = " ..." if len(missing) > 1 else ""
        raise UserError(f"dataset.root: {what} in {root} (expected {missing[0]}{more}); "
                        f"put the dataset there or set dataset.download=true")
    return found


def _download(cfg: DatasetConfig, title: str, cls_name: str, calls: list[dict]) -> None:
    """dataset.download=true: let torchvision fetch the files into root (its own md5 checks apply)."""
    if not cfg.download:
        return
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    root = _root(cfg)
    try:
        for kwargs in calls:
            cls(str(root), download=True, **kwargs)
    except Exception as err:  # network, disk, checksum: all mean "the files are not there"
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"dataset.download: could not download {title} into {root} ({reason}); "
                        f"put the files there by hand and set dataset.download=false") from None


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format): 2 zero bytes, a type byte, a rank byte, big-endian int32 dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in dtypes:
        raise UserError(f"dataset.root: {path} is not an idx-ubyte file (bad header); "
                        f"replace it with the original file or set dataset.download=true")
    rank = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=rank, offset=4))
    dtype = np.dtype(dtypes[data[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(data) != 4 + 4 * rank + count * dtype.itemsize:
        raise UserError(f"dataset.root: {path} has the wrong size for its header {dims}; "
                        f"replace it with the original file or set dataset.download=true")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * rank).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_dataset(cfg: DatasetConfig, folder: str, title: str, cls_name: str) -> RawData:
    _download(cfg, title, cls_name, [{"train": False}])  # one call fetches all four files
    names = [f"{folder}/raw/{stem}" for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    x_train, y_train, x_test, y_test = (torch.from_numpy(_read_idx(p)) for p in _require(_root(cfg), title, names))
    return RawData(x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long(), 10, scale=255.0)


@register("mnist")
def _load_mnist(cfg: DatasetConfig) -> RawData:
    return _idx_dataset(cfg, "MNIST", "MNIST", "MNIST")


@register("fashion_mnist")
def _load_fashion_mnist(cfg: DatasetConfig) -> RawData:
    return _idx_dataset(cfg, "FashionMNIST", "Fashion-MNIST", "FashionMNIST")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(f"dataset.root: {path} is not a readable CIFAR pickle ({err}); "
                        f"replace it with the original file or set dataset.download=true") from None


def _cifar(cfg: DatasetConfig, title: str, cls_name: str, names: list[str], label_key: str,
           num_classes: int) -> RawData:
    _download(cfg, title, cls_name, [{"train": False}])
    paths = _require(_root(cfg), title, names)
    batches = [_read_pickle(p) for p in paths]

    def stack(parts: list[dict]) -> tuple[Tensor, Tensor]:
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in parts])
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = stack(batches[:-1])
    x_test, y_test = stack(batches[-1:])
    return RawData(x_train, y_train, x_test, y_test, num_classes, scale=255.0)


@register("cifar10")
def _load_cifar10(cfg: DatasetConfig) -> RawData:
    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    return _cifar(cfg, "CIFAR-10", "CIFAR10", names, "labels", 10)


@register("cifar100")
def _load_cifar100(cfg: DatasetConfig) -> RawData:
    names = ["cifar-100-python/train", "cifar-100-python/test"]
    return _cifar(cfg, "CIFAR-100", "CIFAR100", names, "fine_labels", 100)


@register("svhn")
def _load_svhn(cfg: DatasetConfig) -> RawData:
    """SVHN cropped digits: X is (32, 32, 3, N) uint8, y is (N, 1) with 10 meaning digit 0."""
    from scipy.io import loadmat

    _download(cfg, "SVHN", "SVHN", [{"split": "train"}, {"split": "test"}])
    out = []
    for path in _require(_root(cfg), "SVHN", ["train_32x32.mat", "test_32x32.mat"]):
        try:
            mat = loadmat(str(path))
        except Exception as err:  # scipy raises several types for a damaged file
            raise UserError(f"dataset.root: {path} is not a readable SVHN .mat file ({err}); "
                            f"replace it with the original file or set dataset.download=true") from None
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))
        y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)
        out += [x, y]
    return RawData(*out, num_classes=10, scale=255.0)
