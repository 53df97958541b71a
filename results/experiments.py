"""Loaded runs -> experiments: which rows belong together, what kind they are, what they vary.

    import results
    from results import experiments
    for exp in experiments.split(results.load(["runs/"])):
        print(exp.title, exp.kind, exp.words, len(exp.rows))

An experiment is one Tune sweep (every trial under a folder holding sweep.json, and the
teacher the sweep trained once for all its trials) or one run directory. What it is comes
from the registry of experiment kinds (`distill.kinds`, torch-free): meta.json's `kind`
names a Kind, whose `View` says the page (`layout`), the headline rows and the words. Its
page (`Experiment.kind`) is `kd` or `labels` (a `train` layout with or without a teacher),
`bornagain`, `ensemble`, `sweep`, or `models`, the generic table of every model, for a
layout the report has no page for and for a kind no installed module declares. Settings are
named in words (`T`, `alpha`, `student`), and bookkeeping keys (paths, run ids, checkpoint
intervals, devices) are never shown as settings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from distill import kinds
from distill.errors import UserError

from .stats import format_value, limits, mean_ci

# config keys that never make two runs different experiments (paths, ids, machine settings)
BOOKKEEPING = ("cfg.name", "cfg.seeds", "cfg.run_id", "cfg.paper", "cfg.tune.", "cfg.search", "cfg.dataset.root",
               "cfg.dataset.download", "cfg.train.seed", "cfg.train.device", "cfg.train.threads",
               "cfg.train.checkpoint_seconds", "cfg.train.eval_batch_size", "cfg.train.deterministic",
               "cfg.train.compile", "cfg.train.channels_last", "cfg.distill.teacher", "cfg.ensemble.from_",
               "cfg.ensemble.pack", "cfg.bornagain.pack", "cfg.log.", "cfg.preset", "cfg.train.cost_budget")

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

# the layouts of distill.kinds.View the report has a page for (any other is read as `models`)
LAYOUTS = ("train", "bornagain", "ensemble", "models")

# the keys that say two runs train the same student the same way (the KD page's labels-only match)
SAME_STUDENT = ("cfg.model.", "cfg.train.", "cfg.dataset.")

TEACHER_KEY = "cfg.distill.teacher"      # a run directory (or checkpoint) the models learn from
TEXT_DATASETS = ("pydoc", "text")        # datasets of token blocks: language models


@dataclass
class Experiment:
    key: str            # the sweep folder or the run directory
    title: str          # e.g. "mnist1d-kd (run 3f2a)"
    slug: str           # an anchor / file stem
    kind: str           # the page it is read by: kd, labels, bornagain, ensemble, sweep or models
    rows: pd.DataFrame  # its rows of `results.load`
    runs: list[str]     # its run directories
    registered: Optional[kinds.Kind] = None          # the Kind meta.json names; None if none installed declares it
    meta_kind: str = ""                              # meta.json's kind
    teachers: list[str] = field(default_factory=list)  # a sweep's teacher runs, trained once for every trial
    words: str = ""                                  # what it is, in words (the index's kind column)

    @property
    def name(self) -> str:
        return str(self.rows["experiment"].iloc[0])

    @property
    def view(self) -> kinds.View:
        """Its kind's View; for a kind not installed, a generic one whose headline is the last role written."""
        if self.registered is not None:
            return self.registered.view
        return kinds.View(self.meta_kind or "experiment", roles=tuple(dict.fromkeys(self.rows["role"].astype(str))))

    @property
    def trials(self) -> list[str]:
        """Its run directories without a sweep's shared teacher: a sweep's trials."""
        return [r for r in self.runs if r not in self.teachers]

    def model_label(self, row) -> str:
        """A row's model as the kind's own `label` names it (`generation 1`, `member 3`, `slow`)."""
        label = self.registered.label if self.registered is not None else kinds.default_label
        return label({k: (v if _present(v) else None) for k, v in dict(row).items()})

    @property
    def note(self) -> str:
        """Why an experiment is shown on the generic page: its kind is not installed here."""
        if self.registered is not None:
            return ""
        if not self.meta_kind:
            return "meta.json names no experiment kind, so this page shows one table of its models."
        return (f"meta.json names the experiment kind `{self.meta_kind}`, which no installed kind module declares "
                f"(a kind outside this package joins through DISTILL_KINDS), so this page shows one table of its "
                f"models, labelled by role.")

    def config(self) -> dict:
        """The config.yaml of its first trial (a sweep's trials share everything but the searched keys)."""
        from .load import _read_config

        return _read_config(Path((self.trials or self.runs)[0]))


