"""Datasets in torchvision's on-disk formats, read from `dataset.root` (never downloaded unless
`dataset.download=true`): MNIST and Fashion-MNIST (idx files), CIFAR-10/100 (pickles), SVHN (.mat).
A missing or damaged file is a one-line UserError naming it.

The classes come from each format's own metadata: CIFAR-10's `batches.meta` (label_names) and
CIFAR-100's `meta` (fine_label_names) give the class names and their number (a 3-class folder in
CIFAR-10's format is a 3-class dataset); without that file, the format's own 10 or 100 classes.
SVHN's .mat files are the ten digits (label 10 is digit 0). Pickles written with bytes keys (as
`pickle.load(f, encoding="bytes")` leaves them) are read too.
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
    return RawData(x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long(), 10, scale=255.0,
                   class_names=FASHION_NAMES if folder == "FashionMNIST" else DIGITS)


DIGITS = [str(i) for i in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@register("mnist")
def _load_mnist(cfg: DatasetConfig) -> RawData:
    return _idx_dataset(cfg, "MNIST", "MNIST", "MNIST")


@register("fashion_mnist")
def _load_fashion_mnist(cfg: DatasetConfig) -> RawData:
    return _idx_dataset(cfg, "FashionMNIST", "Fashion-MNIST", "FashionMNIST")


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _read_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (bytes keys decoded)."""
    try:
        with open(path, "rb") as f:
            found = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as err:
        raise UserError(f"dataset.root: {path} is not a readable CIFAR pickle ({type(err).__name__}: {err}); "
                        f"replace it with the original file or set dataset.download=true") from None
    if not isinstance(found, dict):
        raise UserError(f"dataset.root: {path} holds a {type(found).__name__}, not a CIFAR batch (a dict); "
                        f"replace it with the original file or set dataset.download=true")
    return {_text(key): value for key, value in found.items()}


def _entry(batch: dict, key: str, path: Path):
    if key not in batch:
        raise UserError(f"dataset.root: {path} has no {key!r} entry (it has {', '.join(map(str, batch)) or 'none'}); "
                        f"replace it with the original file or set dataset.download=true")
    return batch[key]


def _cifar(cfg: DatasetConfig, title: str, cls_name: str, names: list[str], label_key: str, meta: tuple[str, str],
           default: tuple[int, list[str] | None]) -> RawData:
    _download(cfg, title, cls_name, [{"train": False}])
    root = _root(cfg)
    paths = _require(root, title, names)
    batches = [_read_pickle(p) for p in paths]

    def stack(parts: list[dict], files: list[Path]) -> tuple[Tensor, Tensor]:
        try:
            x = np.concatenate([np.asarray(_entry(b, "data", p), dtype=np.uint8).reshape(-1, 3, 32, 32)
                                for b, p in zip(parts, files)])
        except ValueError as err:
            raise UserError(f"dataset.root: a {title} batch in {files[0].parent} holds data that is not 32x32 RGB "
                            f"images ({err}); replace it with the original file") from None
        y = np.concatenate([np.asarray(_entry(b, label_key, p), dtype=np.int64) for b, p in zip(parts, files)])
        if len(x) != len(y):
            raise UserError(f"dataset.root: a {title} batch in {files[0].parent} has {len(x)} images but {len(y)} "
                            f"labels; replace it with the original file")
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = stack(batches[:-1], paths[:-1])
    x_test, y_test = stack(batches[-1:], paths[-1:])
    num_classes, class_names = default
    meta_path = root / meta[0]
    if meta_path.is_file():  # the format's own class names, and so their number
        class_names = [str(_text(n)) for n in _entry(_read_pickle(meta_path), meta[1], meta_path)]
        num_classes = len(class_names)
    return RawData(x_train, y_train, x_test, y_test, num_classes, scale=255.0, class_names=class_names)


@register("cifar10")
def _load_cifar10(cfg: DatasetConfig) -> RawData:
    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    return _cifar(cfg, "CIFAR-10", "CIFAR10", names, "labels", ("cifar-10-batches-py/batches.meta", "label_names"),
                  (10, CIFAR10_NAMES))


@register("cifar100")
def _load_cifar100(cfg: DatasetConfig) -> RawData:
    names = ["cifar-100-python/train", "cifar-100-python/test"]
    return _cifar(cfg, "CIFAR-100", "CIFAR100", names, "fine_labels", ("cifar-100-python/meta", "fine_label_names"),
                  (100, None))


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
        if "X" not in mat or "y" not in mat or mat["X"].ndim != 4 or mat["X"].shape[-1] != mat["y"].size:
            raise UserError(f"dataset.root: {path} is not an SVHN .mat file (it needs X of shape (32, 32, 3, N) "
                            f"and y of N labels 1..10); replace it with the original file")
        labels = mat["y"].astype(np.int64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() > 10):
            raise UserError(f"dataset.root: {path} has labels from {labels.min()} to {labels.max()}, but SVHN's "
                            f"are the digits 1..10 (10 is digit 0); replace it with the original file")
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))
        out += [x, torch.from_numpy(labels % 10)]
    return RawData(*out, num_classes=10, scale=255.0, class_names=DIGITS)
