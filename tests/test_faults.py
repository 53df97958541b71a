"""Nothing lost, nothing ignored: a stop at every checkpoint rename of a stacked fit, a finished run
re-run (and that re-run interrupted), teachers a kind does not read or that did not finish, a full
disk, and every file the tool reads given damaged or unexpected. Tiny runs, in-process."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ensembles
from conftest import ROOT, Killed, kill_at, tiny_overrides
from distill import cli, engine
from distill.config import load_config
from distill.data import load_data
from distill.errors import ConfigError, UserError
from distill.runs.checkpoints import load_checkpoint

TINY = {"train.epochs": 2, "seeds": "[0,1]"}


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith(("distill: warning", "warning"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(folder: Path) -> dict:
    """Every file below `folder`: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(capsys, *args) -> tuple[int, str]:
    code = cli.main([*args, "--quiet"])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- a stop at each checkpoint rename


def _stacked(tmp: Path, cfg, data, replace=None, monkeypatch=None):
    if replace is not None:
        monkeypatch.setattr(os, "replace", replace)
    try:
        models = [engine.new_model(cfg.model, data, s) for s in (0, 1)]
        return engine.fit(models, data, cfg.train, seeds=[0, 1], model_dirs=[tmp / "m0", tmp / "m1"])
    finally:
        if replace is not None:
            monkeypatch.undo()


def _numbers(results):
    """Everything a fit returns but its timings (which differ from one run to the next)."""
    def rows(found):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in found]
    return [(r.selected_epoch, rows(r.selected.values()), rows(r.last.values()), rows(r.history)) for r in results]


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_stop_at_every_checkpoint_rename_of_a_stacked_fit_resumes_whole(tmp_path, monkeypatch, when):
    """Ctrl-C is held while a file is written, so it lands right after a rename ("after"); an
    os.replace that raises stands for a stop just before one ("before"). Either way the resumed fit
    has every model's own last.pt and the numbers of a fit that never stopped."""
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2}))
    data = load_data(cfg.dataset)
    real, renames = os.replace, []

    def counting(src, dst):
        renames.append(str(dst))
        return real(src, dst)

    whole = _numbers(_stacked(tmp_path / "whole", cfg, data, counting, monkeypatch))
    checkpoints = [i for i, dst in enumerate(renames) if dst.endswith(".pt")]
    assert sum(dst.endswith(("m0/last.pt", "m1/last.pt")) for dst in renames) == 2
    for n in checkpoints:
        calls = []

        def stopping(src, dst):
            calls.append(dst)
            if len(calls) - 1 == n:
                if when == "after":
                    real(src, dst)
                raise KeyboardInterrupt
            return real(src, dst)

        folder = tmp_path / f"{when}{n}"
        with pytest.raises(KeyboardInterrupt):
            _stacked(folder, cfg, data, stopping, monkeypatch)
        assert _numbers(_stacked(folder, cfg, data)) == whole, renames[n]
        for k in (0, 1):
            assert load_checkpoint(folder / f"m{k}" / "last.pt")["epoch"] == 2, renames[n]
        assert not list(folder.rglob("*.tmp"))


def test_members_stopped_while_writing_their_own_last_pt_are_reusable_after_the_same_command(tmp_path,
                                                                                               monkeypatch):
    cfg = load_config(None, tiny_overrides(**{"model.width": 16, "ensemble.members": 2, "ensemble.combine": "[]",
                                              "seeds": "[0]", "train.epochs": 2}))
    real = os.replace

    def stop_after_member0(src, dst):
        real(src, dst)
        if str(dst).endswith("member0-s0/last.pt"):
            raise KeyboardInterrupt  # SIGINT, held during the write, lands here

    monkeypatch.setattr(os, "replace", stop_after_member0)
    with pytest.raises(KeyboardInterrupt):
        ensembles.run(cfg, tmp_path, progress=False)
    monkeypatch.undo()
    (run_dir,) = tmp_path.glob("*/*")
    assert not (run_dir / "checkpoints" / "member1-s0" / "last.pt").exists()
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"
    assert ensembles.run(cfg, tmp_path, progress=False) == run_dir
    assert load_checkpoint(run_dir / "checkpoints" / "member1-s0" / "last.pt")["epoch"] == 2
    reuse = load_config(None, tiny_overrides(**{"model.width": 16, "ensemble.members": 2, "seeds": "[0]",
                                                "ensemble.combine": "[]", "train.epochs": 2, "name": "reuse",
                                                "ensemble.from": str(run_dir)}))
    assert json.loads((ensembles.run(reuse, tmp_path, progress=False) / "meta.json").read_text())["status"] == "done"


