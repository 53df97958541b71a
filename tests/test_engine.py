"""The training loop, the run directory, and stop-and-resume (SIGKILL) of `distill train`."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from distill import engine
from distill.export.cost import TIMING_KEYS
from distill.runs.checkpoints import load_checkpoint
from distill.config import load_config
from distill.data import load_data
from distill.models import create_model
from distill.training.runner import train
from tests.conftest import ROOT, tiny_overrides


def test_lr_schedules_are_pure_and_shaped():
    cfg = load_config(None, ["train.schedule=onecycle", "train.lr=1.0"]).train
    lrs = [engine.lr_at(s, 100, 10, cfg) for s in range(100)]
    peak = max(lrs)
    assert math.isclose(peak, 1.0, rel_tol=1e-6) and lrs[0] < 0.1 and lrs[-1] < 0.01
    assert lrs.index(peak) == 25
    step = load_config(None, ["train.schedule=step", "train.lr=1.0", "train.milestones=[0.5]",
                              "train.gamma=0.1"]).train
    assert engine.lr_at(49, 100, 10, step) == 1.0 and math.isclose(engine.lr_at(50, 100, 10, step), 0.1)
    cos = load_config(None, ["train.schedule=cosine", "train.lr=1.0", "train.warmup_epochs=1"]).train
    assert engine.lr_at(0, 100, 10, cos) == pytest.approx(0.1) and engine.lr_at(99, 100, 10, cos) < 0.01


def test_fit_matches_a_bare_loop(tmp_path):
    """The engine's steps equal a plain loop with the same batches, optimizer and schedule."""
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2, "train.schedule": "constant",
                                              "train.optimizer": "sgd", "train.weight_decay": 0}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    engine.seed_everything(0)
    model = create_model(cfg.model, data.input_shape, data.num_classes)
    engine.seed_everything(0)
    bare = create_model(cfg.model, data.input_shape, data.num_classes)
    result = engine.fit_one(model, data, cfg.train, seed=0, checkpoint_dir=tmp_path)
    opt = torch.optim.SGD(bare.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True)
    for epoch in range(cfg.train.epochs):
        g = torch.Generator().manual_seed(engine.epoch_seed(0, epoch))
        for xs, ys, _ in data.train_batches(cfg.train.batch_size, [g]):
            x, y = xs[0], ys[0]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(bare(x), y).backward()
            opt.step()
    last = load_checkpoint(tmp_path / "last.pt")["models"][0]
    for name, value in bare.state_dict().items():
        torch.testing.assert_close(last[name], value)
    # the model handed back holds the validation-selected epoch's weights
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.selected_epoch
    for name, value in model.state_dict().items():
        torch.testing.assert_close(best["model"][name], value)
    assert result.history[-1]["epoch"] == 2 and {r["split"] for r in result.history} == {"train", "val", "test"}


def test_run_directory_contents(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"name": "t", "seeds": "[0,1]"}))
    path = train(cfg, tmp_path, progress=False)
    assert path.parent == tmp_path / "t"
    for name in ("config.yaml", "meta.json", "records.csv", "summary.json"):
        assert (path / name).is_file(), name
    meta = json.loads((path / "meta.json").read_text())
    assert meta["status"] == "done" and "torch" in meta["versions"]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "done" and len(summary["models"]) == 2
    row = summary["models"][0]
    for key in ("role", "name", "seed", "generation", "member", "size", "combine", "parent", "selected_epoch",
                "val_acc", "val_nll", "test_acc", "test_nll", "test_ece", "test_acc_last", "params",
                "train_seconds"):
        assert key in row
    assert row["role"] == "model" and 0 <= row["test_acc"] <= 1
    rows = list(csv.DictReader(open(path / "records.csv")))
    assert len(rows) == 2 * 3 * 3  # seeds x epochs x splits
    # the selected epoch is the best on validation, and the test figure is taken there
    val = [r for r in rows if r["split"] == "val" and r["seed"] == "0"]
    best = max(val, key=lambda r: (float(r["acc"]), -float(r["nll"])))
    assert row["selected_epoch"] == int(best["epoch"])
    for name in ("last.pt", "best.pt"):
        assert (path / "checkpoints" / "model-s0" / name).is_file()
    # the same command again finds the same run and changes nothing
    again = train(cfg, tmp_path, progress=False)
    assert again == path
    assert _strip(json.loads((path / "summary.json").read_text()))["models"] == _strip(summary)["models"]


