"""The ensemble page (`ensemble_view`): the size curve, the mean member, and the student table: each
distilled student against the mean member and against its baseline, its own architecture trained from
labels with the students' budget and seeds (role `baseline`, `ensemble.baseline`), paired by seed, with
Holm's adjustment over the students' comparisons with their baselines."""

from __future__ import annotations

import math

import pandas as pd

from . import experiments as ex
from .page import Figure, Para
from .stats import holm, holm_verdict
from .views import Context, comparison_table, grouped, in_words, paired, paper_note


def holm_over_students(diffs, p_values) -> tuple[list[float], list[str]]:
    """The ensemble page's one Holm family: every student of the run against its baseline (all its
    architectures and teacher combinations together). `p_values` per row, NaN for a row outside the
    family (a baseline, a student without one); returns each row's adjusted p and verdict ('-' outside).
    docs/results/collect.py adjusts the committed ensemble table with this same function."""
    p_values = [float(p) for p in p_values]
    adjusted = holm(p_values)
    return adjusted, [holm_verdict(d, a) if math.isfinite(p) else "-" for d, a, p in zip(diffs, adjusted, p_values)]


def _members_per_seed(members: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    return members.groupby("seed", as_index=False)[metric].mean().assign(role="member", name="mean member")


def ensemble_view(exp: ex.Experiment, context: Context) -> list:
    rows = exp.rows
    members = rows[rows["role"] == "member"]
    ensembles = rows[(rows["role"] == "ensemble") & (pd.to_numeric(rows["size"], errors="coerce") > 1)]
    students = rows[rows["role"] == "student"]
    mean_member = _members_per_seed(members)
    curve = []
    for (combine, size), group in ensembles.groupby(["combine", "size"], sort=True):
        acc = ex.cell(group["test_acc"])
        gain = ex.cell(group["gain_over_mean_member"]) if "gain_over_mean_member" in group else (math.nan, math.nan, 0)
        spread = ex.cell(group["disagreement"]) if "disagreement" in group else (math.nan, math.nan, 0)
        curve.append(({"combine": combine, "k": int(size), "test acc %": ex.text(*acc, bounds=ex.ACC),
                       "gain over mean member (points)": ex.text(*gain),
                       "disagreement %": ex.text(*spread, bounds=ex.ACC)},
                      {"combine": combine, "k": int(size), "test_acc_mean": acc[0], "test_acc_ci": acc[1],
                       "test_acc_n": acc[2], "gain_mean": gain[0], "gain_ci": gain[1], "gain_n": gain[2],
                       "disagreement_mean": spread[0], "disagreement_n": spread[2]}))
    paper = ex.paper_value(context.paper, members.iloc[0]) if len(members) else math.nan
    published = f" (paper: {paper:g} %, from {context.paper_source or 'the paper'})" if not math.isnan(paper) else ""
    blocks = [Para(f"Mean member (the {members['member'].nunique()} members averaged per seed): "
                   f"{ex.text(*ex.cell(mean_member['test_acc']), bounds=ex.ACC)} % test accuracy{published}.")]
    if curve:
        blocks += [Para("Ensembles of k members (averaged over the k-subsets) against the mean member; "
                        "disagreement (diversity) is the share of test examples on which two members disagree."),
                   comparison_table(curve, f"{exp.slug}-size-curve.csv")]
    if not students.empty:
        blocks += student_table(exp, students, mean_member, context)
    if context.plots is not None and not ensembles.empty:
        path = context.plots.size_curve(rows, context.figure(exp, "size-curve"))
        blocks.append(Figure(path, "Test accuracy against ensemble size k: each combination with its 95% band, "
                                   "the mean member and each distilled student as lines"))
    return blocks


def student_table(exp, students, mean_member, context) -> list:
    """Each student (and each baseline) against the mean member, and each student against its baseline
    (its architecture from labels with the students' budget and seeds), paired by seed; the verdicts
    against the baselines also after Holm's adjustment over every student of the run (one family)."""
    baselines, items = exp.rows[exp.rows["role"] == "baseline"], []
    for name, group in grouped(students) + grouped(baselines):  # the baselines last, without a baseline
        acc, c = ex.cell(group["test_acc"]), paired(group, mean_member)
        recovered = ex.cell(group["gap_recovered"]) if "gap_recovered" in group else (math.nan, math.nan, 0)
        own = baselines[baselines["arch"].isin(set(group["arch"]))] if "arch" in baselines else baselines
        b = paired(group, own) if not own.empty and (group["role"] == "student").all() else None
        shown = {"student": name, "test acc %": ex.text(*acc, bounds=ex.ACC), "vs mean member (points)": str(c),
                 "verdict": in_words(c), "gap recovered %": ex.text(*recovered)}
        if not baselines.empty:
            shown.update({"vs baseline (points)": str(b or "-"), "verdict vs baseline": in_words(b) if b else "-"})
        number = {"student": name, "test_acc_mean": acc[0], "test_acc_ci": acc[1], "test_acc_n": acc[2],
                  "diff_vs_mean_member": c.diff, "low": c.low, "high": c.high, "pairs": c.n,
                  "gap_recovered_mean": recovered[0], "gap_recovered_n": recovered[2],
                  **({"diff_vs_baseline": b.diff, "baseline_low": b.low, "baseline_high": b.high,
                      "baseline_pairs": b.n, "baseline_p": b.p_value} if b else {})}
        items.append((shown, number))
    papers = [ex.paper_value(context.paper, group.iloc[0]) for _, group in grouped(students) + grouped(baselines)]
    if any(not math.isnan(p) for p in papers):  # a paper column only where a published figure maps
        for (shown, number), paper in zip(items, papers):
            shown["paper"], number["paper"] = "" if math.isnan(paper) else f"{paper:g}", paper
    table = comparison_table(items, f"{exp.slug}-students.csv")
    if "baseline_p" in table.numbers:  # every student against its baseline: one family
        adjusted, verdicts = holm_over_students(table.numbers["diff_vs_baseline"], table.numbers["baseline_p"])
        table.numbers["baseline_p_holm"] = adjusted
        table.shown[f"verdict vs baseline, Holm over {int(table.numbers['baseline_p'].notna().sum())}"] = verdicts
    fair = (" A student beats something only against its baseline (its architecture from labels with the students'"
            " budget and seeds), paired by seed: the members had another budget, so the mean member is no fair "
            "baseline." if not baselines.empty else " No baseline (ensemble.baseline=false): a gain over the mean "
            "member may be the students' other budget.")
    blocks = [Para("Students distilled from the full ensemble, paired by seed with the mean member; gap recovered = "
                   "(student − mean member) / (ensemble − mean member) on test accuracy." + fair), table]
    paper_note(context, blocks, table.shown)
    return blocks