def test_a_done_run_missing_a_members_last_pt_is_repaired_by_the_same_command(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"model.width": 16, "ensemble.members": 2, "ensemble.combine": "[]",
                                              "seeds": "[0]", "train.epochs": 2}))
    run_dir = ensembles.run(cfg, tmp_path, progress=False)
    lost = run_dir / "checkpoints" / "member1-s0" / "last.pt"
    lost.unlink()  # as the code before this fix left it
    assert ensembles.run(cfg, tmp_path, progress=False) == run_dir
    assert load_checkpoint(lost)["epoch"] == 2


# ---------------------------------------------------------------- a finished run is read, not rewritten


def test_a_finished_run_is_not_rewritten_by_the_same_command_nor_by_an_interrupted_rerun(tmp_path, capsys,
                                                                                        monkeypatch):
    args = ["train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path)]
    assert _main(capsys, *args)[0] == 0
    (run_dir,) = tmp_path.glob("*/*")
    before = _files(run_dir)
    code, err = _main(capsys, *args)
    assert code == 0, err
    assert _files(run_dir) == before

    from distill.training import jobs

    def interrupted(*a, **k):  # Ctrl-C in the middle of the re-run's work
        raise KeyboardInterrupt
    monkeypatch.setattr(jobs, "row_cost", interrupted)
    monkeypatch.setattr(engine, "fit", interrupted)
    assert _main(capsys, *args)[0] == 0
    assert _files(run_dir) == before


# ---------------------------------------------------------------- teachers a kind does not read, or unfinished


@pytest.mark.parametrize("command, extra, key", [
    ("bornagain", {"distill.teacher": "/does/not/exist"}, "distill.teacher"),
    ("bornagain", {"teacher.model": "{name: mlp}"}, "teacher.model"),
    ("bornagain", {"teacher.train": "{epochs: 3}"}, "teacher.train"),
    ("ensemble", {"teacher.model": "{name: mlp}"}, "teacher.model"),
    ("ensemble", {"distill.teacher": "/does/not/exist"}, "distill.teacher"),
])
def test_a_teacher_key_the_kind_does_not_read_is_refused(tmp_path, capsys, command, extra, key):
    code, err = _main(capsys, command, "mnist1d-mlp", *tiny_overrides(**extra), "--out", str(tmp_path / "out"))
    line = _one_line(err)
    assert code == 2 and line.startswith(f"distill: error: {key}:") and f"{command}." in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=key):  # a sweep of that kind: when the config loads
        load_config(None, tiny_overrides(**extra, **{"tune.kind": command}))


def test_a_bornagain_given_a_nan_predictions_file_is_refused(tmp_path, capsys):
    preds = tmp_path / "p.npy"
    np.save(preds, np.full((400, 10), np.nan))
    code, err = _main(capsys, "bornagain", "mnist1d-mlp", *tiny_overrides(**{"distill.teacher": str(preds)}),
                      "--out", str(tmp_path / "out"))
    assert code == 2 and "distill.teacher" in _one_line(err) and not (tmp_path / "out").exists()


def test_a_teacher_run_that_did_not_finish_is_refused_unless_asked_for(tmp_path, capsys):
    cfg = load_config(None, tiny_overrides(name="t", seeds="[0]"))
    from distill.training.runner import train

    with pytest.raises(Killed):
        train(cfg, tmp_path, on_epoch=kill_at(epoch=1), progress=False)
    (teacher,) = (tmp_path / "t").iterdir()
    meta = json.loads((teacher / "meta.json").read_text())
    meta["status"] = "running"  # as SIGKILL leaves it
    (teacher / "meta.json").write_text(json.dumps(meta))
    student = ["train", "mnist1d-mlp", *tiny_overrides(name="s", seeds="[0]", **{"train.epochs": 1})]
    code, err = _main(capsys, *student, f"distill.teacher={teacher}", "--out", str(tmp_path / "out"))
    line = _one_line(err)
    assert code == 2 and "did not finish" in line and "running" in line and not (tmp_path / "out").exists()
    best = teacher / "checkpoints" / "model-s0" / "best.pt"
    code, err = _main(capsys, *student, f"distill.teacher={best}", "--out", str(tmp_path / "out"))
    assert code == 2 and "distill.teacher_unfinished=true" in _one_line(err)  # a checkpoint of it: refused too
    code, err = _main(capsys, *student, f"distill.teacher={best}", "distill.teacher_unfinished=true",
                      "--out", str(tmp_path / "out"))
    assert code == 0 and "did not finish" in err
    (run_dir,) = (tmp_path / "out" / "s").iterdir()
    (row,) = json.loads((run_dir / "summary.json").read_text())["models"]
    assert "from an unfinished run" in row["parent"]