def is_bookkeeping(column: str) -> bool:
    return column.startswith(BOOKKEEPING)


def word(column: str, kind: str = "") -> str:
    """'cfg.distill.temperature' -> 'T'; 'cfg.model.name' -> 'student' on KD pages; else the dotted key."""
    if column == "cfg.model.name" and kind in ("kd", "sweep"):
        return "student"
    return WORDS.get(column, column[4:] if column.startswith("cfg.") else column)


def registered_kind(name) -> Optional[kinds.Kind]:
    """The registry's Kind of that name; None when no installed kind module declares it (or the
    registry cannot be read: DISTILL_KINDS names a module that is not importable)."""
    if not _present(name):
        return None
    try:
        return kinds.get(str(name))
    except UserError:
        return None


def _page(rows: pd.DataFrame, kind: Optional[kinds.Kind]) -> str:
    """The page of one experiment's rows, from its kind's layout."""
    layout = kind.view.layout if kind is not None else "models"
    if layout == "train":  # the KD page against the same model from labels, or the labels-only page
        return "kd" if rows["role"].isin(["teacher", "student"]).any() else "labels"
    return layout if layout in LAYOUTS else "models"


def _words(page: str, kind: Optional[kinds.Kind], meta_kind: str) -> str:
    if page == "labels":
        return "trained from labels"
    if kind is None:
        return f"{meta_kind or 'experiment'} (kind not installed)"
    return kind.view.title


def _refers(ref: str, run: str, sweep: str) -> bool:
    """Whether the path `ref` is the run directory `run` of `sweep`: the same path from the sweep
    folder's name on (the folder may have moved since, or been named relative to another directory)."""
    tail = len(Path(run).relative_to(sweep).parts) + 1
    return Path(ref).parts[-tail:] == Path(run).parts[-tail:]


def shared_teachers(df: pd.DataFrame) -> dict[str, list[str]]:
    """sweep folder -> the runs in it that its trials name as their teacher (distill.teacher): a
    teacher the sweep trained once for every trial (tuning: `<sweep>/teacher/`), not a trial."""
    if "sweep" not in df.columns or TEACHER_KEY not in df.columns:
        return {}
    found = {}
    for sweep, rows in df[df["sweep"].notna()].groupby("sweep", sort=False):
        refs = set(rows[TEACHER_KEY].dropna().astype(str))
        teachers = [run for run in dict.fromkeys(rows["run"]) if any(_refers(ref, run, sweep) for ref in refs)]
        if teachers:
            found[sweep] = teachers
    return found


