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
