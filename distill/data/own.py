"""Your own data: a folder of images (`dataset.name=image_folder`) or an .npz file of arrays
(`dataset.name=arrays`), read from `dataset.root`. Any number of classes; the class names go
into the export card. A missing or damaged file is a one-line UserError naming it.

image_folder, torchvision's ImageFolder layout, one folder per class (their names, sorted, are
the classes):

    root/train/cat/001.png  root/train/dog/xyz.jpg ...  root/test/cat/...   (a test set of its own)
    root/cat/001.png        root/dog/xyz.jpg ...                            (dataset.test_fraction held out)

Every image becomes one shape: resized to `dataset.image_size` [H, W], or (null) checked to be
the size of the first; grey if every image is grey, else RGB (alpha dropped). Kept as uint8.

arrays: an .npz file (numpy.savez) holding x_train, y_train, x_test, y_test (x: one example per
row, any numeric dtype, uint8 read as 0..255 pixels; y: integer labels 0..K-1) and optionally
class_names (K strings); K = len(class_names), else the largest label + 1. Every class 0..K-1
needs training examples (a test label y_train lacks is a data bug, refused); no other arrays.

Both are sized by their files: `dataset.num_samples` is null for them (distill.config), and a key
neither reads (download; arrays: image_size, test_fraction; train/ and test/: test_fraction) is a
one-line error, as are images lying outside the class folders.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only
    from distill.config import DatasetConfig
from distill.data.registry import RawData, register
from distill.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _root(cfg: DatasetConfig) -> Path:
    return Path(cfg.root).expanduser().resolve()


def _unread(cfg: DatasetConfig, name: str, keys: dict[str, str]) -> None:
    """A dataset.* key (of `keys`: key -> why) that this loader does not read, set away from its
    default: a one-line UserError naming it and its default."""
    default = type(cfg)()
    for key, why in keys.items():
        if getattr(cfg, key) != getattr(default, key):
            value = {None: "null", False: "false"}.get(getattr(default, key), getattr(default, key))
            raise UserError(f"dataset.{key}: {name} does not read it ({why}); set dataset.{key}={value} "
                            f"or leave it out")


# ---------------------------------------------------------------- image folders


def _classes(folder: Path) -> list[str]:
    _loose(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UserError(f"dataset.root: {folder} holds no class folders; put each class's images in a folder "
                        f"named after the class (root/train/<class>/, root/test/<class>/, or root/<class>/)")
    return names


def _loose(folder: Path) -> None:
    """Images lying in `folder` itself, outside any class folder, belong to no class: one line."""
    loose = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if loose:
        more = f" and {len(loose) - 1} more" if len(loose) > 1 else ""
        raise UserError(f"dataset.root: {folder / loose[0]}{more} lie outside the class folders, so they have no "
                        f"class; move each image into its class's folder ({folder}/<class>/) or remove it")


def _files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Image files under folder/<class>/ (any depth, sorted) and their labels."""
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found and (folder / name).is_dir():
            raise UserError(f"dataset.root: the class folder {folder / name} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the folder")
        files += found
        labels += [label] * len(found)
    return files, labels


