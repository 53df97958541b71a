"""The canonical view of each experiment kind, as page blocks (tables, sentences, figures).

    kd_view(exp, context)         teacher, student, the same student from labels; gain and gap closed
    bornagain_view(exp, context)  generation 0, BAN-1..G, Ens x k, each paired against generation 0
    ensemble_view(exp, context)   the size curve, mean member, students, gap recovered, diversity
    labels_view(exp, context)     the model(s) trained from labels

Every figure is mean ± 95% Student-t half-width over seeds with its n; differences are
paired by seed (`results.stats.compare`) and given a verdict in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import experiments as ex
from .page import Figure, Heading, Para, Table
from .stats import Comparison, compare

METRICS = {"test_acc": "test acc %", "val_acc": "val acc %", "test_nll": "test NLL", "test_ece": "test ECE %",
           "test_ppl": "test perplexity"}


@dataclass
class Context:
    out: Path                      # the report folder
    everything: pd.DataFrame       # all loaded rows (the KD page looks for labels-only runs here)
    paper: dict = field(default_factory=dict)
    paper_source: str = ""
    plots: object = None           # results.plots, imported by the caller

    def figure(self, exp: ex.Experiment, name: str) -> Path:
        path = self.out / "figures" / f"{exp.slug}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def in_words(c: Comparison) -> str:
    """'higher', 'lower', 'not separable' (the 95% CI includes 0), or 'too few seeds to tell'."""
    verdict = c.verdict
    return "not separable" if verdict == "no clear difference" else verdict


def figure_table(groups: list[tuple[str, pd.DataFrame]], paper: dict | None = None,
                 metrics=("test_acc", "val_acc", "test_nll", "test_ece", "test_ppl")
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers) with one row per (label, rows): mean, half-width and n of each metric."""
    numbers, shown = [], []
    for name, rows in groups:
        number, display = {"model": name}, {"model": name}
        for metric in metrics:
            if metric not in rows.columns or rows[metric].isna().all():  # e.g. perplexity: text runs only
                continue
            scale = 100.0 if metric in ("test_acc", "val_acc", "test_ece") else 1.0
            mean, half, n = ex.cell(rows[metric], scale)
            number.update({f"{metric}_mean": mean, f"{metric}_ci": half, f"{metric}_n": n})
            display[METRICS.get(metric, metric)] = ex.text(mean, half, n, 1 if scale != 1 else 3)
        if paper:
            value = ex.paper_value(paper, rows.iloc[0])
            number["paper"] = value
            display["paper"] = "" if math.isnan(value) else f"{value:g}"
        numbers.append(number)
        shown.append(display)
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def comparison_row(name: str, c: Comparison, **extra) -> tuple[dict, dict]:
    number = {"comparison": name, "n": c.n, "diff": c.diff, "low": c.low, "high": c.high,
              "p_value": c.p_value, "verdict": in_words(c), **extra}
    shown = {"comparison": name, "difference (points)": str(c), "verdict": in_words(c)}
    return shown, number


def comparison_table(items: list[tuple[dict, dict]], csv: str) -> Table:
    return Table(pd.DataFrame([s for s, _ in items]), pd.DataFrame([n for _, n in items]), csv)


def _grouped(rows: pd.DataFrame, order: Callable[[pd.Series], tuple] | None = None) -> list[tuple[str, pd.DataFrame]]:
    labelled = rows.assign(_label=rows.apply(ex.label, axis=1))
    if order is not None:
        labelled = labelled.assign(_order=labelled.apply(order, axis=1)).sort_values("_order", kind="stable")
    return [(name, group) for name, group in labelled.groupby("_label", sort=False)]


def _paper_note(context: Context, blocks: list) -> None:
    if context.paper_source:
        blocks.append(Para(f"`paper`: published test accuracy (%) from {context.paper_source}."))


def labels_view(exp: ex.Experiment, context: Context) -> list:
    shown, numbers = figure_table(_grouped(exp.rows), context.paper)
    blocks = [Table(shown, numbers, f"{exp.slug}-models.csv")]
    _paper_note(context, blocks)
    return blocks


def labels_runs(exp: ex.Experiment, everything: pd.DataFrame) -> pd.DataFrame:
    """The labels-only model rows among all inputs that train the KD student's model the same way."""
    students = exp.rows[exp.rows["role"] == "student"]
    if students.empty:
        return students
    reference = students.iloc[0]
    candidates = everything[(everything["role"] == "model") & ~everything["run"].isin(exp.runs)]
    if "sweep" in candidates.columns:
        candidates = candidates[candidates["sweep"].isna()]
    keep = [ex.same_student(reference, row) for _, row in candidates.iterrows()]
    return candidates[np.asarray(keep, dtype=bool)] if len(candidates) else candidates


