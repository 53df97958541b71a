"""Fidelity on every page whose rows carry it: how closely each model agrees with its teacher.

    fidelity_view(exp, context)   a table per model kind (or per sweep setting): test accuracy,
                                  validation and test top-1 agreement with the teacher, test
                                  KL(teacher || model); and test accuracy against test agreement,
                                  one point per model and seed

The figures are those `distill.teachers.fidelity` wrote into summary.json (Stanton et al. 2021): a
student against the teacher it was distilled from (an ensemble's combined prediction, the
generation that taught a born-again generation); a model trained with `distill.method=labels`
against the run's teacher, which it never read in training. Rows without them (teachers,
models of runs without a teacher, ensembles) are left out. Mean ± 95% t half-width over seeds.
"""

from __future__ import annotations

import pandas as pd

from . import experiments as ex
from .page import Figure, Heading, Para, Table
from .settings import searched_keys, setting_groups
from .stats import limits
from .views import Context, grouped

KEYS = {"val_agreement": "val agreement %", "test_agreement": "test agreement %",
        "test_teacher_kl": "test KL(teacher ‖ model)"}
METHOD = "cfg.distill.method"


def fidelity_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with a test agreement figure (students, generations >= 1, models next to a teacher)."""
    if "test_agreement" not in rows.columns:
        return rows.iloc[0:0]
    return rows[pd.to_numeric(rows["test_agreement"], errors="coerce").notna()]


def _groups(exp: ex.Experiment, rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One group per model kind; in a sweep, one per setting of its searched keys."""
    return setting_groups(exp, rows) if exp.kind == "sweep" and searched_keys(exp) else grouped(rows)


def _colour(exp: ex.Experiment, rows: pd.DataFrame) -> pd.Series:
    """What the plot colours by: the method where the rows differ in it, else the model kind."""
    if METHOD in rows.columns and rows[METHOD].nunique(dropna=True) > 1:
        return rows[METHOD].astype(str)
    return rows.apply(ex.label, axis=1)


def fidelity_table(groups: list[tuple[str, pd.DataFrame]], csv: str) -> Table:
    shown, numbers = [], []
    for name, group in groups:
        display, number = {"model": name}, {"model": name}
        for metric, title in (("test_acc", "test acc %"), *KEYS.items()):
            if metric not in group.columns:
                continue
            scale = 1.0 if metric == "test_teacher_kl" else 100.0
            mean, half, n = ex.cell(group[metric], scale)
            number.update({f"{metric}_mean": mean, f"{metric}_ci": half, f"{metric}_n": n})
            display[title] = ex.text(mean, half, n, 3 if scale == 1.0 else 1, limits(metric))
        shown.append(display)
        numbers.append(number)
    return Table(pd.DataFrame(shown), pd.DataFrame(numbers), csv)


def fidelity_view(exp: ex.Experiment, context: Context) -> list:
    """The Fidelity section of one experiment; nothing when no row carries the figures."""
    rows = fidelity_rows(exp.rows)
    if rows.empty:
        return []
    table = fidelity_table(_groups(exp, rows), f"{exp.slug}-fidelity.csv")
    blocks = [Heading("Fidelity", 3),
              Para("Agreement: share of examples on which the model's top-1 class is its teacher's; KL: mean "
                   "KL(teacher || model) at T = 1; at the validation-selected epoch. The teacher is the one "
                   "that taught the model (an ensemble's combined prediction, the previous generation); a model "
                   "trained from labels (method `labels`) is measured against the run's teacher it never read."),
              table]
    if context.plots is not None:
        points = rows.assign(colour=_colour(exp, rows))
        path = context.plots.accuracy_vs_agreement(points, context.figure(exp, "fidelity"))
        blocks.append(Figure(path, "Test accuracy against test agreement with the teacher: one point per model "
                                   "and seed"))
    return blocks
