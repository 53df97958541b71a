"""`distill tune` chooses on the model it is about; signals; Optuna; the best configuration's statistics.

    pytest tests/test_tuning_targets.py -q

The Ray tests run `distill tune` as a subprocess on MNIST-1D (300 examples, tiny MLPs,
1-3 epochs, 2 CPUs). What Tune saw is read from each trial's progress.csv (Ray's own
record of the reports) and compared with the target model's rows in records.csv.
"""

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

pytest.importorskip("ray")

from distill.config import build_config  # noqa: E402
from distill.errors import ConfigError  # noqa: E402
from tuning import target as targets  # noqa: E402
from tuning.choose import best_config, compare  # noqa: E402

from test_tuning import distill_tune, sweep_of, tiny, write  # noqa: E402


# ---------------------------------------------------------------- no Ray


@pytest.mark.parametrize("extra, message", [
    ({"tune": {"target": "best_generation"}}, "does not apply to tune.kind=train"),
    ({"tune": {"kind": "ensemble", "target": "last"}}, "does not apply to tune.kind=ensemble"),
    ({"tune": {"kind": "bornagain", "target": "best_generation", "scheduler": "asha"}}, "use tune.scheduler=fifo"),
    ({"tune": {"kind": "ensemble", "target": "student"}, "ensemble": {"combine": []}}, "no student is trained"),
])
def test_bad_target_is_one_clear_error(extra, message):
    with pytest.raises(ConfigError, match=message) as err:
        targets.check(build_config(tiny(**extra)))
    assert "\n" not in str(err.value)


def test_each_kind_has_one_target_and_matches_only_its_reports():
    train = targets.check(build_config(tiny(seeds=[3])))
    assert train.matches({"role": "student", "seed": 3}) and train.matches({"role": "model", "seed": 3})
    assert not train.matches({"role": "teacher", "seed": 3}) and not train.matches({"role": "student", "seed": 0})
    chain = targets.check(build_config(tiny(tune={"kind": "bornagain"}, bornagain={"generations": 2})))
    assert chain.label() == "generation 2" and chain.live
    assert chain.matches({"role": "generation", "generation": 2, "seed": 0})
    assert not chain.matches({"role": "generation", "generation": 1, "seed": 0})
    ens = targets.check(build_config(tiny(tune={"kind": "ensemble"},
                                          ensemble={"combine": ["mean_logits", "mean_probs"]})))
    assert ens.label() == "student 0 mean_logits"
    assert ens.matches({"role": "student", "student": 0, "combine": "mean_logits", "seed": 0})
    assert not ens.matches({"role": "student", "student": 0, "combine": "mean_probs", "seed": 0})
    assert not ens.matches({"role": "member", "member": 0, "seed": 0})
    alone = targets.check(build_config(tiny(tune={"kind": "ensemble"}, ensemble={"combine": []})))
    assert alone.name == "ensemble" and not alone.live and not alone.matches({"role": "member", "seed": 0})


def _trial(name, temperature, seed, value, status="done"):
    return {"trial": name, "params": {"distill.temperature": temperature, "seeds": [seed]}, "seed": seed,
            "status": status, "best_val_acc": value}