def gap_closed(students: pd.DataFrame, labels: pd.DataFrame, teachers: pd.DataFrame) -> tuple[float, float, int]:
    """Share of the teacher's lead over the labels-only student that KD closes, per seed, in %."""
    per_seed = []
    for seed in sorted(set(students["seed"]) & set(labels["seed"]) & set(teachers["seed"])):
        s = students.loc[students["seed"] == seed, "test_acc"].mean()
        b = labels.loc[labels["seed"] == seed, "test_acc"].mean()
        t = teachers.loc[teachers["seed"] == seed, "test_acc"].mean()
        if t != b:
            per_seed.append((s - b) / (t - b))
    return ex.cell(per_seed, 100.0)


def kd_view(exp: ex.Experiment, context: Context) -> list:
    rows = exp.rows
    teachers, students = rows[rows["role"] == "teacher"], rows[rows["role"] == "student"]
    labels = labels_runs(exp, context.everything)
    groups = _grouped(teachers) + _grouped(students)
    if not labels.empty:
        groups.append((f"student {students['name'].iloc[0]} from labels", labels))
    shown, numbers = figure_table(groups, context.paper)
    blocks = [Table(shown, numbers, f"{exp.slug}-models.csv")]
    _paper_note(context, blocks)
    if labels.empty:
        blocks.append(Para("No run of the same student from labels (same model, training settings and data) is "
                           "among the inputs, so the gain of KD over labels cannot be shown: add one to the "
                           "`distill report` paths."))
        return blocks
    c = paired(students, labels)
    items = [comparison_row("KD student − same student from labels (test acc)", c)]
    mean, half, n = gap_closed(students, labels, teachers)
    runs = ", ".join(f"`{Path(r).name}`" for r in dict.fromkeys(labels["run"]))
    blocks += [Para(f"Gain of KD over the same student trained from labels (run {runs}), paired by seed:"),
               comparison_table(items, f"{exp.slug}-kd-gain.csv")]
    if n:
        blocks.append(Para(f"Share of the teacher gap closed, (KD − labels) / (teacher − labels) per seed: "
                           f"{ex.text(mean, half, n)} %."))
    return blocks


def _sides(a: pd.DataFrame, b: pd.DataFrame):
    both = pd.concat([a, b], ignore_index=True)
    mask_a = np.arange(len(both)) < len(a)
    return both, mask_a, ~mask_a


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test_acc") -> Comparison:
    """a − b on `metric`, paired by seed (rows of one seed on a side averaged first)."""
    both, mask_a, mask_b = _sides(a, b)
    return compare(both, mask_a, mask_b, metric)


def _generation_order(row) -> tuple:
    if row["role"] == "generation":
        return (0, row["generation"], 0)
    with_teacher = "generations 0" in ex.label(row)  # BAN-only ensembles first, as in the paper
    return (2 if with_teacher else 1, row.get("size") or 0, 0)


def bornagain_view(exp: ex.Experiment, context: Context) -> list:
    rows = exp.rows
    groups = _grouped(rows[rows["role"].isin(["generation", "ensemble"])], _generation_order)
    shown, numbers = figure_table(groups, context.paper, ("test_acc", "val_acc", "test_nll", "test_ppl"))
    gen0 = rows[(rows["role"] == "generation") & (rows["generation"] == 0)]
    texts, diffs = [], []
    for name, group in groups:
        if name.startswith("generation 0"):
            texts.append(("", ""))
            diffs.append((math.nan, math.nan, math.nan, 0))
            continue
        c = paired(group, gen0)
        texts.append((str(c), in_words(c)))
        diffs.append((c.diff, c.low, c.high, c.n))
    shown["vs generation 0 (test, points)"] = [t for t, _ in texts]
    shown["verdict"] = [v for _, v in texts]
    if "paper" in shown.columns:
        shown = shown[[c for c in shown.columns if c != "paper"] + ["paper"]]
    numbers[["diff_vs_gen0", "low", "high", "pairs"]] = pd.DataFrame(diffs, index=numbers.index)
    blocks = [Para("The born-again paper's layout: generation 0 is trained from labels and teaches BAN-1; each "
                   "BAN-g is taught by the one before; Ens x k averages the predictions of k generations. "
                   "Test accuracy at the validation-selected epoch; differences paired by seed."),
              Table(shown, numbers, f"{exp.slug}-generations.csv")]
    _paper_note(context, blocks)
    if context.plots is not None:
        path = context.plots.generations(rows, context.figure(exp, "generations"))
        blocks.append(Figure(path, "Test accuracy per generation (mean and 95% CI over seeds), with the "
                                   "ensembles of generations 1..k at x = k"))
    return blocks


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
        curve.append(({"combine": combine, "k": int(size), "test acc %": ex.text(*acc),
                       "gain over mean member (points)": ex.text(*gain), "disagreement %": ex.text(*spread)},
                      {"combine": combine, "k": int(size), "test_acc_mean": acc[0], "test_acc_ci": acc[1],
                       "test_acc_n": acc[2], "gain_mean": gain[0], "gain_ci": gain[1], "gain_n": gain[2],
                       "disagreement_mean": spread[0], "disagreement_n": spread[2]}))
    blocks = [Para(f"Mean member (the {members['member'].nunique()} members averaged per seed): "
                   f"{ex.text(*ex.cell(mean_member['test_acc']))} % test accuracy.")]
    if curve:
        blocks += [Para("Ensembles of k members (averaged over the k-subsets) against the mean member; "
                        "disagreement (diversity) is the share of test examples on which two members disagree."),
                   comparison_table(curve, f"{exp.slug}-size-curve.csv")]
    if not students.empty:
        blocks += _student_table(exp, students, mean_member, context)
    if context.plots is not None and not ensembles.empty:
        path = context.plots.size_curve(rows, context.figure(exp, "size-curve"))
        blocks.append(Figure(path, "Test accuracy against ensemble size k: each combination with its 95% band, "
                                   "the mean member and each distilled student as lines"))
    return blocks


