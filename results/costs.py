"""The Cost section of a page: what each model costs against its accuracy.

    cost_view(exp, context)   parameters, FLOPs, latency, throughput and size per model kind (in a
                              sweep, per setting: its trials' models, and the shared teacher apart),
                              and test accuracy against FLOPs as a figure

Each row's accuracy is mean ± 95% t half-width over seeds with n = its seeds: where one seed has
several models of the kind (an ensemble's members: different models, not repeats of one), they
are averaged per seed first, as the ensemble page's mean member, and the row says so; its cost
figures are the means over its models (per model). Both accuracy and FLOPs
are given as shares of the most accurate row's and of the costliest row's, so that "keeps X%
of the accuracy at Y% of the cost" can be read off. Rows without cost columns: no section.

Timings depend on the machine's load: each row says how noisy they were (the largest spread of
its timed calls, (p75 - p25) / median, the threads, the cores other processes kept busy and the
load average, over its models), and the section warns where the measurement marked rows untrusted
(`distill.export.cost.trust`: load above the cores, or a spread above 50%), naming those rows once
and each distinct reason once with the rows it concerns (`untrusted_reasons`: reasons that differ
only in a figure are one, the figure as its range). Rows written before these figures existed show
them blank.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from . import experiments as ex
from .page import Figure, Heading, Para, Table
from .settings import setting_groups
from .views import Context, grouped

COST_WORDS = {"params": "parameters", "flops": "FLOPs per example", "latency_ms": "latency ms (batch 1)",
              "throughput": "examples/s (batch 256)", "size_bytes": "size (bytes)"}


def cost_groups(exp: ex.Experiment) -> list[tuple[str, pd.DataFrame]]:
    """(name, rows) per model kind; in a sweep, per model kind and setting of its trials (settings
    differ in what they cost and score: never pooled), its shared teacher as itself."""
    if exp.kind != "sweep":
        return grouped(exp.rows)
    trials = exp.rows[exp.rows["run"].isin(exp.trials)]
    groups = grouped(exp.rows[exp.rows["run"].isin(exp.teachers)])
    for model, rows in grouped(trials):
        groups += [(f"{model} ({setting})", group) for setting, group in setting_groups(exp, rows)]
    return groups


def _noise(group: pd.DataFrame) -> dict:
    """How noisy a group's timings were: the largest spread and load over its rows, trusted only if all are."""
    def most(column):
        values = pd.to_numeric(group[column], errors="coerce") if column in group else pd.Series(dtype=float)
        return float(values.max()) if values.notna().any() else math.nan

    spread = max(most("latency_spread"), most("throughput_spread"), key=lambda v: -1 if math.isnan(v) else v)
    marks = group["trusted"].dropna().tolist() if "trusted" in group else []
    reasons = group["untrusted_because"].dropna().astype(str).tolist() if "untrusted_because" in group else []
    reasons = [part for text in reasons for part in text.split("; ")]  # a row's reasons are joined by "; "
    return {"timing_spread": spread, "threads": most("threads"), "load_cores": most("load_cores"),
            "load_avg": most("load_avg"), "cores": most("cores"),
            "timings_trusted": all(bool(m) for m in marks) if marks else None,
            "untrusted_because": "; ".join(dict.fromkeys(reasons)) or None}


def _noise_words(number: dict) -> dict:
    def show(value, fmt):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    trusted = number["timings_trusted"]
    return {"timing spread %": show(100 * number["timing_spread"], "{:.0f}"),
            "threads": show(number["threads"], "{:.0f}"),
            "load: other cores busy / load avg / cores": " / ".join(
                show(number[k], f) or "?"
                for k, f in (("load_cores", "{:.1f}"), ("load_avg", "{:.1f}"), ("cores", "{:.0f}")))
            if any(show(number[k], "{}") for k in ("load_cores", "load_avg", "cores")) else "",
            "timings": "" if trusted is None else "ok" if trusted else "**untrusted**"}


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def untrusted_reasons(numbers: list[dict]) -> list[tuple[str, list[str]]]:
    """(reason, the rows it concerns) for each kind of reason the untrusted rows give, once: reasons that
    differ only in their figures ("the load average was 4.2 on 2 cores", "... 5.1 on 2 cores") are one,
    each figure that differs shown as its range ("the load average was 4.2 to 5.1 on 2 cores")."""
    kinds: dict[str, tuple[list, list]] = {}
    for number in numbers:
        for reason in (number["untrusted_because"] or "").split("; "):
            if reason:
                figures, rows = kinds.setdefault(NUMBER.sub("#", reason), ([], []))
                figures.append(NUMBER.findall(reason))
                rows += [number["model"]] if number["model"] not in rows else []
    out = []
    for template, (figures, rows) in kinds.items():
        spans = iter(low if low == high else f"{low} to {high}"
                     for low, high in ((min(f, key=float), max(f, key=float)) for f in zip(*figures)))
        out.append((re.sub("#", lambda _: next(spans), template), rows))
    return out