def _strip(summary):  # without the timings, which differ from one measurement to the next
    for row in summary["models"]:
        for key in ("train_seconds", *TIMING_KEYS):
            row.pop(key, None)
    return summary


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    """A run killed with SIGKILL mid-training and started again ends with the same summary."""
    args = ["train", "-", "--out", str(tmp_path / "killed"), "--quiet"] + tiny_overrides(
        **{"name": "k", "train.epochs": 40, "train.checkpoint_seconds": 0, "dataset.num_samples": 1000, "model.name": "cnn1d",
           "model.width": 16, "seeds": "[0]"})
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    args[1] = str(config)
    cmd = [sys.executable, "-m", "distill.cli"] + args
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    records = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "killed" / "k").glob("*/checkpoints/model-s0/last.pt"))
        if found:
            records = found[0].parents[2] / "records.csv"
            if records.exists() and sum(1 for _ in open(records)) > 3 * 5:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = records.parent
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "running"
    assert not (run_dir / "summary.json").exists() or json.loads(
        (run_dir / "summary.json").read_text())["status"] != "done"
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "done" and meta["resumed"] and meta["sessions"] == 2

    whole = cmd.copy()
    whole[whole.index(str(tmp_path / "killed"))] = str(tmp_path / "whole")
    assert subprocess.run(whole, env=env, cwd=tmp_path).returncode == 0
    whole_dir = next((tmp_path / "whole" / "k").iterdir())
    assert _strip(json.loads((run_dir / "summary.json").read_text())) == _strip(
        json.loads((whole_dir / "summary.json").read_text()))
    strip_rows = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(p))]  # noqa
    assert strip_rows(run_dir / "records.csv") == strip_rows(whole_dir / "records.csv")


def test_checkpoints_follow_checkpoint_seconds(tmp_path):
    """With a long interval only the last epoch writes last.pt; a run stopped before it
    replays from the start and still ends with the same numbers."""
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 3, "train.checkpoint_seconds": 3600}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    written = []

    def stop_at_two(report):
        written.append(report["checkpointed"])
        if report["epoch"] == 2:
            raise KeyboardInterrupt

    engine.seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        engine.fit_one(create_model(cfg.model, data.input_shape, data.num_classes), data, cfg.train, seed=0,
                   checkpoint_dir=tmp_path / "a", on_epoch=stop_at_two)
    assert written == [False, False] and not (tmp_path / "a" / "last.pt").exists()
    engine.seed_everything(0)
    resumed = engine.fit_one(create_model(cfg.model, data.input_shape, data.num_classes), data, cfg.train, seed=0,
                         checkpoint_dir=tmp_path / "a", on_epoch=lambda r: written.append(r["checkpointed"]))
    assert written[2:] == [False, False, True] and resumed.resumed_from == 0
    every = load_config(None, tiny_overrides(**{"train.epochs": 3}))
    engine.seed_everything(0)
    whole = engine.fit_one(create_model(every.model, data.input_shape, data.num_classes), data, every.train, seed=0,
                       checkpoint_dir=tmp_path / "b")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(whole.history) == strip(resumed.history)


def test_bf16_autocast_and_channels_last_paths_train(tmp_path):
    """The GPU-oriented paths run on CPU too (autocast bf16, channels_last image batches)."""
    cfg = load_config(None, tiny_overrides(**{"dataset.name": "digits", "model.name": "cnn2d", "model.width": 8,
                                              "train.epochs": 2, "train.precision": "bf16",
                                              "train.channels_last": "true"}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    assert engine.use_channels_last(cfg.train, torch.device("cpu"), data.input_shape)
    engine.seed_everything(0)
    result = engine.fit_one(create_model(cfg.model, data.input_shape, data.num_classes), data, cfg.train, seed=0)
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert result.last["val"]["acc"] > 0.2  # learns something in two epochs (10 classes)
