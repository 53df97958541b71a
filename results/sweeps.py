"""The page of one Ray Tune sweep: its own trials only, per searched setting.

A setting is one combination of the searched keys (`results.settings`); its figures are
means over that setting's trials (one seed each) with n. The best setting is the one with
the best mean validation accuracy; it is paired by seed against the runner-up, and the page
says that both were chosen on the very trials they are tested on (the best's lead is biased
upward). Where the sweep has at least MIN_SPLIT_SEEDS seeds, the choice is confirmed on seeds
it did not see: the best and runner-up chosen on the first half of the seeds' validation
accuracy, compared on the other half (validation and test), paired by seed. A teacher
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
from .settings import describe, setting_rows, setting_text, settings_table, trial_rows
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
                        f"Their paired difference (by seed). Both were selected on these same trials' validation "
                        f"accuracy, so the best's lead here is biased upward (it won a comparison among "
                        f"{len(frame)} settings on this data) and its p is no fresh test:"),
                   comparison_table(items, f"{exp.slug}-best-vs-runner-up.csv")]
        verdict = in_words(paired(a, b, "val_acc"))
        if verdict != "higher":
            blocks.append(Para(f"On validation the best and the runner-up are {verdict}: more seeds would be "
                               f"needed to choose between them."))
        blocks += held_out(exp, keys)
    blocks += _stopped(sweep, keys)
    if context.plots is not None and keys:
        blocks += _figures(exp, context, keys)
    return blocks + capacity_blocks(exp, context) + methods_blocks(exp, context)


MIN_SPLIT_SEEDS = 4  # 2 seeds to choose on, 2 to confirm on at least


def held_out(exp: ex.Experiment, keys: list[str]) -> list:
    """The best and runner-up chosen on the first half of the seeds (validation), compared on the rest."""
    rows = trial_rows(exp)
    seeds = sorted(rows["seed"].dropna().unique())
    if len(seeds) < MIN_SPLIT_SEEDS or not keys:
        return [Para(f"Not confirmed on held-out seeds: the sweep has {len(seeds)} seed(s), too few to choose on "
                     f"some and test on others ({MIN_SPLIT_SEEDS} at least); run it with more seeds to check the "
                     f"choice on data it was not made on.")]
    chose, check = seeds[:len(seeds) // 2], seeds[len(seeds) // 2:]
    on = rows[rows["seed"].isin(chose)].groupby(keys, dropna=False)["val_acc"].mean().sort_values(ascending=False)
    if len(on) < 2:
        return []
    held = rows[rows["seed"].isin(check)]
    picked = []
    for values in on.index[:2]:
        values = values if isinstance(values, tuple) else (values,)
        mask = pd.Series(True, index=held.index)
        for key, value in zip(keys, values):
            mask &= held[key].astype(str) == str(value)
        picked.append((setting_text(keys, values), held[mask]))
    (best, a), (second, b) = picked
    items = [comparison_row("best − runner-up, validation acc", paired(a, b, "val_acc")),
             comparison_row("best − runner-up, test acc", paired(a, b, "test_acc"))]
    names = ", ".join(str(_plain(s)) for s in chose)
    return [Para(f"Confirmed on held-out seeds: chosen on the validation accuracy of seeds {names} only, the best "
                 f"setting is {best} and the runner-up {second}; on the other seeds "
                 f"({', '.join(str(_plain(s)) for s in check)}), which the choice did not see, their paired "
                 f"difference is:"),
            comparison_table(items, f"{exp.slug}-held-out-seeds.csv")]


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
