"""The report's pages, built from hand-written run directories of every kind (nothing trains).

    pytest tests/test_report.py -q
"""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import results
from report_runs import bornagain_run, ensemble_run, kd_run, labels_run, summary_row, sweep, write_run


def t_half(values):
    values = np.asarray(values, dtype=float)
    return scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))


@pytest.fixture
def every_kind(tmp_path):
    root = tmp_path / "runs"
    kd_run(root)
    labels_run(root)  # the KD student's model and training settings, from labels
    labels_run(root, model="cnn1d", accs=(0.9, 0.9, 0.9), name="mnist1d-cnn", run_id="lab2")
    labels_run(root, accs=(0.1, 0.1, 0.1), name="mnist1d-mlp-fast", run_id="lab3", lr=0.5)
    bornagain_run(root, paper={"source": "Furlanello et al. 2018", "BAN-1": 70.5, "generation_0": 0.699})
    ensemble_run(root)
    sweep(root, scheduler="asha")
    out = tmp_path / "report"
    results.report([root], out)
    return root, out


def csv(out, name):
    return pd.read_csv(out / name)


def test_report_writes_html_markdown_and_csvs(every_kind):
    _, out = every_kind
    for name in ("report.html", "report.md", "models.csv", "records.csv", "experiments.csv"):
        assert (out / name).stat().st_size > 0, name
    index = csv(out, "experiments.csv")
    assert set(index["kind"]) == {"kd", "labels", "bornagain", "ensemble", "sweep"}
    page = (out / "report.md").read_text()
    for title in ("mnist1d-kd", "ban", "ens", "tune-kd (sweep sw1)"):
        assert f"## {title}" in page
    # no bookkeeping keys or paths shown as settings
    assert "checkpoint_seconds" not in page and "cfg." not in page and "/data" not in page
    assert "batchmean" in page and "T^2" in page


def test_kd_page_pairs_student_with_labels_only_run(every_kind):
    root, out = every_kind
    models = csv(out, "mnist1d-kd-models.csv").set_index("model")
    assert list(models.index) == ["teacher cnn1d", "student mlp", "student mlp from labels"]
    labels = [0.66, 0.69, 0.71]  # lab1: same model and training; lab2 (cnn1d) and lab3 (lr 0.5) are not
    assert models.loc["student mlp from labels", "test_acc_mean"] == pytest.approx(100 * np.mean(labels))
    assert models.loc["student mlp from labels", "test_acc_ci"] == pytest.approx(t_half(np.array(labels) * 100))
    assert models.loc["teacher cnn1d", "test_acc_n"] == 3
    gain = csv(out, "mnist1d-kd-kd-gain.csv").iloc[0]
    diffs = 100 * (np.array([0.70, 0.74, 0.75]) - np.array(labels))
    assert gain["n"] == 3 and gain["diff"] == pytest.approx(diffs.mean())
    assert gain["low"] == pytest.approx(diffs.mean() - t_half(diffs))
    assert gain["verdict"] == "higher"
    closed = (np.array([0.70, 0.74, 0.75]) - labels) / (np.array([0.95, 0.94, 0.96]) - labels) * 100
    page = (out / "report.md").read_text()
    assert f"{closed.mean():.1f} ± {t_half(closed):.1f} (n=3) %" in page


def test_kd_page_without_labels_run_says_so(tmp_path):
    run = kd_run(tmp_path / "runs")
    page = results.report([run], tmp_path / "out").read_text()
    assert "No run of the same student from labels" in page
    assert not (tmp_path / "out" / "mnist1d-kd-kd-gain.csv").exists()


