"""Plots of loaded runs, each saved as a PNG; every function returns the file it wrote.

    import results
    results.plots.learning_curves(results.load_records("runs/"), "report/curves.png")
    results.plots.sweep_heatmap(one_sweeps_rows, "report/heatmap.png")
    results.plots.generations(born_again_rows, "report/generations.png")
    results.plots.size_curve(ensemble_rows, "report/size.png")
    results.plots.capacity_curve(student_rows, teacher_rows, "report/capacity.png")

Bands and error bars are the same Student-t 95% intervals over seeds as the tables
(`results.stats.mean_ci`), not seaborn's bootstrap, so plots and tables agree; like the tables'
they are clipped to what the quantity can take (`results.stats.limits`: an accuracy to [0, 100] %),
and a legend entry whose interval comes from 2 seeds says so ("n=2, wide").
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
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

from .labels import distilled_rows, model_label, sweep_columns  # noqa: E402
from .stats import WIDE, clip, compare, is_fraction_metric, limits, mean_ci  # noqa: E402


def _ci(values, metric: str = "test_acc") -> tuple[float, float, float, int]:
    """mean_ci of `values` (already scaled to % for a fraction metric), the interval clipped to `metric`'s limits."""
    mean, low, high, n = mean_ci(values)
    low, high = clip(low, high, limits(metric))
    return mean, low, high, n


def _n(n: int, what: str = "seeds") -> str:
    """'n=3 seeds'; 'n=2 seeds, wide' (a 2-seed t-interval is 12.7 standard errors each side)."""
    return f"n={n}" + (f" {what}" if what else "") + (", wide" if 1 < n <= WIDE else "")


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
    if "model" not in rows.columns:
        rows["model"] = _labels(rows)
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = sns.color_palette(n_colors=rows["model"].nunique())
    for colour, (label, group) in zip(palette, rows.groupby("model", sort=True)):
        stats = [(epoch, *_ci(pd.to_numeric(g[metric], errors="coerce") * scale, f"{split}_{metric}"))
                 for epoch, g in group.groupby("epoch", sort=True)]
        epochs, means, lows, highs, ns = (np.array(v, dtype=float) for v in zip(*stats))
        ax.plot(epochs, means, color=colour, label=f"{label} ({_n(int(ns[0]), '')})")
        if np.isfinite(lows).any():
            ax.fill_between(epochs, lows, highs, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    what = {"val": "validation", "test": "test", "train": "training"}.get(split, split)
    measure = {"acc": "accuracy", "nll": "NLL", "ece": "ECE", "loss": "loss"}.get(metric, metric)
    ax.set_ylabel(f"{what} {measure}{' (%)' if scale != 1 else ''}")
    ax.set_title(f"{what.capitalize()} {measure} by epoch: mean and 95% CI over seeds")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def _one_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a single sweep: runs outside a sweep never enter a sweep's cells."""
    if "sweep" not in df.columns or df["sweep"].isna().all():
        return df
    trials = df[df["sweep"].notna()]
    if trials["sweep"].nunique() > 1:
        raise ValueError("rows of several sweeps given: pass one sweep's rows")
    return trials


def heatmap_cells(df: pd.DataFrame, metric: str = "val_acc") -> Optional[tuple[pd.DataFrame, pd.DataFrame]]:
    """(means, counts): T x alpha pivots of `metric` (%) over one sweep's distilled rows, or None."""
    df = _one_sweep(df)
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
    return means, counts


def heatmap_marks(df: pd.DataFrame, means: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """Per T x alpha cell: "best" (the best mean), "same" (not separable from the best: the paired-by-seed
    95% interval of cell - best includes 0, or fewer than 2 seeds pair), "" (separably worse or better)."""
    t_key, a_key = sweep_columns(_one_sweep(df))
    rows = distilled_rows(_one_sweep(df))
    best = np.unravel_index(np.nanargmax(means.to_numpy(float)), means.shape)
    best_t, best_a = means.index[best[0]], means.columns[best[1]]
    best_mask = (rows[t_key] == best_t) & (rows[a_key] == best_a)
    marks = pd.DataFrame("", index=means.index, columns=means.columns)
    for t in means.index:
        for a in means.columns:
            if (t, a) == (best_t, best_a):
                marks.loc[t, a] = "best"
            elif np.isfinite(means.loc[t, a]):
                c = compare(rows, (rows[t_key] == t) & (rows[a_key] == a), best_mask, metric)
                marks.loc[t, a] = "same" if c.n < 2 or not (c.high < 0 or c.low > 0) else ""
    return marks


def sweep_heatmap(df: pd.DataFrame, out, metric: str = "val_acc") -> Optional[Path]:
    """Mean `metric` over temperature x alpha of one sweep's trials, each cell annotated with its mean and
    n; the colour is the difference from the best cell on a diverging scale centred on the best, and each
    cell not separable from the best (paired by seed) is hatched and marked "≈", the best "★". None if the
    rows do not vary both distill.temperature and distill.alpha."""
    cells = heatmap_cells(df, metric)
    if cells is None:
        return None
    means, counts = cells
    marks = heatmap_marks(df, means, metric)
    symbol = {"best": "★ ", "same": "≈ ", "": ""}
    notes = np.array([[f"{symbol[k]}{m:.1f}\nn={int(c)}" if np.isfinite(m) else "" for m, c, k in zip(mr, cr, kr)]
                      for mr, cr, kr in zip(means.to_numpy(float), counts.fillna(0).to_numpy(float),
                                            marks.to_numpy())])
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    unit = " (points)" if scale != 1 else ""
    below = means - np.nanmax(means.to_numpy(float))
    reach = max(float(np.nanmax(np.abs(below.to_numpy(float)))), 1e-9)
    fig, ax = plt.subplots(figsize=(1.3 * means.shape[1] + 3.0, 1.0 * means.shape[0] + 2.4))
    sns.heatmap(below, annot=notes, fmt="", cmap="RdBu_r", center=0.0, vmin=-reach, vmax=reach, ax=ax,
                cbar_kws={"label": f"mean {_words(metric)} − the best's{unit}"})
    for i, t in enumerate(means.index):
        for j, a in enumerate(means.columns):
            if marks.loc[t, a] == "same":
                ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="0.35", linewidth=0))
    ax.set_xlabel("alpha (weight of the soft-target term)")
    ax.set_ylabel("temperature T")
    ax.set_title(f"Mean {_words(metric)} over T x alpha (n = trials per cell)")
    fig.text(0.01, -0.02, "★ best cell;  ≈ and hatched: not separable from the best (paired by seed, 95% CI of the "
                          "difference includes 0, or fewer than 2 seeds pair)", fontsize="small", ha="left", va="top")
    return _save(fig, out)