def mark_shared_teachers(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a sweep's shared teacher in role `teacher` (its own run trained it from labels)."""
    teachers = [run for runs in shared_teachers(df).values() for run in runs]
    if not teachers:
        return df
    df = df.copy()
    df.loc[df["run"].isin(teachers), "role"] = "teacher"
    return df


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "experiment"


def split(df: pd.DataFrame) -> list[Experiment]:
    """One Experiment per sweep folder and per run directory outside a sweep, in input order."""
    teachers = shared_teachers(df)
    df = mark_shared_teachers(df)
    key = df["sweep"].where(df["sweep"].notna(), df["run"]) if "sweep" in df.columns else df["run"]
    groups = list(dict.fromkeys(key))
    names = {k: str(df.loc[key == k, "experiment"].iloc[0]) for k in groups}
    found, slugs = [], set()
    for k in groups:
        rows = df[key == k]
        meta = rows["kind"].dropna() if "kind" in rows.columns else pd.Series(dtype=object)
        meta_kind = str(meta.iloc[0]) if len(meta) else ""
        kind = registered_kind(meta_kind)
        page = _page(rows, kind)
        words = _words(page, kind, meta_kind)
        title = names[k]
        if "sweep" in rows.columns and rows["sweep"].notna().all():
            page, words = "sweep", f"Ray Tune sweep ({words})"
            title += f" (sweep {Path(k).name})"
        elif list(names.values()).count(names[k]) > 1:
            title += f" (run {Path(k).name})"
        slug = _slug(title)
        while slug in slugs:
            slug += "-x"
        slugs.add(slug)
        found.append(Experiment(k, title, slug, page, rows, list(dict.fromkeys(rows["run"])), kind, meta_kind,
                                teachers.get(k, []), words))
    return found


def varying(rows: pd.DataFrame, columns: Optional[list[str]] = None) -> list[str]:
    """The cfg.* columns (not bookkeeping) whose value differs between `rows`."""
    columns = columns if columns is not None else [c for c in rows.columns if c.startswith("cfg.")]
    return [c for c in columns if not is_bookkeeping(c) and rows[c].astype(str).nunique() > 1]


def same_student(a: pd.Series, b: pd.Series) -> bool:
    """Whether two rows' configs train the same model with the same settings on the same data."""
    keys = [k for k in set(a.index) | set(b.index) if k.startswith(SAME_STUDENT) and not is_bookkeeping(k)]
    return all(str(a.get(k)) == str(b.get(k)) for k in keys)


def distills(row) -> bool:
    """Whether a row's run learns from a teacher: its loss, as summary.json records it, is not plain
    cross-entropy from labels (a run that does not distill reads no distill.* or teacher.* key)."""
    method = row.get("loss_method")
    return _present(method) and str(method) != "cross_entropy"


def is_language_model(rows: pd.DataFrame) -> bool:
    """Rows of a language model: a text dataset, selection on validation NLL, or perplexity figures."""
    def has(column: str, values) -> bool:
        return column in rows.columns and rows[column].isin(values).any()

    return has("cfg.dataset.name", TEXT_DATASETS) or has("cfg.train.select", ("nll",)) or \
        ("test_ppl" in rows.columns and pd.to_numeric(rows["test_ppl"], errors="coerce").notna().any())


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
    if role in ("student", "baseline") and _present(row.get("arch")):  # an ensemble run's: name, width, depth
        text = f"{role} {row['arch']}"
    if role == "student" and _present(row.get("combine")):
        text += f" ({row['combine']})"
    return text


def cell(values, scale: float = 100.0) -> tuple[float, float, int]:
    """(mean, 95% half-width, n) of the finite values times `scale`; half-width NaN for n < 2."""
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype(float) * scale
    mean, low, high, n = mean_ci(numbers.tolist())
    return mean, (high - mean) if n > 1 else math.nan, n


ACC = limits("test_acc")  # an accuracy in %: its interval is clipped to [0, 100]


def text(mean: float, half: float, n: int, digits: int = 1, bounds=None) -> str:
    """'95.8 ± 1.0 (n=3)'; '95.8 (n=1)'; '-' when there is no value; `bounds` (e.g. ACC) clip the
    interval (`results.stats.format_value`)."""
    return format_value(mean, half, n, digits, bounds)


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

    From config.yaml's `paper:` section when it has figures: a preset's nested form
    ({source: ..., figures: {<role>: number}, table: ..., differences: ...}, as
    distill.presets_config.PaperConfig writes it) or a flat mapping ({source: ..., <model kind>:
    number}); else `fallback` (a number, or a dict role -> number, as `results.reproduce` gives).
    Anything unreadable is ignored.
    """
    paper = exp.config().get("paper")
    if isinstance(paper, dict):
        nested = paper.get("figures")
        entries = nested if isinstance(nested, dict) else {k: v for k, v in paper.items() if k != "source"}
        figures = {str(k): _number(v) for k, v in entries.items()}
        figures = {k: v for k, v in figures.items() if v is not None}
        if figures or fallback is None:
            return figures, str(paper.get("source") or "")
    if isinstance(fallback, dict):
        return {str(k): float(v) for k, v in fallback.items() if _number(v) is not None}, fallback_source
    if fallback is not None and _number(fallback) is not None:
        return {"*": float(fallback)}, fallback_source
    return {}, ""


def paper_differences(exp: Experiment) -> str:
    """How the run's setting differs from the paper's: config.yaml's `paper.differences` ("" if none)."""
    paper = exp.config().get("paper")
    return str(paper.get("differences") or "") if isinstance(paper, dict) else ""


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
