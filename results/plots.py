"""Plots of loaded runs, each saved as a PNG; every function returns the file it wrote.

    import results
    results.plots.learning_curves(results.load_records("runs/"), "report/curves.png")
    results.plots.accuracy(results.load("runs/"), "report/accuracy.png")
    results.plots.sweep_heatmap(results.load("sweeps/"), "report/heatmap.png")

Bands and error bars are the same Student-t 95% intervals over seeds as the tables
(`results.stats.mean_ci`), not seaborn's bootstrap, so plots and tables agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .labels import ROLE_ORDER, distilled_rows, model_label, sweep_columns  # noqa: E402
from .stats import is_fraction_metric, mean_ci  # noqa: E402


def _labels(df: pd.DataFrame) -> pd.Series:
    several = "experiment" in df.columns and df["experiment"].nunique() > 1
    return df.apply(lambda r: model_label(r, several), axis=1)


def _save(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def learning_curves(records: pd.DataFrame, out, split: str = "val", metric: str = "acc") -> Path:
    """`metric` on `split` by epoch: one line per role/generation (members pooled), mean and
    95% t band over seeds; the legend gives each line's n (seeds x members at epoch 1)."""
    rows = records[records["split"] == split].copy()
    if rows.empty:
        raise ValueError(f"no {split} records to plot")
    rows["model"] = _labels(rows)
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = sns.color_palette(n_colors=rows["model"].nunique())
    for colour, (label, group) in zip(palette, rows.groupby("model", sort=True)):
        stats = [(epoch, *mean_ci(pd.to_numeric(g[metric], errors="coerce") * scale))
                 for epoch, g in group.groupby("epoch", sort=True)]
        epochs, means, lows, highs, ns = (np.array(v, dtype=float) for v in zip(*stats))
        ax.plot(epochs, means, color=colour, label=f"{label} (n={int(ns[0])})")
        if np.isfinite(lows).any():
            ax.fill_between(epochs, lows, highs, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{split} {metric}{' (%)' if scale != 1 else ''}")
    ax.set_title(f"{split} {metric} by epoch: mean and 95% CI over seeds")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def accuracy(df: pd.DataFrame, out, metric: str = "test_acc") -> Path:
    """Mean `metric` per model kind (role/generation/size) with 95% t intervals over seeds."""
    rows = df[pd.to_numeric(df[metric], errors="coerce").notna()].copy()
    if rows.empty:
        raise ValueError(f"no {metric} values to plot")
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    rows["value"] = pd.to_numeric(rows[metric]) * scale
    rows["model"] = _labels(rows.drop(columns="experiment", errors="ignore"))
    has_experiments = "experiment" in rows.columns and rows["experiment"].nunique() > 1

    def interval(values):
        mean, low, high, _ = mean_ci(values)
        return (mean, mean) if not math.isfinite(low) else (low, high)

    rank = rows["role"].map(lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER))
    sort_keys = [c for c in ("generation", "size") if c in rows.columns]
    ordered = rows.assign(_rank=rank).sort_values(["_rank", *sort_keys, "model"], na_position="first")
    order = list(dict.fromkeys(ordered["model"]))
    counts = rows.groupby("model")["value"].count()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(order) + 2), 4.5))
    sns.pointplot(data=rows, x="model", y="value", order=order, hue="experiment" if has_experiments else None,
                  errorbar=interval, capsize=0.2, linestyle="none", dodge=0.3 if has_experiments else False, ax=ax)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f"{m}\n(n={counts[m]})" for m in order], rotation=30, ha="right", fontsize="small")
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric}{' (%)' if scale != 1 else ''}")
    ax.set_title(f"{metric}: mean and 95% CI over seeds")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def sweep_heatmap(df: pd.DataFrame, out, metric: str = "val_acc") -> Optional[Path]:
    """Mean `metric` over temperature x alpha (cells annotated with mean and n); None
    if the runs do not vary both distill.temperature and distill.alpha."""
    keys = sweep_columns(df)
    if keys is None:
        return None
    t_key, a_key = keys
    rows = distilled_rows(df).copy()
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    rows["value"] = pd.to_numeric(rows[metric], errors="coerce") * scale
    rows = rows.dropna(subset=["value", t_key, a_key])
    if rows.empty:
        return None
    grid = rows.groupby([t_key, a_key])["value"].agg(["mean", "count"]).reset_index()
    means = grid.pivot(index=t_key, columns=a_key, values="mean").sort_index(ascending=False)
    counts = grid.pivot(index=t_key, columns=a_key, values="count").reindex_like(means)
    notes = np.array([[f"{m:.1f}\nn={int(c)}" if np.isfinite(m) else "" for m, c in zip(mr, cr)]
                      for mr, cr in zip(means.to_numpy(float), counts.fillna(0).to_numpy(float))])
    fig, ax = plt.subplots(figsize=(1.3 * means.shape[1] + 2.5, 1.0 * means.shape[0] + 1.8))
    sns.heatmap(means, annot=notes, fmt="", cmap="viridis", ax=ax,
                cbar_kws={"label": f"mean {metric}{' (%)' if scale != 1 else ''}"})
    ax.set_xlabel("alpha")
    ax.set_ylabel("temperature T")
    ax.set_title(f"mean {metric} over T x alpha (n seeds per cell)")
    return _save(fig, out)
