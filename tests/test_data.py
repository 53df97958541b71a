"""Tests of distill/data.py: tiny files in every on-disk format, splits, normalisation, batches,
augmentation against plain per-example references.

    .venv/bin/python -m pytest tests/test_data.py -q
"""

import gzip
import pickle
import random
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill import data as data_module
from distill.config import DatasetConfig
from distill.data import DATASETS, Data, augment_batch, load_data
from distill.data.registry import list_datasets
from distill.errors import UserError

N_TRAIN, N_TEST, K = 50, 20, 10


def balanced_labels(n, k, seed):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def images(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# ---------------------------------------------------------------- writers of each format


def write_idx(path, array, compress=False):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(root, folder, compress=False):
    raw = root / folder / "raw"
    x_train, y_train = images(N_TRAIN, (28, 28), 0), balanced_labels(N_TRAIN, K, 0).astype(np.uint8)
    x_test, y_test = images(N_TEST, (28, 28), 1), balanced_labels(N_TEST, K, 1).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", x_train, compress)
    write_idx(raw / "train-labels-idx1-ubyte", y_train, compress)
    write_idx(raw / "t10k-images-idx3-ubyte", x_test, compress)
    write_idx(raw / "t10k-labels-idx1-ubyte", y_test, compress)
    return x_train[:, None], y_train, x_test[:, None], y_test  # (N, C, H, W) as loaded


def write_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x_train, y_train = images(N_TRAIN, (3, 32, 32), 0), balanced_labels(N_TRAIN, K, 0)
    x_test, y_test = images(N_TEST, (3, 32, 32), 1), balanced_labels(N_TEST, K, 1)
    per = N_TRAIN // 5
    for i in range(5):
        part = slice(i * per, (i + 1) * per)
        batch = {"data": x_train[part].reshape(per, -1), "labels": y_train[part].tolist(), "batch_label": "x"}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": x_test.reshape(N_TEST, -1), "labels": y_test.tolist()}))
    return x_train, y_train, x_test, y_test


def write_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x_train, y_train = images(200, (3, 32, 32), 0), balanced_labels(200, 100, 0)
    x_test, y_test = images(N_TEST, (3, 32, 32), 1), balanced_labels(N_TEST, 100, 1)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        d = {"data": x.reshape(len(x), -1), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
        (folder / name).write_bytes(pickle.dumps(d))
    return x_train, y_train, x_test, y_test


def write_svhn(root):
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
        x = images(n, (3, 32, 32), seed)
        y = balanced_labels(n, K, seed)
        mat_y = np.where(y == 0, 10, y).reshape(n, 1).astype(np.uint8)  # SVHN stores digit 0 as 10
        savemat(str(root / f"{name}_32x32.mat"), {"X": np.transpose(x, (2, 3, 1, 0)), "y": mat_y})
        out += [x, y]
    return tuple(out)


FORMATS = {
    "mnist": lambda root: write_mnist(root, "MNIST"),
    "fashion_mnist": lambda root: write_mnist(root, "FashionMNIST", compress=True),
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
}


def cfg_for(name, root=".", **kw):
    return DatasetConfig(name=name, root=str(root), **kw)


def denormalise(data, split):
    view = (1, -1) + (1,) * (len(data.input_shape) - 1)
    return data.x[split] * torch.tensor(data.std).view(view) + torch.tensor(data.mean).view(view)


# ---------------------------------------------------------------- registry and on-disk formats


def test_registry_names_every_dataset():
    assert set(list_datasets()) == {"digits", "mnist1d", "fake", "mnist", "fashion_mnist", "cifar10", "cifar100",
                                    "svhn", "pydoc", "text", "image_folder", "arrays"}
    assert list_datasets() == list(DATASETS)


@pytest.mark.parametrize("name", list(FORMATS))
def test_reads_each_on_disk_format(tmp_path, name):
    x_train, y_train, x_test, y_test = FORMATS[name](tmp_path)
    data = load_data(cfg_for(name, tmp_path, val_fraction=0.5 if name == "cifar100" else 0.2))
    assert data.input_shape == x_train.shape[1:]
    assert data.num_classes == (100 if name == "cifar100" else 10)
    assert data.size("train") + data.size("val") == len(x_train) and data.size("test") == len(x_test)
    for split in ("train", "val", "test"):
        assert data.x[split].dtype == torch.float32 and data.y[split].dtype == torch.int64
    # Rows are where source_index says, pixels are in the right layout and scaled to [0, 1].
    for split, x_raw, y_raw in (("train", x_train, y_train), ("val", x_train, y_train), ("test", x_test, y_test)):
        rows = data.source_index[split].numpy()
        assert np.array_equal(data.y[split].numpy(), y_raw[rows].astype(np.int64))
        expected = torch.from_numpy(x_raw[rows].astype(np.float32) / 255)
        assert torch.allclose(denormalise(data, split), expected, atol=1e-5)
    assert data.augment == {"cifar10": "crop_flip", "cifar100": "crop_flip", "svhn": "crop"}.get(name, "none")


@pytest.mark.parametrize("name", list(FORMATS))
def test_missing_folder_is_a_one_line_user_error(tmp_path, name):
    with pytest.raises(UserError) as err:
        load_data(cfg_for(name, tmp_path / "nowhere"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dataset.root: no ")
    assert str((tmp_path / "nowhere").resolve()) in message and "dataset.download=true" in message


def test_missing_file_message_names_it(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError, match=r"incomplete CIFAR-10 files .*cifar-10-batches-py/test_batch\)"):
        load_data(cfg_for("cifar10", tmp_path))
    assert str(pytest.raises(UserError, load_data, cfg_for("cifar10", tmp_path / "x")).value).startswith(
        "dataset.root: no CIFAR-10 files in ")


def test_corrupt_idx_file_is_a_user_error(tmp_path):
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02garbage")
    with pytest.raises(UserError, match="not an idx-ubyte file"):
        load_data(cfg_for("mnist", tmp_path))


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset 'imagenet'"):
        load_data(cfg_for("imagenet"))


# ---------------------------------------------------------------- split


def test_split_is_stratified_disjoint_complete_and_deterministic():
    cfg = cfg_for("fake", num_samples=200, fake_shape=[1, 4, 4], fake_classes=4, val_fraction=0.2, split_seed=3)
    a, b = load_data(cfg), load_data(cfg)
    train, val = set(a.source_index["train"].tolist()), set(a.source_index["val"].tolist())
    assert len(val) == 40 and len(train) == 160
    assert not train & val and train | val == set(range(200))
    assert torch.bincount(a.y["val"], minlength=4).tolist() == [10, 10, 10, 10]  # 50 per class -> 10 held out
    assert torch.equal(a.source_index["val"], b.source_index["val"]) and torch.equal(a.x["train"], b.x["train"])
    other = load_data(cfg_for("fake", num_samples=200, fake_shape=[1, 4, 4], fake_classes=4, split_seed=4))
    assert not torch.equal(a.source_index["val"], other.source_index["val"])


def test_train_subset_is_stratified_and_inside_the_train_split():
    full = load_data(cfg_for("fake", num_samples=200, fake_shape=[1, 4, 4], fake_classes=4))
    sub = load_data(cfg_for("fake", num_samples=200, fake_shape=[1, 4, 4], fake_classes=4, train_subset=40))
    assert sub.size("train") == 40
    assert torch.bincount(sub.y["train"], minlength=4).tolist() == [10, 10, 10, 10]
    assert set(sub.source_index["train"].tolist()) <= set(full.source_index["train"].tolist())
    assert torch.equal(sub.source_index["val"], full.source_index["val"])  # the subset never touches validation


def test_impossible_split_is_a_one_line_user_error():
    with pytest.raises(UserError) as err:
        load_data(cfg_for("fake", num_samples=40, fake_shape=[1, 4, 4], fake_classes=10, val_fraction=0.05))
    assert "\n" not in str(err.value) and str(err.value).startswith("dataset.val_fraction:")


# ---------------------------------------------------------------- normalisation


def test_normalisation_uses_train_statistics_per_channel():
    data = load_data(cfg_for("fake", num_samples=300, fake_shape=[3, 6, 6], fake_classes=3))
    x = data.x["train"]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)
    assert len(data.mean) == len(data.std) == 3
    # val and test use the train statistics, so their own statistics are close to but not exactly 0/1.
    assert not torch.allclose(data.x["test"].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)
    for split in ("val", "test"):
        assert denormalise(data, split).min() >= -1e-5 and denormalise(data, split).max() <= 1 + 1e-5


# ---------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def small():
    return load_data(cfg_for("fake", num_samples=103, fake_shape=[3, 8, 8], fake_classes=3, val_fraction=0.1))


def test_train_batches_cover_every_index_once_and_keep_the_last_batch(small):
    n = small.size("train")
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # two epochs, different orders
        batches = [(x[0], y[0], i[0]) for x, y, i in small.train_batches(16, [g], augment=False)]
        idx = torch.cat([b[2] for b in batches])
        assert sorted(idx.tolist()) == list(range(n))
        assert [len(b[2]) for b in batches] == [16] * (n // 16) + ([n % 16] if n % 16 else [])
        for x, y, i in batches:
            assert torch.equal(x, small.x["train"][i]) and torch.equal(y, small.y["train"][i])
    first = torch.cat([b[2][0] for b in small.train_batches(16, [torch.Generator().manual_seed(0)])])
    again = torch.cat([b[2][0] for b in small.train_batches(16, [torch.Generator().manual_seed(0)])])
    assert torch.equal(first, again)


def test_train_batches_augment_with_the_data_setting():
    data = load_data(cfg_for("fake", num_samples=60, fake_shape=[3, 8, 8], fake_classes=3, augment="crop_flip"))
    assert data.augment == "crop_flip"
    changed = [not torch.equal(x[0], data.x["train"][i[0]]) for x, _, i in data.train_batches(64, [torch.Generator()])]
    assert any(changed)


def test_eval_batches_are_in_order(small):
    xs, ys = zip(*small.eval_batches("test", 7))
    assert torch.equal(torch.cat(xs), small.x["test"]) and torch.equal(torch.cat(ys), small.y["test"])


def test_to_returns_a_new_data(small):
    moved = small.to("cpu")
    assert isinstance(moved, Data) and moved is not small and moved.x is not small.x
    assert torch.equal(moved.x["val"], small.x["val"]) and moved.augment == small.augment


# ---------------------------------------------------------------- augmentation


def reference_crop(x, generator, flip):
    """Plain per-example loop with the same random draws as augment_batch."""
    n, pad = x.shape[0], 4
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator) if flip else torch.zeros(n, dtype=torch.long)
    h, w = x.shape[-2:]
    out = []
    for i in range(n):
        padded = F.pad(x[i], (pad, pad, pad, pad))
        dy, dx = offsets[i].tolist()
        crop = padded[:, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["crop_flip", "crop"])
def test_crop_matches_a_per_example_reference(kind):
    x = torch.randn(32, 3, 10, 12)
    got = augment_batch(x, kind, torch.Generator().manual_seed(5))
    want = reference_crop(x, torch.Generator().manual_seed(5), flip=kind == "crop_flip")
    assert got.shape == x.shape and torch.equal(got, want)


def test_shift_matches_torch_roll_per_example():
    x = torch.randn(20, 2, 40)
    got = augment_batch(x, "shift", torch.Generator().manual_seed(1), shift=5)
    shifts = torch.randint(-5, 6, (20,), generator=torch.Generator().manual_seed(1))
    want = torch.stack([torch.roll(x[i], int(shifts[i]), -1) for i in range(20)])
    assert torch.equal(got, want)
    assert torch.equal(augment_batch(x, "shift", torch.Generator(), shift=0), x)


@pytest.mark.parametrize("kind,shape", [("crop_flip", (16, 3, 8, 8)), ("crop", (16, 1, 8, 8)),
                                        ("shift", (16, 1, 40)), ("none", (16, 3, 8, 8))])
def test_augmentation_is_deterministic_shape_preserving_and_changes_inputs(kind, shape):
    x = torch.randn(shape)
    a = augment_batch(x, kind, torch.Generator().manual_seed(0))
    b = augment_batch(x, kind, torch.Generator().manual_seed(0))
    c = augment_batch(x, kind, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    if kind == "none":
        assert a is x
    else:
        assert not torch.equal(a, x) and not torch.equal(a, c)


def test_crop_on_1d_data_is_a_user_error():
    with pytest.raises(UserError, match="dataset.augment"):
        load_data(cfg_for("mnist1d", num_samples=200, augment="crop"))
    with pytest.raises(UserError, match="dataset.augment"):
        augment_batch(torch.zeros(2, 1, 40), "crop_flip", torch.Generator())


# ---------------------------------------------------------------- offline datasets


def test_digits_loads():
    data = load_data(cfg_for("digits"))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.size("test") == 360 and data.size("train") + data.size("val") == 1797 - 360
    assert set(data.y["val"].tolist()) == set(range(10))


def test_mnist1d_loads_without_touching_files_or_global_random_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_module._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    data = load_data(cfg_for("mnist1d", num_samples=200, augment="auto"))
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    assert list(tmp_path.iterdir()) == []
    assert data.input_shape == (1, 40) and data.num_classes == 10 and data.augment == "none"
    assert data.size("train") + data.size("val") == 160 and data.size("test") == 40


def test_fake_loads_and_is_learnable():
    data = load_data(cfg_for("fake", num_samples=200, fake_shape=[3, 8, 8], fake_classes=5))
    assert data.input_shape == (3, 8, 8) and data.num_classes == 5 and data.size("test") == 40
    # Nearest class mean on train already separates the classes, so a model can learn them.
    flat = data.x["train"].flatten(1)
    means = torch.stack([flat[data.y["train"] == k].mean(0) for k in range(5)])
    predicted = torch.cdist(data.x["test"].flatten(1), means).argmin(1)
    assert (predicted == data.y["test"]).float().mean() > 0.9
    again = load_data(cfg_for("fake", num_samples=200, fake_shape=[3, 8, 8], fake_classes=5))
    assert torch.equal(again.x["test"], data.x["test"])


def test_train_batches_for_several_models_equal_each_model_alone():
    """K generators at once: model k gets exactly the (augmented) batches it gets alone."""
    data = load_data(cfg_for("fake", num_samples=90, fake_shape=[3, 8, 8], fake_classes=3, augment="crop_flip"))
    seeds = [3, 4, 5]
    together = list(data.train_batches(16, [torch.Generator().manual_seed(s) for s in seeds]))
    for k, seed in enumerate(seeds):
        alone = list(data.train_batches(16, [torch.Generator().manual_seed(seed)]))
        assert len(alone) == len(together)
        for (x, y, i), (xs, ys, idx) in zip(alone, together):
            assert torch.equal(x[0], xs[k]) and torch.equal(y[0], ys[k]) and torch.equal(i[0], idx[k])