def _warning(numbers: list[dict]) -> Para:
    """The warning under the cost table: the untrusted rows once, then each distinct reason once with its rows."""
    untrusted = [n["model"] for n in numbers]
    every = "all of them" if len(untrusted) > 1 else untrusted[0]
    reasons = "; ".join(f"{reason} ({every if len(rows) == len(untrusted) else ', '.join(rows)})"
                        for reason, rows in untrusted_reasons(numbers))
    return Para(f"**Warning:** the latency and throughput of {', '.join(untrusted)} were timed on a busy or noisy "
                f"machine and are not to be trusted{': ' + reasons if reasons else ''}. Time them again on an idle "
                f"one (`distill export`); the table gives each row's worst figures.")


def per_seed(group: pd.DataFrame, metric: str = "test_acc") -> pd.Series:
    """`metric` per seed: the mean of one seed's models where it has several (an ensemble's members)."""
    if "seed" not in group or not group["seed"].duplicated().any():
        return group[metric]
    return pd.to_numeric(group[metric], errors="coerce").groupby(group["seed"]).mean()


def cost_view(exp: ex.Experiment, context: Context) -> list:
    """Cost table and accuracy-vs-FLOPs plot when the rows carry cost columns; nothing otherwise."""
    costs = [c for c in ("params", "flops", "latency_ms", "throughput", "size_bytes") if c in exp.rows.columns]
    if not any(c in exp.rows.columns and exp.rows[c].notna().any() for c in costs[1:]):
        return []
    numbers = []
    for name, group in cost_groups(exp):
        mean, half, n = ex.cell(per_seed(group), 100.0)
        per = int(group.groupby("seed").size().max()) if "seed" in group and len(group) else 1
        if per > 1:  # several models per seed: one figure per seed, their mean
            name += f" (mean of the {per} {'members' if (group['role'] == 'member').all() else 'models'} per seed)"
        number = {"model": name, "models": len(group), "test_acc_mean": mean, "test_acc_ci": half, "test_acc_n": n}
        number.update({c: pd.to_numeric(group[c], errors="coerce").mean() for c in costs})
        number.update(_noise(group))
        numbers.append(number)
    table = pd.DataFrame(numbers)
    best_acc = table["test_acc_mean"].max()
    top_flops = table["flops"].max() if "flops" in table else math.nan
    shown = []
    for number in numbers:
        row = {"model": number["model"],
               "test acc %": ex.text(number["test_acc_mean"], number["test_acc_ci"], number["test_acc_n"],
                                     bounds=ex.ACC),
               "% of the best accuracy": f"{100 * number['test_acc_mean'] / best_acc:.1f}"}
        if "flops" in number and top_flops and math.isfinite(top_flops):
            row["% of the largest FLOPs"] = f"{100 * number['flops'] / top_flops:.3g}"
        row.update({COST_WORDS[c]: f"{number[c]:.4g}" for c in costs})
        row.update(_noise_words(number))
        shown.append(row)
    blocks = [Heading("Cost", 3),
              Para("Per model kind: test accuracy as mean ± 95% CI over seeds, n = seeds (a seed's several models, "
                   "e.g. an ensemble's members, averaged first); parameters, FLOPs, latency, throughput and size "
                   "per model (the mean over the kind's models), the timing noise the worst of them."),
              Table(pd.DataFrame(shown), table, f"{exp.slug}-cost.csv")]
    untrusted = [n for n in numbers if n["timings_trusted"] is False]
    if untrusted:
        blocks.append(_warning(untrusted))
    if context.plots is not None and "flops" in exp.rows.columns and exp.rows["flops"].notna().any():
        path = context.plots.accuracy_vs_flops(table, context.figure(exp, "flops"))
        blocks.append(Figure(path, "Test accuracy against FLOPs per example (log scale); the Pareto front "
                                   "(no model both cheaper and more accurate) is marked"))
    return blocks