def test_bornagain_table_pairs_generations_with_generation_0(every_kind):
    _, out = every_kind
    table = csv(out, "ban-generations.csv").set_index("model")
    assert list(table.index) == ["generation 0 (teacher)", "BAN-1", "BAN-2", "Ens x 2 (BAN-1..2)",
                                 "Ens x 3 (generations 0..2)"]
    gen0, ban2 = np.array([64, 66, 65.0]), np.array([67, 68, 69.0])
    assert table.loc["BAN-2", "test_acc_mean"] == pytest.approx(ban2.mean())
    assert table.loc["BAN-2", "diff_vs_gen0"] == pytest.approx((ban2 - gen0).mean())
    assert table.loc["BAN-2", "low"] == pytest.approx((ban2 - gen0).mean() - t_half(ban2 - gen0))
    assert math.isnan(table.loc["generation 0 (teacher)", "diff_vs_gen0"])
    # published numbers from config.yaml's paper: section (a fraction is read as one)
    assert table.loc["BAN-1", "paper"] == 70.5 and table.loc["generation 0 (teacher)", "paper"] == pytest.approx(69.9)
    assert math.isnan(table.loc["BAN-2", "paper"])
    page = (out / "report.md").read_text()
    assert "Furlanello et al. 2018" in page and "ban-generations.png" in page


def test_ensemble_page_size_curve_and_students(every_kind):
    _, out = every_kind
    curve = csv(out, "ens-size-curve.csv").set_index("k")
    assert list(curve.index) == [2, 3]  # k = 1 is the mean member itself: no trivial +0.0 row
    assert curve.loc[3, "test_acc_mean"] == pytest.approx(100 * np.mean([0.945, 0.955, 0.965]))
    assert curve.loc[2, "gain_mean"] == pytest.approx(1.5)
    assert curve.loc[2, "disagreement_mean"] == pytest.approx(100 * np.mean([0.05, 0.06, 0.07]))
    student = csv(out, "ens-students.csv").iloc[0]
    mean_member = np.array([0.92, 0.93, 0.94])  # members averaged per seed
    diffs = 100 * (np.array([0.93, 0.94, 0.95]) - mean_member)
    assert student["diff_vs_mean_member"] == pytest.approx(diffs.mean()) and student["pairs"] == 3
    assert student["gap_recovered_mean"] == pytest.approx(50.0)
    page = (out / "report.md").read_text()  # ties (every seed the same) are said plainly, on every page
    assert "± 0.0 " not in page and "to +1.0, n=3" not in page
    assert "+1.0 pts (the same on all 3 paired seeds)" in page  # the student vs the mean member, every seed
    assert "90.0 (all 3 equal)" in page  # the CNN from labels: 0.9 on every seed


def test_heatmap_counts_only_the_sweeps_trials(tmp_path):
    root = tmp_path / "runs"
    sweep(root)
    for i in range(5):  # KD runs at a swept cell (T = 4, alpha = 0.9), outside the sweep
        kd_run(root, run_id=f"kd{i}", temperature=4.0, alpha=0.9)
    ensemble_run(root)
    out = tmp_path / "report"
    results.report([root], out)
    settings = csv(out, "tune-kd-sweep-sw1-settings.csv")
    assert len(settings) == 4 and (settings["val_acc_n"] == 2).all() and (settings["trials"] == 2).all()
    best = settings.iloc[0]
    assert (best["T"], best["alpha"]) == (4.0, 0.5)
    assert best["val_acc_mean"] == pytest.approx(100 * np.mean([0.64, 0.65]))
    means, counts = results.plots.heatmap_cells(results.load(root / "tune" / "sw1"))
    assert (counts.to_numpy() == 2).all()
    assert means.loc[4.0, 0.9] == pytest.approx(100 * np.mean([0.61, 0.62]))
    with pytest.raises(ValueError, match="several sweeps"):
        results.plots.heatmap_cells(pd.concat([results.load(root / "tune" / "sw1").assign(sweep="a"),
                                               results.load(root / "tune" / "sw1").assign(sweep="b")]))
    runner_up = csv(out, "tune-kd-sweep-sw1-best-vs-runner-up.csv").iloc[0]
    assert runner_up["n"] == 2 and runner_up["diff"] == pytest.approx(2.0)
    assert (out / "figures" / "tune-kd-sweep-sw1-heatmap.png").stat().st_size > 0


def test_asha_sweep_lists_stopped_trials(every_kind):
    _, out = every_kind
    page = (out / "report.md").read_text()
    stopped = re.findall(r"\| trial_0_\d \| 1.0 \| 0.5 \| \d \| stopped \| 1 \|", page)
    assert len(stopped) == 2


