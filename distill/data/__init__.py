"""Datasets as tensors: load, split, normalise, batch by indexing, augment on the device.

    from distill.config import DatasetConfig
    from distill.data import load_data
    data = load_data(DatasetConfig(name="digits"))            # offline: digits, mnist1d, fake
    g = torch.Generator().manual_seed(0)
    for xs, ys, idx in data.train_batches(128, [g]): ...       # (1, B, ...); idx: rows of data.x["train"]

Every dataset is a raw loader in `DATASETS` (filled by `@register(name)`) that returns the
original train and test sets as tensors; `load_data` then holds out a stratified validation
share of the training set (fixed by `split_seed`, not by the run seed, so every seed and
every generation sees the same split), keeps an optional stratified `train_subset`, and
normalises per channel with statistics of the train split only.

The torchvision formats are read directly from `dataset.root` (idx-ubyte, CIFAR pickles,
SVHN .mat) without torchvision's md5 checks, so tests can write tiny files in the same
format. Nothing is downloaded unless `dataset.download=true`. Your own data: an image folder
or an .npz file of arrays (`distill/data/own.py`), or a loader of your own registered by the
module `dataset.module` names or by an entry point (`distill/data/registry.py`). Every dataset
carries its class names (`Data.class_names`, the export card's).

`source_index` keeps, for every train/val row, its row number in the dataset's original
training set (for "test": in its test set), so a file of teacher predictions with one row
per original training example can be indexed by it.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: config imports this module (for its names), never the reverse
    from distill.config import DatasetConfig
from distill.errors import UserError

SPLITS = ("train", "val", "test")
AUGMENTS = ("none", "crop_flip", "crop", "shift")
CROP_PADDING = 4  # pixels of zero padding around an image before a random crop (CIFAR/SVHN)

# ---------------------------------------------------------------- registry


#: inputs gathered at once by Data.train_batches (a chunk of whole batches, at least one)
CHUNK_BYTES = 64 * 2**20


def chunk_rows(x_all: Tensor, batch_size: int, models: int = 1) -> int:
    """Examples per gathered chunk: whole batches, up to CHUNK_BYTES of inputs for `models`
    models' batches together, at least one batch."""
    row_bytes = max(1, x_all[:1].numel() * x_all.element_size()) * models
    return batch_size * max(1, CHUNK_BYTES // (row_bytes * batch_size))


from distill.data.registry import AUTO_AUGMENT, DATASETS, RawData, register  # noqa: E402


# ---------------------------------------------------------------- Data


@dataclass
class Data:
    """Train/val/test tensors of one dataset, normalised, on one device."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    x: dict[str, Tensor]  # split -> float32 (N, *input_shape), normalised
    y: dict[str, Tensor]  # split -> int64 (N,)
    source_index: dict[str, Tensor]  # split -> int64 rows in the original train (train/val) or test set
    augment: str  # resolved: none | crop_flip | crop | shift
    shift: int
    mean: tuple[float, ...] = field(default=())  # per-channel statistics of the train split (before normalising)
    std: tuple[float, ...] = field(default=())
    class_names: tuple[str, ...] = field(default=())  # one per class, in label order (the export card's)
    scale: float = 1.0  # raw inputs / scale lie in [0, 1] (images) before normalising
    text: Optional[object] = None  # text corpora: tokenizer and documents (distill.data.text.TextInfo); x, y: token ids

    def to(self, device) -> "Data":
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return dataclasses.replace(self, x=move(self.x), y=move(self.y), source_index=move(self.source_index))

    def size(self, split: str) -> int:
        return self.x[split].shape[0]

    def train_batches(self, batch_size: int, generators: list[torch.Generator], augment: bool = True
                      ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch of (x, y, idx) for K models at once, shapes (K, B, ...), (K, B), (K, B):
        model k's examples come in an order drawn from `generators[k]` and are augmented on the
        device with the same generator, so model k gets exactly the batches it would get alone.
        idx are positions in the train split. The last batch may be smaller. No host sync, no
        DataLoader: the examples are gathered a chunk of batches at a time (up to CHUNK_BYTES of
        inputs, the whole epoch for small datasets) and each batch is a slice of the chunk."""
        x_all, y_all = self.x["train"], self.y["train"]
        n = x_all.shape[0]
        orders = torch.stack([torch.randperm(n, generator=g, device=g.device) for g in generators]).to(x_all.device)
        kind = self.augment if augment else "none"
        chunk = chunk_rows(x_all, batch_size, len(generators))
        for chunk_start in range(0, n, chunk):
            chunk_idx = orders[:, chunk_start:chunk_start + chunk]
            x_chunk, y_chunk = x_all[chunk_idx], y_all[chunk_idx]
            for start in range(0, chunk_idx.shape[1], batch_size):
                xs = x_chunk[:, start:start + batch_size]
                if kind != "none":
                    xs = torch.stack([augment_batch(x, kind, g, self.shift) for x, g in zip(xs, generators)])
                yield xs, y_chunk[:, start:start + batch_size], chunk_idx[:, start:start + batch_size]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The split in order, unaugmented."""
        x_all, y_all = self.x[split], self.y[split]
        for start in range(0, x_all.shape[0], batch_size):
            yield x_all[start:start + batch_size], y_all[start:start + batch_size]


# ---------------------------------------------------------------- augmentation


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator, low: int = 0) -> Tensor:
    # Draw on the generator's device (a CPU generator may drive CUDA data), then move.
    return torch.randint(low, high, size, generator=generator, device=generator.device)


def augment_batch(x: Tensor, kind: str, generator: torch.Generator, shift: int = 4) -> Tensor:
    """Per-example random augmentation of a batch, vectorised, on x's device.

    crop_flip: pad 4 zero pixels on each side, crop back to (H, W) at a random offset, flip
        horizontally with probability 1/2 (CIFAR). Draws: offsets = randint(0, 9, (N, 2))
        as (dy, dx), then flips = randint(0, 2, (N,)).
    crop: the same crop, no flip (SVHN: digits must not be mirrored).
    shift: circular roll along the last axis by s ~ randint(-shift, shift + 1, (N,)) (1-D
        signals), as torch.roll(x[i], s[i], -1).
    none: x itself.
    Deterministic given the generator's state.
    """
    if kind == "none" or x.shape[0] == 0:
        return x
    n = x.shape[0]
    if kind in ("crop_flip", "crop"):
        if x.dim() != 4:
            raise UserError(f"dataset.augment: {kind} needs images (N, C, H, W), got a batch of shape "
                            f"{tuple(x.shape)}; use dataset.augment=shift or none for 1-D data")
        pad = CROP_PADDING
        h, w = x.shape[-2:]
        offsets = _randint(2 * pad + 1, (n, 2), generator).to(x.device)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
        cols = torch.arange(w, device=x.device).expand(n, w)
        if kind == "crop_flip":
            flips = _randint(2, (n,), generator).to(x.device).bool()
            cols = torch.where(flips[:, None], cols.flip(-1), cols)
        cols = offsets[:, 1:] + cols  # (N, W)
        padded = F.pad(x, (pad, pad, pad, pad))
        c = x.shape[1]
        padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))  # pick rows, then columns
        return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if kind == "shift":
        if shift == 0:
            return x
        length = x.shape[-1]
        shifts = _randint(shift + 1, (n,), generator, low=-shift).to(x.device)
        source = (torch.arange(length, device=x.device) - shifts[:, None]) % length  # (N, L)
        source = source.view(n, *([1] * (x.dim() - 2)), length).expand_as(x)
        return x.gather(-1, source)
    raise UserError(f"dataset.augment: unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTS)}")


# ---------------------------------------------------------------- load, split, normalise


def resolve_augment(cfg: DatasetConfig) -> str:
    return AUTO_AUGMENT.get(cfg.name, "none") if cfg.augment == "auto" else cfg.augment


def load_data(cfg: DatasetConfig) -> Data:
    """Raw dataset -> stratified train/val split (+ train_subset) -> normalised tensors on CPU."""
    if getattr(cfg, "module", None):  # a user's module registers its datasets (distill.data.registry)
        cfg.import_module()
    if cfg.name not in DATASETS:
        raise UserError(f"dataset.name: unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    raw = DATASETS[cfg.name](cfg)
    if isinstance(raw, Data):  # a text corpus comes tokenised and split by document (distill/data/text.py)
        return raw
    if not isinstance(raw, RawData):
        raise UserError(f"dataset.name: the loader of {cfg.name} returned a {type(raw).__name__}; a loader "
                        f"returns distill.data.registry.RawData")
    class_names = check_classes(raw, cfg.name)
    input_shape = tuple(raw.x_train.shape[1:])
    augment = resolve_augment(cfg)
    if augment in ("crop_flip", "crop") and len(input_shape) != 3:
        raise UserError(f"dataset.augment: {augment} needs images (C, H, W) but {cfg.name} examples have "
                        f"shape {input_shape}; use dataset.augment=shift or none")

    train_idx, val_idx = split_indices(raw.y_train, cfg)
    source_index = {"train": train_idx, "val": val_idx, "test": torch.arange(raw.x_test.shape[0])}
    x = {
        "train": _to_float(raw.x_train[train_idx], raw.scale),
        "val": _to_float(raw.x_train[val_idx], raw.scale),
        "test": _to_float(raw.x_test, raw.scale),
    }
    y = {"train": raw.y_train[train_idx].long(), "val": raw.y_train[val_idx].long(), "test": raw.y_test.long()}

    # Per-channel statistics of the train split only: nothing about val/test leaks into training.
    reduce_dims = [d for d in range(x["train"].dim()) if d != 1]
    mean = x["train"].mean(dim=reduce_dims)
    std = x["train"].std(dim=reduce_dims).clamp_min(1e-6)  # a constant channel stays finite
    view = (1, -1) + (1,) * (x["train"].dim() - 2)
    for split in SPLITS:
        x[split].sub_(mean.view(view)).div_(std.view(view))

    return Data(name=cfg.name, num_classes=raw.num_classes, input_shape=input_shape, x=x, y=y,
                source_index=source_index, augment=augment, shift=cfg.shift,
                mean=tuple(mean.tolist()), std=tuple(std.tolist()), class_names=class_names, scale=raw.scale)


def check_classes(raw: RawData, name: str) -> tuple[str, ...]:
    """The class names of `raw` (its own, else the label numbers), its labels checked to be classes."""
    k = raw.num_classes
    for split, y in (("train", raw.y_train), ("test", raw.y_test)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise UserError(f"dataset: {name}'s {split} labels go from {int(y.min())} to {int(y.max())}, but it has "
                            f"{k} classes (labels 0..{k - 1}); fix the labels or the class names")
    names = tuple(str(n) for n in raw.class_names) if raw.class_names is not None else tuple(map(str, range(k)))
    if len(names) != k:
        raise UserError(f"dataset: {name} names {len(names)} classes but has {k}; give one name per class")
    return names


def _to_float(x: Tensor, scale: float) -> Tensor:
    x = x.to(torch.float32)
    return x.div_(scale) if scale != 1.0 else x.clone()


def split_indices(y_train: Tensor, cfg: DatasetConfig) -> tuple[Tensor, Tensor]:
    """Sorted (train, val) row numbers of the original training set: a stratified
    `val_fraction` held out with `split_seed`, then a stratified `train_subset` of the rest."""
    from sklearn.model_selection import train_test_split

    labels = y_train.numpy()
    n = len(labels)
    classes = np.unique(labels)
    n_val = int(np.ceil(cfg.val_fraction * n))  # sklearn's rounding for a float test_size
    if n_val < len(classes) or n - n_val < len(classes):
        raise UserError(f"dataset.val_fraction: {cfg.val_fraction} of {n} training examples gives {n_val} "
                        f"validation and {n - n_val} training examples, but each of the {len(classes)} classes "
                        f"needs one in both; choose a val_fraction between {len(classes) / n:.3g} and "
                        f"{1 - len(classes) / n:.3g}")
    try:
        train_idx, val_idx = train_test_split(np.arange(n), test_size=n_val, stratify=labels,
                                              random_state=cfg.split_seed)
        if cfg.train_subset is not None and cfg.train_subset < len(train_idx):
            train_idx, _ = train_test_split(train_idx, train_size=cfg.train_subset, stratify=labels[train_idx],
                                            random_state=cfg.split_seed)
    except ValueError as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"dataset: cannot make a stratified split of {cfg.name} ({reason}); "
                        f"change dataset.val_fraction or dataset.train_subset") from None
    return torch.from_numpy(np.sort(train_idx)).long(), torch.from_numpy(np.sort(val_idx)).long()


# ---------------------------------------------------------------- offline datasets


@register("digits")
def _load_digits(cfg: DatasetConfig) -> RawData:
    """scikit-learn's 1797 8x8 digits (values 0..16); test = a fixed stratified 20%."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=digits.target,
                                           random_state=0)
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return RawData(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], 10, scale=16.0,
                   class_names=[str(i) for i in range(10)])


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int) -> tuple[np.ndarray, ...]:
    # make_dataset only generates (get_dataset would read/write ./mnist1d_data.pkl and may
    # download); it reseeds the global `random` and numpy generators, so restore them.
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.num_samples = num_samples
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