def test_best_config_ignores_partial_trials_and_tests_the_runner_up():
    from scipy import stats

    trials = [_trial("a0", 1, 0, 0.99, status="stopped"), _trial("a1", 1, 1, 0.99),  # partial: never chosen
              _trial("b0", 2, 0, 0.80), _trial("b1", 2, 1, 0.70), _trial("b2", 2, 2, 0.75),
              _trial("c0", 4, 0, 0.50), _trial("c1", 4, 1, 0.52), _trial("c2", 4, 2, 0.49)]
    chosen = best_config(trials, "val_acc", "max")
    assert chosen["params"] == {"distill.temperature": 2} and chosen["left_out"] == 1
    assert chosen["mean_best_val_acc"] == pytest.approx(0.75)
    half = stats.t.ppf(0.975, 2) * 0.05 / 3 ** 0.5  # sample stdev of .80/.70/.75 is 0.05
    assert chosen["ci95"] == pytest.approx([0.75 - half, 0.75 + half])
    versus = chosen["versus_runner_up"]
    assert chosen["runner_up"]["params"] == {"distill.temperature": 4}
    diffs = [0.30, 0.18, 0.26]
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    t = mean / (sd / 3 ** 0.5)
    assert versus["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert versus["separable"] and versus["words"].startswith("separable")
    close = [_trial("x0", 1, 0, 0.70), _trial("x1", 1, 1, 0.60), _trial("y0", 2, 0, 0.61), _trial("y1", 2, 1, 0.68)]
    assert not best_config(close, "val_acc", "max")["versus_runner_up"]["separable"]
    assert "not separable" in compare({"by_seed": {0: 0.9}}, {"by_seed": {0: 0.1}}, "val_acc")["words"]
    assert best_config([_trial("z", 1, 0, 0.9, status="interrupted")], "val_acc", "max") is None


# ---------------------------------------------------------------- Ray


def _tune_saw(run_dir: Path) -> dict[int, dict]:
    """training_iteration -> the report Tune recorded (a report repeated after a resume appears once)."""
    with open(run_dir / "progress.csv", newline="") as f:
        return {int(row["training_iteration"]): row for row in csv.DictReader(f)}


def _val_rows(run_dir: Path, role: str, generation: str = "") -> list[float]:
    with open(run_dir / "records.csv", newline="") as f:
        return [float(r["acc"]) for r in csv.DictReader(f)
                if r["role"] == role and r["split"] == "val" and r["generation"] == generation]


def _assert_stream_is(run_dir: Path, expected: list[float]) -> None:
    saw = _tune_saw(run_dir)
    assert sorted(saw) == list(range(1, len(expected) + 1)), (sorted(saw), expected)
    assert [float(saw[i]["val_acc"]) for i in sorted(saw)] == pytest.approx(expected)


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_teacher_inside_each_trial_never_reaches_the_metric(tmp_path):
    """A searched teacher key trains the teacher in every trial; the teacher is far better
    than the (nearly untrained) student, yet every figure Tune saw, best_val_acc and
    best_config are the student's; the teacher is an extra column."""
    data = tiny(name="teacher-key", train={"epochs": 2, "lr": 1.0e-6},
                teacher={"model": {"name": "mlp", "width": 64}, "train": {"epochs": 4, "lr": 0.01}},
                search={"teacher.model.width": {"grid": [64, 96]}})
    data["model"]["width"] = 4
    out = tmp_path / "runs"
    done = distill_tune(write(tmp_path, data), out)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["target"]["label"] == "student"
    for trial in sweep["trials"]:
        run_dir = Path(trial["run_dir"])
        student = _val_rows(run_dir, "student")
        assert len(student) == 2 and trial["epochs"] == 2
        _assert_stream_is(run_dir, student)
        assert trial["best_val_acc"] == pytest.approx(max(student))
        teacher = trial["others"]["teacher mlp"]["val_acc"]
        assert teacher > max(student) + 0.1, (teacher, student)
    best = max(t["best_val_acc"] for t in sweep["trials"])
    assert sweep["best_config"]["mean_best_val_acc"] == pytest.approx(best)
    assert sweep["best"]["best_val_acc"] == pytest.approx(best)


def _start(config: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "distill.cli", "tune", str(config), "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_a_report(driver: subprocess.Popen, out: Path, timeout: float = 180) -> None:
    """Until some trial has sent Tune one target report (and no trial has finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        for book in out.glob("*/*/*/checkpoints/tune.json"):
            try:
                if json.loads(book.read_text())["sent"] >= 1:
                    return
            except (ValueError, KeyError, OSError):
                pass
        time.sleep(0.05)
    raise AssertionError("no trial reported before the deadline")


def _stop_all(driver: subprocess.Popen) -> None:
    try:  # Ray's processes end with the driver; this only makes sure no stray one is left
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_bornagain_reports_the_last_generation_even_after_a_kill(tmp_path):
    """tune.kind=bornagain: Tune sees generation 2's epochs only, before and after SIGKILL + --resume."""
    data = tiny(name="ban-target", train={"epochs": 3, "batch_size": 16}, bornagain={"generations": 2},
                distill={"method": "ban"}, search={"distill.temperature": {"grid": [1.0, 4.0]}},
                tune={"kind": "bornagain"})
    config, out = write(tmp_path, data), tmp_path / "runs"
    driver = _start(config, out)
    try:
        _wait_for_a_report(driver, out)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        _stop_all(driver)
    resumed = distill_tune(config, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["counts"]["done"] == 2 and sweep["target"]["label"] == "generation 2"
    for trial in sweep["trials"]:
        run_dir = Path(trial["run_dir"])
        last = _val_rows(run_dir, "generation", "2")
        assert len(last) == 3 and trial["epochs"] == 3
        _assert_stream_is(run_dir, last)
        assert set(trial["others"]) >= {"generation 0", "generation 1", "ens_1..2"}


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_bornagain_best_generation_is_reported_at_the_end(tmp_path):
    data = tiny(name="ban-best", train={"epochs": 2}, bornagain={"generations": 1}, distill={"method": "ban"},
                tune={"kind": "bornagain", "target": "best_generation"})
    out = tmp_path / "runs"
    done = distill_tune(write(tmp_path, data), out)
    assert done.returncode == 0, done.stderr[-3000:]
    (trial,) = sweep_of(out)["trials"]
    run_dir = Path(trial["run_dir"])
    rows = json.loads((run_dir / "summary.json").read_text())["models"]
    generations = sorted((r for r in rows if r["role"] == "generation"), key=lambda r: r["generation"])
    chosen = max(generations, key=lambda r: r["val_acc"])  # the first of equals
    assert trial["target_model"] == f"generation {chosen['generation']}"
    _assert_stream_is(run_dir, _val_rows(run_dir, "generation", str(chosen["generation"])))


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_ensemble_trials_report_the_first_student(tmp_path):
    """tune.kind=ensemble: members are kept out of the metric; the stream is student 0's epochs."""
    data = tiny(name="ens-sweep", train={"epochs": 2}, ensemble={"members": 2, "train": {"epochs": 1}},
                search={"distill.temperature": {"grid": [2.0]}}, tune={"kind": "ensemble"})
    out = tmp_path / "runs"
    done = distill_tune(write(tmp_path, data), out)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = sweep_of(out)
    (trial,) = sweep["trials"]
    assert trial["target_model"] == "student 0 mean_probs" and trial["epochs"] == 2
    run_dir = Path(trial["run_dir"])
    _assert_stream_is(run_dir, _val_rows(run_dir, "student"))
    assert {"member 0", "member 1", "ensemble mean_probs"} <= set(trial["others"])


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_optuna_with_asha_and_seeds_samples_the_declared_space(tmp_path):
    pytest.importorskip("optuna")
    data = tiny(name="optuna", seeds=[0, 1], train={"epochs": 2},
                search={"train.lr": {"loguniform": [0.001, 0.05]}, "model.width": {"choice": [8, 16]}},
                tune={"search_alg": "optuna", "scheduler": "asha", "num_samples": 2, "grace_period": 1})
    out = tmp_path / "runs"
    done = distill_tune(write(tmp_path, data), out)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["search_alg"] == "optuna" and len(sweep["trials"]) == 4
    for trial in sweep["trials"]:
        assert 0.001 <= trial["params"]["train.lr"] <= 0.05 and trial["params"]["model.width"] in (8, 16)
        assert trial["seed"] in (0, 1) and trial["status"] in ("done", "stopped")
        _assert_stream_is(Path(trial["run_dir"]), _val_rows(Path(trial["run_dir"]), "model")[:trial["epochs"]])
    assert sorted(t["seed"] for t in sweep["trials"]) == [0, 0, 1, 1]  # each sample once per seed


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_signal_leaves_an_interrupted_sweep_that_resumes(tmp_path, sig, status):
    """SIGTERM (a scheduler) or SIGINT to the process group (Ctrl-C): exit 143/130 with one line,
    sweep.json `interrupted` with unfinished trials `interrupted` (never stopped or done) and no
    best named from them; --resume finishes every trial."""
    data = tiny(name="signalled", train={"epochs": 6, "batch_size": 16},
                search={"train.lr": {"grid": [0.01, 0.003]}})
    config, out = write(tmp_path, data), tmp_path / "runs"
    driver = _start(config, out)
    try:
        _wait_for_a_report(driver, out)
        if sig == signal.SIGINT:
            os.killpg(driver.pid, sig)  # Ctrl-C reaches the whole foreground group
        else:
            os.kill(driver.pid, sig)
        _, stderr = driver.communicate(timeout=120)
    finally:
        _stop_all(driver)
    assert driver.returncode == status, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("distill: ") and "--resume" in last, stderr[-3000:]
    assert "Traceback" not in stderr
    sweep = sweep_of(out)
    assert sweep["status"] == "interrupted" and signal.Signals(sig).name in sweep["reason"]
    assert "stopped" not in {t["status"] for t in sweep["trials"]}
    unfinished = [t for t in sweep["trials"] if t["status"] != "done"]
    assert unfinished and all(t["status"] == "interrupted" for t in unfinished)
    for trial in unfinished:
        assert json.loads((Path(trial["run_dir"]) / "meta.json").read_text())["status"] == "interrupted"
    chosen = sweep["best_config"]
    assert chosen is None or (chosen["provisional"]
                              and set(chosen["trials"]).isdisjoint(t["trial"] for t in unfinished))
    resumed = distill_tune(config, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    sweep = sweep_of(out)
    assert sweep["status"] == "done" and sweep["best_config"]["provisional"] is None
    for trial in sweep["trials"]:
        run_dir = Path(trial["run_dir"])
        assert trial["status"] == "done" and trial["epochs"] == 6
        _assert_stream_is(run_dir, _val_rows(run_dir, "model"))
