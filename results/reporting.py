"""One comparison page from finished runs: tables with 95% CIs, plots, paired comparisons.

    distill report runs/mnist1d-mlp runs/sweep --out report
    # or: results.report(["runs/"], "report") -> report/report.md

Writes into `out/`: models.csv (the frame of `results.load`), records.csv (when any),
table.md (grouped mean ± CI), accuracy.png, learning_curves.png (from records.csv),
heatmap.png (T x alpha sweeps only) and report.md, the page that links them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import pandas as pd

from . import labels
from .load import PathLike, load, load_records
from .stats import GROUP_COLUMNS, compare, default_groups, format_table, format_value, table

METRICS = ["test_acc", "val_acc", "test_acc_last", "test_nll", "test_ece"]

SELECTION_RULE = ("Model selection uses the validation split only: each model's test figures "
                  "(test_acc, test_nll, test_ece) are taken at `selected_epoch`, the epoch with the best "
                  "validation accuracy (ties: lower validation NLL, then the earlier epoch). "
                  "`test_acc_last` is the last epoch, for reference; test figures never choose anything.")

# config keys that differ between runs without making them different experiments
_NOT_HYPERPARAMETERS = ("cfg.seeds", "cfg.run_id", "cfg.train.seed", "cfg.train.device", "cfg.train.threads",
                        "cfg.dataset.root", "cfg.dataset.download", "cfg.tune.", "cfg.search.")


def varying_config(df: pd.DataFrame) -> list[str]:
    """cfg.* columns whose value differs between runs of one experiment (e.g. a sweep's T and alpha)."""
    varying = []
    for column in df.columns:
        if not column.startswith("cfg.") or column.startswith(_NOT_HYPERPARAMETERS):
            continue
        per_experiment = df.groupby("experiment")[column].nunique(dropna=False)
        if (per_experiment > 1).any():
            varying.append(column)
    return varying


def group_columns(df: pd.DataFrame) -> list[str]:
    """experiment, role, name, generation, member, size, combine (those present), then the
    hyperparameters that vary inside an experiment, so sweep trials are not pooled."""
    return default_groups(df) + varying_config(df)


def _baseline_mask(rows: pd.DataFrame) -> tuple[Optional[pd.Series], str]:
    roles = set(rows["role"].dropna())
    if "teacher" in roles:
        return rows["role"] == "teacher", "teacher"
    if "generation" in roles and (rows["generation"] == 0).any():
        return (rows["role"] == "generation") & (rows["generation"] == 0), "generation 0"
    if "member" in roles:
        return rows["role"] == "member", "member (mean of members per seed)"
    return None, ""


def comparisons(df: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Each model kind against its experiment's baseline, paired by seed within a run.

    The baseline is the teacher if there is one, else generation 0 of a born-again chain,
    else the ensemble members (averaged per seed). One row per (experiment, hyperparameter
    setting, model kind): n pairs, mean difference with its 95% CI, p value and verdict.
    """
    out = []
    settings = ["experiment"] + varying_config(df)
    kinds = [c for c in GROUP_COLUMNS if c in df.columns and c not in ("experiment", "member") and df[c].notna().any()]
    for setting, rows in df.groupby(settings, dropna=False, sort=True):
        baseline, baseline_name = _baseline_mask(rows)
        if baseline is None:
            continue
        others = rows[~baseline]
        for kind, group in others.groupby(kinds, dropna=False, sort=True) if kinds else []:
            if not group["role"].iloc[0] or group["role"].iloc[0] == "member":
                continue
            mask = rows.index.isin(group.index)
            result = compare(rows, mask, baseline.to_numpy(), metric, on=["run", "seed"])
            if result.n == 0:
                continue
            setting = setting if isinstance(setting, tuple) else (setting,)
            kind = kind if isinstance(kind, tuple) else (kind,)
            out.append({**dict(zip(settings, setting)), "model": labels.model_label(dict(zip(kinds, kind))),
                        "baseline": baseline_name, "metric": metric, "n": result.n,
                        "diff": result.diff, "low": result.low, "high": result.high,
                        "p_value": result.p_value, "verdict": result.verdict, "text": str(result)})
    return pd.DataFrame(out)


def _values(series: pd.Series) -> str:
    values = sorted({v for v in series.dropna()}, key=lambda v: (not isinstance(v, (int, float)), v))
    return ", ".join(f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v) for v in values)


def _describe_loss(df: pd.DataFrame) -> list[str]:
    """One line per experiment and loss: method, KL reduction, T^2 scaling, the T and alpha used."""
    if "loss_method" not in df.columns:
        return []
    fixed = [c for c in ("loss_method", "loss_reduction", "loss_t2_scaling") if c in df.columns]
    lines = []
    rows_with_loss = df[df["loss_method"].notna()]
    for key, rows in rows_with_loss.groupby(["experiment"] + fixed, dropna=False, sort=True):
        info = dict(zip(["experiment"] + fixed, key))
        parts = [f"method `{info['loss_method']}`"]
        if pd.notna(info.get("loss_reduction")):
            parts.append(f"reduction `{info['loss_reduction']}`")
        if pd.notna(info.get("loss_t2_scaling")):
            t2 = info["loss_t2_scaling"]
            parts.append("soft-target term scaled by T^2" if t2 is True or str(t2).lower() == "true"
                         else "no T^2 scaling")
        for column, label in (("temperature", "T"), ("alpha", "alpha")):
            if column in rows.columns and rows[column].notna().any():
                values = _values(rows[column])
                parts.append(f"{label} in {{{values}}}" if rows[column].nunique() > 1 else f"{label} = {values}")
        lines.append(f"- {info['experiment']}: " + ", ".join(parts) + f" ({rows['run'].nunique()} run(s))")
    return lines


def best_setting(df: pd.DataFrame, by: list[str]) -> Optional[str]:
    """For runs that vary hyperparameters: the setting with the best mean val_acc, and its test_acc."""
    varying = [c for c in by if c.startswith("cfg.")]
    if not varying or "val_acc" not in df.columns:
        return None
    rows = labels.distilled_rows(df)
    tbl = table(rows, by=["experiment"] + varying, metrics=["val_acc", "test_acc"])
    tbl = tbl.dropna(subset=["val_acc_mean"])
    if tbl.empty:
        return None
    best = tbl.loc[tbl["val_acc_mean"].idxmax()]
    setting = ", ".join(f"`{c[4:]}={best[c]}`" for c in varying)
    return (f"Best setting by mean validation accuracy ({best['experiment']}, {', '.join(sorted(set(rows['role'])))}"
            f" rows): {setting}: val_acc {best['val_acc_mean']:.1f}% (n={int(best['val_acc_n'])}), "
            f"test_acc {format_value(best['test_acc_mean'], best['test_acc_ci'], int(best['test_acc_n']))} "
            f"(test accuracy reported, not used to choose).")


def _markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] * len(columns)) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(row[c]) else str(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _add_paper(tbl: pd.DataFrame, paper: Union[None, float, Mapping[str, float]]) -> pd.DataFrame:
    if paper is None:
        return tbl
    tbl = tbl.copy()
    if isinstance(paper, Mapping):
        tbl["paper"] = [paper.get(role, math.nan) for role in tbl.get("role", pd.Series([None] * len(tbl)))]
    else:
        tbl["paper"] = paper
    return tbl


def report(paths: Union[PathLike, Iterable[PathLike]], out: PathLike = "report",
           paper: Union[None, float, Mapping[str, float]] = None, paper_source: str = "") -> Path:
    """Write models.csv, table.md, the plots and report.md into `out`; returns report.md's path.

    `paper`: published test accuracy in percent, one number or a dict role -> number, shown
    as a `paper` column next to the measured test_acc (used by `results.reproduce`).
    Raises `results.NoRuns` if a path holds no run.
    """
    from . import plots  # matplotlib only when a report is drawn

    out = Path(out)
    df = load(paths)
    records = load_records(paths)
    out.mkdir(parents=True, exist_ok=True)
    if paper is not None:
        df["paper"] = [paper.get(r, math.nan) if isinstance(paper, Mapping) else paper for r in df["role"]]
    df.to_csv(out / "models.csv", index=False)
    if not records.empty:
        records.to_csv(out / "records.csv", index=False)

    by = group_columns(df)
    metrics = [m for m in METRICS if m in df.columns and pd.to_numeric(df[m], errors="coerce").notna().any()]
    main = _add_paper(table(df, by=by, metrics=["test_acc"]), paper)
    full = table(df, by=by, metrics=metrics)
    table_md = ["# Tables", "",
                "Mean ± 95% Student-t confidence half-width over seeds; n = rows (seeds, or seeds x members) "
                "in each cell. Accuracies and ECE in percent.", "", SELECTION_RULE, "",
                "## test accuracy" + (" and published figure (`paper`)" if paper is not None else ""), "",
                format_table(main), "## all figures", "", format_table(full)]
    (out / "table.md").write_text("\n".join(table_md))

    figures = {}
    swept = [c for c in by if c.startswith("cfg.")]
    figures["accuracy.png"] = ("Test accuracy per model kind, mean and 95% CI over seeds"
                               + (" (pooled over the swept settings; see the tables)" if swept else ""),
                               plots.accuracy(df, out / "accuracy.png"))
    if not records.empty and (records["split"] == "val").any():
        figures["learning_curves.png"] = ("Validation accuracy by epoch, mean and 95% band over seeds",
                                          plots.learning_curves(records, out / "learning_curves.png"))
    heatmap = plots.sweep_heatmap(df, out / "heatmap.png")
    if heatmap is not None:
        figures["heatmap.png"] = ("Mean validation accuracy over temperature x alpha (selection metric)", heatmap)

    compared = comparisons(df)
    if not compared.empty:
        compared.to_csv(out / "comparisons.csv", index=False)

    page = _page(df, by, main, compared, figures, paper_source if paper is not None else "")
    path = out / "report.md"
    path.write_text(page)
    return path


def _page(df, by, main, compared, figures, paper_source) -> str:
    runs = df["run"].nunique()
    seeds = df["seed"].nunique(dropna=True) if "seed" in df.columns else 0
    experiments = ", ".join(sorted(df["experiment"].dropna().astype(str).unique()))
    lines = ["# Distillation report", "",
             f"{len(df)} evaluated models from {runs} run(s) ({experiments}); {seeds} distinct seed(s). "
             "Every figure is a mean over seeds with its 95% Student-t confidence interval and states its n "
             "(the number of seeds, or seeds x members, behind it); n=1 has no interval.", ""]
    unfinished = df[df["status"].astype(str) != "done"]["run"].unique() if "status" in df.columns else []
    if len(unfinished):
        lines += [f"**Warning:** {len(unfinished)} run(s) not finished (status not `done`): "
                  + ", ".join(f"`{r}`" for r in unfinished), ""]
    lines += ["## Selection rule", "", SELECTION_RULE, ""]
    loss = _describe_loss(df)
    if loss:
        lines += ["## Loss", "", "As recorded in each run's summary.json (how the soft-target term is reduced, "
                  "and whether it is multiplied by T^2):", ""] + loss + [""]
    lines += ["## Test accuracy (%)", "", format_table(main)]
    best = best_setting(df, by)
    if best:
        lines += [best, ""]
    if paper_source:
        lines += [f"`paper`: published test accuracy (%) from {paper_source}.", ""]
    lines += ["All figures (val_acc, test_acc_last, test_nll, test_ece): [table.md](table.md); "
              "one row per model: [models.csv](models.csv).", ""]
    if not compared.empty:
        settings = [c for c in compared.columns if c == "experiment" or c.startswith("cfg.")]
        view = compared.assign(**{"difference (pts)": compared["text"],
                                  "p": compared["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.3g}")})
        lines += ["## Paired comparisons", "",
                  "test_acc of each model kind minus its baseline, paired by seed within a run; "
                  "the verdict is `higher`/`lower` only when the 95% CI of the difference excludes 0.", "",
                  _markdown(view, settings + ["model", "baseline", "difference (pts)", "p", "verdict"])]
    if figures:
        lines += ["## Plots", ""]
        for name, (caption, _) in figures.items():
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    if by:
        lines += [f"Grouped by: {', '.join(f'`{c}`' for c in by)}.", ""]
    return "\n".join(lines)
