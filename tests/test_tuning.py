"""`distill tune`: search-space checks, a failing trial, kill-and-resume, a two-node Ray cluster.

    pytest tests/test_tuning.py -q

The Ray tests run `distill tune` as a subprocess (each starts and stops its own Ray) on
MNIST-1D with a 16-unit MLP and a few epochs; together about two minutes on 2 CPUs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from distill.config import build_config  # noqa: E402
from distill.errors import ConfigError  # noqa: E402
from tuning import space  # noqa: E402

BIN = Path(sys.executable).parent
TINY = {
    "dataset": {"name": "mnist1d", "num_samples": 300},
    "model": {"name": "mlp", "width": 16},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
    # one trial per (configuration, seed): these tests hold the trial machinery (resume, lost checkpoints,
    # PBT, targets) that PBT and the other kinds use; the stacked layout: tests/test_packed_sweeps.py
    "tune": {"seeds": "trials"},
}


def tiny(**extra) -> dict:
    data = json.loads(json.dumps(TINY))
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and key in data else value
    return data


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def distill_tune(config: Path, out: Path, *args, timeout=240, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.cli", "tune", str(config), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **popen)


def sweep_of(out: Path) -> dict:
    (path,) = out.glob("*/*/sweep.json")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- the search section, no Ray


@pytest.mark.parametrize("search, message", [
    ({"distill.temprature": {"grid": [1, 2]}}, "unknown config key"),
    ({"distill": {"grid": [1, 2]}}, "is a section"),
    ({"tune.scheduler": {"grid": ["fifo"]}}, "cannot be searched"),
    ({"seeds": {"grid": [0, 1]}}, "cannot be searched"),
    ({"distill.alpha": {"grid": []}}, "non-empty list"),
    ({"distill.alpha": {"grid": [0.1], "choice": [0.2]}}, "exactly one of"),
    ({"distill.alpha": {"range": [0, 1]}}, "exactly one of"),
    ({"distill.alpha": [0.1, 0.5]}, "exactly one of"),
    ({"distill.alpha": {"uniform": [0.9, 0.1]}}, "low < high"),
    ({"distill.temperature": {"loguniform": [0, 20]}}, "0 < low"),
    ({"model.width": {"randint": [8, 16.5]}}, "two integers"),
    ({"distill.alpha": {"grid": [0.1, 1.5]}}, "value 1.5 is not allowed"),
    ({"distill.alpha": {"uniform": [0.5, 2.0]}}, "value 2.0 is not allowed"),
    ({"train.optimizer": {"choice": ["adamw", "lion"]}}, "'lion'"),
])
def test_bad_search_is_one_clear_error(search, message):
    cfg = build_config(tiny(search=search))
    with pytest.raises(ConfigError, match=message) as err:
        space.parse_search(cfg)
    assert "\n" not in str(err.value)


def test_nested_search_equals_dotted():
    """`search.distill.alpha={grid: ...}` on the command line nests; it means the dotted key."""
    from distill.config import load_config
    nested = load_config(None, ["search.distill.alpha={grid: [0.1, 0.9]}", "search.train.lr={choice: [0.1]}"])
    dims = space.parse_search(nested)
    assert [(d.key, d.kind, d.values) for d in dims] == [("distill.alpha", "grid", (0.1, 0.9)),
                                                        ("train.lr", "choice", (0.1,))]


def test_search_space_and_trial_config():
    cfg = build_config(tiny(seeds=[3, 4], search={
        "distill.temperature": {"loguniform": [1, 20]}, "distill.alpha": {"grid": [0.1, 0.9]},
        "model.width": {"randint": [8, 17]}, "model.kwargs.bias": {"choice": [True]}}))
    dims = space.parse_search(cfg)
    assert [d.kind for d in dims] == ["loguniform", "grid", "randint", "choice"]
    param_space = space.param_space(dims, cfg.seeds)
    assert param_space["seeds"] == {"grid_search": [[3], [4]]}
    assert param_space["distill.alpha"] == {"grid_search": [0.1, 0.9]}
    params = {"distill.temperature": 2.5, "distill.alpha": 0.9, "model.width": 12, "seeds": [4]}
    trial = space.trial_config(space.base_dict(cfg), params, run_id="x", **{"train.threads": 1})
    assert (trial.distill.temperature, trial.distill.alpha, trial.model.width) == (2.5, 0.9, 12)
    assert trial.seeds == [4] and trial.search == {} and trial.train.threads == 1
    name = space.trial_dirname("ab12c_00003", params)
    assert name == "ab12c_00003_alpha-0.9_temperature-2.5_width-12_seeds-4"
    build_config(tiny(run_id=name))  # a valid run id


# ---------------------------------------------------------------- Ray: failure, resume, cluster


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_failed_trial_is_named_others_finish_exit_1(tmp_path):
    """lr=1e30 makes the loss NaN in one trial; the other trials finish; exit status 1."""
    config = write(tmp_path, tiny(name="fails", search={"train.lr": {"grid": [0.01, 1.0e30, 0.003]}}))
    out = tmp_path / "runs"
    done = distill_tune(config, out)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 of 3 trials failed" in done.stderr and "lr-1e30" in done.stderr
    assert "nan at epoch" in done.stderr  # the engine (or the trial) names the epoch the loss became nan
    sweep = sweep_of(out)
    statuses = {t["params"]["train.lr"]: t["status"] for t in sweep["trials"]}
    assert statuses == {0.01: "done", 1.0e30: "failed", 0.003: "done"}
    assert sweep["best"]["status"] == "done"
    for trial in sweep["trials"]:  # every trial folder is a run directory
        run_dir = Path(trial["run_dir"])
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == trial["status"]
        assert (run_dir / "config.yaml").is_file() and (run_dir / "records.csv").is_file()
        if trial["status"] == "done":
            models = json.loads((run_dir / "summary.json").read_text())["models"]
            assert len(models) == 1 and models[0]["selected_epoch"] in (1, 2)
            assert trial["epochs"] == 2
        else:
            assert "nan" in meta["reason"]


def _done_trials(folder: Path) -> set[str]:
    found = set()
    for meta in folder.glob("*/*/*/meta.json"):
        try:
            if json.loads(meta.read_text())["status"] == "done":
                found.add(meta.parent.name)
        except (ValueError, KeyError, OSError):
            pass
    return found


def _start_then_kill(tmp_path, data: dict, ready) -> tuple[Path, Path]:
    """Start `distill tune` on `data`, SIGKILL its driver once `ready(out)` holds: (config, out)."""
    config = write(tmp_path, data)
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "distill.cli", "tune", str(config), "--out", str(out)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not ready(out) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
        driver.wait()
    finally:
        try:  # Ray's processes die with the driver; this only makes sure no stray one is left
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return config, out


def _kill_driver_after_a_trial(tmp_path):
    """Start a 4-trial sweep, SIGKILL its driver once one trial finished: (config, out, finished)."""
    data = tiny(name="killed", seeds=[0, 1], search={"train.lr": {"grid": [0.01, 0.003]}})
    data["train"].update(epochs=4, batch_size=16)
    config, out = _start_then_kill(tmp_path, data, lambda out: bool(_done_trials(out)))
    finished_before = _done_trials(out)
    assert finished_before, "no trial finished before the kill"
    assert len(finished_before) < 4, "every trial finished before the kill: nothing left to resume"
    return config, out, finished_before


def _assert_each_configuration_finished_once(out: Path, finished_before) -> None:
    sweep = sweep_of(out)
    configs = [(t["params"]["train.lr"], t["params"]["seeds"][0]) for t in sweep["trials"]]
    assert sorted(configs) == sorted((lr, s) for lr in (0.01, 0.003) for s in (0, 1))  # each exactly once
    assert all(t["status"] == "done" and t["epochs"] == 4 for t in sweep["trials"])
    for trial in sweep["trials"]:
        run_dir = Path(trial["run_dir"])
        meta = json.loads((run_dir / "meta.json").read_text())
        epochs = [line.split(",")[5] for line in (run_dir / "records.csv").read_text().splitlines()[1:]
                  if ",train," in line]
        assert epochs == ["1", "2", "3", "4"]
        if run_dir.name in finished_before:  # never trained again
            assert meta["sessions"] == 1
            assert len(json.loads((run_dir / "trial.json").read_text())["attempts"]) == 1
    assert len(list(out.glob("*/*/*/meta.json"))) == 4


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_resume_when_the_snapshotted_checkpoint_was_deleted(tmp_path):
    """Ray deletes a trial's old checkpoints (num_to_keep=2); a driver killed before its snapshot
    names the newer one leaves a snapshot pointing at a deleted folder, which Ray cannot restore.
    Made certain here: the driver is killed once an unfinished trial holds its 4th checkpoint
    (so Ray has deleted older ones and snapshotted), then every Tune checkpoint of the unfinished
    trials is deleted. --resume restarts those trials from scratch and finishes each
    configuration once, with every epoch recorded once."""
    import shutil

    data = tiny(name="lost", search={"train.lr": {"grid": [0.01, 0.003]}})
    data["train"].update(epochs=12, batch_size=16)

    def an_unfinished_trial_has_4_checkpoints(out: Path) -> bool:
        done = _done_trials(out)
        return any(d.name not in done for d in out.glob("*/*/*_lr-*") if (d / "checkpoint_000003").exists())

    config, out = _start_then_kill(tmp_path, data, an_unfinished_trial_has_4_checkpoints)
    unfinished = [d for d in out.glob("*/*/*_lr-*") if d.name not in _done_trials(out)]
    assert unfinished, "every trial finished before the kill"
    for trial_dir in unfinished:
        for folder in trial_dir.glob("checkpoint_*"):
            shutil.rmtree(folder)
    resumed = distill_tune(config, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "restarting from scratch" in resumed.stderr
    sweep = sweep_of(out)
    assert sorted(t["params"]["train.lr"] for t in sweep["trials"]) == [0.003, 0.01]
    for trial in sweep["trials"]:
        assert trial["status"] == "done" and trial["epochs"] == 12
        records = (Path(trial["run_dir"]) / "records.csv").read_text().splitlines()[1:]
        assert [line.split(",")[5] for line in records if ",train," in line] == [str(e) for e in range(1, 13)]
    assert len(list(out.glob("*/*/*/meta.json"))) == 2  # no partial run left behind by a restarted trial


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_kill_driver_then_resume_finishes_each_configuration_once(tmp_path):
    config, out, finished_before = _kill_driver_after_a_trial(tmp_path)
    resumed = distill_tune(config, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_each_configuration_finished_once(out, finished_before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    """`ray start --head` + a second `ray start --address` on this machine, then `--address`."""
    ray_bin = str(BIN / "ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Ray 2.5x+ clusters authenticate with a token (~/.ray/auth_token): every node and the driver use it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    common = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--include-dashboard=false", *common],
                       check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([ray_bin, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                       check=True, capture_output=True, env=env, timeout=120)
        config = write(tmp_path, tiny(name="cluster", seeds=[0, 1],
                                      search={"train.lr": {"grid": [0.01, 0.003]}}))
        data = yaml.safe_load(config.read_text())
        data["train"]["epochs"] = 3
        config.write_text(yaml.safe_dump(data))
        out = tmp_path / "runs"
        done = distill_tune(config, out, "--address", address, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        sweep = sweep_of(out)
        assert len(sweep["trials"]) == 4 and all(t["status"] == "done" for t in sweep["trials"])
        nodes = {node for t in sweep["trials"] for node in t["nodes"]}
        assert len(nodes) == 2, nodes  # each node has one CPU: two trials at once means both nodes
    finally:  # `ray stop` ends this user's Ray processes: the two nodes started above
        stopped = subprocess.run([ray_bin, "stop"], capture_output=True, env=env, timeout=120)
        if stopped.returncode != 0:
            subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_best_config_is_the_best_mean_over_seeds():
    from tuning.choose import best_config
    trials = [  # T=1 has the single best trial, T=4 the best mean over its two seeds
        {"trial": "a", "params": {"distill.temperature": 1, "seeds": [0]}, "best_val_acc": 0.90},
        {"trial": "b", "params": {"distill.temperature": 1, "seeds": [1]}, "best_val_acc": 0.60},
        {"trial": "c", "params": {"distill.temperature": 4, "seeds": [0]}, "best_val_acc": 0.80},
        {"trial": "d", "params": {"distill.temperature": 4, "seeds": [1]}, "best_val_acc": 0.79},
    ]
    for trial in trials:
        trial.update(status="done", seed=trial["params"]["seeds"][0])
    best = best_config(trials, "val_acc", "max")
    assert best["params"] == {"distill.temperature": 4} and best["seeds"] == 2
    assert best["mean_best_val_acc"] == pytest.approx(0.795) and best["trials"] == ["c", "d"]
    assert best_config(trials, "val_acc", "min")["params"] == {"distill.temperature": 1}


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_pbt_sweep_exploits_and_finishes(tmp_path):
    """PBT with 2 trials and a perturbation every epoch: the sweep finishes, every trial runs
    all its epochs (a trial that exploits another restarts from that trial's checkpoint)."""
    config = write(tmp_path, tiny(name="pbt", train={"epochs": 4},
                                  search={"train.lr": {"grid": [0.0003, 0.03]}},
                                  tune={"scheduler": "pbt", "perturbation_interval": 1}))
    out = tmp_path / "runs"
    done = distill_tune(config, out)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["scheduler"] == "pbt" and sweep["counts"]["done"] == 2, [
        (t["status"], t["reason"], t["epochs"], t["params"]) for t in sweep["trials"]]
    assert all(t["epochs"] == 4 and t["best_val_acc"] is not None for t in sweep["trials"])
    # a trial that exploited the other (PBT changed its values) restarted from that checkpoint in
    # its own folder, which ends as a complete run directory
    for trial in sweep["trials"]:
        initial = json.loads((Path(trial["run_dir"]) / "trial.json").read_text())["params"]
        if initial != trial["params"]:
            assert trial["attempts"] > 1
        run_dir = Path(trial["run_dir"])
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"
        assert Path(trial["run_dir"]).name == trial["trial"]


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_bornagain_trials(tmp_path):
    """tune.kind=bornagain: each trial runs a chain; its folder holds the generations' rows."""
    config = write(tmp_path, tiny(name="ban-sweep", train={"epochs": 2}, bornagain={"generations": 1},
                                  distill={"method": "ban"}, search={"distill.temperature": {"grid": [1.0, 4.0]}},
                                  tune={"kind": "bornagain"}))
    out = tmp_path / "runs"
    done = distill_tune(config, out)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["kind"] == "bornagain" and sweep["counts"]["done"] == 2
    for trial in sweep["trials"]:
        rows = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())["models"]
        assert sorted(r["generation"] for r in rows if r["role"] == "generation") == [0, 1]
        assert trial["epochs"] == 2 and trial["target_model"] == "generation 1"  # the last generation's epochs
        assert set(trial["others"]) == {"generation 0", "ens_0..1"}
