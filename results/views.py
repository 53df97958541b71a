"""The canonical view of each experiment kind, as page blocks (tables, sentences, figures).

    kd_view(exp, context)         teacher, student, the same student from labels; gain and gap closed
    bornagain_view(exp, context)  generation 0, BAN-1..G, Ens x k, each paired against generation 0
    ensemble_view(exp, context)   the size curve, mean member, students vs same-budget baselines (results.ensemble_page)
    labels_view(exp, context)     the model(s) trained from labels
    models_view(exp, context)     any other kind: one table of every model its kind's `label` names, and
                                  each paired with its architecture's model of the kind's first role

Every figure is mean ± 95% Student-t half-width over seeds with its n; differences are
paired by seed (`results.stats.compare`) and given a verdict in words. A language model's
page (`results.experiments.is_language_model`) judges on test NLL per token, lower is better,
and shows perplexity beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import experiments as ex
from .page import Figure, Para, Table
from .stats import Comparison, compare, holm, holm_verdict, limits

METRICS = {"test_acc": "test acc %", "val_acc": "val acc %", "test_nll": "test NLL", "test_ece": "test ECE %",
           "test_ppl": "test perplexity"}


@dataclass
class Context:
    out: Path                      # the report folder
    everything: pd.DataFrame       # all loaded rows (the KD page looks for labels-only runs here)
    paper: dict = field(default_factory=dict)
    paper_source: str = ""
    plots: object = None           # results.plots, imported by the caller
    paper_differences: str = ""    # the config's paper.differences: how this setting differs from the paper's

    def figure(self, exp: ex.Experiment, name: str) -> Path:
        path = self.out / "figures" / f"{exp.slug}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def in_words(c: Comparison) -> str:
    """'higher', 'lower', 'not separable' (the 95% CI includes 0), or 'too few seeds to tell'."""
    verdict = c.verdict
    return "not separable" if verdict == "no clear difference" else verdict


def judged_metric(rows: pd.DataFrame) -> str:
    """What a page judges models on: test NLL per token for a language model, else test accuracy."""
    return "test_nll" if ex.is_language_model(rows) else "test_acc"


def lower_is_better(metric: str) -> bool:
    return metric.endswith(("nll", "ppl", "ece"))


def _values(rows: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    return ex.cell(rows[metric], 100.0 if metric in ("test_acc", "val_acc", "test_ece") else 1.0)


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
            mean, half, n = _values(rows, metric)
            number.update({f"{metric}_mean": mean, f"{metric}_ci": half, f"{metric}_n": n})
            display[METRICS.get(metric, metric)] = ex.text(mean, half, n, 1 if metric.endswith(("acc", "ece")) else 3,
                                                           limits(metric))
        numbers.append(number)
        shown.append(display)
    values = [ex.paper_value(paper, rows.iloc[0]) for _, rows in groups] if paper else []
    if any(not math.isnan(v) for v in values):  # a paper column only where a published figure maps
        for number, display, value in zip(numbers, shown, values):
            number["paper"] = value
            display["paper"] = "" if math.isnan(value) else f"{value:g}"
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def comparison_row(name: str, c: Comparison, **extra) -> tuple[dict, dict]:
    """One comparison as (display, numbers); on a lower-is-better metric (NLL, perplexity) the
    displayed verdict says which way is better."""
    number = {"comparison": name, "n": c.n, "diff": c.diff, "low": c.low, "high": c.high,
              "p_value": c.p_value, "verdict": in_words(c), **extra}
    verdict = in_words(c)
    if lower_is_better(c.metric) and verdict in ("higher", "lower"):
        verdict += " (better)" if verdict == "lower" else " (worse)"
    shown = {"comparison": name, "difference (points)" if c.percent else "difference": str(c), "verdict": verdict}
    return shown, number


def comparison_table(items: list[tuple[dict, dict]], csv: str, family: bool = False) -> Table:
    """The comparisons as a table; `family` (several models against one reference): each verdict
    also after Holm's adjustment of the p-values over the rows (`results.stats.holm`)."""
    shown, numbers = pd.DataFrame([s for s, _ in items]), pd.DataFrame([n for _, n in items])
    if family and len(items) > 1:
        numbers["p_holm"] = holm(numbers["p_value"].tolist())
        numbers["verdict_holm"] = [holm_verdict(d, p) for d, p in zip(numbers["diff"], numbers["p_holm"])]
        shown[f"verdict, Holm over {len(items)}"] = numbers["verdict_holm"]
    return Table(shown, numbers, csv)