def _student_table(exp, students, mean_member, context) -> list:
    items = []
    for name, group in _grouped(students):
        acc = ex.cell(group["test_acc"])
        c = paired(group, mean_member)
        recovered = ex.cell(group["gap_recovered"]) if "gap_recovered" in group else (math.nan, math.nan, 0)
        paper = ex.paper_value(context.paper, group.iloc[0])
        shown = {"student": name, "test acc %": ex.text(*acc), "vs mean member (points)": str(c),
                 "verdict": in_words(c), "gap recovered %": ex.text(*recovered)}
        number = {"student": name, "test_acc_mean": acc[0], "test_acc_ci": acc[1], "test_acc_n": acc[2],
                  "diff_vs_mean_member": c.diff, "low": c.low, "high": c.high, "pairs": c.n,
                  "gap_recovered_mean": recovered[0], "gap_recovered_n": recovered[2]}
        if context.paper:
            shown["paper"] = "" if math.isnan(paper) else f"{paper:g}"
            number["paper"] = paper
        items.append((shown, number))
    blocks = [Para("Students distilled from the full ensemble, paired by seed with the mean member; gap recovered = "
                   "(student − mean member) / (ensemble − mean member) on test accuracy."),
              comparison_table(items, f"{exp.slug}-students.csv")]
    _paper_note(context, blocks)
    return blocks


COST_WORDS = {"params": "parameters", "flops": "FLOPs per example", "latency_ms": "latency ms (batch 1)",
              "throughput": "examples/s (batch 256)", "size_bytes": "size (bytes)"}


def cost_view(exp: ex.Experiment, context: Context) -> list:
    """Cost table and accuracy-vs-FLOPs plot when the rows carry cost columns; nothing otherwise.
    Each model kind's accuracy (with its interval) and cost, and both as shares of the most
    accurate kind's accuracy and of the costliest kind's FLOPs, so that "keeps X% of the
    accuracy at Y% of the cost" can be read off."""
    costs = [c for c in ("params", "flops", "latency_ms", "throughput", "size_bytes") if c in exp.rows.columns]
    if not any(c in exp.rows.columns and exp.rows[c].notna().any() for c in costs[1:]):
        return []
    numbers = []
    for name, group in _grouped(exp.rows):
        mean, half, n = ex.cell(group["test_acc"], 100.0)
        number = {"model": name, "test_acc_mean": mean, "test_acc_ci": half, "test_acc_n": n}
        number.update({c: pd.to_numeric(group[c], errors="coerce").mean() for c in costs})
        numbers.append(number)
    table = pd.DataFrame(numbers)
    best_acc = table["test_acc_mean"].max()
    top_flops = table["flops"].max() if "flops" in table else math.nan
    shown = []
    for number in numbers:
        row = {"model": number["model"],
               "test acc %": ex.text(number["test_acc_mean"], number["test_acc_ci"], number["test_acc_n"]),
               "% of the best accuracy": f"{100 * number['test_acc_mean'] / best_acc:.1f}"}
        if "flops" in number and top_flops and math.isfinite(top_flops):
            row["% of the largest FLOPs"] = f"{100 * number['flops'] / top_flops:.3g}"
        row.update({COST_WORDS[c]: f"{number[c]:.4g}" for c in costs})
        shown.append(row)
    blocks = [Heading("Cost", 3), Table(pd.DataFrame(shown), table, f"{exp.slug}-cost.csv")]
    if context.plots is not None and "flops" in exp.rows.columns and exp.rows["flops"].notna().any():
        path = context.plots.accuracy_vs_flops(table, context.figure(exp, "flops"))
        blocks.append(Figure(path, "Test accuracy against FLOPs per example (log scale); the Pareto front "
                                   "(no model both cheaper and more accurate) is marked"))
    return blocks
