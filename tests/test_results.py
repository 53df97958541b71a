"""results: load, statistics, tables, plots and reports from run directories built by hand.

    pytest tests/test_results.py -q        # a few seconds; nothing trains
"""

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

import results

ROOT = Path(__file__).resolve().parent.parent


def row(role, seed, test_acc, val_acc=None, **extra):
    base = {"role": role, "name": "mlp", "seed": seed, "generation": None, "member": None, "size": None,
            "combine": None, "parent": None, "selected_epoch": 3,
            "val_acc": val_acc if val_acc is not None else test_acc,
            "val_nll": 0.5, "test_acc": test_acc, "test_nll": 0.4, "test_ece": 0.02, "test_acc_last": test_acc - 0.01,
            "params": 1000, "train_seconds": 1.0}
    base.update(extra)
    return base


def make_run(path: Path, models, name="kd-demo", temperature=4.0, alpha=0.9, loss=True, status="done",
             records=True) -> Path:
    """A run directory as distill/runs/store.py writes it, with the given summary rows."""
    path.mkdir(parents=True)
    config = {"name": name, "run_id": None, "seeds": sorted({m["seed"] for m in models}),
              "dataset": {"name": "mnist1d", "val_fraction": 0.1},
              "model": {"name": "mlp", "width": 32, "kwargs": {}},
              "train": {"epochs": 2, "lr": 0.01},
              "distill": {"method": "kd", "temperature": temperature, "alpha": alpha}}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / "meta.json").write_text(json.dumps({"kind": "train", "status": status}))
    summary = {"status": status, "models": models}
    if loss:
        summary["loss"] = {"method": "kd", "reduction": "batchmean", "t2_scaling": True,
                           "temperature": temperature, "alpha": alpha}
    (path / "summary.json").write_text(json.dumps(summary))
    if records:
        lines = ["role,name,generation,member,seed,epoch,split,loss,acc,nll,ece,lr,seconds"]
        for m in models:
            for epoch in (1, 2):
                for split in ("train", "val", "test"):
                    acc = m["val_acc"] - 0.1 * (2 - epoch)
                    gen = "" if m["generation"] is None else m["generation"]
                    lines.append(f"{m['role']},mlp,{gen},,{m['seed']},{epoch},{split},0.5,{acc},0.5,0.02,0.01,0.1")
        (path / "records.csv").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def kd_run(tmp_path):
    """Teacher and student for seeds 0..2; the student is 2-4 points better on every seed."""
    models = [row("teacher", s, acc) for s, acc in enumerate([0.90, 0.92, 0.94])]
    models += [row("student", s, acc, parent="teacher") for s, acc in enumerate([0.92, 0.95, 0.98])]
    return make_run(tmp_path / "runs" / "kd-demo" / "abc123", models)


def test_mean_ci_matches_student_t_by_hand():
    mean, low, high, n = results.mean_ci([0.9, 0.92, 0.94])
    half = scipy_stats.t.ppf(0.975, 2) * np.std([0.9, 0.92, 0.94], ddof=1) / math.sqrt(3)
    assert n == 3
    assert mean == pytest.approx(0.92)
    assert low == pytest.approx(0.92 - half) and high == pytest.approx(0.92 + half)
    assert half == pytest.approx(4.302652729749464 * 0.02 / math.sqrt(3))


