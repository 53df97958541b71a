"""The capacity curve: a sweep over the student's size crossed with distill.method, from one teacher.

    capacity_keys(exp)             (size key, distilling methods) when the sweep is one, else None
    capacity_table(exp, teachers)  one row per size (and distilling method): parameters, the labels
                                   student, the distilled student, the gain paired by seed, its
                                   verdict alone and Holm-adjusted over the sizes, the teacher gap closed
    capacity_blocks(exp, context)  the sweep page's "Capacity curve" section (the table and a figure)

A sweep is a capacity curve when its searched keys (sweep.json's trial params, seeds left out)
are exactly one size key of the student (`model.width`, `model.depth`, or `model`, a list of
model sections, which `tuning.space` refuses today: "is a section") and `distill.method`, with
`labels` (cross-entropy only) among the methods.
Each size's students are compared on test accuracy at the validation-selected epoch: the
distilled student minus the same-size student from labels, paired by seed
(`results.stats.compare`). As several sizes are compared, the p-values of the paired t-tests
are also adjusted by Holm's step-down method (family: every size and distilling method of the
table), and a verdict is `higher`/`lower` after adjustment only when its adjusted p < 0.05.
The teacher gap closed is (KD - labels) / (teacher - labels) per seed, its mean ± 95% CI over
seeds (`results.views.gap_closed`), the teacher being the one the sweep trained once per seed
(`<sweep>/teacher/`).
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from . import experiments as ex
from .page import Figure, Heading, Para, Table
from .settings import trial_rows
from .stats import LEVEL, holm, holm_verdict
from .views import Context, gap_closed, in_words, paired

SIZE_KEYS = ("model.width", "model.depth", "model")
METHOD_KEY = "distill.method"
METHOD = "cfg.distill.method"
BASELINE = "labels"


def searched(exp: ex.Experiment) -> dict[str, list]:
    """The searched keys of a sweep (sweep.json's trial params, seeds left out) -> their values, in order."""
    found: dict[str, list] = {}
    for trial in ex.read_sweep(exp).get("trials") or []:
        for key, value in (trial.get("params") or {}).items():
            if key != "seeds":
                values = found.setdefault(key, [])
                if value not in values:
                    values.append(value)
    return found


def capacity_keys(exp: ex.Experiment) -> Optional[tuple[str, list[str]]]:
    """(the size key, the distilling methods) when the sweep searches exactly one size key of the
    student and distill.method with `labels` and at least one other method among its values; else None."""
    keys = searched(exp)
    sizes = [k for k in keys if k in SIZE_KEYS]
    if set(keys) != {METHOD_KEY, *sizes} or len(sizes) != 1:
        return None
    methods = [str(m) for m in keys[METHOD_KEY]]
    others = [m for m in methods if m != BASELINE]
    return (sizes[0], others) if BASELINE in methods and others else None


def size_columns(rows: pd.DataFrame, size_key: str) -> list[str]:
    """The cfg.* columns that name a student's size: the searched key's, or for a searched `model`
    section every cfg.model.* column that differs between the trials."""
    column = f"cfg.{size_key}"
    if column in rows.columns:
        return [column]
    return [c for c in ex.varying(rows) if c.startswith("cfg.model.")]


def _size_text(columns: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    if len(columns) == 1:
        return _plain(values[0])
    return ", ".join(f"{c[len('cfg.model.'):]}={_plain(v)}" for c, v in zip(columns, values))


def _plain(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def size_groups(rows: pd.DataFrame, size_key: str) -> list[tuple[object, float, pd.DataFrame]]:
    """(size, mean parameter count, its rows) per student size, smallest first; the size is the searched
    key's value (a width, a depth), or the model section's differing keys in words."""
    columns = size_columns(rows, size_key)
    if not columns:
        return [("all", _params(rows), rows)]
    groups = [(values[0] if len(columns) == 1 else _size_text(columns, values), _params(group), group)
              for values, group in rows.groupby(columns, dropna=False, sort=True)]
    return sorted(groups, key=lambda g: (math.isnan(g[1]), g[1], str(g[0])))


def _params(rows: pd.DataFrame) -> float:
    if "params" not in rows.columns:
        return math.nan
    return float(pd.to_numeric(rows["params"], errors="coerce").mean())


def teacher_rows(exp: ex.Experiment) -> pd.DataFrame:
    """The rows of the teacher the sweep trained once per seed for every trial (`<sweep>/teacher/`)."""
    return exp.rows[exp.rows["run"].isin(exp.teachers)]


def capacity_table(exp: ex.Experiment, teachers: Optional[pd.DataFrame] = None,
                   metric: str = "test_acc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers): one row per student size (and distilling method, when the sweep has
    several), smallest first. Accuracies and differences in %; the gain is the distilled student
    minus the labels student, paired by seed; `p_holm` the Holm-adjusted p over all the rows."""
    size_key, methods = capacity_keys(exp) or (None, [])
    if size_key is None:
        raise ValueError(f"{exp.title} is no capacity-curve sweep (one size key x distill.method with labels)")
    teachers = teacher_rows(exp) if teachers is None else teachers
    rows = trial_rows(exp)
    numbers = []
    for size, params, group in size_groups(rows, size_key):
        labels = group[group[METHOD].astype(str) == BASELINE]
        for method in methods:
            students = group[group[METHOD].astype(str) == method]
            c = paired(students, labels, metric)
            closed = gap_closed(students, labels, teachers, metric) if len(teachers) else (math.nan, math.nan, 0)
            row = {"size": size, "params": params, "method": method}
            for side, values in (("labels", labels), ("student", students)):
                mean, half, n = ex.cell(values[metric])
                row.update({f"{side}_mean": mean, f"{side}_ci": half, f"{side}_n": n})
            row.update({"gain": c.diff, "low": c.low, "high": c.high, "pairs": c.n, "p_value": c.p_value,
                        "verdict": in_words(c), "gap_closed_mean": closed[0], "gap_closed_ci": closed[1],
                        "gap_closed_n": closed[2], "_comparison": c})
            numbers.append(row)
    frame = pd.DataFrame(numbers)
    if frame.empty:
        return frame, frame
    frame["p_holm"] = holm(frame["p_value"].tolist())
    frame["verdict_holm"] = [holm_verdict(d, p) for d, p in zip(frame["gain"], frame["p_holm"])]
    name = ex.word(f"cfg.{size_key}", "sweep") if size_key != "model" else "student"
    several = len(methods) > 1
    shown = pd.DataFrame({
        name: [_plain(v) for v in frame["size"]],
        "parameters": ["" if math.isnan(p) else f"{p:,.0f}" for p in frame["params"]],
        **({"loss": frame["method"]} if several else {}),
        "labels student, test acc %": [ex.text(m, h, n, bounds=ex.ACC) for m, h, n in
                                       zip(frame["labels_mean"], frame["labels_ci"], frame["labels_n"])],
        ("distilled student, test acc %" if several else f"{methods[0]} student, test acc %"):
            [ex.text(m, h, n, bounds=ex.ACC)
             for m, h, n in zip(frame["student_mean"], frame["student_ci"], frame["student_n"])],
        "gain over labels, paired by seed (points)": [str(c) for c in frame["_comparison"]],
        "verdict": frame["verdict"],
        f"verdict, Holm over {len(frame)}": frame["verdict_holm"],
        "teacher gap closed %": [ex.text(m, h, n) for m, h, n in
                                 zip(frame["gap_closed_mean"], frame["gap_closed_ci"], frame["gap_closed_n"])],
    })
    numbers = frame.drop(columns="_comparison").rename(columns={"size": name})
    if len(teachers):
        mean, half, n = ex.cell(teachers[metric])
        numbers = numbers.assign(teacher_mean=mean, teacher_ci=half, teacher_n=n)
    return shown, numbers


def capacity_blocks(exp: ex.Experiment, context: Context) -> list:
    """The "Capacity curve" section of a capacity sweep's page; nothing for any other sweep."""
    found = capacity_keys(exp)
    if found is None:
        return []
    size_key, methods = found
    teachers = teacher_rows(exp)
    shown, numbers = capacity_table(exp, teachers)
    if numbers.empty:
        return []
    which = ", ".join(f"`{m}`" for m in methods)
    teacher = (f"The teacher ({ex.text(*ex.cell(teachers['test_acc']), bounds=ex.ACC)} % test accuracy) was trained "
               f"once per seed "
               f"and taught every trial of that seed. " if len(teachers) else
               "No teacher the sweep trained is among the inputs, so the gap closed is not shown. ")
    blocks = [Heading("Capacity curve", 3, f"{exp.slug}-capacity"),
              Para(f"The student's size (`{size_key}`) against the method: at each size, the {which} student "
                   f"against the same student from labels (`{BASELINE}`, cross-entropy only), test accuracy at the "
                   f"validation-selected epoch, mean ± 95% CI over seeds. {teacher}The gain is paired by seed; "
                   f"its verdict is `higher`/`lower` when its 95% interval excludes 0, and, since {len(numbers)} "
                   f"comparisons are made, again after Holm's adjustment of the paired t-tests' p-values (family-wise "
                   f"level {LEVEL:g}). Teacher gap closed: (KD − labels) / (teacher − labels) per seed."),
              Table(shown, numbers, f"{exp.slug}-capacity.csv")]
    if context.plots is not None:
        rows = trial_rows(exp)
        if "params" in rows.columns and pd.to_numeric(rows["params"], errors="coerce").gt(0).all():
            path = context.plots.capacity_curve(rows, teachers, context.figure(exp, "capacity"),
                                                sizes=size_columns(rows, size_key))
            blocks.append(Figure(path, "Test accuracy (%) against the student's parameters (log scale): one line "
                                       "and 95% band over seeds per method, the teacher's mean as a line"))
        else:
            blocks.append(Para("The students' parameter counts are not in their summaries, so no curve is drawn."))
    return blocks
