"""The capacity curve: a sweep over the student's size x distill.method (labels among them) gets its own section.

- a real tiny sweep of the capacity-mnist1d preset's quick version (`distill reproduce --quick`, Ray, about
  50 s, slow): its page has the "Capacity curve" section, one table row per width and the figure;
- a sweep folder laid out as the real sweep writes it (a teacher run in `<sweep>/teacher/`, one run directory
  per trial reading it, sweep.json listing the trials), its runs trained by `distill train` (no Ray, about
  15 s): the table against numbers computed here by hand from the trials' summary.json files;
- which sweeps are capacity curves, and Holm's adjustment against a textbook example.

    .venv/bin/python -m pytest tests/test_capacity.py -q                  # everything, about 1.5 min
    .venv/bin/python -m pytest tests/test_capacity.py -q -m "not slow"    # no Ray: about 25 s
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import results
from distill import cli
from results import capacity, stats
from results import experiments as ex
from tests.conftest import tiny_overrides

WIDTHS, METHODS, SEEDS = (8, 32), ("kd", "labels"), (0, 1, 2)


# ---------------------------------------------------------------- a sweep folder without Ray


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """<root>/capacity-tiny/: teacher/ (seeds 0-2, from labels), one trial run per width x method x seed
    reading it, and sweep.json naming each trial's searched values, as `distill tune` writes them."""
    root = tmp_path_factory.mktemp("capacity")
    base = tiny_overrides(**{"dataset.num_samples": 300, "train.epochs": 2}) + ["name=capacity-tiny"]
    sweep = root / "capacity-tiny"
    teacher = sweep / "teacher"
    seeds = f"seeds=[{','.join(map(str, SEEDS))}]"
    train = ["train", "mnist1d-mlp", "--quiet", "--out", str(root), *base]
    assert cli.main([*train, "run_id=teacher", "model.width=64", "train.epochs=8", seeds]) == 0
    trials = []
    for seed in SEEDS:
        for width in WIDTHS:
            for method in METHODS:
                trial = f"00{len(trials)}_method-{method}_width-{width}_seeds-{seed}"
                assert cli.main([*train, f"run_id={trial}", f"model.width={width}", f"distill.method={method}",
                                 f"distill.teacher={teacher}", f"seeds=[{seed}]"]) == 0
                trials.append({"trial": trial, "params": {"model.width": width, "distill.method": method,
                                                          "seeds": [seed]},
                               "seed": seed, "status": "done", "reason": None, "run_dir": str(sweep / trial)})
    (sweep / "sweep.json").write_text(json.dumps({"name": "capacity-tiny", "kind": "train", "scheduler": "fifo",
                                                  "status": "done", "trials": trials}))
    return sweep