# ---------------------------------------------------------------- a full disk


def test_a_disk_with_no_space_at_all_still_marks_the_run_failed(tmp_path, capsys, monkeypatch):
    args = ["train", "mnist1d-mlp", *tiny_overrides(seeds="[0]"), "--out", str(tmp_path)]
    with pytest.raises(Killed):  # a run that was SIGKILLed: meta.json says running
        from distill.training.runner import train

        train(load_config("mnist1d-mlp", tiny_overrides(seeds="[0]")), tmp_path, on_epoch=kill_at(epoch=2),
              progress=False)
    (run_dir,) = tmp_path.glob("*/*")
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "status": "running"}, indent=2))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    code, err = _main(capsys, *args)
    monkeypatch.undo()
    assert code == 1 and "No space left on device" in _one_line(err)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and "No space left on device" in meta["reason"]
    assert not list(run_dir.rglob("*.tmp"))


# ---------------------------------------------------------------- files the tool reads, damaged


def _finished(tmp_path, capsys) -> Path:
    assert _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path))[0] == 0
    (run_dir,) = tmp_path.glob("*/*")
    return run_dir


@pytest.mark.parametrize("name, content", [
    ("meta.json", b"\xff\xfe garbage"), ("meta.json", b"[1, 2]"), ("meta.json", b'{"status": 3}'),
    ("config.yaml", b"\xff\xfe\x00"),
])
def test_a_damaged_run_file_is_one_line_and_nothing_is_written(tmp_path, capsys, name, content):
    run_dir = _finished(tmp_path, capsys)
    (run_dir / name).write_bytes(content)
    before = _files(run_dir)
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path))
    assert code == 2 and str(run_dir / name) in _one_line(err)
    assert _files(run_dir) == before


@pytest.mark.parametrize("state", [{"epoch": 1}, {"epoch": "x", "models": []}, "weights"])
def test_a_last_pt_of_the_wrong_schema_is_one_line(tmp_path, capsys, state):
    run_dir = _finished(tmp_path, capsys)
    (run_dir / "summary.json").unlink()  # not finished: the same command resumes from the checkpoints
    pack = next((run_dir / "checkpoints").glob("*-pack2"))
    for path in pack.glob("last*.pt"):
        torch.save(state, path)
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path))
    assert code == 2 and str(pack) in _one_line(err)


def test_a_last_pt_of_another_model_and_a_best_pt_without_weights_are_one_line(tmp_path, capsys):
    run_dir = _finished(tmp_path, capsys)
    (run_dir / "summary.json").unlink()
    pack = next((run_dir / "checkpoints").glob("*-pack2"))
    state = load_checkpoint(pack / "last.pt")
    state["models"] = [{"w": torch.zeros(3)} for _ in state["models"]]
    for path in pack.glob("last*.pt"):
        torch.save(state, path)
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path))
    assert code == 2 and str(pack / "last.pt") in _one_line(err)
    shutil.rmtree(pack)
    best = run_dir / "checkpoints" / "model-s0" / "best.pt"
    torch.save({"x": 1}, best)
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY), "--out", str(tmp_path))
    assert code == 2 and str(best) in _one_line(err)


@pytest.mark.parametrize("what", ["strings.npy", "object.npy", "truncated.npy", "binary.csv", "words.csv"])
def test_a_damaged_predictions_file_is_one_line(tmp_path, capsys, what):
    path = tmp_path / what
    if what == "strings.npy":
        np.save(path, np.array([["a"] * 10] * 400))
    elif what == "object.npy":
        np.save(path, np.array([{"a": 1}] * 400, dtype=object), allow_pickle=True)
    elif what == "truncated.npy":
        np.save(path, np.zeros((400, 10)))
        path.write_bytes(path.read_bytes()[:200])
    elif what == "binary.csv":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.write_text("a,b\nc,d\n")
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**{"distill.teacher": str(path)}),
                      "--out", str(tmp_path / "out"))
    assert code == 2 and str(path) in _one_line(err) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["nan weights", "binary config.yaml", "meta.json list"])
