"""Loaded runs -> experiments: which rows belong together, what kind they are, what they vary.

    import results
    from results import experiments
    for exp in experiments.split(results.load(["runs/"])):
        print(exp.title, exp.kind, len(exp.rows))

An experiment is one Tune sweep (every trial under a folder holding sweep.json) or one run
directory. Its kind picks the page's canonical view: `kd` (a train run with a teacher),
`labels` (a train run from labels), `bornagain`, `ensemble` or `sweep`. Settings are named
in words (`T`, `alpha`, `student`), and bookkeeping keys (paths, run ids, checkpoint
intervals, devices) are never shown as settings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from .stats import format_value, mean_ci

# config keys that never make two runs different experiments (paths, ids, machine settings)
BOOKKEEPING = ("cfg.name", "cfg.seeds", "cfg.run_id", "cfg.paper", "cfg.tune.", "cfg.search.", "cfg.dataset.root",
               "cfg.dataset.download", "cfg.train.seed", "cfg.train.device", "cfg.train.threads",
               "cfg.train.checkpoint_seconds", "cfg.train.eval_batch_size", "cfg.train.deterministic",
               "cfg.train.compile", "cfg.train.channels_last", "cfg.distill.teacher", "cfg.ensemble.from_",
               "cfg.ensemble.pack", "cfg.bornagain.pack", "cfg.log.", "cfg.preset.", "cfg.train.cost_budget")

# config keys -> the word a table heads them with
WORDS = {"cfg.distill.temperature": "T", "cfg.distill.alpha": "alpha", "cfg.distill.method": "loss",
         "cfg.distill.combine": "teacher combination", "cfg.model.name": "model", "cfg.model.width": "width",
         "cfg.model.depth": "depth", "cfg.train.lr": "lr", "cfg.train.epochs": "epochs",
         "cfg.train.batch_size": "batch size", "cfg.train.weight_decay": "weight decay",
         "cfg.train.optimizer": "optimizer", "cfg.train.schedule": "lr schedule",
         "cfg.dataset.name": "dataset", "cfg.dataset.num_samples": "examples",
         "cfg.dataset.train_subset": "training examples", "cfg.teacher.model.name": "teacher",
         "cfg.bornagain.generations": "generations", "cfg.bornagain.teacher": "born-again teacher",
         "cfg.ensemble.members": "members"}

KINDS = {"kd": "knowledge distillation", "labels": "trained from labels", "bornagain": "born-again chain",
         "ensemble": "ensemble collapse", "sweep": "Ray Tune sweep"}

# the keys that say two runs train the same student the same way (the KD page's labels-only match)
SAME_STUDENT = ("cfg.model.", "cfg.train.", "cfg.dataset.")


@dataclass
class Experiment:
    key: str            # the sweep folder or the run directory
    title: str          # e.g. "mnist1d-kd (run 3f2a)"
    slug: str           # an anchor / file stem
    kind: str           # kd, labels, bornagain, ensemble or sweep
    rows: pd.DataFrame  # its rows of `results.load`
    runs: list[str]     # its run directories

    @property
    def name(self) -> str:
        return str(self.rows["experiment"].iloc[0])

    def config(self) -> dict:
        """The config.yaml of its first run (a sweep's trials share everything but the searched keys)."""
        from .load import _read_config

        return _read_config(Path(self.runs[0]))


def is_bookkeeping(column: str) -> bool:
    return column.startswith(BOOKKEEPING)


def word(column: str, kind: str = "") -> str:
    """'cfg.distill.temperature' -> 'T'; 'cfg.model.name' -> 'student' on KD pages; else the dotted key."""
    if column == "cfg.model.name" and kind in ("kd", "sweep"):
        return "student"
    return WORDS.get(column, column[4:] if column.startswith("cfg.") else column)


def _kind(rows: pd.DataFrame) -> str:
    roles = set(rows["role"].dropna())
    meta = set(rows["kind"].dropna()) if "kind" in rows.columns else set()
    if "sweep" in rows.columns and rows["sweep"].notna().all():
        return "sweep"
    if "bornagain" in meta or "generation" in roles:
        return "bornagain"
    if "ensemble" in meta or "member" in roles:
        return "ensemble"
    if roles & {"teacher", "student"}:
        return "kd"
    return "labels"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "experiment"


def split(df: pd.DataFrame) -> list[Experiment]:
    """One Experiment per sweep folder and per run directory outside a sweep, in input order."""
    key = df["sweep"].where(df["sweep"].notna(), df["run"]) if "sweep" in df.columns else df["run"]
    groups = list(dict.fromkeys(key))
    names = {k: str(df.loc[key == k, "experiment"].iloc[0]) for k in groups}
    found, slugs = [], set()
    for k in groups:
        rows = df[key == k]
        kind = _kind(rows)
        title = names[k]
        if kind == "sweep":
            title += f" (sweep {Path(k).name})"
        elif list(names.values()).count(names[k]) > 1:
            title += f" (run {Path(k).name})"
        slug = _slug(title)
        while slug in slugs:
            slug += "-x"
        slugs.add(slug)
        found.append(Experiment(k, title, slug, kind, rows, list(dict.fromkeys(rows["run"]))))
    return found


def varying(rows: pd.DataFrame, columns: Optional[list[str]] = None) -> list[str]:
    """The cfg.* columns (not bookkeeping) whose value differs between `rows`."""
    columns = columns if columns is not None else [c for c in rows.columns if c.startswith("cfg.")]
    return [c for c in columns if not is_bookkeeping(c) and rows[c].astype(str).nunique() > 1]


def same_student(a: pd.Series, b: pd.Series) -> bool:
    """Whether two rows' configs train the same model with the same settings on the same data."""
    keys = [k for k in set(a.index) | set(b.index) if k.startswith(SAME_STUDENT) and not is_bookkeeping(k)]
    return all(str(a.get(k)) == str(b.get(k)) for k in keys)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _int(value) -> str:
    return str(int(value)) if isinstance(value, (int, float)) and float(value).is_integer() else str(value)


def label(row) -> str:
    """A model kind in words: 'teacher cnn1d', 'BAN-2', 'Ens x 2 (BAN-1..2)', 'ensemble k=3 mean_probs'."""
    role = str(row.get("role"))
    name = row.get("name")
    if role == "generation":
        g = int(row["generation"])
        return "generation 0 (teacher)" if g == 0 else f"BAN-{g}"
    if role == "ensemble":
        match = re.fullmatch(r"ens_(\d+)\.\.(\d+)", str(name))
        if match:  # a born-again chain's ensemble of generations first..last
            first, last = int(match.group(1)), int(match.group(2))
            size = last - first + 1
            return f"Ens x {size} (BAN-1..{last})" if first == 1 else f"Ens x {size} (generations 0..{last})"
        parts = ["ensemble"]
        if _present(row.get("size")):
            parts.append(f"k={_int(row['size'])}")
        if _present(row.get("combine")):
            parts.append(str(row["combine"]))
        return " ".join(parts)
    if role == "member":
        return f"member {name}" if _present(name) else "member"
    text = f"{role} {name}" if _present(name) else role
    if role == "student" and _present(row.get("arch")):  # an ensemble run's students: name, width, depth
        text = f"student {row['arch']}"
    if role == "student" and _present(row.get("combine")):
        text += f" ({row['combine']})"
    return text


def headline(exp: Experiment) -> pd.DataFrame:
    """The rows an experiment is about: the students, the last BAN generation, the model, the best setting."""
    rows = exp.rows
    roles = set(rows["role"].dropna())
    if exp.kind == "sweep":
        from .sweeps import best_rows

        return best_rows(exp)
    if "student" in roles:
        return rows[rows["role"] == "student"]
    if "generation" in roles:
        generations = rows[rows["role"] == "generation"]
        return generations[generations["generation"] == generations["generation"].max()]
    if "ensemble" in roles:
        ensembles = rows[rows["role"] == "ensemble"]
        return ensembles[ensembles["size"] == ensembles["size"].max()]
    return rows[rows["role"] == "model"] if "model" in roles else rows


def cell(values, scale: float = 100.0) -> tuple[float, float, int]:
    """(mean, 95% half-width, n) of the finite values times `scale`; half-width NaN for n < 2."""
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype(float) * scale
    mean, low, high, n = mean_ci(numbers.tolist())
    return mean, (high - mean) if n > 1 else math.nan, n


def text(mean: float, half: float, n: int, digits: int = 1) -> str:
    """'95.8 ± 1.0 (n=3)'; '95.8 (n=1)'; '-' when there is no value."""
    return format_value(mean, half, n, digits)


def _number(value) -> Optional[float]:
    if isinstance(value, dict):
        value = value.get("test_acc", value.get("acc"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return number * 100 if 0 < number <= 1 else number


def paper_figures(exp: Experiment, fallback=None, fallback_source: str = "") -> tuple[dict, str]:
    """(figures, source) of the published numbers for this experiment, in percent.

    From config.yaml's top-level `paper:` mapping ({source: ..., <model kind>: number}) when
    present, else `fallback` (a number, or a dict role -> number, as `results.reproduce` gives).
    Anything unreadable is ignored.
    """
    paper = exp.config().get("paper")
    if isinstance(paper, dict):
        figures = {str(k): _number(v) for k, v in paper.items() if k != "source"}
        return {k: v for k, v in figures.items() if v is not None}, str(paper.get("source") or "")
    if isinstance(fallback, dict):
        return {str(k): float(v) for k, v in fallback.items() if _number(v) is not None}, fallback_source
    if fallback is not None and _number(fallback) is not None:
        return {"*": float(fallback)}, fallback_source
    return {}, ""


def paper_value(figures: dict, row) -> float:
    """The published figure for a model row: by its label, then role_generation/role_size, then role."""
    if not figures:
        return math.nan
    role = str(row.get("role"))
    keys = [label(row), role + "_" + _int(row.get("generation")), role + "_" + _int(row.get("size")), role, "*"]
    for key in keys:
        if key in figures:
            return figures[key]
    return math.nan


def read_sweep(exp: Experiment) -> dict:
    try:
        loaded = json.loads((Path(exp.key) / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
