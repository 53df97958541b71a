"""The page of one Ray Tune sweep: its own trials only, per searched setting.

A setting is one combination of the searched keys (sweep.json's trial params, seeds left
out); its figures are means over that setting's trials (one seed each) with n. The best
setting is the one with the best mean validation accuracy; it is paired by seed against the
runner-up. With ASHA or PBT, a table says which trials stopped after how many epochs.
"""

from __future__ import annotations

import math

import pandas as pd

from . import experiments as ex
from .labels import distilled_rows
from .page import Figure, Para, Table
from .views import Context, comparison_row, comparison_table, in_words, paired


def searched_keys(exp: ex.Experiment) -> list[str]:
    """The cfg.* columns of the sweep's searched keys (sweep.json params), else those that vary."""
    sweep = ex.read_sweep(exp)
    keys = []
    for trial in sweep.get("trials") or []:
        for key in (trial.get("params") or {}):
            column = f"cfg.{key}"
            if key != "seeds" and column in exp.rows.columns and column not in keys:
                keys.append(column)
    return keys or [c for c in ex.varying(exp.rows) if c != "cfg.seeds"]


def _trial_rows(exp: ex.Experiment) -> pd.DataFrame:
    rows = distilled_rows(exp.rows)
    return rows[pd.to_numeric(rows["val_acc"], errors="coerce").notna()]


def settings_table(exp: ex.Experiment) -> tuple[pd.DataFrame, list[str]]:
    """One row per setting of the searched keys: val and test accuracy (mean, half-width, n), best first."""
    keys = searched_keys(exp)
    rows = _trial_rows(exp)
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


def _setting_rows(exp: ex.Experiment, keys: list[str], setting: pd.Series) -> pd.DataFrame:
    rows = _trial_rows(exp)
    for key in keys:
        rows = rows[rows[key].astype(str) == str(setting[ex.word(key, "sweep")])]
    return rows


def best_rows(exp: ex.Experiment) -> pd.DataFrame:
    """The distilled rows of the setting with the best mean validation accuracy."""
    frame, keys = settings_table(exp)
    return _setting_rows(exp, keys, frame.iloc[0]) if len(frame) else _trial_rows(exp)


def _describe(setting: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{ex.word(k, 'sweep')} = {setting[ex.word(k, 'sweep')]}" for k in keys) or "the one setting"


def sweep_view(exp: ex.Experiment, context: Context) -> list:
    sweep = ex.read_sweep(exp)
    frame, keys = settings_table(exp)
    words = [ex.word(k, "sweep") for k in keys]
    shown = frame[words].copy()
    for metric, title in (("val_acc", "val acc %"), ("test_acc", "test acc %")):
        shown[title] = [ex.text(r[f"{metric}_mean"], r[f"{metric}_ci"], int(r[f"{metric}_n"]))
                        for _, r in frame.iterrows()]
    roles = ", ".join(sorted(set(_trial_rows(exp)["role"])))
    trials = exp.rows["run"].nunique()
    blocks = [Para(f"{trials} trials ({sweep.get('scheduler', 'fifo')} scheduler); each setting's figures are the "
                   f"means over its own trials ({roles} rows, one seed per trial), best validation accuracy first. "
                   f"Searched: {', '.join(f'`{w}`' for w in words) or 'nothing'}."),
              Table(shown, frame, f"{exp.slug}-settings.csv")]
    if len(frame) > 1:
        best, second = frame.iloc[0], frame.iloc[1]
        a, b = _setting_rows(exp, keys, best), _setting_rows(exp, keys, second)
        items = [comparison_row("best − runner-up, validation acc (the selection metric)", paired(a, b, "val_acc")),
                 comparison_row("best − runner-up, test acc", paired(a, b, "test_acc"))]
        blocks += [Para(f"Best setting: {_describe(best, keys)}; runner-up: {_describe(second, keys)}. "
                        f"Their paired difference (by seed):"),
                   comparison_table(items, f"{exp.slug}-best-vs-runner-up.csv")]
        verdict = in_words(paired(a, b, "val_acc"))
        if verdict != "higher":
            blocks.append(Para(f"On validation the best and the runner-up are {verdict}: more seeds would be "
                               f"needed to choose between them."))
    blocks += _stopped(sweep, keys)
    if context.plots is not None and keys:
        blocks += _figures(exp, context, keys)
    return blocks


def _figures(exp: ex.Experiment, context: Context, keys: list[str]) -> list:
    rows = _trial_rows(exp)
    t_key, a_key = "cfg.distill.temperature", "cfg.distill.alpha"
    if t_key in keys and a_key in keys:
        path = context.plots.sweep_heatmap(rows, context.figure(exp, "heatmap"))
        if path is not None:
            return [Figure(path, f"Mean validation accuracy (%) over T x alpha, this sweep's "
                                 f"{rows['run'].nunique()} trials only; n = trials (seeds) per cell")]
    path = context.plots.marginals(rows, keys, [ex.word(k, "sweep") for k in keys], context.figure(exp, "marginals"))
    return [Figure(path, "Mean validation accuracy (%) against each searched key, averaged over the other keys "
                         "(95% CI, n trials per point)")]


def _stopped(sweep: dict, keys: list[str]) -> list:
    """ASHA/PBT: which trials stopped when (from sweep.json)."""
    trials = sweep.get("trials") or []
    early = sweep.get("scheduler") in ("asha", "pbt") or any(t.get("status") == "stopped" for t in trials)
    if not trials or not early:
        return []
    rows = []
    for t in sorted(trials, key=lambda t: (t.get("epochs") or 0, str(t.get("trial")))):
        params = t.get("params") or {}
        best = t.get("best_val_acc")
        rows.append({"trial": t.get("trial"),
                     **{ex.word(k, "sweep"): params.get(k[4:]) for k in keys},
                     "seed": params.get("seeds"), "status": t.get("status"), "epochs": t.get("epochs"),
                     "best val acc %": "" if best is None or not math.isfinite(best) else f"{100 * best:.1f}",
                     "reason": t.get("reason") or ""})
    frame = pd.DataFrame(rows)
    return [Para(f"Trials by the epoch they ended at ({sweep.get('scheduler')} scheduler): `stopped` means the "
                 f"scheduler ended the trial early."), Table(frame, frame, "")]