def test_a_damaged_teacher_run_is_one_line(tmp_path, capsys, damage):
    teacher = _finished(tmp_path / "t", capsys)
    if damage == "nan weights":
        for best in teacher.glob("checkpoints/model-s*/best.pt"):
            state = torch.load(best, weights_only=False)
            state["model"] = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}
            torch.save(state, best)
        named = "NaN"
    elif damage == "binary config.yaml":
        (teacher / "config.yaml").write_bytes(b"\xff\xfe\x00\x01")
        named = str(teacher / "config.yaml")
    else:
        (teacher / "meta.json").write_text("[]")
        named = str(teacher / "meta.json")
    code, err = _main(capsys, "train", "mnist1d-mlp", *tiny_overrides(**TINY, **{"distill.teacher": str(teacher)}),
                      "--out", str(tmp_path / "out"))
    assert code == 2 and named in _one_line(err) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["meta.json", "config.yaml", "best.pt"])
def test_a_damaged_ensemble_from_run_is_one_line(tmp_path, capsys, damage):
    base = {"model.width": 16, "ensemble.members": 2, "ensemble.combine": "[]", "seeds": "[0]", "train.epochs": 1}
    first = ensembles.run(load_config("mnist1d-mlp", tiny_overrides(**base)), tmp_path, progress=False)
    target = first / damage if damage != "best.pt" else first / "checkpoints" / "member1-s0" / "best.pt"
    if damage == "best.pt":
        torch.save({"epoch": 1, "model": "not weights"}, target)
    else:
        target.write_bytes(b"\xff\xfe\x00")
    code, err = _main(capsys, "ensemble", "mnist1d-mlp", *tiny_overrides(**base, name="again",
                                                                         **{"ensemble.from": str(first)}),
                      "--out", str(tmp_path / "out"))
    assert code == 2 and str(target) in _one_line(err) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content, reason", [
    ("meta.json", "[1]", "meta.json is not a mapping"), ("meta.json", "{", "meta.json is not valid JSON"),
    ("config.yaml", "\xff", None), ("config.yaml", "- a\n- b\n", "config.yaml is not a mapping"),
])
def test_reports_leave_out_runs_with_a_damaged_meta_or_config(tmp_path, capsys, name, content, reason):
    import results
    from report_runs import kd_run

    good, bad = kd_run(tmp_path / "runs"), kd_run(tmp_path / "runs", run_id="bad")
    if content == "\xff":
        (bad / name).write_bytes(b"\xff\xfe")
    else:
        (bad / name).write_text(content)
    frame = results.load(tmp_path / "runs")
    assert set(frame["run"]) == {str(good)}
    (left,) = frame.attrs["left_out"]
    assert left["run"] == str(bad) and name in left["reason"] and (reason is None or reason in left["reason"])
    assert "Traceback" not in capsys.readouterr().err


def test_reports_name_a_damaged_sweep_json(tmp_path, capsys):
    import results
    from report_runs import kd_run

    run = kd_run(tmp_path / "sweep" / "trials")
    (tmp_path / "sweep" / "trials" / "sweep.json").write_text('["not", "a", "sweep"]')
    assert set(results.load(tmp_path / "sweep")["run"]) == {str(run)}
    err = capsys.readouterr().err
    assert "sweep.json is not a mapping" in err and "Traceback" not in err


# ---------------------------------------------------------------- a real signal at the rename (strace)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_real_sigint_at_a_members_own_last_pt_rename(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "distill.cli", "ensemble", "mnist1d-mlp", "--out", str(tmp_path), "--quiet",
            *tiny_overrides(**{"model.width": 16, "ensemble.members": 2, "ensemble.combine": "[]",
                               "seeds": "[0]", "train.epochs": 2})]
    trace = ["strace", "-f", "-qq", "-e", "trace=rename,renameat,renameat2"]
    log = tmp_path / "renames.txt"
    done = subprocess.run([*trace, "-o", str(log), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = re.findall(r"(rename\w*)\((?:[^,]*, )?\"[^\"]+\", (?:[^,]*, )?\"([^\"]+)\"", log.read_text())
    n = next(i for i, (_, dst) in enumerate(calls) if dst.endswith("member0-s0/last.pt"))
    shutil.rmtree(tmp_path / "mnist1d-mlp")
    syscall = calls[n][0]
    nth = sum(1 for name, _ in calls[:n + 1] if name == syscall)
    stopped = subprocess.run([*trace, "-o", "/dev/null", "-e", f"inject={syscall}:signal=INT:when={nth}", *args],
                             env=env, capture_output=True, text=True)
    assert stopped.returncode == 130, stopped.stderr
    (run_dir,) = tmp_path.glob("*/*")
    assert not (run_dir / "checkpoints" / "member1-s0" / "last.pt").exists()
    assert subprocess.run(args, env=env, capture_output=True).returncode == 0
    assert load_checkpoint(run_dir / "checkpoints" / "member1-s0" / "last.pt")["epoch"] == 2
