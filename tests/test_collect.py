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
