"""A Tune sweep's settings, and the rows each experiment is about (its headline).

    settings_table(exp)   one row per setting of the searched keys: val/test accuracy, n, trials
    best_rows(exp)        the trial rows of the setting with the best mean validation accuracy
    headline(exp)         the rows the index line is about: a sweep's best setting, else the
                          rows its kind's View names (`distill.kinds.View.headline_rows`)

A setting is one combination of the searched keys (sweep.json's trial params, seeds left
out). A sweep's trial rows are the rows its kind's View is about (the student, the last
generation, ...) of its trials only: a teacher the sweep trained once for every trial is
no trial.
"""

from __future__ import annotations

import pandas as pd

from . import experiments as ex


def searched_keys(exp: ex.Experiment) -> list[str]:
    """The cfg.* columns of the sweep's searched keys (sweep.json params), else those that vary."""
    sweep = ex.read_sweep(exp)
    keys = []
    for trial in sweep.get("trials") or []:
        for key in (trial.get("params") or {}):
            column = f"cfg.{key}"
            if key != "seeds" and column in exp.rows.columns and column not in keys:
                keys.append(column)
    trials = exp.rows[exp.rows["run"].isin(exp.trials)]
    return keys or [c for c in ex.varying(trials) if c != "cfg.seeds"]


def trial_rows(exp: ex.Experiment) -> pd.DataFrame:
    """The rows a sweep's trials are about (its kind's headline rows), those with a validation accuracy."""
    rows = exp.view.headline_rows(exp.rows[exp.rows["run"].isin(exp.trials)])
    return rows[pd.to_numeric(rows["val_acc"], errors="coerce").notna()]


def setting_text(keys: list[str], values) -> str:
    """'T=1.0, alpha=0.9': one setting of the searched keys."""
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{ex.word(k, 'sweep')}={v}" for k, v in zip(keys, values))


def setting_groups(exp: ex.Experiment, rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(setting in words, its rows) per setting of the searched keys, in sorted order."""
    keys = searched_keys(exp)
    if not keys:
        return [("all trials", rows)]
    return [(setting_text(keys, values), group) for values, group in rows.groupby(keys, dropna=False, sort=True)]


def settings_table(exp: ex.Experiment) -> tuple[pd.DataFrame, list[str]]:
    """One row per setting of the searched keys: val and test accuracy (mean, half-width, n), best first."""
    keys = searched_keys(exp)
    rows = trial_rows(exp)
    out = []
    for values, group in rows.groupby(keys, dropna=False, sort=True) if keys else [((), rows)]:
        values = values if isinstance(values, tuple) else (values,)
        row = {ex.word(k, "sweep"): v for k, v in zip(keys, values)}
        for metric in ("val_acc", "test_acc"):
            mean, half, n = ex.cell(group[metric])
            row.update({f"{metric}_mean": mean, f"{metric}_ci": half, f"{metric}_n": n})
        row["trials"] = group["run"].nunique()
        out.append(row)
    frame = pd.DataFrame(out).sort_values("val_acc_mean", ascending=False, kind="stable").reset_index(drop=True)
    return frame, keys


def setting_rows(exp: ex.Experiment, keys: list[str], setting: pd.Series) -> pd.DataFrame:
    rows = trial_rows(exp)
    for key in keys:
        rows = rows[rows[key].astype(str) == str(setting[ex.word(key, "sweep")])]
    return rows


def best_rows(exp: ex.Experiment) -> pd.DataFrame:
    """The trial rows of the setting with the best mean validation accuracy."""
    frame, keys = settings_table(exp)
    return setting_rows(exp, keys, frame.iloc[0]) if len(frame) else trial_rows(exp)


def describe(setting: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{ex.word(k, 'sweep')} = {setting[ex.word(k, 'sweep')]}" for k in keys) or "the one setting"


def headline(exp: ex.Experiment) -> pd.DataFrame:
    """The rows an experiment is about: a sweep's best setting, else what its kind's View names
    (the KD student or the model, the last born-again generation, the distilled students, ...)."""
    if exp.kind == "sweep":
        return best_rows(exp)
    return exp.view.headline_rows(exp.rows)
