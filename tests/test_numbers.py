"""Numbers a reviewer would sign: Holm's adjustment (one function, results.stats.holm), the p behind
an interval, intervals clipped to what the quantity can take, n = 1 and n = 2 shown as such.

    .venv/bin/python -m pytest tests/test_numbers.py -q
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from results import capacity, comparing, stats


# statsmodels.stats.multitest.multipletests(p, method="holm")[1], written out (statsmodels is no dependency)
HOLM_REFERENCE = [
    ([0.01, 0.02, 0.03, 0.04, 0.05], [0.05, 0.08, 0.09, 0.09, 0.09]),
    ([0.001, 0.2, 0.03, 0.04], [0.004, 0.2, 0.09, 0.09]),
    ([0.04, 0.01, 0.6, 0.02, 0.03], [0.09, 0.05, 0.6, 0.08, 0.09]),
    ([0.5, 0.7], [1.0, 1.0]),
]


@pytest.mark.parametrize("p, adjusted", HOLM_REFERENCE)
def test_holm_matches_statsmodels_reference_numbers(p, adjusted):
    assert stats.holm(p) == pytest.approx(adjusted)


def test_one_holm_function_serves_every_page():
    assert capacity.holm is stats.holm and capacity.holm_verdict is stats.holm_verdict
    assert comparing.holm is stats.holm
    assert stats.holm([0.5, math.nan, 0.4]) == pytest.approx([0.8, math.nan, 0.8], nan_ok=True)
    assert stats.holm_verdict(2.0, 0.049) == "higher" and stats.holm_verdict(2.0, 0.05) == "not separable"


def test_the_p_behind_an_interval_is_the_paired_t_tests():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.5])
    b = np.array([0.5, 1.7, 2.0, 3.1, 4.0])
    mean, low, high, n = stats.mean_ci(a - b)
    assert stats.p_from_interval(mean, low, high, n) == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert math.isnan(stats.p_from_interval(1.0, math.nan, math.nan, 1))


def test_limits_of_each_quantity():
    assert stats.limits("test_acc") == (0.0, 100.0) and stats.limits("val_acc", percent=False) == (0.0, 1.0)
    assert stats.limits("test_nll") == (0.0, math.inf) and stats.limits("latency_ms") == (0.0, math.inf)
    assert stats.limits("diff") == (-math.inf, math.inf)


def test_single_values_and_two_seed_intervals_are_shown_as_such():
    assert stats.format_value(91.64, math.nan, 1) == "91.6 (n=1)"
    assert "±" not in stats.format_value(91.6, 0.0, 1)
    assert stats.format_value(91.6, 1.2, 3) == "91.6 ± 1.2 (n=3)"
    assert stats.format_value(80.0, 5.0, 2, bounds=(0, 100)) == "80.0 ± 5.0 (n=2, wide)"
    # a 2-seed interval that runs past 100 %: shown as its clipped ends
    assert stats.format_value(98.0, 12.7, 2, bounds=(0, 100)) == "98.0 (95% CI 85.3 to 100.0, n=2, wide)"
    assert stats.format_value(0.05, 0.2, 3, 3, stats.limits("test_nll")) == "0.050 (95% CI 0.000 to 0.250, n=3)"


def test_a_tie_over_seeds_is_said_plainly_never_plus_minus_zero():
    assert stats.format_value(91.6, 0.0, 2, bounds=(0, 100)) == "91.6 (all 2 equal)"
    assert stats.format_value(12.5, 0.0, 3) == "12.5 (all 3 equal)"
    assert stats.format_value(91.6, 0.03, 3) == "91.6 ± <0.1 (n=3)"  # a real spread that rounds to 0
    assert stats.format_value(0.5, 0.0004, 3, 3) == "0.500 ± <0.001 (n=3)"
    # values equal up to float rounding are a tie: 100 * (0.93 - 0.92) != 100 * (0.94 - 0.93) in the 15th digit
    mean, low, high, n = stats.mean_ci([100 * (0.93 - 0.92), 100 * (0.94 - 0.93)])
    assert low == high == mean == pytest.approx(1.0) and n == 2
    assert stats.mean_ci([1e-16, -1e-16]) == (0.0, 0.0, 0.0, 2)  # no difference, not a tiny one
    tbl = stats.table(pd.DataFrame({"role": "student", "test_acc": [0.9, 0.9, 0.9]}), by=["role"])
    assert "90.0 (all 3 equal)" in stats.format_table(tbl) and "± 0.0" not in stats.format_table(tbl)
    frame = pd.DataFrame({"seed": [0, 1, 0, 1], "test_acc": [0.93, 0.94, 0.92, 0.93], "role": list("aabb")})
    same = stats.compare(frame, frame.role == "a", frame.role == "b")
    assert str(same) == "+1.0 pts (the same on all 2 paired seeds)" and same.p_value == 0.0
    level = stats.compare(frame, frame.role == "a", frame.role == "a")
    assert level.diff == 0.0 and level.p_value == 1.0 and level.verdict == "no clear difference"


def test_tables_clip_their_intervals():
    import pandas as pd

    df = pd.DataFrame({"role": ["model", "model"], "seed": [0, 1], "test_acc": [0.99, 0.80]})
    text = stats.format_table(stats.table(df, by=["role"]))
    assert "100.0, n=2, wide" in text and "± 120" not in text


# ---------------------------------------------------------------- pages that compare several things with one


def test_compare_page_shows_holm_adjusted_verdicts_beside_the_raw_ones(tmp_path):
    import pandas as pd

    import results
    from report_runs import kd_run

    seeds = (0, 1, 2, 3, 4)
    root = tmp_path / "runs"
    base = (0.60, 0.62, 0.61, 0.63, 0.60)
    others = {"kd-b": (0.64, 0.65, 0.65, 0.66, 0.64), "kd-c": (0.62, 0.61, 0.63, 0.66, 0.60),
              "kd-d": (0.61, 0.64, 0.62, 0.63, 0.62)}
    teacher = (0.95, 0.94, 0.96, 0.95, 0.93)
    runs = [kd_run(root, name="kd-a", seeds=seeds, student=base, teacher=teacher)]
    runs += [kd_run(root, name=name, seeds=seeds, student=accs, teacher=teacher, temperature=8.0)
             for name, accs in others.items()]
    out = tmp_path / "report"
    results.report(runs, out, compare=True)
    table = pd.read_csv(out / "compare.csv")
    students = table[table["model"] == "student mlp"].set_index("B")
    for name, accs in others.items():  # the raw p is the paired t-test's
        expected = scipy_stats.ttest_rel(np.array(accs) * 100, np.array(base) * 100).pvalue
        assert students.loc[name, "p_value"] == pytest.approx(expected)
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()), nan_ok=True)
    page = (out / "report.md").read_text()
    assert f"verdict, Holm over {len(table)}" in page
    # kd-d alone is separable at 5 % (p = 0.033) but not after Holm over the table's comparisons
    assert students.loc["kd-d", "verdict"] == "higher" and students.loc["kd-d", "verdict_holm"] == "not separable"


GAINS = {"labels": 0.0, "kd": 0.006, "dist": 0.030, "dkd": 0.006}  # test-accuracy gain of each method
NOISE = [0.004, -0.003, 0.006, -0.005, 0.001]  # per seed, differs by method below


def _method_accuracy(params, seed):
    method, t = params["distill.method"], params["distill.temperature"]
    wobble = NOISE[(seed + len(method)) % 5] if method != "labels" else 0.0
    test = 0.60 + 0.01 * seed + GAINS[method] + wobble + (0.002 if t == 4.0 else 0.0)
    val = test + (0.01 if t == 4.0 else 0.0)  # T = 4 is every method's best on validation
    return test, val


@pytest.fixture
def methods_report(tmp_path):
    import results
    from report_runs import grid_sweep

    root = tmp_path / "runs"
    grid_sweep(root, "methods", {"distill.method": list(GAINS), "distill.temperature": [2.0, 4.0]},
               _method_accuracy)
    out = tmp_path / "report"
    results.report([root], out)
    return out


def test_a_methods_sweep_compares_every_method_with_labels_with_holm(methods_report):
    import pandas as pd

    (name,) = [p.name for p in methods_report.glob("*-methods.csv")]
    table = pd.read_csv(methods_report / name).set_index("method")
    assert list(table.index) == ["labels", "dist", "dkd", "kd"]
    assert (table["setting"] == "T=4.0").all()  # chosen on validation
    labels = np.array([_method_accuracy({"distill.method": "labels", "distill.temperature": 4.0}, s)[0]
                       for s in range(5)]) * 100
    p = {}
    for method in ("dist", "dkd", "kd"):
        test = np.array([_method_accuracy({"distill.method": method, "distill.temperature": 4.0}, s)[0]
                         for s in range(5)]) * 100
        assert table.loc[method, "diff"] == pytest.approx((test - labels).mean())
        p[method] = scipy_stats.ttest_rel(test, labels).pvalue
        assert table.loc[method, "p_value"] == pytest.approx(p[method])
    adjusted = stats.holm([p["dist"], p["dkd"], p["kd"]])
    assert table.loc[["dist", "dkd", "kd"], "p_holm"].tolist() == pytest.approx(adjusted)
    for method in ("kd", "dkd"):  # p = 0.033 each: separable alone, not after Holm over 3
        assert table.loc[method, "verdict"] == "higher" and table.loc[method, "verdict_holm"] == "not separable"
    assert table.loc["dist", "verdict_holm"] == "higher"
    page = (methods_report / "report.md").read_text()
    assert "### Methods against labels" in page and "verdict, Holm over 3" in page
    assert "choice was made on the same seeds" in page


# ---------------------------------------------------------------- a sweep's best, chosen on the data it is tested on


def _tx_accuracy(params, seed):
    """T = 4 wins on seeds 0-2 (the choice); on seeds 3-5 T = 2 is as good."""
    t, alpha = params["distill.temperature"], params["distill.alpha"]
    lead = {1.0: 0.0, 2.0: 0.01, 4.0: 0.02 if seed < 3 else 0.01}[t] + (0.003 * seed if t == 2.0 else 0.0)
    test = 0.60 + 0.01 * seed + lead + (0.001 if alpha == 0.5 else 0.0)
    return test, test + 0.002


def test_the_best_setting_is_confirmed_on_seeds_it_was_not_chosen_on(tmp_path):
    import pandas as pd

    import results
    from report_runs import grid_sweep

    grid_sweep(tmp_path / "runs", "tune-kd", {"distill.temperature": [1.0, 2.0, 4.0], "distill.alpha": [0.5, 0.9]},
               _tx_accuracy, seeds=range(6))
    out = tmp_path / "report"
    results.report([tmp_path / "runs"], out)
    page = (out / "report.md").read_text()
    assert "selected on these same trials' validation accuracy" in page
    assert "Best setting: T = 2.0, alpha = 0.5" in page  # on all 6 seeds T = 2 wins, ...
    assert "chosen on the validation accuracy of seeds 0, 1, 2 only, the best setting is T=4.0, alpha=0.5" in page
    held = pd.read_csv(next(out.glob("*-held-out-seeds.csv"))).set_index("comparison")
    # chosen on seeds 0-2: T=4, alpha=0.5 then T=4, alpha=0.9; on seeds 3-5 they differ by alpha's 0.1 point
    assert held.loc["best − runner-up, test acc", "diff"] == pytest.approx(0.1)
    assert held.loc["best − runner-up, test acc", "n"] == 3


def test_a_sweep_with_too_few_seeds_says_it_cannot_confirm(tmp_path):
    import results
    from report_runs import sweep

    sweep(tmp_path / "runs")  # 2 seeds per setting
    page = results.report([tmp_path / "runs"], tmp_path / "report").read_text()
    assert "Not confirmed on held-out seeds: the sweep has 2 seed(s), too few" in page


# ---------------------------------------------------------------- figures that do not exaggerate


@pytest.fixture
def drawn(monkeypatch):
    """The figures results.plots draws, kept (by name) as they are saved."""
    from results import plots

    figures = {}
    original = plots._save

    def keep(fig, out):
        figures[out.name if hasattr(out, "name") else str(out)] = fig
        ax = fig.axes[0]
        figures[f"{getattr(out, 'name', out)}:state"] = {
            "errorbars": [(c.lines[0].get_xdata(), c.lines[0].get_ydata(),
                           [seg for col in c.lines[2] for seg in col.get_segments()]) for c in ax.containers
                          if hasattr(c, "lines")],
            "bands": [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")],
            "hatched": [p for p in ax.patches if p.get_hatch()],
            "mesh": next((c for c in ax.collections if type(c).__name__ == "QuadMesh"), None)}
        return original(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


NOISE3 = [0.01, -0.008, 0.004]


def _grid_accuracy(params, seed):
    t, a = params["distill.temperature"], params["distill.alpha"]
    base = {1.0: 0.60, 4.0: 0.64, 8.0: 0.66}[t] + {0.1: 0.0, 0.5: 0.004, 0.9: -0.02}[a]
    test = base + 0.01 * seed + NOISE3[(seed + int(t)) % 3] * (a != 0.5 or t != 8.0)
    return test, test + 0.003


def test_the_heatmap_is_centred_on_the_best_and_marks_cells_not_separable_from_it(tmp_path, drawn):
    import results
    from report_runs import grid_sweep

    folder = grid_sweep(tmp_path / "runs", "tune-kd", {"distill.temperature": [1.0, 4.0, 8.0],
                                                       "distill.alpha": [0.1, 0.5, 0.9]}, _grid_accuracy, seeds=range(3))
    rows = results.load(folder)
    means, _ = results.plots.heatmap_cells(rows)
    marks = results.plots.heatmap_marks(rows, means)
    assert marks.loc[8.0, 0.5] == "best"
    assert marks.loc[8.0, 0.1] == "same"  # 0.2 points under the best, seeds scatter by about 1.8
    assert (marks.loc[1.0] == "").all()  # 6 points under, every seed: separable
    results.plots.sweep_heatmap(rows, tmp_path / "heat.png")
    state = drawn["heat.png:state"]
    mesh = state["mesh"]  # a diverging scale centred on the best: 0 (the best) is its pale middle
    assert mesh.norm.vmin == -mesh.norm.vmax and min(mesh.cmap(mesh.norm(0.0))[:3]) > 0.9
    assert np.nanmax(mesh.get_array()) == 0.0
    assert len(state["hatched"]) == int((marks == "same").to_numpy().sum())
    assert "≈" in " ".join(t.get_text() for t in drawn["heat.png"].axes[0].texts)


def test_the_size_curve_dodges_error_bars_and_clips_them_to_100(tmp_path, drawn):
    import json

    import results
    from report_runs import ensemble_run

    run = ensemble_run(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    rows = []
    for row in summary["models"]:
        if row["seed"] == 2:
            continue  # 2 seeds: t = 12.7, intervals that would run far past 100 %
        if row["role"] == "ensemble":
            rows += [{**row, "combine": c, "test_acc": min(0.999, row["test_acc"] + 0.03 + 0.005 * i + 0.02 * row["seed"])}
                     for i, c in enumerate(("mean_probs", "mean_logits", "vote"))]
        else:
            rows.append(row)
    results.plots.size_curve(pd_frame(rows), tmp_path / "size.png")
    state = drawn["size.png:state"]
    assert not state["bands"]  # error bars, no overlapping bands
    xs = [tuple(np.round(x, 3)) for x, _, _ in state["errorbars"] if len(x) == 3]
    assert len(set(xs)) == 3  # the three combinations side by side, not on top of each other
    tops = [max(seg[:, 1].max() for seg in segs) for _, _, segs in state["errorbars"] if segs]
    assert max(tops) <= 100.0 + 1e-9
    labels = [t.get_text() for t in drawn["size.png"].axes[0].get_legend().get_texts()]
    assert all("n=2 seeds, wide" in label for label in labels)


def pd_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def test_the_born_again_page_adjusts_its_comparisons_with_generation_0(tmp_path):
    import pandas as pd

    import results
    from report_runs import bornagain_run

    run = bornagain_run(tmp_path / "runs")
    out = tmp_path / "report"
    page = results.report([run], out).read_text()
    table = pd.read_csv(out / "ban-generations.csv").set_index("model")
    gen0 = np.array([0.64, 0.66, 0.65]) * 100
    ban1 = np.array([0.66, 0.69, 0.66]) * 100
    assert table.loc["BAN-1", "p_value"] == pytest.approx(scipy_stats.ttest_rel(ban1, gen0).pvalue)
    compared = table["p_value"].notna()
    assert compared.sum() == 4
    assert table.loc[compared, "p_holm"].tolist() == pytest.approx(stats.holm(table.loc[compared, "p_value"]))
    assert "verdict, Holm over 4" in page