def test_mean_ci_small_n_and_nan():
    mean, low, high, n = results.mean_ci([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(low) and math.isnan(high)
    assert results.mean_ci([])[3] == 0 and math.isnan(results.mean_ci([])[0])
    assert results.mean_ci([1.0, float("nan"), 3.0])[::3] == (2.0, 2)
    narrow = results.mean_ci([1, 2, 3], confidence=0.5)
    wide = results.mean_ci([1, 2, 3], confidence=0.99)
    assert wide[2] - wide[1] > narrow[2] - narrow[1]


def test_load_flattens_loss_and_config(kd_run, tmp_path):
    df = results.load(tmp_path / "runs")
    assert len(df) == 6
    assert set(df["role"]) == {"teacher", "student"}
    first = df.iloc[0]
    assert first["run"] == str(kd_run)
    assert first["experiment"] == "kd-demo" and first["status"] == "done" and first["kind"] == "train"
    assert first["loss_method"] == "kd" and first["loss_reduction"] == "batchmean"
    assert bool(first["loss_t2_scaling"]) is True
    assert first["temperature"] == 4.0 and first["alpha"] == 0.9
    assert first["cfg.dataset.name"] == "mnist1d" and first["cfg.model.name"] == "mlp"
    assert first["cfg.distill.method"] == "kd" and first["cfg.distill.temperature"] == 4.0
    assert first["cfg.seeds"] == "[0, 1, 2]"  # lists become JSON text, so they can be grouped on
    assert first["cfg.model.kwargs"] == "{}"
    # the run directory itself works too, and extra row keys survive
    assert len(results.load([kd_run])) == 6


def test_load_keeps_extra_row_keys_and_finds_deep_trials(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    make_run(sweep / "trial_0" / "deep", [row("student", 0, 0.8, gap_recovered=0.5)], loss=False)
    df = results.load(sweep)
    assert df.loc[0, "gap_recovered"] == 0.5
    assert df.loc[0, "sweep"] == str(sweep)
    assert "loss_method" not in df.columns


def test_no_runs_on_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.NoRuns, match="no run directory"):
        results.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        results.load(tmp_path / "missing")
    with pytest.raises(results.NoRuns):
        results.report([tmp_path / "empty"], tmp_path / "out")
    message = str(pytest.raises(results.NoRuns, results.load, tmp_path / "empty").value)
    assert "\n" not in message


def test_load_records(kd_run):
    records = results.load_records(kd_run)
    assert {"run", "experiment", "epoch", "split", "acc"} <= set(records.columns)
    assert len(records) == 6 * 2 * 3
    assert set(records["run"]) == {str(kd_run)}


def test_table_groups_and_counts(kd_run):
    df = results.load(kd_run)
    tbl = results.table(df, by=["role"], metrics=["test_acc", "test_nll"])
    assert list(tbl["role"]) == ["teacher", "student"]  # ROLE_ORDER, not alphabetical
    assert list(tbl["n"]) == [3, 3]
    teacher = tbl.set_index("role").loc["teacher"]
    half = scipy_stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # percent: sd of 90, 92, 94 is 2
    assert teacher["test_acc_mean"] == pytest.approx(92.0)
    assert teacher["test_acc_ci"] == pytest.approx(half)
    assert teacher["test_acc_low"] == pytest.approx(92.0 - half)
    assert teacher["test_nll_mean"] == pytest.approx(0.4)  # not a fraction: not scaled
    raw = results.table(df, by=["role"], percent=False)
    assert raw.set_index("role").loc["teacher", "test_acc_mean"] == pytest.approx(0.92)
    # default grouping uses the model-identifying columns present, missing values included
    default = results.table(df)
    assert list(default.columns[:3]) == ["experiment", "role", "name"]
    text = results.format_table(tbl)
    assert f"92.0 ± {half:.1f} (n=3)" in text
    assert text.startswith("| role |")


def test_table_single_seed_has_no_interval(tmp_path):
    make_run(tmp_path / "r", [row("model", 0, 0.5)])
    tbl = results.table(results.load(tmp_path / "r"), by=["role"])
    assert tbl.loc[0, "n"] == 1 and math.isnan(tbl.loc[0, "test_acc_ci"])
    assert "50.0 (n=1)" in results.format_table(tbl)


def test_compare_is_paired_and_signed(kd_run):
    df = results.load(kd_run)
    better = results.compare(df, df.role == "student", df.role == "teacher", "test_acc")
    assert better.n == 3
    assert better.diff == pytest.approx(3.0)  # differences 2, 3, 4 points
    half = scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert better.low == pytest.approx(3.0 - half) and better.high == pytest.approx(3.0 + half)
    assert better.verdict == "higher"
    assert better.p_value == pytest.approx(scipy_stats.ttest_rel([92, 95, 98], [90, 92, 94]).pvalue)
    worse = results.compare(df, df.role == "teacher", df.role == "student", "test_acc")
    assert worse.diff == pytest.approx(-3.0) and worse.verdict == "lower"
    # differences 1, 2, 3: the interval (2 ± 2.48) includes 0, so no verdict
    close = results.compare(df.assign(test_acc=df.test_acc - (df.role == "student") * 0.01),
                            df.role == "student", df.role == "teacher")
    assert close.diff == pytest.approx(2.0) and close.verdict == "no clear difference"
    assert "n=3 paired seeds" in str(better)


def test_compare_pairs_only_shared_seeds(tmp_path):
    models = [row("teacher", s, 0.9) for s in (0, 1, 2)] + [row("student", s, 0.95) for s in (1, 2, 3)]
    df = results.load(make_run(tmp_path / "r", models))
    result = results.compare(df, df.role == "student", df.role == "teacher")
    assert result.n == 2 and result.diff == pytest.approx(5.0)


def test_report_writes_every_file(kd_run, tmp_path):
    out = tmp_path / "report"
    path = results.report([kd_run], out)
    assert path == out / "report.md"
    for name in ("models.csv", "records.csv", "report.md", "report.html", "experiments.csv", "kd-demo-models.csv",
                 "kd-demo-loss.csv", "figures/kd-demo-curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list((out / "figures").glob("*heatmap*"))  # one setting of T and alpha: no sweep
    page = path.read_text()
    assert "(n=3)" in page
    assert "validation" in page and "selected_epoch" in page  # the selection rule
    assert "batchmean" in page and "T^2" in page
    assert "![" in page and "figures/kd-demo-curves.png" in page
    assert len(pd.read_csv(out / "models.csv")) == 6
    shown = pd.read_csv(out / "kd-demo-models.csv").set_index("model")
    assert shown.loc["teacher mlp", "test_acc_mean"] == pytest.approx(92.0)


def test_heatmap_for_a_two_by_two_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    for i, (t, a) in enumerate([(1.0, 0.1), (1.0, 0.9), (4.0, 0.1), (4.0, 0.9)]):
        models = [row("student", s, 0.8 + 0.01 * i + 0.001 * s) for s in (0, 1)]
        make_run(sweep / f"trial_{i}" / "run", models, temperature=t, alpha=a)
    df = results.load(sweep)
    png = results.plots.sweep_heatmap(df, tmp_path / "h.png")
    assert png == tmp_path / "h.png" and png.stat().st_size > 0
    # without sweep.json's trial list the searched keys are the ones that vary; settings are not pooled
    results.report([sweep], tmp_path / "rep")
    assert list((tmp_path / "rep" / "figures").glob("*heatmap.png"))
    settings = pd.read_csv(next((tmp_path / "rep").glob("*-settings.csv")))
    assert {"T", "alpha"} <= set(settings.columns) and (settings["val_acc_n"] == 2).all()
    assert results.plots.sweep_heatmap(df[df["cfg.distill.alpha"] == 0.1], tmp_path / "none.png") is None


def test_learning_curves_and_generation_plot(tmp_path):
    models = [row("generation", s, 0.8 + 0.02 * g, generation=g) for g in (0, 1, 2) for s in (0, 1, 2)]
    models += [row("ensemble", s, 0.9, size=2, combine="mean_probs", name="ens_1..2", generation=2)
               for s in (0, 1, 2)]
    run = make_run(tmp_path / "ban", models, name="ban")
    curves = results.plots.learning_curves(results.load_records(run), tmp_path / "c.png")
    chain = results.plots.generations(results.load(run), tmp_path / "g.png")
    assert curves.stat().st_size > 0 and chain.stat().st_size > 0


def test_results_never_imports_torch_or_the_engine():
    """results reads files; of distill it imports only the torch-free kind registry (each kind's view)."""
    banned = {"torch", "distill", "ray", "bornagain", "ensembles", "tuning"}
    allowed = ("distill.kinds", "distill.errors")
    for source in (ROOT / "results").glob("*.py"):  # lazy imports inside functions count too
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            names = [n for n in names if not n.startswith(allowed)]
            assert not banned & {n.split(".")[0] for n in names}, f"{source.name} imports {names}"
    code = ("import sys, results; bad = [m for m in ('torch', 'ray', 'distill.engine', 'distill.training') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