def test_the_table_equals_numbers_computed_by_hand(tiny_sweep):
    (exp,) = ex.split(results.load(tiny_sweep))
    assert exp.kind == "sweep" and capacity.capacity_keys(exp) == ("model.width", ["kd"])
    shown, numbers = capacity.capacity_table(exp)
    assert list(numbers["width"]) == [8, 32] and list(shown["width"]) == ["8", "32"]

    def summary(run: str) -> dict:
        (row,) = json.loads((tiny_sweep / run / "summary.json").read_text())["models"]
        return row

    teacher = {m["seed"]: 100 * m["test_acc"]
               for m in json.loads((tiny_sweep / "teacher" / "summary.json").read_text())["models"]}
    acc = {(t["params"]["model.width"], t["params"]["distill.method"], t["seed"]): summary(t["trial"])
           for t in json.loads((tiny_sweep / "sweep.json").read_text())["trials"]}
    p_values = []
    for width, row in zip(WIDTHS, numbers.to_dict("records")):
        kd = np.array([100 * acc[width, "kd", s]["test_acc"] for s in SEEDS])
        labels = np.array([100 * acc[width, "labels", s]["test_acc"] for s in SEEDS])
        diffs = kd - labels
        half = scipy_stats.t.ppf(0.975, len(SEEDS) - 1) * diffs.std(ddof=1) / math.sqrt(len(SEEDS))
        assert row["params"] == acc[width, "kd", 0]["params"] == acc[width, "labels", 0]["params"]
        assert row["student_mean"] == pytest.approx(kd.mean()) and row["student_n"] == 3
        assert row["labels_mean"] == pytest.approx(labels.mean()) and row["labels_n"] == 3
        assert row["student_ci"] == pytest.approx(scipy_stats.t.ppf(0.975, 2) * kd.std(ddof=1) / math.sqrt(3))
        assert row["gain"] == pytest.approx(diffs.mean()) and row["pairs"] == 3
        assert (row["low"], row["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
        assert row["verdict"] == ("higher" if diffs.mean() - half > 0 else
                                  "lower" if diffs.mean() + half < 0 else "not separable")
        closed = [100 * (kd[i] - labels[i]) / (teacher[s] - labels[i]) for i, s in enumerate(SEEDS)
                  if teacher[s] != labels[i]]
        assert row["gap_closed_mean"] == pytest.approx(np.mean(closed)) and row["gap_closed_n"] == len(closed)
        assert row["teacher_mean"] == pytest.approx(np.mean(list(teacher.values()))) and row["teacher_n"] == 3
        p_values.append(scipy_stats.ttest_rel(kd, labels).pvalue if np.ptp(diffs) > 0 else
                        (0.0 if diffs[0] != 0 else math.nan))
    assert numbers["p_value"].tolist() == pytest.approx(p_values, nan_ok=True)
    low, high = sorted(p_values)  # Holm over two comparisons: 2 p_(1), then max(2 p_(1), p_(2))
    holm = {low: min(1.0, 2 * low), high: min(1.0, max(2 * low, high))}
    assert numbers["p_holm"].tolist() == pytest.approx([holm[p] for p in p_values], nan_ok=True)
    for row in numbers.to_dict("records"):
        expected = "not separable" if row["p_holm"] >= 0.05 else "higher" if row["gain"] > 0 else "lower"
        assert row["verdict_holm"] == expected
    assert shown.columns[-3:].tolist() == ["verdict", "verdict, Holm over 2", "teacher gap closed %"]


def test_the_report_page_has_the_section_and_the_figure(tiny_sweep, tmp_path):
    results.report([tiny_sweep], tmp_path / "report")
    (exp,) = ex.split(results.load(tiny_sweep))
    page = (tmp_path / "report" / "report.md").read_text()
    section = page.split("### Capacity curve", 1)[1].split("\n### ", 1)[0]
    assert "| width | parameters | labels student, test acc % | kd student, test acc % |" in section
    assert sum(line.startswith(("| 8 |", "| 32 |")) for line in section.splitlines()) == 2
    assert (tmp_path / "report" / "figures" / f"{exp.slug}-capacity.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "report" / f"{exp.slug}-capacity.csv")) == 2
    assert "Capacity curve" in (tmp_path / "report" / "report.html").read_text()


# ---------------------------------------------------------------- which sweeps, and Holm


@pytest.mark.parametrize("params, found", [
    ({"model.width": [8, 32], "distill.method": ["kd", "labels"]}, ("model.width", ["kd"])),
    ({"model.depth": [1, 3], "distill.method": ["labels", "dkd", "kd"]}, ("model.depth", ["dkd", "kd"])),
    ({"model": [{"name": "mlp", "width": 8}, {"name": "cnn1d"}], "distill.method": ["kd", "labels"]},
     ("model", ["kd"])),
    ({"model.width": [8, 32], "distill.method": ["kd", "dkd"]}, None),            # no labels baseline
    ({"model.width": [8, 32], "distill.method": ["labels"]}, None),               # nothing distils
    ({"model.width": [8, 32], "distill.method": ["kd", "labels"], "distill.temperature": [1, 4]}, None),
    ({"model.width": [8], "model.depth": [1], "distill.method": ["kd", "labels"]}, None),
    ({"distill.temperature": [1, 4], "distill.method": ["kd", "labels"]}, None),
])
def test_which_sweeps_are_capacity_curves(tmp_path, params, found):
    keys = list(params)
    trials = [{"params": {k: params[k][i % len(params[k])] for k in keys} | {"seeds": [0]}}
              for i in range(max(len(v) for v in params.values()))]
    (tmp_path / "sweep.json").write_text(json.dumps({"trials": trials}))
    assert capacity.capacity_keys(SimpleNamespace(key=str(tmp_path))) == found


def test_holm_against_a_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005, 3 x 0.01, max(2 x 0.03, 0.03), max(0.06, 1 x 0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, math.nan, 0.4]) == pytest.approx([0.8, math.nan, 0.8], nan_ok=True)
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]
    assert stats.holm_verdict(-2.0, 0.01) == "lower" and stats.holm_verdict(2.0, 0.2) == "not separable"


# ---------------------------------------------------------------- the preset's quick sweep (Ray)


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory) -> Path:
    """The report folder of `distill reproduce capacity-mnist1d --quick`: widths 8, 32 x kd, labels x 2 seeds."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("reproduce")
    assert cli.main(["reproduce", "capacity-mnist1d", "--quick", "--out", str(root), "train.device=cpu",
                     "train.threads=1", "tune.cpus_per_trial=1"]) == 0
    (report,) = root.glob("**/report/report.md")
    return report.parent


@pytest.mark.slow  # the sweep: Ray, 8 trials and the teacher, about 50 s
def test_the_presets_quick_sweep_has_a_capacity_curve(quick_sweep):
    (exp,) = ex.split(results.load(quick_sweep.parent))
    assert exp.kind == "sweep" and len(exp.trials) == 8 and [Path(t).name for t in exp.teachers] == ["teacher-s0-1"]  # the seeds it serves name the folder (more seeds: another)
    page = (quick_sweep / "report.md").read_text()
    assert "### Capacity curve" in page
    table = pd.read_csv(quick_sweep / f"{exp.slug}-capacity.csv")
    assert table["width"].tolist() == [8, 32] and table["params"].is_monotonic_increasing
    assert (table[["labels_n", "student_n", "pairs", "teacher_n"]] == 2).all().all()
    assert (quick_sweep / "figures" / f"{exp.slug}-capacity.png").stat().st_size > 0
    assert f"figures/{exp.slug}-capacity.png" in page
