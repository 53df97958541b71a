"""Your own data: image folders, .npz arrays, CIFAR's own metadata and bytes keys, a dataset registered
by a user module (`dataset.module`, seen by a fresh process as a Ray trial is) or by an entry point,
and the export card's class names from the data. Every file is tiny and written here."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.config import DatasetConfig
from distill.data import load_data
from distill.errors import UserError
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog", "eel"]


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def pixels(seed: int, shape=(8, 8, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def denormalised(data, split: str) -> torch.Tensor:
    view = (1, -1) + (1,) * (len(data.input_shape) - 1)
    return data.x[split] * torch.tensor(data.std).view(view) + torch.tensor(data.mean).view(view)


def one_line_error(call) -> str:
    with pytest.raises(UserError) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


# ---------------------------------------------------------------- image folders


def test_image_folder_train_and_test_with_class_names_from_the_folders(tmp_path):
    written = {}
    for split, n in (("train", 6), ("test", 2)):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                array = pixels(hash((split, label, i)) % 1000)
                write_png(tmp_path / split / name / f"{i}.png", array)
                written[split, name, i] = array
    data = load_data(DatasetConfig(name="image_folder", root=str(tmp_path), val_fraction=0.34))
    assert data.num_classes == 3 and data.class_names == tuple(CLASSES) and data.input_shape == (3, 8, 8)
    assert data.size("train") + data.size("val") == 18 and data.size("test") == 6
    # test rows are in file order: class by class, 0.png and 1.png; pixels scaled to [0, 1] as written
    expected = np.stack([written["test", name, i] for name in CLASSES for i in range(2)]).transpose(0, 3, 1, 2)
    assert torch.allclose(denormalised(data, "test"), torch.from_numpy(expected / 255.0).float(), atol=1e-5)
    assert data.y["test"].tolist() == [0, 0, 1, 1, 2, 2]


def test_one_image_folder_is_split_and_sizes_are_checked_or_resized(tmp_path):
    for label, name in enumerate(CLASSES):
        for i in range(5):
            write_png(tmp_path / name / f"{i}.png", pixels(label * 10 + i, (8, 8)))  # grey
    write_png(tmp_path / "dog" / "odd.png", pixels(99, (6, 10)))
    cfg = DatasetConfig(name="image_folder", root=str(tmp_path), val_fraction=0.25, test_fraction=0.25)
    message = one_line_error(lambda: load_data(cfg))
    assert "odd.png is 10x6" in message and "dataset.image_size=[8, 8]" in message
    cfg.image_size = [8, 8]
    data = load_data(cfg)
    assert data.input_shape == (1, 8, 8) and data.class_names == tuple(CLASSES)
    assert data.size("train") + data.size("val") + data.size("test") == 16
    assert data.size("test") == 4 and set(data.y["test"].tolist()) == {0, 1, 2}  # stratified


def test_image_folder_bad_layouts_are_one_line_errors(tmp_path):
    cfg = DatasetConfig(name="image_folder", root=str(tmp_path / "nowhere"))
    assert "no folder" in one_line_error(lambda: load_data(cfg))
    write_png(tmp_path / "train" / "cat" / "0.png", pixels(0))
    cfg.root = str(tmp_path)
    assert "has train/ but no test/" in one_line_error(lambda: load_data(cfg))
    write_png(tmp_path / "test" / "cow" / "0.png", pixels(1))
    message = one_line_error(lambda: load_data(cfg))
    assert "'cow'" in message and "never trained on" in message and "add training images" in message
    write_png(tmp_path / "one" / "cat" / "0.png", pixels(2))
    (tmp_path / "one" / "cat" / "1.png").write_bytes(b"not a png")
    cfg.root = str(tmp_path / "one")
    assert "1.png is not a readable image" in one_line_error(lambda: load_data(cfg))


# ---------------------------------------------------------------- arrays


def write_arrays(path: Path, k: int = 3, names: bool = True, n: int = 30) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(n, 1, 12)).astype(np.float32), "y_train": np.arange(n) % k,
              "x_test": rng.normal(size=(k * 2, 1, 12)).astype(np.float32), "y_test": np.arange(k * 2) % k}
    if names:
        arrays["class_names"] = np.array([f"class {c}" for c in range(k)])
    np.savez(path, **arrays)
    return path


def test_arrays_of_any_number_of_classes_with_their_names(tmp_path):
    data = load_data(DatasetConfig(name="arrays", root=str(write_arrays(tmp_path / "a.npz")), val_fraction=0.2))
    assert data.num_classes == 3 and data.class_names == ("class 0", "class 1", "class 2")
    assert data.input_shape == (1, 12) and data.size("test") == 6 and data.scale == 1.0
    data = load_data(DatasetConfig(name="arrays", root=str(write_arrays(tmp_path / "b.npz", k=5, names=False)),
                                   val_fraction=0.2))
    assert data.num_classes == 5 and data.class_names == ("0", "1", "2", "3", "4")


def test_bad_arrays_exit_2_with_one_line_and_nothing_written(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 3)), y_train=np.zeros(4, dtype=int), x_test=np.zeros((2, 3)))
    out = tmp_path / "runs"
    overrides = tiny_overrides(**{"dataset.name": "arrays", "dataset.root": str(bad)})
    code = main(["train", "mnist1d-mlp", *overrides, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no y_test" in err and not out.exists()
    np.savez(bad, x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 2, 7]), x_test=np.zeros((2, 3)),
             y_test=np.array([0, 1]), class_names=np.array(["a", "b", "c"]))
    message = one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=str(bad))))
    assert "labels go from 0 to 7" in message and "3 classes" in message


# ---------------------------------------------------------------- CIFAR's own metadata


def write_cifar10(root: Path, k: int, meta: bool = True, bytes_keys: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x = rng.integers(0, 256, size=(6, 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({key("data"): x, key("labels"): [j % k for j in range(6)]}))
    if meta:
        names = [key(n) for n in CLASSES[:k]]
        (folder / "batches.meta").write_bytes(pickle.dumps({key("label_names"): names, key("num_vis"): 3072}))
    return root


def test_cifar_reads_its_class_names_and_count_from_batches_meta(tmp_path):
    data = load_data(DatasetConfig(name="cifar10", root=str(write_cifar10(tmp_path, 3)), val_fraction=0.2))
    assert data.num_classes == 3 and data.class_names == tuple(CLASSES)
    plain = load_data(DatasetConfig(name="cifar10", root=str(write_cifar10(tmp_path / "p", 3, meta=False)),
                                    val_fraction=0.2))
    assert plain.num_classes == 10 and plain.class_names[0] == "airplane"  # no metadata: CIFAR-10 itself


def test_cifar_pickles_with_bytes_keys_are_read_and_a_missing_key_is_one_line(tmp_path):
    data = load_data(DatasetConfig(name="cifar10", root=str(write_cifar10(tmp_path, 3, bytes_keys=True)),
                                   val_fraction=0.2))
    assert data.num_classes == 3 and data.class_names == tuple(CLASSES)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((6, 3072), np.uint8), b"fine": [0] * 6}))
    message = one_line_error(lambda: load_data(DatasetConfig(name="cifar10", root=str(tmp_path))))
    assert "data_batch_2 has no 'labels' entry" in message


def test_export_card_names_the_classes_of_the_data(tmp_path):
    root = write_cifar10(tmp_path / "data", 3)
    out = tmp_path / "runs"
    overrides = tiny_overrides(**{"dataset.name": "cifar10", "dataset.root": str(root), "dataset.val_fraction": 0.2,
                                  "dataset.augment": "none", "model.width": 8, "train.epochs": 1, "seeds": "[0]",
                                  "train.cost_budget": 0.01})
    assert main(["train", "mnist1d-mlp", *overrides, "--out", str(out), "--quiet"]) == 0
    (run,) = [p.parent for p in out.glob("*/*/summary.json")]
    assert main(["export", str(run), "--model", "model:0", "--out", str(tmp_path / "m.pt2")]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["classes"] == CLASSES and card["output"].startswith("logits (batch, 3)")
    assert card["input"]["scale"] == 255.0
    cost = card["cost"]  # timings with their spread, the load they were measured under, and a verdict
    assert {"latency_spread", "throughput_spread", "load_cores", "cores", "trusted", "untrusted_because"} <= set(cost)


# ---------------------------------------------------------------- datasets of your own, in every process


MODULE = """
import torch
from distill.data.registry import RawData, register

