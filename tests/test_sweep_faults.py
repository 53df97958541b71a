"""`distill tune` faults: every check made before a teacher trains or Ray starts, a Ray that cannot
start or be reached, `--resume` of a finished sweep, Tune failing on a full disk, and no Ray
process of the command's left when it ends."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from conftest import ROOT  # noqa: E402
from distill import cli  # noqa: E402

TEACHER = {"model": {"name": "mlp", "width": 16}, "train": {"epochs": 2}}


def tiny(**extra) -> dict:
    data = {"name": "sweep", "dataset": {"name": "mnist1d", "num_samples": 300}, "model": {"name": "mlp", "width": 16},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "threads": 1, "device": "cpu"},
            "seeds": [0], "teacher": TEACHER, "distill": {"method": "kd"},
            "search": {"distill.alpha": {"grid": [0.5]}}}
    for key, value in extra.items():  # sections are merged; search and teacher are replaced
        merge = key not in ("search", "teacher") and isinstance(data.get(key), dict)
        data[key] = {**data[key], **value} if merge else value
    return data


def _tune(tmp_path: Path, capsys, data: dict, *args) -> tuple[int, str]:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(data))
    code = cli.main(["tune", str(config), "--out", str(tmp_path / "out"), "--quiet", *args])
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _ray_never_starts(monkeypatch):
    import ray

    def refuse(*a, **k):
        raise AssertionError("ray.init was called")
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("extra, args, message", [
    ({"search": {"train.epochs": {"uniform": [1, 3]}}}, [], "search.train.epochs: uniform draws fractions"),
    ({"search": {"train.batch_size": {"loguniform": [16, 64]}}}, [], "train.batch_size is an integer"),
    ({"search": {"distill.teacher": {"grid": ["/no/such/run"]}}, "teacher": {"model": None}}, [],
     "/no/such/run does not exist"),
    ({"distill": {"teacher": "/no/such/run"}, "teacher": {"model": None}}, [], "/no/such/run does not exist"),
    ({}, ["--address", "10.0.0.1"], "is not a Ray address"),
    ({}, ["--address", "host:99999"], "is not a Ray address"),
    ({}, ["--address", "http://host:6379"], "is not a Ray address"),
    ({"search": {}, "tune": {"scheduler": "pbt"}}, [], "search: is empty"),
    ({"tune": {"cpus_per_trial": 4096}}, [], "tune.cpus_per_trial=4096 but this machine has"),
    ({"tune": {"gpus_per_trial": 64}}, [], "tune.gpus_per_trial=64"),
])
def test_each_check_is_made_before_the_teacher_trains_or_ray_starts(tmp_path, capsys, monkeypatch, extra, args,
                                                                     message):
    _ray_never_starts(monkeypatch)
    code, err = _tune(tmp_path, capsys, tiny(**extra), *args)
    assert code == 2 and message in _one_line(err)
    assert not (tmp_path / "out").exists()  # no teacher trained, nothing written


def test_a_search_over_an_unfinished_teacher_run_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    teacher = tmp_path / "teacher"
    (teacher / "checkpoints").mkdir(parents=True)
    (teacher / "meta.json").write_text(json.dumps({"kind": "train", "status": "running"}))
    _ray_never_starts(monkeypatch)
    code, err = _tune(tmp_path, capsys, tiny(teacher={"model": None},
                                             search={"distill.teacher": {"grid": [str(teacher)]}}))
    assert code == 2 and "did not finish" in _one_line(err) and not (tmp_path / "out").exists()


def _hanging_port():
    """A loopback port whose connects hang: a listener with a full backlog that never accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):  # fill the backlog; the next SYN is dropped
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(server.getsockname())
        fillers.append(s)
    time.sleep(0.2)
    return server, fillers


def test_an_unreachable_address_is_one_line_exit_1_before_the_teacher(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _ray_never_starts(monkeypatch)
    started = time.monotonic()
    code, err = _tune(tmp_path, capsys, tiny(), "--address", f"127.0.0.1:{port}")
    assert code == 1 and "no Ray cluster answers there" in _one_line(err)
    assert time.monotonic() - started < 30 and not (tmp_path / "out").exists()

    server, fillers = _hanging_port()
    monkeypatch.setenv("DISTILL_RAY_TIMEOUT", "2")
    address = "127.0.0.1:%d" % server.getsockname()[1]
    started = time.monotonic()
    code, err = _tune(tmp_path, capsys, tiny(), "--address", address)
    assert code == 1 and "within 2 s" in _one_line(err) and time.monotonic() - started < 20

    from tuning import cluster

    monkeypatch.setenv("DISTILL_RAY_TIMEOUT", "60")  # a signal ends the wait
    previous = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises((KeyboardInterrupt, cluster.RayUnavailable)) as raised:
            cluster.start(address)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        server.close()
        for s in fillers:
            s.close()
    assert raised.type is KeyboardInterrupt and time.monotonic() - started < 5


def test_a_ray_that_cannot_start_is_one_line_and_leaves_no_process(tmp_path, capsys, monkeypatch):
    import ray

    children = []

    def times_out(*a, **k):  # as on a loaded machine: Ray's processes started, then the GCS wait ran out
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        raise RuntimeError("The current node timed out during startup. This could happen because some of the "
                           "raylet failed to startup or the GCS has become overloaded.")
    monkeypatch.setattr(ray, "init", times_out)
    code, err = _tune(tmp_path, capsys, tiny())
    line = _one_line(err)
    assert code == 1 and "Ray could not start" in line and "timed out" in line and "--address" in line
    assert children and children[0].poll() is not None  # ended by the command, not left behind
    assert not (tmp_path / "out").exists()


def test_tune_failing_on_a_full_disk_records_an_interrupted_sweep(tmp_path, capsys, monkeypatch):
    import shutil

    from tuning import cluster, sweep

    monkeypatch.setattr(cluster, "start", lambda address: cluster.Session(False, set()))
    monkeypatch.setattr(cluster, "check_resources", lambda cfg: None)

    def truncated(*a, **k):
        raise pickle.UnpicklingError("pickle data was truncated")
    monkeypatch.setattr(sweep, "_fit", truncated)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    code, err = _tune(tmp_path, capsys, tiny(teacher={"model": None}))
    assert code == 1 and "the disk is full" in _one_line(err) and "--resume" in err
    (path,) = (tmp_path / "out").glob("*/*/sweep.json")
    found = json.loads(path.read_text())
    assert found["status"] == "interrupted" and "the disk is full" in found["reason"]


def _session_processes(sid: int) -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rindex(")") + 2:].split()
        except (OSError, ValueError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(text[:80])
    return found


@pytest.mark.slow
def test_resume_of_a_finished_sweep_touches_nothing_and_no_ray_process_is_left(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tiny(teacher={"model": None})))
    command = [sys.executable, "-m", "distill.cli", "tune", str(config), "--out", str(tmp_path / "out"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    deadline = time.time() + 10
    while _session_processes(driver.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _session_processes(driver.pid) == []  # every Ray process the command started is gone
    (path,) = (tmp_path / "out").glob("*/*/sweep.json")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    again = subprocess.run(command[:-1] + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is finished" in again.stderr
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
