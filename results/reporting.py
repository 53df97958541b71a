"""The report: an index over the experiments, then one page section per experiment.

    distill report runs/kd runs/labels runs/sweep --out report [--compare]
    results.report(["runs/"], "report", compare=False)    # -> report/report.md

Writes into `out/`: report.html (self-contained: images embedded, tables as HTML, no
network needed), report.md (the same page, images as files in figures/), models.csv and
records.csv (everything loaded), one CSV per table (the numbers behind it) and
figures/*.png. Each experiment gets the page its kind's View names (`results.views`,
`results.sweeps`; the generic table of models for a kind without a page or not installed),
its learning curves and the loss as recorded; `compare=True` adds the experiments side by
side (`results.comparing`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import pandas as pd

from distill.kinds.train import OTHER_SPLIT, UNKNOWN_SPLIT

from . import experiments as ex
from .comparing import compare_blocks
from .costs import cost_view
from .fidelity import fidelity_view
from .load import PathLike, load, load_records
from .page import Figure, Heading, Para, Table, markdown, to_html, write_csvs
from .settings import headline, searched_keys, trial_rows
from .sweeps import sweep_view
from .ensemble_page import ensemble_view
from .views import Context, bornagain_view, kd_view, labels_view, models_view

SELECTION_RULE = ("Model selection uses the validation split only: each model's test figures are taken at the "
                  "epoch with the best validation accuracy (`selected_epoch`); test figures never choose anything. "
                  "Every figure is a mean over seeds ± the 95% Student-t half-width, with n, the number of seeds "
                  "(n=1 has no interval; `n=2, wide`: from 2 seeds the interval is 12.7 standard errors each side). "
                  "An interval that would run past what the quantity can take (0-100 % for an accuracy) is shown "
                  "clipped, as its ends. Accuracies in %. A difference is `higher`/`lower` only when its 95% "
                  "interval excludes 0, else `not separable`; where a table compares several models or settings with "
                  "one reference, the verdict is also given after Holm's adjustment over its rows, the one to quote "
                  "when the rows are read together.")

VIEWS = {"kd": kd_view, "labels": labels_view, "bornagain": bornagain_view, "ensemble": ensemble_view,
         "sweep": sweep_view, "models": models_view}


def report(paths: Union[PathLike, Iterable[PathLike]], out: PathLike = "report", compare: bool = False,
           paper: Union[None, float, Mapping[str, float]] = None, paper_source: str = "") -> Path:
    """Write report.html, report.md, the CSVs and figures into `out`; returns report.md's path.

    `compare`: put the experiments side by side (paired by seed where seeds match).
    `paper`: published test accuracy (%), one number or a dict role -> number, used for
    experiments whose config.yaml has no `paper:` section (as `results.reproduce` passes).
    Raises `results.NoRuns` if a path holds no run.
    """
    from . import plots  # matplotlib only when a report is drawn

    out = Path(out)
    df = load(paths)
    left_out = df.attrs.get("left_out", [])  # runs that could not be read: named in the report too
    df = ex.mark_shared_teachers(df)  # a sweep's teacher, trained once for every trial, is its teacher
    records = load_records(paths)
    out.mkdir(parents=True, exist_ok=True)
    found = ex.split(df)
    if paper is not None or any(ex.paper_figures(e)[0] for e in found):
        df["paper"] = math.nan
        for e in found:
            figures, _ = ex.paper_figures(e, paper, paper_source)
            df.loc[e.rows.index, "paper"] = [ex.paper_value(figures, r) for _, r in e.rows.iterrows()]
    df.to_csv(out / "models.csv", index=False)
    if not records.empty:
        records.to_csv(out / "records.csv", index=False)

    blocks = index_blocks(df, found) + left_out_blocks(left_out)
    for e in found:
        figures, source = ex.paper_figures(e, paper, paper_source)
        context = Context(out, df, figures, source, plots, ex.paper_differences(e))
        blocks += experiment_blocks(e, context, records)
    if compare:
        blocks += compare_blocks(found, Context(out, df, plots=plots))
    write_csvs(blocks, out)
    (out / "report.md").write_text(markdown(blocks, out))
    (out / "report.html").write_text(to_html(blocks, "Distillation report"))
    return out / "report.md"


def index_blocks(df: pd.DataFrame, found: list[ex.Experiment]) -> list:
    rows, numbers = [], []
    for e in found:
        head = headline(e)
        mean, half, n = ex.cell(head["test_acc"])
        about = ", ".join(dict.fromkeys(head.apply(ex.label, axis=1))) if len(head) else ""
        status = ", ".join(sorted(set(e.rows["status"].dropna().astype(str)))) if "status" in e.rows else ""
        rows.append({"experiment": f"[{e.title}](#{e.slug})", "kind": e.words, "runs": len(e.runs),
                     "seeds": e.rows["seed"].nunique(), "headline model": about,
                     "test acc %": ex.text(mean, half, n, bounds=ex.ACC), "status": status})
        numbers.append({"experiment": e.title, "kind": e.kind, "runs": len(e.runs), "headline": about,
                        "test_acc_mean": mean, "test_acc_ci": half, "test_acc_n": n, "status": status})
    blocks = [Heading("Distillation report", 1),
              Para(f"{len(df)} evaluated models from {df['run'].nunique()} run(s) in {len(found)} experiment(s). "
                   "Each experiment below has its own section; the headline model is what the experiment is "
                   "about (the KD student, the last born-again generation, the distilled students, the best "
                   "setting of a sweep)."),
              Para(SELECTION_RULE),
              Table(pd.DataFrame(rows), pd.DataFrame(numbers), "experiments.csv")]
    unfinished = sorted(df.loc[df["status"].astype(str) != "done", "run"].unique()) if "status" in df else []
    if unfinished:
        blocks.append(Para(f"**Warning:** {len(unfinished)} run(s) not finished (status not `done`): "
                           + ", ".join(f"`{r}`" for r in unfinished)))
    leaky = df["parent"].astype(str).str.contains(OTHER_SPLIT, regex=False) if "parent" in df else []
    if len(leaky) and leaky.any():  # distill.teacher_other_split: the teacher may have seen val/test examples
        blocks.append(Para(f"**Note:** in {df.loc[leaky, 'run'].nunique()} run(s) the teacher was "
                           f"{OTHER_SPLIT} than its student (distill.teacher_other_split=true), so it may have "
                           f"trained on the student's validation or test examples: "
                           + ", ".join(f"`{r}`" for r in sorted(df.loc[leaky, "run"].unique()))))
    unknown = df["parent"].astype(str).str.contains(UNKNOWN_SPLIT, regex=False) if "parent" in df else []
    if len(unknown) and unknown.any():  # a checkpoint outside its run folder, a pretrained model
        blocks.append(Para(f"**Note:** in {df.loc[unknown, 'run'].nunique()} run(s) the teacher's training data is "
                           f"not known (a checkpoint outside its run folder, or a pretrained model), so it may have "
                           f"trained on the student's validation or test examples: "
                           + ", ".join(f"`{r}`" for r in sorted(df.loc[unknown, "run"].unique()))))
    return blocks


def left_out_blocks(left_out: list[dict]) -> list:
    """The "Runs left out" section: each run folder that could not be read, with the reason."""
    if not left_out:
        return []
    return [Heading("Runs left out", 2, "runs-left-out"),
            Para(f"{len(left_out)} run folder(s) could not be read and are in no table or plot: "
                 + "; ".join(f"`{item['run']}`: {item['reason']}" for item in left_out))]


def _setup(e: ex.Experiment) -> str:
    config = e.config()
    dataset = (config.get("dataset") or {}).get("name")
    train = config.get("train") or {}
    seeds = sorted(int(s) for s in e.rows["seed"].dropna().unique())
    parts = [e.words, f"dataset `{dataset}`" if dataset else "",
             f"{train.get('epochs')} epochs" if train.get("epochs") else "",
             f"seeds {', '.join(map(str, seeds))}" if seeds else "",
             f"{len(e.runs)} run(s): " + ", ".join(f"`{Path(r).name}`" for r in e.runs[:4])
             + (" ..." if len(e.runs) > 4 else "")]
    return "; ".join(p for p in parts if p) + "."


def experiment_blocks(e: ex.Experiment, context: Context, records: pd.DataFrame) -> list:
    blocks = [Heading(e.title, 2, e.slug), Para(_setup(e))] + ([Para(e.note)] if e.note else [])
    blocks += VIEWS[e.kind](e, context)
    blocks += fidelity_view(e, context)
    blocks += cost_view(e, context)
    mine = records[records["run"].isin(e.runs)] if not records.empty else records
    if e.teachers:  # a sweep's shared teacher recorded itself as a model from labels
        mine = mine.assign(role=mine["role"].where(~mine["run"].isin(e.teachers), "teacher"))
    curves = _curves(e, mine, context)
    if curves is not None:
        blocks += [Heading("Learning curves", 3), curves]
    loss = loss_table(e, mine)
    if loss is not None:
        blocks += [Heading("Loss as recorded", 3),
                   Para("Per model kind, from records.csv: the objective, how the soft-target KL is reduced, "
                        "and whether it is multiplied by T^2."), loss]
    return blocks


def _curves(e: ex.Experiment, records: pd.DataFrame, context: Context) -> Optional[Figure]:
    if records.empty or not (records["split"] == "val").any():
        return None
    rows = records.copy()
    if e.kind == "sweep":  # one line per searched setting of the trials, not all trials pooled
        keys = searched_keys(e)
        per_run = e.rows.drop_duplicates("run").set_index("run")
        setting = {run: ", ".join(f"{ex.word(k, 'sweep')}={per_run.loc[run, k]}" for k in keys)
                   for run in e.trials}
        rows = rows[rows["run"].isin(e.trials) & rows["role"].isin(set(trial_rows(e)["role"]))]
        rows["model"] = rows["role"].astype(str) + " " + rows["run"].map(setting)
    else:
        rows["model"] = rows.apply(_curve_label, axis=1)
    if not (rows["split"] == "val").any():
        return None
    path = context.plots.learning_curves(rows, context.figure(e, "curves"))
    return Figure(path, "Validation accuracy by epoch per model kind: mean and 95% band over seeds "
                        "(members pooled); n in the legend")


def _curve_label(row) -> str:
    role = str(row.get("role"))
    if role == "generation":
        return ex.label(row)
    if role == "member":
        return "member (all members)"
    name = row.get("name")
    return f"{role} {name}" if isinstance(name, str) and name else role


def loss_table(e: ex.Experiment, records: pd.DataFrame) -> Optional[Table]:
    columns = [c for c in ("method", "reduction", "t2_scaling") if c in records.columns]
    if records.empty or not columns:
        return _summary_loss(e)
    rows = records[records["split"] == "train"] if (records["split"] == "train").any() else records
    rows = rows.assign(model=rows.apply(_curve_label, axis=1))
    out = []
    for name, group in rows.groupby("model", sort=False):
        entry = {"model": name}
        for column, title in zip(("method", "reduction", "t2_scaling"), ("method", "reduction", "T^2 scaling")):
            values = group[column].dropna().astype(str).unique() if column in group else []
            entry[title] = ", ".join(values) if len(values) else "-"
        out.append(entry)
    frame = pd.DataFrame(out)
    return Table(frame, frame, f"{e.slug}-loss.csv")


def _summary_loss(e: ex.Experiment) -> Optional[Table]:
    if "loss_method" not in e.rows.columns or e.rows["loss_method"].isna().all():
        return None
    first = e.rows[e.rows["loss_method"].notna()].iloc[0]
    frame = pd.DataFrame([{"model": "distilled models", "method": first["loss_method"],
                           "reduction": first.get("loss_reduction", "-"),
                           "T^2 scaling": first.get("loss_t2_scaling", "-")}])
    return Table(frame, frame, f"{e.slug}-loss.csv")