def _read_images(files: list[Path], size) -> np.ndarray:
    """(N, C, H, W) uint8 of `files`, resized to size [H, W] or checked to be one size."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise UserError(f"dataset.root: {path} is not a readable image ({type(err).__name__}: {err}); "
                            f"replace or remove it") from None
    mode = "L" if all(image.mode in ("L", "1", "I;16", "I", "F") for image in images) else "RGB"
    arrays = []
    first = images[0].size
    for path, image in zip(files, images):
        image = image.convert(mode)
        if size is not None:
            height, width = size
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
        elif image.size != first:
            raise UserError(f"dataset.image_size: {path} is {image.size[0]}x{image.size[1]} (width x height) but "
                            f"{files[0]} is {first[0]}x{first[1]}; set dataset.image_size=[{first[1]}, {first[0]}] "
                            f"to resize every image to one size")
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(arrays)


@register("image_folder")
def _load_image_folder(cfg: DatasetConfig) -> RawData:
    """Images in class folders (torchvision's ImageFolder layout), train/ and test/ or one folder."""
    root = _root(cfg)
    _unread(cfg, "image_folder", {"download": "it reads the images in dataset.root and downloads nothing"})
    if not root.is_dir():
        raise UserError(f"dataset.root: no folder {root}; give the folder holding train/ and test/ (each with "
                        f"one folder per class), or one folder per class")
    if cfg.image_size is not None and (len(cfg.image_size) != 2 or min(cfg.image_size) < 1):
        raise UserError(f"dataset.image_size: {cfg.image_size} must be [height, width], e.g. [32, 32]")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        have, lack = ("train", "test") if train_dir.is_dir() else ("test", "train")
        raise UserError(f"dataset.root: {root} has {have}/ but no {lack}/; add {root / lack}/ with the same class "
                        f"folders, or put the class folders directly in {root} (dataset.test_fraction is held out)")
    if train_dir.is_dir():
        _unread(cfg, "image_folder with train/ and test/", {"test_fraction": f"its test set is {test_dir}"})
        _loose(root)
        classes = _classes(train_dir)
        extra = sorted(set(_classes(test_dir)) - set(classes))
        if extra:
            raise UserError(f"dataset.root: {test_dir} has the class folder {extra[0]!r}, which {train_dir} lacks, "
                            f"so a model would be tested on a class it never trained on; add training images in "
                            f"{train_dir / extra[0]}/ or remove {test_dir / extra[0]}")
        train_files, y_train = _files(train_dir, classes)
        test_files, y_test = _files(test_dir, classes)
        if not test_files:
            raise UserError(f"dataset.root: {test_dir} holds no images; put the test images there")
    else:
        classes = _classes(root)
        files, labels = _files(root, classes)
        train_idx, test_idx = _holdout(np.asarray(labels), cfg, root)
        train_files, y_train = [files[i] for i in train_idx], [labels[i] for i in train_idx]
        test_files, y_test = [files[i] for i in test_idx], [labels[i] for i in test_idx]
    x = _read_images(train_files + test_files, cfg.image_size)
    n = len(train_files)
    as_y = lambda labels: torch.tensor(labels, dtype=torch.int64)  # noqa: E731
    return RawData(torch.from_numpy(x[:n]), as_y(y_train), torch.from_numpy(x[n:]), as_y(y_test), len(classes),
                   scale=255.0, class_names=classes)


def _holdout(labels: np.ndarray, cfg: DatasetConfig, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) positions: a stratified dataset.test_fraction held out with split_seed."""
    from sklearn.model_selection import train_test_split

    try:
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=cfg.test_fraction,
                                               stratify=labels, random_state=cfg.split_seed)
    except ValueError as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"dataset.test_fraction: cannot hold out a stratified {cfg.test_fraction} of the "
                        f"{len(labels)} images in {root} for test ({reason}); add images, change "
                        f"dataset.test_fraction, or give train/ and test/ folders") from None
    return np.sort(train_idx), np.sort(test_idx)


# ---------------------------------------------------------------- arrays


@register("arrays")
def _load_arrays(cfg: DatasetConfig) -> RawData:
    """x_train, y_train, x_test, y_test (and optional class_names) from an .npz file."""
    path = _root(cfg)
    _unread(cfg, "arrays", {"download": "it reads the .npz file dataset.root and downloads nothing",
                            "image_size": "x_train and x_test are read at the shape they have",
                            "test_fraction": "its test set is x_test, y_test"})
    if not path.is_file():
        raise UserError(f"dataset.root: no file {path}; give an .npz file (numpy.savez) holding "
                        f"{', '.join(ARRAY_KEYS)} and optionally class_names")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"dataset.root: {path} is not a readable .npz file of plain arrays ({err}); "
                        f"write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    if missing:
        raise UserError(f"dataset.root: {path} has no {', '.join(missing)} (it has {', '.join(arrays) or 'nothing'}); "
                        f"save {', '.join(ARRAY_KEYS)} in it")
    unknown = [key for key in arrays if key not in ARRAY_KEYS + ("class_names",)]
    if unknown:
        raise UserError(f"dataset.root: {path} holds {', '.join(unknown)}, which arrays does not read (it reads "
                        f"{', '.join(ARRAY_KEYS)}, class_names; validation is dataset.val_fraction of x_train); "
                        f"save it without {', '.join(unknown)}")
    x_train, y_train, x_test, y_test = (arrays[key] for key in ARRAY_KEYS)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
            raise UserError(f"dataset.root: x_{split} in {path} must be numbers with one example per row, shape "
                            f"(N, ...) with N >= 1; got {x.dtype} of shape {x.shape}")
        if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x):
            raise UserError(f"dataset.root: y_{split} in {path} must be {len(x)} integer labels, one per row of "
                            f"x_{split}; got {y.dtype} of shape {y.shape}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"dataset.root: x_train examples have shape {x_train.shape[1:]} but x_test's have "
                        f"{x_test.shape[1:]} in {path}; give both the same shape")
    names = arrays.get("class_names")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise UserError(f"dataset.root: class_names in {path} must be a list of strings, got {names.dtype} "
                            f"of shape {names.shape}")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    num_classes = len(names) if names is not None else int(max(y_train.max(), y_test.max())) + 1
    _untrained_classes(y_train, y_test, num_classes, path, names is not None)
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return RawData(as_tensor(x_train), as_tensor(y_train.astype(np.int64)), as_tensor(x_test),
                   as_tensor(y_test.astype(np.int64)), num_classes, scale=scale, class_names=names)


def _labels(y: np.ndarray) -> str:
    found = np.unique(y)
    return ", ".join(map(str, found)) if len(found) <= 6 else f"{found[0]}..{found[-1]}"


def _untrained_classes(y_train: np.ndarray, y_test: np.ndarray, k: int, path: Path, named: bool) -> None:
    """The classes are 0..k-1 (k: class_names' length, else the largest label + 1), and each needs
    training examples: a class y_train lacks (a gap in its labels, or a test label it never has) is
    a data bug, a class the model cannot learn. Labels outside 0..k-1 are check_classes' to name."""
    if min(y_train.min(), y_test.min()) < 0 or max(y_train.max(), y_test.max()) >= k:
        return
    missing = np.setdiff1d(np.arange(k), y_train)
    if missing.size:
        listed = ", ".join(map(str, missing[:8])) + (" ..." if missing.size > 8 else "")
        source = f"{k} class_names" if named else "the largest label + 1"
        raise UserError(f"dataset.root: y_train in {path} has no example of class {listed} (y_train has "
                        f"{_labels(y_train)}, y_test {_labels(y_test)}; the classes are 0..{k - 1}, from {source}), "
                        f"so no model can learn it; relabel y_train and y_test to 0..C-1 with every class in "
                        f"y_train{', one class_names entry each' if named else ''}, and drop test examples of "
                        f"classes y_train lacks")