def grouped(rows: pd.DataFrame, order: Callable[[pd.Series], tuple] | None = None,
            label: Callable = ex.label) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per model kind, in the rows' order (or `order`'s)."""
    if rows.empty:
        return []
    labelled = rows.assign(_label=rows.apply(label, axis=1))
    if order is not None:
        labelled = labelled.assign(_order=labelled.apply(order, axis=1)).sort_values("_order", kind="stable")
    return [(name, group) for name, group in labelled.groupby("_label", sort=False)]


def paper_note(context: Context, blocks: list, shown: pd.DataFrame) -> None:
    """Where a table shows a `paper` column, the sentence naming its source."""
    if context.paper_source and "paper" in shown.columns:
        blocks.append(Para(f"`paper`: published test accuracy (%) from {context.paper_source}."))
        if context.paper_differences:
            blocks.append(Para(f"Differences from the paper's setting: {context.paper_differences}"))


def _metrics(rows: pd.DataFrame) -> tuple:
    if ex.is_language_model(rows):  # judged on NLL per token and perplexity; token accuracy after them
        return ("test_nll", "test_ppl", "test_acc", "val_acc")
    return ("test_acc", "val_acc", "test_nll", "test_ece", "test_ppl")


def labels_view(exp: ex.Experiment, context: Context) -> list:
    shown, numbers = figure_table(grouped(exp.rows), context.paper, _metrics(exp.rows))
    blocks = [Table(shown, numbers, f"{exp.slug}-models.csv")]
    paper_note(context, blocks, shown)
    return blocks


def models_view(exp: ex.Experiment, context: Context) -> list:
    """The generic page of a kind without a page of its own: every model its kind's `label` names,
    test accuracy (NLL and perplexity for a language model) over seeds, parameters, paper figures."""
    metrics = ("test_nll", "test_ppl") if ex.is_language_model(exp.rows) else ("test_acc",)
    groups = grouped(exp.rows, label=exp.model_label)
    shown, numbers = figure_table(groups, context.paper, metrics)
    if "params" in exp.rows.columns:
        params = [pd.to_numeric(rows["params"], errors="coerce").mean() for _, rows in groups]
        numbers.insert(len(numbers.columns) - ("paper" in numbers.columns), "params", params)
        shown.insert(len(shown.columns) - ("paper" in shown.columns), "parameters",
                     ["" if math.isnan(p) else f"{p:,.0f}" for p in params])
    blocks = [Para(f"{exp.view.title}: each model of the run as its kind names it, over seeds."),
              Table(shown, numbers, f"{exp.slug}-models.csv")]
    paper_note(context, blocks, shown)
    return blocks + against_reference(exp, groups)


def against_reference(exp: ex.Experiment, groups: list[tuple[str, pd.DataFrame]]) -> list:
    """The generic page's comparisons: the first role an installed kind's View lists is its reference
    (mutual learning's `alone`); every other model is paired by seed with the reference model of its
    own architecture (`name`), on the page's judged metric. Nothing when there is no such reference."""
    roles = exp.view.roles if exp.registered is not None else ()
    reference = exp.rows[exp.rows["role"] == roles[0]] if roles else exp.rows.iloc[:0]
    if reference.empty:
        return []
    metric = judged_metric(exp.rows)
    items = []
    for name, rows in groups:
        names = set(rows["name"].astype(str))
        base = reference[reference["name"].astype(str).isin(names)]
        if (rows["role"] == roles[0]).all() or base.empty or len(names) > 1:
            continue
        items.append(comparison_row(f"{name} − {exp.model_label(base.iloc[0])}", paired(rows, base, metric)))
    if not items:
        return []
    return [Para(f"Each model against the {roles[0]} model of its architecture, paired by seed "
                 f"({METRICS[metric].replace(' %', '')}); a difference is higher or lower only when its 95% "
                 f"interval excludes 0."),
            comparison_table(items, f"{exp.slug}-vs-{roles[0]}.csv", family=True)]


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


def gap_closed(students: pd.DataFrame, labels: pd.DataFrame, teachers: pd.DataFrame,
               metric: str = "test_acc") -> tuple[float, float, int]:
    """Share of the teacher's lead over the labels-only student that KD closes, per seed, in %
    (the same ratio whichever way `metric` is better)."""
    per_seed = []
    for seed in sorted(set(students["seed"]) & set(labels["seed"]) & set(teachers["seed"])):
        s = students.loc[students["seed"] == seed, metric].mean()
        b = labels.loc[labels["seed"] == seed, metric].mean()
        t = teachers.loc[teachers["seed"] == seed, metric].mean()
        if t != b:
            per_seed.append((s - b) / (t - b))
    return ex.cell(per_seed, 100.0)


def kd_view(exp: ex.Experiment, context: Context) -> list:
    rows = exp.rows
    teachers, students = rows[rows["role"] == "teacher"], rows[rows["role"] == "student"]
    labels = labels_runs(exp, context.everything)
    groups = grouped(teachers) + grouped(students)
    if not labels.empty:
        groups.append((f"student {students['name'].iloc[0]} from labels", labels))
    shown, numbers = figure_table(groups, context.paper, _metrics(rows))
    blocks = [Table(shown, numbers, f"{exp.slug}-models.csv")]
    paper_note(context, blocks, shown)
    if labels.empty:
        blocks.append(Para("No run of the same student from labels (same model, training settings and data) is "
                           "among the inputs, so the gain of KD over labels cannot be shown: add one to the "
                           "`distill report` paths."))
        return blocks
    metric = judged_metric(rows)
    name = METRICS[metric].replace(" %", "")
    items = [comparison_row(f"KD student − same student from labels ({name})", paired(students, labels, metric))]
    if metric != "test_acc" and "test_ppl" in rows.columns:
        items.append(comparison_row("KD student − same student from labels (test perplexity)",
                                    paired(students, labels, "test_ppl")))
    mean, half, n = gap_closed(students, labels, teachers, metric)
    runs = ", ".join(f"`{Path(r).name}`" for r in dict.fromkeys(labels["run"]))
    judged = (" A language model: judged on test NLL per token (lower is better), perplexity beside it; token "
              "accuracy is in the table but judges nothing." if metric != "test_acc" else "")
    blocks += [Para(f"Gain of KD over the same student trained from labels (run {runs}), paired by seed.{judged}"),
               comparison_table(items, f"{exp.slug}-kd-gain.csv")]
    if n:
        blocks.append(Para(f"Share of the teacher gap closed, (KD − labels) / (teacher − labels) per seed on "
                           f"{name}: {ex.text(mean, half, n)} %."))
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
    groups = grouped(rows[rows["role"].isin(["generation", "ensemble"])], _generation_order)
    shown, numbers = figure_table(groups, context.paper, ("test_acc", "val_acc", "test_nll", "test_ppl"))
    gen0 = rows[(rows["role"] == "generation") & (rows["generation"] == 0)]
    texts, diffs = [], []
    for name, group in groups:
        if name.startswith("generation 0"):
            texts.append(("", ""))
            diffs.append((math.nan, math.nan, math.nan, 0, math.nan))
            continue
        c = paired(group, gen0)
        texts.append((str(c), in_words(c)))
        diffs.append((c.diff, c.low, c.high, c.n, c.p_value))
    shown["vs generation 0 (test, points)"] = [t for t, _ in texts]
    shown["verdict"] = [v for _, v in texts]
    numbers[["diff_vs_gen0", "low", "high", "pairs", "p_value"]] = pd.DataFrame(diffs, index=numbers.index)
    numbers["p_holm"] = holm(numbers["p_value"].tolist())  # every row against generation 0: one family
    family = int(numbers["p_holm"].notna().sum())
    shown[f"verdict, Holm over {family}"] = ["" if t == "" else holm_verdict(d, p) for (t, _), d, p in
                                            zip(texts, numbers["diff_vs_gen0"], numbers["p_holm"])]
    if "paper" in shown.columns:
        shown = shown[[c for c in shown.columns if c != "paper"] + ["paper"]]
    generations = rows[rows["role"] == "generation"]
    sizes = pd.to_numeric(generations["params"], errors="coerce").nunique() if "params" in generations else 0
    if generations["name"].nunique() > 1 or sizes > 1:
        _architecture_columns(groups, shown, numbers)  # a chain that changes size: what each generation is
    blocks = [Para("The born-again paper's layout: generation 0 is trained from labels and teaches BAN-1; each "
                   "BAN-g is taught by the one before; Ens x k averages the predictions of k generations. "
                   "Test accuracy at the validation-selected epoch; differences paired by seed, their verdicts "
                   "also after Holm's adjustment over every row compared with generation 0."),
              Table(shown, numbers, f"{exp.slug}-generations.csv")]
    paper_note(context, blocks, shown)
    blocks += _direct_blocks(exp, generations)
    if context.plots is not None:
        path = context.plots.generations(rows, context.figure(exp, "generations"))
        blocks.append(Figure(path, "Test accuracy per generation (mean and 95% CI over seeds), with the "
                                   "ensembles of generations 1..k at x = k"))
    return blocks


def _architecture_columns(groups, shown: pd.DataFrame, numbers: pd.DataFrame) -> None:
    """The model and parameter count of each row group, after its label."""
    params = [pd.to_numeric(g["params"], errors="coerce").mean() if "params" in g else math.nan for _, g in groups]
    names = ["+".join(dict.fromkeys(g["name"].astype(str))) if (g["role"] == "generation").all() else ""
             for _, g in groups]  # an ensemble's rows are named by the generations it averages
    for frame in (shown, numbers):
        frame.insert(1, "architecture", names)
    shown.insert(2, "parameters", ["" if math.isnan(p) else f"{p:,.0f}" for p in params])
    numbers.insert(2, "params", params)


def _direct_blocks(exp: ex.Experiment, generations: pd.DataFrame) -> list:
    """A teacher-assistant chain (TAKD): its last generation against direct KD from generation 0 into
    the same architecture (role direct, trained by the same run with the same loss and seeds)."""
    direct = exp.rows[exp.rows["role"] == "direct"]
    if direct.empty or generations.empty:
        return []
    last = generations[generations["generation"] == generations["generation"].max()]
    through, straight = ex.label(last.iloc[0]), f"direct KD {direct['name'].iloc[0]}"
    shown, numbers = figure_table([(f"{through} (through the assistants)", last), (straight, direct)],
                                  metrics=("test_acc", "val_acc", "test_nll"))
    c = paired(last, direct)
    items = [comparison_row(f"{through} (through the assistants) − {straight} from generation 0", c)]
    return [Para("Teacher-assistant chain (Mirzadeh et al. 2020): the last generation, taught through the "
                 "assistant generation(s), against generation 0 distilled straight into the same architecture with "
                 "the same loss, initialisation and batches (role `direct`, the same run), paired by seed."),
            Table(shown, numbers, f"{exp.slug}-direct.csv"), comparison_table(items, f"{exp.slug}-takd-gain.csv")]
