"""What survives what: signals, bad numbers, damaged checkpoints, a second writer, a full disk,
damaged run folders in reports. Real processes and real signals where it matters."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, Killed, kill_at, tiny_overrides
from distill import cli, engine
from distill.runs.checkpoints import save_atomic
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from distill.data import load_data
from distill.errors import ConfigError, UserError
from distill.runs.store import Run, unlock_run_dir, write_json_atomic

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds bare {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _summary(run_dir: Path) -> dict:
    summary = _strict_json(run_dir / "summary.json")
    for row in summary["models"]:  # without the timings, which differ from one measurement to the next
        for key in ("train_seconds", *TIMING_KEYS):
            row.pop(key, None)
    return summary


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("distill: warning")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------- numbers in configs


def test_scientific_notation_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n  weight_decay: 5E-5\ndistill:\n  temperature: 2e0\n")
    cfg = load_config(path, ["train.milestones=[5e-1, 7.5e-1]"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.distill.temperature) == (3e-4, 5e-5, 2.0)
    assert cfg.train.milestones == [0.5, 0.75]
    assert load_config(path, ["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config(None, ["name=1e3x"]).name == "1e3x"  # not a number: stays a string


@pytest.mark.parametrize("override", ["train.lr=.inf", "distill.temperature=.nan", "train.grad_clip=-.inf",
                                      "teacher.train={lr: .nan}", "train.milestones=[.nan]",
                                      "train.weight_decay=.inf"])
def test_non_finite_config_values_are_one_line_exit_2(tmp_path, capsys, override):
    key = override.split("=")[0].replace("teacher.train", "teacher.train.lr").replace("milestones", "milestones[0]")
    with pytest.raises(ConfigError, match="finite number") as err:
        load_config(None, [override])
    assert str(err.value).startswith(key + ":")
    assert cli.main(["train", "mnist1d-mlp", override, "--out", str(tmp_path / "out")]) == 2
    assert "finite number" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_json_files_never_hold_nan(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.5], "c": torch.tensor(float("nan")),
                                            "d": torch.tensor(2.0), "e": {"f": -math.inf}})
    assert _strict_json(tmp_path / "s.json") == {"a": None, "b": [None, 1.5], "c": None, "d": 2.0, "e": {"f": None}}
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("command", ["bornagain", "ensemble"])
def test_nan_loss_fails_bornagain_and_ensemble(tmp_path, capsys, command):
    args = [command, "mnist1d-mlp", *tiny_overrides(**{"train.lr": 1e6, "train.epochs": 2, "seeds": "[0,1]",
                                                       "bornagain.generations": 1, "ensemble.members": 2}),
            "--out", str(tmp_path), "--quiet"]
    assert cli.main(args) == 1
    assert "became nan at epoch" in capsys.readouterr().err.strip().splitlines()[-1]
    (run_dir,) = tmp_path.glob("*/*")
    meta = _strict_json(run_dir / "meta.json")
    assert meta["status"] == "failed" and "Diverged" in meta["reason"] and "epoch" in meta["reason"]
    if (run_dir / "summary.json").exists():
        _strict_json(run_dir / "summary.json")


# ---------------------------------------------------------------- damaged checkpoints


def _train(tmp_path, capsys, **extra):
    code = cli.main(["train", "mnist1d-mlp", *tiny_overrides(**extra), "--out", str(tmp_path), "--quiet"])
    return code, capsys.readouterr().err


def test_damaged_last_pt_falls_back_to_previous(tmp_path, capsys):
    assert _train(tmp_path, capsys)[0] == 0
    (run_dir,) = tmp_path.glob("*/*")
    before = _summary(run_dir)
    # the preset's seeds train stacked: their training state is the pack's last.pt
    last = next((run_dir / "checkpoints").glob("model-s0-pack*")) / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    code, err = _train(tmp_path, capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and str(last) in warning[0] and "last.prev.pt" in warning[0]
    assert (last.parent / "last.pt.damaged").exists()
    assert _summary(run_dir) == before  # the last epoch trained again from the one before: same numbers

    for path in (last, last.parent / "last.prev.pt"):  # nothing readable left: one line, exit 2
        path.write_bytes(b"garbage")
    code, err = _train(tmp_path, capsys)
    assert code == 2 and str(last) in _one_line(err)
    meta = _strict_json(run_dir / "meta.json")
    assert meta["status"] == "failed" and str(last) in meta["reason"]


def test_damaged_best_pt_is_found_when_the_run_resumes(tmp_path, capsys):
    cfg = load_config("mnist1d-mlp", tiny_overrides(**{"train.epochs": 4}))
    data = load_data(cfg.dataset)
    folder = tmp_path / "model"
    with pytest.raises(Killed):
        engine.fit_one(engine.new_model(cfg.model, data, 0), data, cfg.train, seed=0, checkpoint_dir=folder,
                       on_epoch=kill_at(epoch=2))
    best = folder / "best.pt"
    best.write_bytes(best.read_bytes()[:50])
    epochs = []
    with pytest.raises(UserError, match=f"checkpoint {best} cannot be read.*delete the folder {folder}"):
        engine.fit_one(engine.new_model(cfg.model, data, 0), data, cfg.train, seed=0, checkpoint_dir=folder,
                       on_epoch=epochs.append)
    assert epochs == []  # reported before any epoch trained

    assert _train(tmp_path / "cli", capsys)[0] == 0  # from the command line: one line, exit 2, meta says why
    (run_dir,) = (tmp_path / "cli").glob("*/*")
    best = run_dir / "checkpoints" / "model-s0" / "best.pt"
    best.write_bytes(best.read_bytes()[:50])
    code, err = _train(tmp_path / "cli", capsys)
    assert code == 2 and str(best) in _one_line(err)
    assert str(best) in _strict_json(run_dir / "meta.json")["reason"]


def test_checkpoint_write_leaves_no_temp_file_when_it_fails(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        save_atomic({"x": 1}, tmp_path / "last.pt", keep_previous=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- one writer per run folder


def test_second_writer_gets_one_line_naming_the_holder(tmp_path):
    cfg = load_config("mnist1d-mlp", tiny_overrides())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from distill.config import load_config; "
        "from distill.runs.store import Run; from conftest import tiny_overrides; "
        "Run.open(load_config('mnist1d-mlp', tiny_overrides()), 'train', sys.argv[2]); print('held', flush=True); "
        "time.sleep(60)"), str(ROOT / "tests"), str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (run_dir,) = tmp_path.glob("*/*")
        meta = (run_dir / "meta.json").read_text()
        with pytest.raises(UserError, match=rf"{run_dir} is being written by pid {holder.pid} on "):
            Run.open(cfg, "train", tmp_path)
        assert (run_dir / "meta.json").read_text() == meta  # the second writer wrote nothing
    finally:
        holder.kill()
        holder.wait()
    run = Run.open(cfg, "train", tmp_path)  # the holder is gone: its lock went with it
    assert run.meta["sessions"] == 2 and run.meta["resumed"] is False  # no checkpoint: no resume claimed
    unlock_run_dir(run.path)
    with pytest.raises(UserError, match="holds a `distill train` run"):
        Run.open(cfg, "bornagain", tmp_path)


# ---------------------------------------------------------------- signals, full disk (real processes)


def _command(out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "train", "mnist1d-mlp", "--out", str(out), "--quiet",
            *tiny_overrides(**{"name": "k", "train.epochs": 40, "dataset.num_samples": 1000, "model.name": "cnn1d",
                               "model.width": 16}), *extra]


def _start_twice(cmd, out: Path, rows: int = 16):
    """The same command started twice at once: one takes the run folder, the other must exit 2 at
    once naming it. Returns (the one running, the other's stderr, run folder) once it is a few epochs in."""
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    deadline = time.time() + 120
    while all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    loser = next(p for p in procs if p.poll() is not None)
    (winner,) = [p for p in procs if p is not loser]
    _, loser_err = loser.communicate()
    assert loser.returncode == 2, loser_err
    while time.time() < deadline:
        records = list(out.glob("k/*/records.csv"))
        if records and sum(1 for _ in open(records[0])) > rows and list(out.glob("k/*/checkpoints/*/last.pt")):
            return winner, loser_err, records[0].parent
        assert winner.poll() is None, winner.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not get going")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    done = subprocess.run(_command(out), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return _summary(next((out / "k").iterdir()))


@pytest.mark.parametrize("sig, status, reason", [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                                 (signal.SIGINT, 130, "interrupted")])
def test_signal_marks_the_run_and_the_same_command_resumes(tmp_path, uninterrupted, sig, status, reason):
    cmd = _command(tmp_path)
    proc, second_err, run_dir = _start_twice(cmd, tmp_path)
    assert f"{run_dir} is being written by pid {proc.pid}" in _one_line(second_err)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert reason in _one_line(err) and "run the same command again to resume" in err
    meta = _strict_json(run_dir / "meta.json")
    assert (meta["status"], meta["reason"], meta["signal"], meta["sessions"]) == (
        "failed", reason, signal.Signals(sig).name, 1)
    assert not list(run_dir.rglob("*.tmp"))
    epochs = [torch.load(path, weights_only=False)["epoch"] for path in run_dir.glob("checkpoints/*/last.pt")]
    assert epochs and sum(epochs) < 5 * 40  # every checkpoint intact, the run not finished

    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    meta = _strict_json(run_dir / "meta.json")
    assert (meta["status"], meta["resumed"], meta["sessions"]) == ("done", True, 2)
    assert _summary(run_dir) == uninterrupted


FULL_DISK = """
import errno, os, sys
sys.path.insert(0, os.environ["PYTHONPATH"])
from distill.runs import atomic
from distill import cli
calls, fail = [0], [int(n) for n in sys.argv[1].split(",")]
real = os.fsync
def fsync(fd):
    calls[0] += 1
    if calls[0] in fail:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(fd)
atomic.os.fsync = fsync
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_full_disk_fails_the_run_with_one_line_and_it_resumes(tmp_path, uninterrupted):
    cmd = _command(tmp_path)
    # the 8th atomic write (a checkpoint a few epochs in) finds the disk full; meta.json can still be written
    done = subprocess.run([sys.executable, "-c", FULL_DISK, "8", *cmd[3:]], env=ENV, capture_output=True, text=True)
    assert done.returncode == 1
    assert "No space left on device" in _one_line(done.stderr) and "free some space" in done.stderr
    (run_dir,) = (tmp_path / "k").iterdir()
    meta = _strict_json(run_dir / "meta.json")
    assert meta["status"] == "failed" and "No space left on device" in meta["reason"]
    assert (run_dir / "error.txt").exists() and not list(run_dir.rglob("*.tmp"))

    # nothing can be written any more, not even meta.json: still one line, no temp files
    every = ",".join(str(n) for n in range(8, 400))
    done = subprocess.run([sys.executable, "-c", FULL_DISK, every, *cmd[3:]], env=ENV, capture_output=True, text=True)
    assert done.returncode == 1 and "No space left on device" in _one_line(done.stderr)
    assert not list(run_dir.rglob("*.tmp"))

    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)  # space is back: the same command resumes
    assert done.returncode == 0, done.stderr
    assert _summary(run_dir) == uninterrupted


# ---------------------------------------------------------------- reports and damaged run folders


def test_reports_name_every_run_they_leave_out(tmp_path, capsys):
    import results
    from report_runs import kd_run

    good = kd_run(tmp_path / "runs")
    garbage = kd_run(tmp_path / "runs", run_id="garbage")
    (garbage / "summary.json").write_text('{"status": "done", "models": [{"role": "stu')
    shape = kd_run(tmp_path / "runs", run_id="shape")
    (shape / "summary.json").write_text(json.dumps({"status": "done", "models": [{"role": "student",
                                                                                  "test_acc": "high"}]}))
    df = results.load(tmp_path / "runs")
    assert set(df["run"]) == {str(good)}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in "".join(err)
    assert any(str(garbage) in line and "not valid JSON" in line for line in err)
    assert any(str(shape) in line and "test_acc = 'high'" in line for line in err)
    assert [item["run"] for item in df.attrs["left_out"]] == [str(garbage), str(shape)]

    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Runs left out" in page and str(garbage) in page and str(shape) in page
    capsys.readouterr()

    assert cli.main(["report", str(garbage), str(shape), "--out", str(tmp_path / "none")]) == 2
    assert "no readable run" in capsys.readouterr().err.strip().splitlines()[-1]