@register("{name}")
def load(cfg):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    return RawData(torch.rand(40, 1, 6, generator=g) + y[:, None, None], y, torch.rand(8, 1, 6, generator=g),
                   torch.arange(8) % 4, 4, class_names=["n", "e", "s", "w"])
"""


def fresh_python(code: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=path, timeout=120)


def test_a_dataset_module_is_imported_by_every_process_that_builds_the_config(tmp_path):
    (tmp_path / "my_own_data.py").write_text(MODULE.format(name="compass"))
    # a fresh process builds the config as a Ray trial does (tuning.space.trial_config -> build_config)
    done = fresh_python("""
        from distill.config import build_config
        from distill.data import load_data
        cfg = build_config({"dataset": {"name": "compass", "module": "my_own_data", "val_fraction": 0.2}})
        data = load_data(cfg.dataset)
        print(data.num_classes, ",".join(data.class_names))
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "n,e,s,w"]


def test_a_dataset_module_that_cannot_be_imported_is_one_line(tmp_path, capsys):
    overrides = tiny_overrides(**{"dataset.module": "no_such_module_here"})
    code = main(["train", "mnist1d-mlp", *overrides, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "dataset.module: cannot import no_such_module_here" in err and "PYTHONPATH" in err


def test_an_entry_point_registers_a_dataset(tmp_path):
    (tmp_path / "ep_data_pkg.py").write_text(MODULE.format(name="unused").replace('@register("unused")', ""))
    info = tmp_path / "ep_data_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-data-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[distill.datasets]\ncompass_ep = ep_data_pkg:load\n")
    done = fresh_python("""
        from distill.config import DatasetConfig
        from distill.data import load_data
        from distill.data.registry import list_datasets
        assert "compass_ep" in list_datasets()
        print(load_data(DatasetConfig(name="compass_ep", val_fraction=0.2)).class_names)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "('n', 'e', 's', 'w')"


@pytest.mark.slow  # end to end through Ray: every trial process imports the module
def test_ray_trials_see_a_dataset_module(tmp_path):
    import yaml

    (tmp_path / "my_trial_data.py").write_text(MODULE.format(name="compass_trials"))
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "own", "seeds": [0],
        "dataset": {"name": "compass_trials", "module": "my_trial_data", "val_fraction": 0.2},
        "model": {"name": "mlp", "width": 8}, "train": {"epochs": 1, "device": "cpu", "cost_budget": 0.0},
        "tune": {"cpus_per_trial": 1}, "search": {"train.lr": {"grid": [0.01, 0.02]}}}))
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "distill.cli", "tune", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = out.glob("*/*/sweep.json")
    trials = json.loads(sweep.read_text())["trials"]
    assert len(trials) == 2 and {t["status"] for t in trials} == {"done"}


# ---------------------------------------------------------------- keys a dataset sized by its files does not read


def test_a_preset_num_samples_does_not_trap_own_data_and_null_is_allowed(tmp_path, capsys):
    from distill.config import load_config

    npz = str(write_arrays(tmp_path / "a.npz"))
    # the README's own-data line on a preset that sets num_samples: 5000 (its default): set to null, not kept
    cfg = load_config("mnist1d-mlp", ["dataset.name=arrays", f"dataset.root={npz}"])
    assert cfg.dataset.num_samples is None
    assert load_config("mnist1d-mlp", ["dataset.name=image_folder", "dataset.num_samples=null"]).dataset.num_samples \
        is None
    assert load_config(None, ["dataset.name=cifar10"]).dataset.num_samples is None
    assert load_config(None, []).dataset.num_samples == 5000  # mnist1d reads it
    out = tmp_path / "runs"
    for overrides, words in ((["dataset.name=arrays", f"dataset.root={npz}", "dataset.num_samples=500"],
                              ["dataset.num_samples: arrays", "dataset.num_samples=null", "dataset.train_subset"]),
                             (["dataset.num_samples=null"], ["dataset.num_samples: mnist1d", "num_samples=5000"])):
        code = main(["train", "mnist1d-mlp", *overrides, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err
        assert not out.exists() and "Traceback" not in err


def test_own_data_trains_from_a_preset_with_num_samples_null_in_its_config(tmp_path):
    import yaml

    npz = str(write_arrays(tmp_path / "a.npz", n=40))
    out = tmp_path / "runs"
    overrides = tiny_overrides(**{"dataset.name": "arrays", "dataset.root": npz, "dataset.val_fraction": 0.25,
                                  "train.epochs": 1, "seeds": "[0]", "train.cost_budget": 0.01})
    assert main(["train", "mnist1d-mlp", *overrides, "--out", str(out), "--quiet"]) == 0
    (config,) = out.glob("*/*/config.yaml")
    assert yaml.safe_load(config.read_text())["dataset"]["num_samples"] is None


def test_every_built_in_dataset_but_the_generated_ones_is_sized_by_its_files():
    from distill.config import FILE_SIZED
    from distill.data import DATASETS

    built_in = {name for name, fn in DATASETS.items() if fn.__module__.startswith("distill.")}
    assert built_in == set(FILE_SIZED) | {"mnist1d", "fake"}


def test_keys_own_data_does_not_read_are_one_line(tmp_path):
    npz = str(write_arrays(tmp_path / "a.npz"))
    for key, value, words in (("download", True, "dataset.download=false"),
                              ("image_size", [8, 8], "dataset.image_size=null"),
                              ("test_fraction", 0.3, "x_test")):
        message = one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=npz, **{key: value})))
        assert message.startswith(f"dataset.{key}: arrays does not read it") and words in message
    for split in ("train", "test"):
        write_png(tmp_path / "f" / split / "cat" / "0.png", pixels(0))
        write_png(tmp_path / "f" / split / "cat" / "1.png", pixels(1))
    cfg = DatasetConfig(name="image_folder", root=str(tmp_path / "f"), val_fraction=0.5, test_fraction=0.3)
    assert "dataset.test_fraction: image_folder with train/ and test/ does not read it" in one_line_error(
        lambda: load_data(cfg))
    cfg.test_fraction = 0.2
    assert load_data(cfg).size("test") == 2
    cfg.download = True
    assert "dataset.download=false" in one_line_error(lambda: load_data(cfg))
    cfg.download = False
    write_png(tmp_path / "f" / "train" / "stray.png", pixels(2))  # in no class folder: no class
    assert "stray.png lie outside the class folders" in one_line_error(lambda: load_data(cfg))


def test_arrays_the_loader_does_not_read_are_one_line(tmp_path):
    path = write_arrays(tmp_path / "a.npz")
    arrays = dict(np.load(path))
    np.savez(path, **arrays, x_val=arrays["x_test"], y_val=arrays["y_test"])
    message = one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=str(path), val_fraction=0.2)))
    assert "holds x_val, y_val, which arrays does not read" in message and "dataset.val_fraction" in message


# ---------------------------------------------------------------- every class has training examples


def save(path: Path, y_train, y_test, **extra) -> str:
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    np.savez(path, x_train=np.random.default_rng(0).normal(size=(len(y_train), 4)), y_train=y_train,
             x_test=np.zeros((len(y_test), 4)), y_test=y_test, **extra)
    return str(path)


def test_a_class_without_training_examples_is_one_line(tmp_path, capsys):
    npz = save(tmp_path / "a.npz", np.arange(30) % 3 + 5, np.arange(6) % 3)  # train 5..7, test 0..2
    message = one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=npz, val_fraction=0.2)))
    assert "no example of class 0, 1, 2, 3, 4" in message and "y_train has 5, 6, 7, y_test 0, 1, 2" in message
    assert "classes are 0..7" in message and "relabel y_train and y_test to 0..C-1" in message
    out = tmp_path / "runs"  # through the command line: status 2, one line, nothing written
    code = main(["train", "mnist1d-mlp", *tiny_overrides(**{"dataset.name": "arrays", "dataset.root": npz}),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no example of class" in err and not out.exists()
    # a gap in the training labels, and a class_names entry no training example has
    npz = save(tmp_path / "b.npz", np.arange(30) % 3 * 2, [0, 2, 4])
    assert "no example of class 1, 3 " in one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=npz)))
    npz = save(tmp_path / "c.npz", np.arange(30) % 3, [0, 1], class_names=np.array(["a", "b", "c", "d"]))
    message = one_line_error(lambda: load_data(DatasetConfig(name="arrays", root=npz)))
    assert "no example of class 3 " in message and "from 4 class_names" in message
    npz = save(tmp_path / "d.npz", np.arange(30) % 4, [0, 0, 3])  # every class in training, not in test: fine
    data = load_data(DatasetConfig(name="arrays", root=npz, val_fraction=0.3))
    assert data.num_classes == 4 and data.y["test"].tolist() == [0, 0, 3]
    assert set(data.y["train"].tolist()) == {0, 1, 2, 3}
