"""The page of one Ray Tune sweep: its own trials only, per searched setting.

A setting is one combination of the searched keys (`results.settings`); its figures are
means over that setting's trials (one seed each) with n. The best setting is the one with
the best mean validation accuracy; it is paired by seed against the runner-up. A teacher
the sweep trained once for every trial is shown as the teacher, apart from the trials.
With ASHA or PBT, a table says which trials stopped after how many epochs. A sweep over
the student's size crossed with distill.method, `labels` among the methods, gets a "Capacity
curve" section (`results.capacity`); a sweep over distill.method with `labels` among the methods a
"Methods against labels" section (`results.methods`), Holm-adjusted over the methods.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import experiments as ex
from .capacity import capacity_blocks
from .methods import methods_blocks
from .page import Figure, Para, Table
from .settings import describe, setting_rows, settings_table, trial_rows
from .views import Context, comparison_row, comparison_table, figure_table, grouped, in_words, paired, paper_note


def sweep_view(exp: ex.Experiment, context: Context) -> list:
    sweep = ex.read_sweep(exp)
    frame, keys = settings_table(exp)
    words = [ex.word(k, "sweep") for k in keys]
    shown = frame[words].copy()
    for metric, title in (("val_acc", "val acc %"), ("test_acc", "test acc %")):
        shown[title] = [ex.text(r[f"{metric}_mean"], r[f"{metric}_ci"], int(r[f"{metric}_n"]), bounds=ex.ACC)
                        for _, r in frame.iterrows()]
    if context.paper:  # the published figure of the models the trials are about, where one maps
        papers = [ex.paper_value(context.paper, rows.iloc[0]) if len(rows) else math.nan
                  for rows in (setting_rows(exp, keys, r) for _, r in frame.iterrows())]
        if any(not math.isnan(p) for p in papers):
            shown["paper"] = ["" if math.isnan(p) else f"{p:g}" for p in papers]
            frame = frame.assign(paper=papers)
    roles = ", ".join(sorted(set(trial_rows(exp)["role"])))
    trials = len(exp.trials)
    blocks = [Para(f"{trials} trials ({sweep.get('scheduler', 'fifo')} scheduler); each setting's figures are the "
                   f"means over its own trials ({roles} rows, one seed per trial), best validation accuracy first. "
                   f"Searched: {', '.join(f'`{w}`' for w in words) or 'nothing'}."),
              Table(shown, frame, f"{exp.slug}-settings.csv")]
    paper_note(context, blocks, shown)
    blocks += _teachers(exp, context)
    if len(frame) > 1:
        best, second = frame.iloc[0], frame.iloc[1]
        a, b = setting_rows(exp, keys, best), setting_rows(exp, keys, second)
        items = [comparison_row("best − runner-up, validation acc (the selection metric)", paired(a, b, "val_acc")),
                 comparison_row("best − runner-up, test acc", paired(a, b, "test_acc"))]
        blocks += [Para(f"Best setting: {describe(best, keys)}; runner-up: {describe(second, keys)}. "
                        f"Their paired difference (by seed):"),
                   comparison_table(items, f"{exp.slug}-best-vs-runner-up.csv")]
        verdict = in_words(paired(a, b, "val_acc"))
        if verdict != "higher":
            blocks.append(Para(f"On validation the best and the runner-up are {verdict}: more seeds would be "
                               f"needed to choose between them."))
    blocks += _stopped(sweep, keys)
    if context.plots is not None and keys:
        blocks += _figures(exp, context, keys)
    return blocks + capacity_blocks(exp, context) + methods_blocks(exp, context)


def _teachers(exp: ex.Experiment, context: Context) -> list:
    """The teacher the sweep trained once (per seed) for every trial, as its own table."""
    teachers = exp.rows[exp.rows["run"].isin(exp.teachers)]
    if teachers.empty:
        return []
    shown, numbers = figure_table(grouped(teachers), context.paper)
    runs = ", ".join(f"`{Path(r).name}`" for r in exp.teachers)
    blocks = [Para(f"The teacher, trained once per seed from labels (run {runs}) and read by every trial; it is "
                   f"no trial:"), Table(shown, numbers, f"{exp.slug}-teacher.csv")]
    paper_note(context, blocks, shown)
    return blocks


def _figures(exp: ex.Experiment, context: Context, keys: list[str]) -> list:
    rows = trial_rows(exp)
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
