"""A sweep over distill.method with `labels` among its methods: every method against labels.

    methods_method_keys(exp)   the other searched keys when the sweep is one, else None
    methods_table(exp)         one row per distilling method: its setting chosen on validation, test
                               accuracy, the gain over labels paired by seed, p, the verdict alone
                               and after Holm's adjustment over the methods
    methods_blocks(exp, context)  the sweep page's "Methods against labels" section

Each method (and `labels`, the same student trained from labels) is shown at the setting of the
other searched keys (e.g. the temperature) with the best mean validation accuracy over its trials;
test accuracy never chooses. The gain is the method's test accuracy minus labels', paired by
seed (`results.stats.compare`); as every method is compared with the one baseline, the paired
t-tests' p-values are adjusted by Holm's step-down method over the methods (`results.stats.holm`).
A capacity sweep (the student's size x method) has its own section (`results.capacity`).
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from . import experiments as ex
from .capacity import capacity_keys, searched
from .page import Heading, Para, Table
from .settings import trial_rows
from .stats import LEVEL, holm, holm_verdict
from .views import Context, in_words, paired

METHOD_KEY = "distill.method"
METHOD = "cfg.distill.method"
BASELINE = "labels"


def methods_other_keys(exp: ex.Experiment) -> Optional[list[str]]:
    """The cfg.* columns of the other searched keys when the sweep searches distill.method with `labels`
    and at least one other method (and is no capacity curve); else None."""
    keys = searched(exp)
    methods = [str(m) for m in keys.get(METHOD_KEY, [])]
    if BASELINE not in methods or len(methods) < 2 or capacity_keys(exp) is not None:
        return None
    return [f"cfg.{k}" for k in keys if k != METHOD_KEY]


def chosen(rows: pd.DataFrame, keys: list[str]) -> tuple[str, pd.DataFrame]:
    """(the setting in words, its rows): the setting of `keys` with the best mean validation accuracy."""
    keys = [k for k in keys if k in rows.columns]
    if not keys:
        return "", rows
    means = rows.groupby(keys, dropna=False)["val_acc"].mean()
    best = means.idxmax()
    best = best if isinstance(best, tuple) else (best,)
    mask = pd.Series(True, index=rows.index)
    for key, value in zip(keys, best):
        mask &= rows[key].astype(str) == str(value)
    return ", ".join(f"{ex.word(k, 'sweep')}={v}" for k, v in zip(keys, best)), rows[mask]


def methods_table(exp: ex.Experiment, metric: str = "test_acc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers): labels first, then one row per distilling method (see the module docstring)."""
    keys = methods_other_keys(exp)
    if keys is None:
        raise ValueError(f"{exp.title} is no sweep over distill.method with labels among the methods")
    rows = trial_rows(exp)
    names = [BASELINE] + sorted(set(rows[METHOD].astype(str)) - {BASELINE})
    picked = {name: chosen(rows[rows[METHOD].astype(str) == name], keys) for name in names}
    base = picked[BASELINE][1]
    numbers = []
    for name in names:
        setting, group = picked[name]
        mean, half, n = ex.cell(group[metric])
        row = {"method": name, "setting": setting, f"{metric}_mean": mean, f"{metric}_ci": half, f"{metric}_n": n}
        if name != BASELINE:
            c = paired(group, base, metric)
            row.update({"diff": c.diff, "low": c.low, "high": c.high, "pairs": c.n, "p_value": c.p_value,
                        "verdict": in_words(c), "_comparison": c})
        numbers.append(row)
    frame = pd.DataFrame(numbers)
    others = frame["method"] != BASELINE
    frame["p_holm"] = math.nan
    frame.loc[others, "p_holm"] = holm(frame.loc[others, "p_value"].tolist())
    frame["verdict_holm"] = [holm_verdict(d, p) if m != BASELINE else ""
                             for m, d, p in zip(frame["method"], frame["diff"], frame["p_holm"])]
    count = int(others.sum())
    shown = pd.DataFrame({
        "method": frame["method"],
        "chosen on validation": frame["setting"],
        "test acc %": [ex.text(m, h, n, bounds=ex.ACC) for m, h, n in
                       zip(frame[f"{metric}_mean"], frame[f"{metric}_ci"], frame[f"{metric}_n"])],
        "vs labels (points, paired by seed)": ["" if m == BASELINE else str(c)
                                               for m, c in zip(frame["method"], frame["_comparison"])],
        "p": ["" if not math.isfinite(p) else f"{p:.2g}" for p in frame["p_value"]],
        "verdict": frame["verdict"].fillna(""),
        f"verdict, Holm over {count}": frame["verdict_holm"],
    })
    return shown, frame.drop(columns="_comparison")


def methods_blocks(exp: ex.Experiment, context: Context) -> list:
    """The "Methods against labels" section of a sweep over distill.method; nothing for any other sweep."""
    keys = methods_other_keys(exp)
    if keys is None:
        return []
    shown, numbers = methods_table(exp)
    count = int((numbers["method"] != BASELINE).sum())
    holm_kept = numbers.loc[numbers["verdict_holm"].isin(["higher", "lower"]), "method"].tolist()
    raw_kept = numbers.loc[numbers["verdict"].isin(["higher", "lower"]), "method"].tolist()
    words = ", ".join(f"`{ex.word(k, 'sweep')}`" for k in keys)
    chose = (f"Each method is shown at the setting of {words} with "
             f"the best mean validation accuracy; that choice was made on the same seeds, so a method with more "
             f"settings to choose from is flattered a little. " if keys else "")
    return [Heading("Methods against labels", 3, f"{exp.slug}-methods"),
            Para(f"Every method against the same student trained from labels (`{BASELINE}`), test accuracy at the "
                 f"validation-selected epoch, the gain paired by seed. {chose}The verdict is `higher`/`lower` when "
                 f"the 95% interval excludes 0; as {count} methods are compared with one baseline, the paired "
                 f"t-tests' p-values are also adjusted by Holm's step-down method (family-wise level {LEVEL:g}). "
                 f"Separable alone: {', '.join(f'`{m}`' for m in raw_kept) or 'none'}; after Holm: "
                 f"{', '.join(f'`{m}`' for m in holm_kept) or 'none'}."),
            Table(shown, numbers, f"{exp.slug}-methods.csv")]
