"""Fidelity in the report: agreement and teacher-KL columns on the KD, born-again, ensemble and
sweep pages when rows carry them, and accuracy against agreement as a figure. Hand-written runs.

    .venv/bin/python -m pytest tests/test_report_fidelity.py -q
"""

import json

import pandas as pd
import pytest

import results
from report_runs import KD_LOSS, bornagain_run, ensemble_run, kd_run, summary_row, write_run

FIDELITY = {"val_agreement": 0.80, "test_agreement": 0.82, "test_teacher_kl": 0.30}


def with_fidelity(run, role, shift=0.0):
    """Add fidelity figures to the rows of `role` (generations >= 1 for born-again) in a written run."""
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    for row in summary["models"]:
        if row["role"] == role and (role != "generation" or row["generation"] >= 1):
            row.update({k: v + shift + 0.01 * row["seed"] for k, v in FIDELITY.items()})
    path.write_text(json.dumps(summary))
    return run


def method_sweep(root):
    """A sweep over distill.method (labels, kd) x 2 seeds, every student with fidelity figures."""
    folder = root / "tune" / "methods"
    folder.mkdir(parents=True)
    trials = []
    for i, method in enumerate(("labels", "kd")):
        for seed in (0, 1):
            trial = f"trial_{i}_{seed}"
            student = summary_row("student", seed, 0.60 + 0.05 * i + 0.01 * seed, test_agreement=0.70 + 0.1 * i,
                                  val_agreement=0.7, test_teacher_kl=0.5 - 0.2 * i)
            write_run(folder / trial, "methods", "train", [student], teacher="cnn1d",
                      distill={"method": method, "temperature": 4.0, "alpha": 0.9, "teacher": None},
                      loss={**KD_LOSS, "method": method}, search={"distill": {"method": {"grid": ["labels", "kd"]}}})
            trials.append({"trial": trial, "params": {"distill.method": method, "seeds": seed}, "status": "done",
                           "reason": None, "run_dir": str(folder / trial), "epochs": 2, "best_val_acc": 0.6})
    (folder / "sweep.json").write_text(json.dumps({"name": "methods", "scheduler": "fifo", "metric": "val_acc",
                                                   "kind": "train", "trials": trials}))
    return folder


@pytest.fixture
def report(tmp_path):
    root = tmp_path / "runs"
    with_fidelity(kd_run(root), "student")
    with_fidelity(bornagain_run(root), "generation")
    with_fidelity(ensemble_run(root), "student", shift=0.1)
    method_sweep(root)
    out = tmp_path / "report"
    results.report([root], out)
    return out


def test_fidelity_columns_and_figure_on_each_page(report):
    page = (report / "report.md").read_text()
    assert page.count("### Fidelity") == 4
    for slug in ("mnist1d-kd", "ban", "ens", "methods-sweep-methods"):
        assert (report / "figures" / f"{slug}-fidelity.png").stat().st_size > 0, slug
    kd = pd.read_csv(report / "mnist1d-kd-fidelity.csv").set_index("model")
    assert list(kd.index) == ["student mlp"]  # the teacher has no figures
    assert kd.loc["student mlp", "test_agreement_mean"] == pytest.approx(83.0)  # 82, 83, 84 over seeds 0-2
    assert kd.loc["student mlp", "test_agreement_n"] == 3
    assert kd.loc["student mlp", "test_teacher_kl_mean"] == pytest.approx(0.31)
    ban = pd.read_csv(report / "ban-fidelity.csv").set_index("model")
    assert list(ban.index) == ["BAN-1", "BAN-2"]  # generation 0 was taught by nobody
    ens = pd.read_csv(report / "ens-fidelity.csv").set_index("model")
    assert ens.loc["student cnn1d (mean_probs)", "val_agreement_mean"] == pytest.approx(91.0)
    assert "test agreement %" in page and "test KL(teacher ‖ model)" in page


def test_a_sweep_over_methods_shows_one_row_per_method(report):
    sweep = pd.read_csv(report / "methods-sweep-methods-fidelity.csv").set_index("model")
    assert set(sweep.index) == {"loss=kd", "loss=labels"}
    assert sweep.loc["loss=kd", "test_agreement_mean"] == pytest.approx(80.0)
    assert sweep.loc["loss=labels", "test_agreement_mean"] == pytest.approx(70.0)
    assert sweep.loc["loss=kd", "test_agreement_n"] == 2


def test_no_fidelity_section_without_the_figures(tmp_path):
    out = results.report([kd_run(tmp_path / "runs")], tmp_path / "report")
    assert "Fidelity" not in out.read_text()
    assert not list((tmp_path / "report").glob("**/*fidelity*"))