@register("mnist1d")
def _load_mnist1d(cfg: DatasetConfig) -> RawData:
    """MNIST-1D (Greydanus 2020), generated in memory: num_samples, 80% train, shape (1, 40)."""
    x, y, x_test, y_test = _mnist1d_arrays(cfg.num_samples)
    as_x = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).unsqueeze(1)  # noqa: E731
    as_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return RawData(as_x(x), as_y(y), as_x(x_test), as_y(y_test), 10, class_names=[str(i) for i in range(10)])


@register("pydoc")
@register("text")
def _load_text(cfg: DatasetConfig) -> Data:
    """Token blocks of a text corpus: Python's own documentation (pydoc) or dataset.text.files."""
    from distill.data.text import load_text

    return Data(**load_text(cfg))


@register("fake")
def _load_fake(cfg: DatasetConfig) -> RawData:
    """Random data of `fake_shape` like torchvision's FakeData, generated as tensors with a
    fixed generator: num_samples train, num_samples // 5 test (at least one per class); each
    class has its own mean image, so a model can learn it."""
    shape, k = tuple(cfg.fake_shape), cfg.fake_classes
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"dataset.fake_shape: {list(shape)} must be positive sizes, e.g. [3, 32, 32]")
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand((k, *shape), generator=g)

    def make(n: int) -> tuple[Tensor, Tensor]:
        labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
        noise = torch.rand((n, *shape), generator=g)
        return noise.mul_(0.5).add_(prototypes[labels], alpha=0.5), labels  # values in [0, 1]

    x_train, y_train = make(cfg.num_samples)
    x_test, y_test = make(max(cfg.num_samples // 5, k))
    return RawData(x_train, y_train, x_test, y_test, k)


import distill.data.images  # noqa: E402,F401  (registers mnist, fashion_mnist, cifar10, cifar100, svhn)
import distill.data.own  # noqa: E402,F401  (registers image_folder, arrays)
from distill.data.registry import register_entry_points  # noqa: E402

register_entry_points()  # datasets of installed packages (entry-point group distill.datasets)