def test_compare_pairs_by_seed(tmp_path):
    root = tmp_path / "runs"
    a = kd_run(root, name="kd-a", seeds=(0, 1, 2), student=(0.70, 0.72, 0.74))
    b = kd_run(root, name="kd-b", seeds=(1, 2, 3), student=(0.75, 0.78, 0.90), temperature=8.0)
    out = tmp_path / "report"
    results.report([a, b], out, compare=True)
    compared = csv(out, "compare.csv").set_index("model")
    student = compared.loc["student mlp"]
    assert student["n"] == 2 and student["pairing"] == "paired by seed (n=2)"
    assert student["diff"] == pytest.approx(100 * np.mean([0.75 - 0.72, 0.78 - 0.74]))
    page = (out / "report.md").read_text()
    assert "| experiment | T |" in page  # the setting that differs, in words
    assert "B is higher" in page or "not separable" in page
    c = results.report([a, kd_run(root, name="kd-c", seeds=(7, 8), student=(0.7, 0.71))], tmp_path / "r2",
                       compare=True)
    unpaired = csv(c.parent, "compare.csv").set_index("model").loc["student mlp"]
    assert unpaired["pairing"].startswith("unpaired")
    assert unpaired["diff"] == pytest.approx(100 * (np.mean([0.7, 0.71]) - np.mean([0.70, 0.72, 0.74])))


def test_compare_without_common_models_uses_headlines(tmp_path):
    root = tmp_path / "runs"
    a, b = labels_run(root), labels_run(root, model="cnn1d", accs=(0.9, 0.91, 0.92), name="cnn", run_id="c")
    out = tmp_path / "report"
    results.report([a, b], out, compare=True)
    row = csv(out, "compare.csv").iloc[0]
    assert row["model"] == "model cnn1d vs model mlp" and row["verdict"] == "higher"


def test_cost_table_and_flops_plot_when_rows_have_costs(tmp_path):
    models = [summary_row("model", s, 0.7 + 0.01 * s, flops=1e6, latency_ms=0.5) for s in (0, 1)]
    models += [summary_row("model", s, 0.9, name="cnn1d", flops=5e7, latency_ms=2.0) for s in (0, 1)]
    run = write_run(tmp_path / "r" / "x", "costly", "train", models)
    out = tmp_path / "report"
    results.report([run], out)
    cost = csv(out, "costly-cost.csv").set_index("model")
    assert cost.loc["model cnn1d", "flops"] == 5e7 and cost.loc["model mlp", "test_acc_mean"] == pytest.approx(70.5)
    assert (out / "figures" / "costly-flops.png").stat().st_size > 0
    plain = results.report([kd_run(tmp_path / "p")], tmp_path / "plain")
    assert "## Cost" not in plain.read_text() and "### Cost" not in plain.read_text()


def test_html_is_self_contained(every_kind):
    _, out = every_kind
    html = (out / "report.html").read_text()
    sources = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert len(sources) == len(list((out / "figures").glob("*.png"))) > 0
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//)', html)
    assert "<script" not in html and "<link" not in html
    assert "<table>" in html and 'href="#mnist1d-kd"' in html and 'id="mnist1d-kd"' in html


def test_sweep_over_other_keys_gets_marginal_plots(tmp_path):
    folder = tmp_path / "tune" / "lr"
    folder.mkdir(parents=True)
    trials = []
    for lr in (0.01, 0.1):
        for seed in (0, 1):
            acc = 0.6 + lr + 0.01 * seed
            write_run(folder / f"t{lr}-{seed}", "tune-lr", "train", [summary_row("model", seed, acc, acc)])
            config = folder / f"t{lr}-{seed}" / "config.yaml"
            config.write_text(config.read_text().replace("lr: 0.01", f"lr: {lr}"))
            trials.append({"trial": f"t{lr}-{seed}", "params": {"train.lr": lr, "seeds": seed}, "status": "done"})
    (folder / "sweep.json").write_text(json.dumps({"scheduler": "fifo", "trials": trials}))
    out = tmp_path / "report"
    results.report([folder], out)
    settings = csv(out, "tune-lr-sweep-lr-settings.csv")
    assert list(settings["lr"]) == [0.1, 0.01] and (settings["val_acc_n"] == 2).all()
    assert (out / "figures" / "tune-lr-sweep-lr-marginals.png").stat().st_size > 0
    assert not list((out / "figures").glob("*heatmap*"))