def _words(metric: str) -> str:
    return {"val_acc": "validation accuracy", "test_acc": "test accuracy"}.get(metric, metric)


def _interval(ax, x, values, colour, label, **style):
    """One point with its 95% t interval; returns (mean, low, high, n)."""
    mean, low, high, n = _ci(values)
    if math.isfinite(low):
        ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color=colour, capsize=4, fmt="o",
                    label=label, **style)
    else:
        ax.plot([x], [mean], "o", color=colour, label=label, **style)
    return mean, low, high, n


def generations(df: pd.DataFrame, out) -> Path:
    """Born-again chain: test accuracy per generation (0 = teacher) with 95% CIs, and the
    Ens x k line (the ensemble of generations 1..k plotted at x = k)."""
    gens = df[df["role"] == "generation"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = sns.color_palette(n_colors=2)
    stats = [(g, *_ci(rows["test_acc"].astype(float) * 100)) for g, rows in gens.groupby("generation")]
    x, means, lows, highs, ns = (np.array(v, dtype=float) for v in zip(*stats))
    ax.errorbar(x, means, yerr=[means - np.where(np.isfinite(lows), lows, means),
                                np.where(np.isfinite(highs), highs, means) - means],
                color=colours[0], marker="o", capsize=4, label=f"generation g ({_n(int(ns.max()))})")
    ens = df[(df["role"] == "ensemble") & df["name"].astype(str).str.startswith("ens_1..")]
    if not ens.empty:
        stats = [(g, *_ci(rows["test_acc"].astype(float) * 100)) for g, rows in ens.groupby("generation")]
        ex, em, el, eh, en = (np.array(v, dtype=float) for v in zip(*stats))
        ax.errorbar(ex, em, yerr=[em - np.where(np.isfinite(el), el, em), np.where(np.isfinite(eh), eh, em) - em],
                    color=colours[1], marker="s", linestyle="--", capsize=4,
                    label=f"Ens x k: generations 1..k ({_n(int(en.max()))})")
    ax.set_xlabel("generation (0 = teacher trained from labels)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Born-again generations: test accuracy, mean and 95% CI over seeds")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def size_curve(df: pd.DataFrame, out) -> Path:
    """Ensemble collapse: test accuracy against ensemble size k, each combination as markers with 95%
    error bars, dodged sideways so that they do not cover each other (no bands); the mean member and
    each distilled student as horizontal lines, a student's 95% interval as an error bar at the right."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ens = df[df["role"] == "ensemble"]
    students = df[df["role"] == "student"]
    groups = list(ens.groupby("combine")) if not ens.empty else []
    student_groups = list(students.groupby(["name", "combine"], dropna=False)) if not students.empty else []
    colours = sns.color_palette(n_colors=max(1, len(groups) + len(student_groups)))
    markers = "osD^vP*X"
    width = 0.5  # the dodge spread within one k
    sizes = sorted(pd.to_numeric(ens["size"], errors="coerce").dropna().unique()) if len(ens) else [1]
    for i, (colour, (combine, rows)) in enumerate(zip(colours, groups)):
        shift = (i - (len(groups) - 1) / 2) * width / max(1, len(groups))
        stats = [(k, *_ci(r["test_acc"].astype(float) * 100)) for k, r in rows.groupby("size")]
        k, means, lows, highs, ns = (np.array(v, dtype=float) for v in zip(*stats))
        errors = [means - np.where(np.isfinite(lows), lows, means), np.where(np.isfinite(highs), highs, means) - means]
        ax.errorbar(k + shift, means, yerr=errors, color=colour, marker=markers[i % len(markers)], linestyle="-",
                    linewidth=1, capsize=3, label=f"ensemble, {combine} ({_n(int(ns.max()))})")
    members = df[df["role"] == "member"].groupby("seed")["test_acc"].mean() * 100
    if len(members):
        ax.axhline(members.mean(), color="black", linestyle="--", linewidth=1,
                   label=f"mean member ({_n(len(members))})")
    right = max(sizes) + 0.6
    for j, (colour, ((name, combine), rows)) in enumerate(zip(colours[len(groups):], student_groups)):
        mean, low, high, n = _ci(rows.groupby("seed")["test_acc"].mean().astype(float) * 100)
        tag = f", {combine}" if isinstance(combine, str) else ""
        ax.axhline(mean, color=colour, linestyle=":", linewidth=1)
        x = right + 0.15 * j
        if math.isfinite(low):
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color=colour, marker="_", capsize=3)
        ax.plot([x], [mean], marker="_", color=colour, linestyle=":", label=f"student {name}{tag} ({_n(n)})")
    ax.set_xlabel("ensemble size k (members combined); students' intervals at the right")
    ax.set_xticks(sizes)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Ensemble size curve: mean and 95% CI over seeds")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    return _save(fig, out)


def marginals(rows: pd.DataFrame, keys: list[str], names: list[str], out, metric: str = "val_acc") -> Path:
    """One panel per searched key: mean `metric` (%) at each value, over the other keys, 95% CI and n."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key, name in zip(axes[0], keys, names):
        values = rows.dropna(subset=[key])
        order = sorted(values[key].unique(), key=lambda v: (not isinstance(v, (int, float)), v))
        for i, value in enumerate(order):
            group = pd.to_numeric(values.loc[values[key] == value, metric], errors="coerce") * 100
            _interval(ax, i, group.tolist(), "tab:blue", None)
            ax.annotate(f"n={group.notna().sum()}", (i, group.mean()), textcoords="offset points", xytext=(6, 4),
                        fontsize="small")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in order])
        ax.set_xlabel(name)
        ax.set_ylabel(f"{_words(metric)} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Mean {_words(metric)} per searched value (95% CI over trials)")
    return _save(fig, out)


