"""docs/results/collect.py: one table from its own runs, the other result files left alone.

    .venv/bin/python -m pytest tests/test_collect.py -q
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from report_runs import kd_run, labels_run

ROOT = Path(__file__).resolve().parent.parent


def test_the_kd_mode_writes_the_kd_table_alone_from_the_three_runs(tmp_path):
    out = tmp_path / "runs"  # the three runs of the kd table, no ban, ensemble, sweep or methods run
    labels_run(out, seeds=(0, 1, 2), accs=(0.60, 0.62, 0.64))
    labels_run(out, seeds=(0, 1, 2), accs=(0.95, 0.96, 0.97), model="cnn1d", name="mnist1d-cnn", run_id="cnn1")
    kd_run(out, seeds=(0, 1, 2), student=(0.63, 0.62, 0.70), teacher=(0.94, 0.95, 0.96))
    folder = tmp_path / "docs" / "results"  # a copy of collect.py writes beside itself
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "results" / "collect.py", folder)
    (folder / "mnist1d-ban.csv").write_text("left alone\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(folder / "collect.py"), str(out), "kd"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "collect.py", "mnist1d-ban.csv", "mnist1d-kd.csv", "mnist1d-kd.json"]
    assert (folder / "mnist1d-ban.csv").read_text() == "left alone\n"
    table = pd.read_csv(folder / "mnist1d-kd.csv").set_index("model")
    assert table.loc["1-D CNN (3 conv, 64 ch, GroupNorm) from labels", "test_acc"] == 96.0
    assert table.loc["CNN teacher of the KD run (trained first)", "test_acc"] == 95.0
    student = table.loc["MLP student, KD T = 4, alpha = 0.9"]
    assert round(student["diff"], 2) == 3.0 and student["pairs"] == 3  # (3 + 0 + 6) / 3, paired by seed
    meta = json.loads((folder / "mnist1d-kd.json").read_text())
    assert meta["command"].endswith("collect.py repro-runs kd") and "train mnist1d-kd" in meta["command"]
    assert [Path(r).parent.name for r in meta["runs"]] == ["mnist1d-mlp", "mnist1d-cnn", "mnist1d-kd"]


def test_the_lm_study_pairs_each_student_with_labels_of_its_width_and_holm_per_family(tmp_path):
    from report_runs import summary_row, write_run
    from results.stats import holm

    sys.path.insert(0, str(ROOT / "docs" / "results"))
    import collect

    out = tmp_path / "runs"
    nll = {}  # cell -> test NLL per seed: labels 2.5 / 2.4, each student a made-up change per seed
    change = {"kd-weak": (0.10, 0.14, 0.12), "kd-strong": (-0.05, -0.03, -0.04), "kd-data": (-0.20, -0.10, -0.15),
              "gkd0-strong": (0.01, -0.02, 0.0), "gkd-strong": (0.2, 0.1, 0.3)}
    for cell, label, baseline in collect.LM_CELLS:
        if cell == "kd-data-w64":
            continue  # not finished: left out of the table, and so are the contrasts that need it
        base = 2.5 if cell.endswith("w32") else 2.4 if cell.endswith("w64") else 2.3
        key = cell.rsplit("-", 1)[0]
        scale = 2 if cell.endswith("w64") else 1  # the wider student's changes twice the narrower's
        nll[cell] = [base + (scale * change[key][s] if baseline else 0.01 * s) for s in (0, 1, 2)]
        rows = [summary_row("student" if baseline else "model", s, 0.3, test_nll=nll[cell][s], val_nll=nll[cell][s],
                            test_agreement=0.6 if baseline else None) for s in (0, 1, 2)]
        write_run(out / cell / "lm-pydoc-study" / "r1", "lm-pydoc-study", "train", rows, model="gpt")
    folder = tmp_path / "docs" / "results"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "results" / "collect.py", folder)
    done = subprocess.run([sys.executable, str(folder / "collect.py"), "--lm-study", str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "kd-data-w64" in done.stderr
    table = pd.read_csv(folder / "lm-pydoc-study.csv")
    by_cell = table[table.cell != "contrast"].set_index("cell")
    assert "kd-data-w64" not in by_cell.index
    assert round(by_cell.loc["kd-strong-w64", "diff"], 4) == -0.09  # mean(2 change - labels-w64's 0.01 seed)
    assert round(by_cell.loc["kd-weak-w32", "diff"], 4) == 0.11 and by_cell.loc["kd-weak-w32", "pairs"] == 3
    contrasts = table[table.cell == "contrast"].set_index("model")
    strength = contrasts.loc[[m for m in contrasts.index if m.startswith("teacher strength at width 32")][0]]
    assert round(strength["diff"], 4) == -0.16  # (kd-strong - labels) - (kd-weak - labels), labels cancel
    assert not any("all-data teacher: NLL change at width 32 minus at width 64" in m for m in contrasts.index)
    students = table[table.cell != "contrast"].dropna(subset=["p"])
    assert list(students.p_holm.round(5)) == [round(v, 5) for v in holm(list(students.p))]  # family 1 alone
    assert list(contrasts.p_holm.round(5)) == [round(v, 5) for v in holm(list(contrasts.p))]  # family 2 alone
    meta = json.loads((folder / "lm-pydoc-study.json").read_text())
    assert "not finished when collected: kd-data-w64" in meta["note"]


def test_the_ensemble_table_adjusts_over_the_same_family_as_the_report_page(tmp_path):
    """collect.py's ensemble table and the report's ensemble page: Holm over every student of the run against
    its baseline (2 architectures x 2 teacher combinations = one family of 4), not per architecture."""
    import results
    from report_runs import summary_row, write_run
    from results.stats import holm

    out = tmp_path / "runs"
    archs = [{"name": "mlp", "width": 8}, {"name": "mlp", "width": 16}]
    gains = {(0, "mean_probs"): (0.010, 0.030, 0.020), (0, "mean_logits"): (0.005, 0.040, 0.010),
             (1, "mean_probs"): (0.020, 0.022, 0.030), (1, "mean_logits"): (0.000, 0.050, 0.020)}
    rows = []
    for s in (0, 1, 2):
        rows += [summary_row("member", s, 0.90 + 0.01 * m + 0.002 * s, name="cnn1d", member=m) for m in (0, 1)]
        rows.append(summary_row("ensemble", s, 0.93, name="k2", size=2, combine="mean_probs", subsets=1))
        for j, arch in enumerate(archs):
            label = f"mlp w{arch['width']} d1"
            base = 0.60 + 0.1 * j + 0.01 * s
            rows.append(summary_row("baseline", s, base, name=f"baseline{j}", student=j, arch=label))
            rows += [summary_row("student", s, base + gains[j, combine][s], name=f"student{j}", student=j, arch=label,
                                 combine=combine, gap_recovered=0.5) for combine in ("mean_probs", "mean_logits")]
    run = write_run(out / "ensemble-mnist1d" / "e1", "ensemble-mnist1d", "ensemble", rows, model="cnn1d",
                    ensemble={"students": archs, "models": [{"name": "cnn1d", "width": 32}]})
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "started": "2026-12-06T08:00:00+00:00",
                                               "finished": "2026-12-06T08:30:00+00:00"}))
    folder = tmp_path / "docs" / "results"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "results" / "collect.py", folder)
    done = subprocess.run([sys.executable, str(folder / "collect.py"), str(out), "ensemble"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(folder / "mnist1d-ensemble.csv")
    students = table[table.model.str.startswith("student")]
    assert len(students) == 4 and students.bp.notna().all()
    assert list(students.bp_holm) == [round(p, 4) for p in holm(list(students.bp))]  # one family of 4
    meta = json.loads((folder / "mnist1d-ensemble.json").read_text())
    assert ["vs its baseline, Holm p (over the 4 students)", "{bp_holm:.2g}"] in meta["columns"]
    results.report([run], tmp_path / "report")
    page = pd.read_csv(next((tmp_path / "report").glob("*-students.csv"))).dropna(subset=["baseline_p"])
    assert sorted(page.baseline_p_holm.round(4)) == sorted(students.bp_holm)  # the page's numbers, the same
