"""Packed sweeps (tuning.plan, tuning.packed): a configuration's seeds in one trial, objective-only
settings in one stacked fit, `--dry-run`, equal numbers to one trial per (configuration, seed),
resume after a kill, and more seeds training only the new seeds."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.config import build_config
from tuning import plan as plans
from tuning import space

TINY = {"name": "packed", "seeds": [0, 1], "dataset": {"name": "mnist1d", "num_samples": 300},
        "model": {"name": "mlp", "width": 16},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "threads": 1, "device": "cpu"},
        "teacher": {"model": {"name": "mlp", "width": 16}, "train": {"epochs": 2}},
        "distill": {"method": "kd"},
        "search": {"distill.alpha": {"grid": [0.5, 0.9]}, "distill.temperature": {"grid": [2, 4]}},
        "tune": {"cpus_per_trial": 1}}


def config(**extra) -> dict:
    data = json.loads(json.dumps(TINY))
    for key, value in extra.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) and key != "search" else value
    return data


def plan_of(data: dict) -> plans.Plan:
    cfg = build_config(data)
    return plans.make_plan(cfg, space.parse_search(cfg))


# ---------------------------------------------------------------- the plan, no Ray, no torch


def test_plan_packs_only_configurations_that_differ_in_objective_keys():
    data = config(search={"distill.alpha": {"grid": [0.1, 0.5, 0.9]}, "train.lr": {"grid": [0.01, 0.02]}},
                  tune={"pack": 2})
    plan = plan_of(data)
    assert plan.stacked and plan.models == 6 * 2
    lrs = [{plan.configs[i]["train.lr"] for i in pack} for pack in plan.packs]
    assert all(len(found) == 1 for found in lrs)  # a pack never mixes training recipes
    assert sorted(len(p) for p in plan.packs) == [1, 1, 2, 2]  # 3 per recipe, at most 2 per pack
    assert sorted(i for p in plan.packs for i in p) == list(range(6))  # every configuration once
    assert plan.trials == 4 and plan.epochs == 6 * 2 * 3
    assert plan.teacher_epochs == 2 * 2 * 6  # train.lr changes the teacher: one per configuration and seed


@pytest.mark.parametrize("tune, layout, packs", [
    ({"pack": 0}, "stacked", [[0], [1], [2], [3]]),
    ({"scheduler": "asha"}, "stacked", [[0], [1], [2], [3]]),   # ASHA keeps configurations unpacked
    ({"seeds": "trials"}, "trials", []),
    ({"scheduler": "pbt"}, "trials", []),
    ({}, "stacked", [[0, 1, 2, 3]]),
])
def test_plan_layout_by_scheduler_and_keys(tune, layout, packs):
    plan = plan_of(config(tune={"cpus_per_trial": 1, **tune}))
    assert plan.layout == layout and plan.packs == packs


def test_packs_are_split_until_each_trial_slot_has_one():
    cfg = build_config(config(search={"distill.alpha": {"grid": [0.1, 0.3, 0.5, 0.7, 0.9]}}))
    dims = space.parse_search(cfg)
    assert plans.make_plan(cfg, dims, slots=1).packs == [[0, 1, 2, 3, 4]]
    assert plans.make_plan(cfg, dims, slots=2).packs == [[0, 1, 2], [3, 4]]
    assert plans.make_plan(cfg, dims, slots=8).packs == [[0], [1], [2], [3], [4]]


def test_random_draws_are_the_same_on_every_call_and_seeds_leave_the_sweep_id():
    data = config(search={"distill.alpha": {"uniform": [0.1, 0.9]}}, tune={"num_samples": 3})
    first, again = plan_of(data), plan_of(data)
    assert first.configs == again.configs and len({c["distill.alpha"] for c in first.configs}) == 3
    more = config(search=data["search"], tune=data["tune"], seeds=[0, 1, 2])
    assert plan_of(more).configs == first.configs  # the same configurations with one more seed
    folder = plans.sweep_folder(build_config(data), "out")
    assert plans.sweep_folder(build_config(more), "out") == folder
    trials = {"seeds": "trials"}
    assert (plans.sweep_folder(build_config(config(tune=trials)), "out")
            != plans.sweep_folder(build_config(config(tune=trials, seeds=[0, 1, 2])), "out"))


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config(tune={"cpus_per_trial": 1, "max_concurrent_trials": 1})))
    code = ("import sys; from distill import cli; code = cli.main(['tune', sys.argv[1], '--out', sys.argv[2], "
            "'--dry-run']); print('RAY' if 'ray' in sys.modules else 'NO RAY'); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "4 configuration(s) x 2 seed(s) [0, 1] = 8 models; 1 Tune trial(s)" in out
    assert "trial 0: 4 configuration(s) x 2 seeds = 8 models in one fit" in out
    assert "estimated cost: 24 model epochs + 4 teacher epochs = 28 epochs" in out
    assert out.strip().endswith("NO RAY") and not (tmp_path / "out").exists()


def test_a_configuration_its_run_would_refuse_is_one_line_before_ray(tmp_path, capsys):
    """Each configuration is checked as `distill train` checks its input (data, model, teachers, method)
    before Ray starts, by `distill tune` and by `--dry-run`: a method for language models on MNIST-1D, and a
    teacher run of another data split, are one line naming the configuration, exit 2, nothing written."""
    from distill.cli import main

    teacher = tmp_path / "teacher"
    assert main(["train", str(write(tmp_path, config(search={}, teacher={"model": None}, seeds=[0],
                                                      dataset={"num_samples": 200}))),
                 "--out", str(teacher), "--quiet"]) == 0
    (teacher_run,) = teacher.glob("*/*")
    cases = {"gkd is for language models only": config(search={"distill.method": {"grid": ["kd", "gkd"]}}),
             "trained on another data split": config(teacher={"model": None},
                                                     distill={"method": "kd", "teacher": str(teacher_run)})}
    for says, data in cases.items():
        for extra in (["--dry-run"], []):
            out = tmp_path / "out"
            assert main(["tune", str(write(tmp_path, data)), "--out", str(out), "--quiet", *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and err.startswith("distill: error: search: the configuration ") \
                and says in err, err
            assert not out.exists()


@pytest.mark.parametrize("kind, search, says", [
    ("bornagain", {"distill.method": {"grid": ["kd", "gkd"]}}, "gkd is for language models only"),
    ("ensemble", {"distill.method": {"grid": ["kd", "gkd"]}}, "gkd is for language models only"),
    ("mutual", {"model.name": {"grid": ["mlp", "gpt"]}}, "gpt is a language model"),
])
def test_every_kind_checks_each_configuration_before_ray(tmp_path, capsys, kind, search, says):
    """Each built-in kind's preflight (Kind.preflight) runs its run's own input checks on every configuration."""
    from distill.cli import main

    data = {**config(search=search, tune={"kind": kind}), "teacher": {"model": None, "train": {}}}
    out = tmp_path / "out"
    assert main(["tune", str(write(tmp_path, data)), "--out", str(out), "--quiet", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("distill: error: search: the configuration ") and says in err, err
    assert not out.exists()


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / f"sweep-{len(list(tmp_path.glob('sweep-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_into_a_closed_pipe_ends_quietly(tmp_path):
    """`distill tune X --dry-run | head -1`: the reader goes away before the plan is written; no traceback,
    no 'Exception ignored' at exit, the status of a process killed by SIGPIPE."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config(tune={"cpus_per_trial": 1})))
    child = subprocess.Popen([sys.executable, "-m", "distill.cli", "tune", str(path), "--out", str(tmp_path / "out"),
                              "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child writes anything
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and stderr == "", stderr


# ---------------------------------------------------------------- end to end, Ray


def tune(tmp_path: Path, data: dict, out: Path, *args, timeout=400) -> subprocess.CompletedProcess:
    path = tmp_path / f"sweep-{len(list(tmp_path.glob('sweep-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "distill.cli", "tune", str(path), "--out", str(out), "--quiet",
                           *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def sweep_of(out: Path) -> dict:
    (path,) = out.glob("*/*/sweep.json")
    return json.loads(path.read_text())


def figures(sweep: dict) -> dict:
    """(configuration, seed) -> the target's validation figures of every epoch, from its run directory."""
    found = {}
    for trial in sweep["trials"]:
        params = {k: v for k, v in trial["params"].items() if k != "seeds"}
        with open(Path(trial["run_dir"]) / "records.csv", newline="") as f:  # every figure but the timings
            rows = [(r["epoch"], r["split"], *(float(r[k]) if r[k] else None for k in ("loss", "acc", "nll", "ece")))
                    for r in csv.DictReader(f) if r["role"] in ("student", "model")]
        found[(json.dumps(params, sort_keys=True), trial["seed"])] = [("best", "val", trial["best_val_acc"],
                                                                     trial["best_val_nll"])] + rows
    return found


def assert_close(found: dict, expected: dict, rel: float = 1e-5) -> None:
    """Equal models, equal figures: accuracies exactly; losses, NLL and ECE within `rel` (a stacked fit
    sums a batch's losses and the calibration bins in another order than a fit of one model: the
    last bits of a float32 differ, seen up to 1e-7 relative)."""
    assert found.keys() == expected.keys()
    for key in found:
        assert len(found[key]) == len(expected[key]), key
        for a, b in zip(found[key], expected[key]):
            assert a[:2] == b[:2] and len(a) == len(b), key
            for x, y in zip(a[2:], b[2:]):
                assert (x is None and y is None) or x == pytest.approx(y, rel=rel, abs=1e-9), (key, a, b)


@pytest.mark.slow  # end to end (Ray): CI runs it, make test does not
def test_packed_sweep_equals_one_trial_per_configuration_and_seed(tmp_path):
    tune(tmp_path, config(), tmp_path / "packed")
    tune(tmp_path, config(tune={"cpus_per_trial": 1, "seeds": "trials"}), tmp_path / "trials")
    packed, trials = sweep_of(tmp_path / "packed"), sweep_of(tmp_path / "trials")
    assert sum(p["models"] for p in packed["packs"]) == 8 and len(packed["packs"]) <= 2  # one per CPU
    assert all(p["packing"]["student"].startswith("packed") for p in packed["packs"])
    assert len(packed["trials"]) == len(trials["trials"]) == 8
    # on CPU the stacked fit gives each model the numbers of its own fit, to float32 rounding
    assert_close(figures(packed), figures(trials))
    assert packed["best_config"]["params"] == trials["best_config"]["params"]
    # the Tune checkpoints are references: a small file each, not a copy of the run's checkpoints
    for folders in ((tmp_path / "packed").glob("*/*/tune-*/*/checkpoint_*"),
                    (tmp_path / "trials").glob("*/*/*_seeds-*/checkpoint_*")):  # both layouts (not PBT)
        folders = list(folders)
        assert folders and all(sorted(p.name for p in folder.iterdir()) == ["tune.json"] for folder in folders)


@pytest.mark.slow  # end to end (Ray): CI runs it, make test does not
def test_killed_packed_sweep_resumes_to_the_same_numbers(tmp_path):
    data = config(train={"epochs": 12, "batch_size": 16, "lr": 0.01, "threads": 1, "device": "cpu"})
    data["search"] = {"distill.alpha": {"grid": [0.5, 0.9]}}
    reference = tmp_path / "reference"
    tune(tmp_path, data, reference)
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "distill.cli", "tune", str(path), "--out", str(out), "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def mid_training() -> bool:
        return any(",train," in line and line.split(",")[5] == "4"
                   for f in out.glob("*/*/runs/*/records.csv") for line in f.read_text().splitlines())
    try:
        deadline = time.time() + 300
        while not mid_training() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, "the sweep ended before the kill"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not all(json.loads(m.read_text()).get("status") == "done" for m in out.glob("*/*/runs/*/meta.json"))
    tune(tmp_path, data, out, "--resume")
    resumed, expected = sweep_of(out), sweep_of(reference)
    assert all(t["status"] == "done" and t["epochs"] == 12 for t in resumed["trials"])
    assert figures(resumed) == figures(expected)


@pytest.mark.slow  # end to end (Ray): CI runs it, make test does not
def test_adding_a_seed_trains_only_that_seed(tmp_path):
    out = tmp_path / "out"
    tune(tmp_path, config(seeds=[0]), out)
    first = sweep_of(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/runs/*/checkpoints/*/*.pt")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.glob("*/*/teacher*/checkpoints/*/*.pt")})
    assert stamps
    tune(tmp_path, config(seeds=[0, 1]), out)
    second = sweep_of(out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing of seed 0 trained or written again
    assert sorted(p.name for p in out.glob("*/*/teacher*")) == ["teacher-s0", "teacher-s1"]
    assert len(second["trials"]) == 8 and all(t["status"] == "done" for t in second["trials"])
    assert sum(p["trained"] for p in second["packs"]) == 4  # the 4 configurations of seed 1
    old = figures(first)
    assert {k: v for k, v in figures(second).items() if k[1] == 0} == old
    assert second["best_config"]["seeds"] == 2


@pytest.mark.slow  # end to end (Ray): CI runs it, make test does not
def test_asha_decides_on_the_mean_over_stacked_seeds(tmp_path):
    """ASHA keeps configurations unpacked: one trial per configuration, its seeds stacked; every
    figure Tune saw is the mean over the seeds at that epoch, and a stopped trial stops all its seeds."""
    data = config(train={"epochs": 4, "batch_size": 64, "lr": 0.01, "threads": 1, "device": "cpu"},
                  search={"distill.temperature": {"grid": [1, 2, 4]}},
                  tune={"cpus_per_trial": 1, "scheduler": "asha", "grace_period": 1, "reduction_factor": 3})
    out = tmp_path / "out"
    tune(tmp_path, data, out)
    sweep = sweep_of(out)
    assert len(sweep["packs"]) == 3 and all(len(p["configurations"]) == 1 for p in sweep["packs"])
    for pack in sweep["packs"]:
        members = [t for t in sweep["trials"] if t["pack"] == pack["trial"]]
        assert sorted(t["seed"] for t in members) == [0, 1] and len({t["status"] for t in members}) == 1
        (progress,) = out.glob(f"*/*/tune-*/{pack['trial']}/progress.csv")
        with open(progress, newline="") as f:
            saw = {int(r["training_iteration"]): float(r["val_acc"]) for r in csv.DictReader(f)}
        per_seed = [dict((r[0], r[3]) for r in figures({"trials": [t]}).popitem()[1][1:] if r[1] == "val")
                    for t in members]
        assert saw and all(saw[e] == pytest.approx((per_seed[0][str(e)] + per_seed[1][str(e)]) / 2) for e in saw)