def accuracy_vs_flops(costs: pd.DataFrame, out) -> Path:
    """Test accuracy (%) against FLOPs (log x), one point per model kind, the Pareto front marked."""
    points = costs.dropna(subset=["flops", "test_acc_mean"]).sort_values("flops")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=points, x="flops", y="test_acc_mean", hue="model", s=70, ax=ax)
    front, best = [], -math.inf
    for _, point in points.iterrows():
        if point["test_acc_mean"] > best:
            front.append(point)
            best = point["test_acc_mean"]
    if front:
        ax.step([p["flops"] for p in front], [p["test_acc_mean"] for p in front], where="post", color="black",
                linestyle="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per example (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against compute")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)


def accuracy_vs_agreement(rows: pd.DataFrame, out) -> Path:
    """Test accuracy (%) against test top-1 agreement with the teacher (%), one point per row (a model
    and seed), coloured by the rows' `colour` column (method or model kind)."""
    points = rows.assign(agreement=pd.to_numeric(rows["test_agreement"], errors="coerce") * 100,
                         accuracy=pd.to_numeric(rows["test_acc"], errors="coerce") * 100)
    points = points.dropna(subset=["agreement", "accuracy"]).sort_values("colour", kind="stable")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=points, x="agreement", y="accuracy", hue="colour", style="colour", s=50, ax=ax)
    ax.set_xlabel("test agreement with the teacher (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against fidelity (one point per model and seed)")
    ax.legend(fontsize="small", title=None)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def capacity_curve(rows: pd.DataFrame, teachers: pd.DataFrame, out, sizes: Optional[list[str]] = None,
                   method: str = "cfg.distill.method", metric: str = "test_acc") -> Path:
    """The capacity curve of a sweep: `metric` (%) against the student's parameters (log x), one line
    and 95% band over seeds per method (`method` column), the teacher's mean as a horizontal line.
    The x ticks are the sizes, named by the `sizes` columns (e.g. cfg.model.width) when given."""
    scale = 100.0 if is_fraction_metric(metric) else 1.0
    points = rows.assign(_x=pd.to_numeric(rows["params"], errors="coerce"),
                         _y=pd.to_numeric(rows[metric], errors="coerce") * scale).dropna(subset=["_x"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    methods = sorted(points[method].astype(str).unique(), key=lambda m: (m == "labels", m))
    colours = sns.color_palette(n_colors=len(methods) + 1)
    for colour, name in zip(colours, methods):
        group = points[points[method].astype(str) == name]
        stats = [(x, *_ci(g["_y"].tolist(), metric)) for x, g in group.groupby("_x", sort=True)]
        x, means, lows, highs, ns = (np.array(v, dtype=float) for v in zip(*stats))
        label = f"student from labels ({name})" if name == "labels" else f"student, {name}"
        label += f" ({_n(int(ns.max()), 'seeds per size')})"
        ax.plot(x, means, marker="o", color=colour, linestyle="--" if name == "labels" else "-", label=label)
        if np.isfinite(lows).any():
            ax.fill_between(x, lows, highs, color=colour, alpha=0.2, linewidth=0)
    if len(teachers):
        values = pd.to_numeric(teachers[metric], errors="coerce") * scale
        ax.axhline(values.mean(), color="black", linestyle=":",
                   label=f"teacher {teachers['name'].iloc[0]} (n={values.notna().sum()} seeds)")
    ax.set_xscale("log")
    ticks = sorted(points["_x"].unique())
    if sizes:
        names = {x: ", ".join(f"{c.split('.')[-1]}={_tick(g[c].iloc[0])}" for c in sizes)
                 for x, g in points.groupby("_x")}
        ax.set_xticks(ticks, [f"{x:,.0f}\n{names[x]}" for x in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("student parameters (log scale)")
    ax.set_ylabel(f"{_words(metric)}{' (%)' if scale != 1 else ''}")
    ax.set_title(f"Capacity curve: {_words(metric)}, mean and 95% CI over seeds")
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)


def _tick(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
