"""Experiments side by side (`distill report A B ... --compare`).

The first experiment is the reference. For each other experiment, every model kind both
have (same label, e.g. `student mlp`) is compared on test accuracy: paired by seed where
the seeds match (mean of the per-seed differences, Student-t interval), else unpaired
(Welch interval). When they share no model kind, their headline models are compared (the
KD student, the last born-again generation, a sweep's best setting). A sweep enters with
its best setting's rows only. The verdict is in words: higher, lower or not separable; as
several comparisons are made against one reference, each also gets its p-value (paired t-test,
or Welch's) adjusted by Holm over all the rows of the table, and a verdict after adjustment.
"""

from __future__ import annotations

import math

import pandas as pd

from . import experiments as ex
from .page import Heading, Para, Table
from .settings import headline
from .stats import holm, holm_verdict
from .views import Context, in_words, paired


def _rows(e: ex.Experiment) -> pd.DataFrame:
    return headline(e) if e.kind == "sweep" else e.rows


def unpaired(a: pd.Series, b: pd.Series) -> tuple[float, float, float, int, int, float]:
    """(mean b − mean a, low, high, n_a, n_b, p) in points, with a Welch 95% interval and the two-sided p
    of Welch's t-test (NaN with fewer than 2 values a side)."""
    a = pd.to_numeric(a, errors="coerce").dropna().to_numpy(float) * 100
    b = pd.to_numeric(b, errors="coerce").dropna().to_numpy(float) * 100
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan, len(a), len(b), math.nan
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan, len(a), len(b), math.nan
    from scipy import stats as scipy_stats

    p = float(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, len(a), len(b), p
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(scipy_stats.t.ppf(0.975, dof) * se)
    return diff, diff - half, diff + half, len(a), len(b), p


def _p(p: float) -> str:
    return "" if not math.isfinite(p) else f"{p:.2g}" if p >= 0.001 else "< 0.001"


def _verdict(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "too few seeds to tell"
    return "higher" if low > 0 else "lower" if high < 0 else "not separable"


def difference(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """B − A on test accuracy: paired by seed when seeds match, else unpaired."""
    shared = set(a["seed"].dropna()) & set(b["seed"].dropna())
    if shared:
        c = paired(b, a)
        return {"diff": c.diff, "low": c.low, "high": c.high, "n": c.n, "pairing": f"paired by seed (n={c.n})",
                "p_value": c.p_value, "verdict": in_words(c), "text": str(c)}
    diff, low, high, na, nb, p = unpaired(a["test_acc"], b["test_acc"])
    ci = f"95% CI {low:+.1f} to {high:+.1f}" if math.isfinite(low) else "no CI"
    return {"diff": diff, "low": low, "high": high, "n": min(na, nb),
            "pairing": f"unpaired: no shared seeds (n={na} and {nb})", "p_value": p,
            "verdict": _verdict(low, high),
            "text": f"{diff:+.1f} pts ({ci}, Welch)"}


def _labelled(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(_label=rows.apply(ex.label, axis=1))


def comparisons(found: list[ex.Experiment]) -> pd.DataFrame:
    """One row per (other experiment, model kind) against the first experiment."""
    reference = found[0]
    a_rows = _labelled(_rows(reference))
    out = []
    for other in found[1:]:
        b_rows = _labelled(_rows(other))
        common = [m for m in dict.fromkeys(a_rows["_label"]) if m in set(b_rows["_label"])]
        pairs = [(m, a_rows[a_rows["_label"] == m], b_rows[b_rows["_label"] == m]) for m in common]
        if not pairs:
            a_head, b_head = _labelled(headline(reference)), _labelled(headline(other))
            name = f"{', '.join(dict.fromkeys(b_head['_label']))} vs {', '.join(dict.fromkeys(a_head['_label']))}"
            pairs = [(name, a_head, b_head)]
        for model, a, b in pairs:
            out.append({"A": reference.title, "B": other.title, "model": model, **difference(a, b)})
    frame = pd.DataFrame(out)
    if len(frame):  # one family: every comparison of the table
        frame["p_holm"] = holm(frame["p_value"].tolist())
        frame["verdict_holm"] = [holm_verdict(d, p) for d, p in zip(frame["diff"], frame["p_holm"])]
    return frame


def read_settings(e: ex.Experiment) -> dict:
    """cfg.* key -> value of the settings an experiment's runs read (bookkeeping left out). A run that
    learns from no teacher reads no distill.* or teacher.* key (they keep their defaults in its
    config.yaml): its teacher is `none`. The teacher is the model its teacher rows name (a sweep's
    shared teacher), else the teacher section's."""
    first = _rows(e).iloc[0]
    values = {k: v for k, v in first.items()
              if k.startswith("cfg.") and not ex.is_bookkeeping(k) and pd.notna(v)}
    if not ex.distills(first):
        values = {k: v for k, v in values.items() if not k.startswith(("cfg.distill.", "cfg.teacher."))}
        values[TEACHER] = "none"
    else:
        teachers = e.rows.loc[e.rows["role"] == "teacher", "name"].dropna().astype(str)
        if len(teachers):
            values[TEACHER] = ", ".join(dict.fromkeys(teachers))
    return values


TEACHER = "cfg.teacher.model.name"


def _settings(found: list[ex.Experiment]) -> pd.DataFrame:
    """The settings (in words) whose values differ between the experiments that read them, one row
    per experiment; a setting an experiment does not read is blank there and is no difference."""
    read = [read_settings(e) for e in found]
    keys = list(dict.fromkeys(k for values in read for k in values))
    differ = [k for k in keys if len({str(values[k]) for values in read if k in values}) > 1]
    frame = pd.DataFrame({"experiment": [e.title for e in found]})
    for key in differ:
        frame[ex.word(key)] = [values.get(key, "") for values in read]
    return frame


def _side_by_side(found: list[ex.Experiment]) -> tuple[pd.DataFrame, pd.DataFrame]:
    labelled = [_labelled(_rows(e)) for e in found]
    models = list(dict.fromkeys(m for rows in labelled for m in rows["_label"]))
    shown, numbers = [], []
    for model in models:
        s, n = {"model": model}, {"model": model}
        for e, rows in zip(found, labelled):
            mean, half, count = ex.cell(rows.loc[rows["_label"] == model, "test_acc"])
            s[e.title] = ex.text(mean, half, count, bounds=ex.ACC)
            n.update({f"{e.title} mean": mean, f"{e.title} ci": half, f"{e.title} n": count})
        shown.append(s)
        numbers.append(n)
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def compare_blocks(found: list[ex.Experiment], context: Context) -> list:
    blocks = [Heading("Experiments side by side", 2, "compare")]
    if len(found) < 2:
        return blocks + [Para("Only one experiment among the inputs: nothing to compare.")]
    settings = _settings(found)
    if settings.shape[1] > 1:
        blocks += [Para("Settings that differ between the experiments:"), Table(settings, settings, "")]
    shown, numbers = _side_by_side(found)
    blocks += [Para("Test accuracy (%) of each model kind, mean ± 95% CI (n seeds); a sweep by its best setting:"),
               Table(shown, numbers, "compare-models.csv")]
    result = comparisons(found)
    words = {v: f"B is {v}" for v in ("higher", "lower")}
    view = pd.DataFrame({"model": result["model"], "B − A": result["B"] + " − " + result["A"],
                         "difference (points)": result["text"], "pairing": result["pairing"],
                         "p": [_p(p) for p in result["p_value"]],
                         "verdict": result["verdict"].replace(words),
                         f"verdict, Holm over {len(result)}": result["verdict_holm"].replace(words)})
    blocks += [Para(f"Each experiment minus the first ({found[0].title}), on test accuracy; `higher`/`lower` "
                    f"only when the 95% interval excludes 0. As {len(result)} comparisons are made, their "
                    f"p-values are also adjusted by Holm's step-down method (family-wise level 0.05): the last "
                    f"column is the verdict to quote when several rows are read together."),
               Table(view, result, "compare.csv")]
    return blocks
