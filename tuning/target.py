"""The one model a trial is about: only its validation figures reach Tune.

A trial may train several models (a teacher, the generations of a born-again chain, the
members of an ensemble), but a sweep must choose on one of them. `tune.target` names it
(default `auto`):

    tune.kind  tune.target      the target model                                  reported to Tune
    train      auto             the student (the model, when it learns from labels)  each epoch, live
    bornagain  auto, last       generation G = bornagain.generations                each epoch, live
    bornagain  best_generation  the generation with the best validation metric      its epochs, at the end
    bornagain  best_ensemble    the Ens x k with the best validation metric         one report, at the end
    ensemble   auto, student    student 0 of the first ensemble.combine             each epoch, live
    ensemble   auto, ensemble   the full ensemble under the first combination       one report, at the end
                                (auto means this when ensemble.combine is empty; mean_probs then)

Live targets: every runner report says which model it is about (`role`, `generation`,
`member`, `student`, `combine`, `seed`, `epochs`); the trial forwards the target's and drops
the others, so Tune's `training_iteration` counts the target's epochs and ASHA's
`grace_period`/`max_t` mean epochs of the target. The target's last epoch is reported once
the run directory is complete.

Targets known only when the run ends (`best_generation`, `best_ensemble`, `ensemble`) send
nothing during training; at the end the trial reports the chosen generation's epochs in
order (from records.csv), or, for an ensemble, which has no epochs, one report with its
final validation figures (`training_iteration` 1). Schedulers that decide during training
(ASHA, PBT) cannot work with them: `tune.scheduler=fifo` is required (checked before Ray
starts). A born-again chain that `bornagain.stop` ends before generation G reports, for
`last`, the last generation it trained, at the end in the same way.

Every report carries `target_model`, the target's label (e.g. `generation 2`). The other
models' validation figures are read from the run's summary.json into sweep.json's `others`
column (`others_of`); they never reach the metric.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from distill.config import Config
from distill.errors import ConfigError

ALLOWED = {"train": ("auto",), "bornagain": ("auto", "last", "best_generation", "best_ensemble"),
           "ensemble": ("auto", "student", "ensemble")}
# reported every epoch, when the runner has them (validation only: Tune never sees test figures)
REPORTED = ("epoch", "lr", "seconds", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll", "val_ece")


@dataclass(frozen=True)
class Target:
    """The model a trial reports: `name` is student, last, best_generation, best_ensemble or ensemble."""

    kind: str
    name: str
    seed: int
    generation: Optional[int] = None  # last: generation G
    combine: Optional[str] = None     # ensemble kind: the combination of the student / the ensemble
    live: bool = True                 # known before training: its reports are forwarded as they come

    def label(self) -> str:
        if self.kind == "train":
            return "student"
        if self.name == "last":
            return f"generation {self.generation}"
        if self.name == "student":
            return f"student 0 {self.combine}"
        return {"best_generation": "best generation", "best_ensemble": "best Ens x k",
                "ensemble": f"ensemble {self.combine}"}[self.name]

    def describe(self) -> str:
        return {"train": "the student (the model, when it learns from labels), each epoch",
                "last": f"the last generation ({self.generation}), each epoch",
                "best_generation": "the generation with the best validation metric, its epochs at the end",
                "best_ensemble": "the born-again ensemble (Ens x k) with the best validation metric, one report "
                                 "at the end",
                "student": f"student 0 distilled with combine={self.combine}, each epoch",
                "ensemble": f"the full ensemble (combine={self.combine}), one report at the end",
                }["train" if self.kind == "train" else self.name]

    def as_dict(self) -> dict:
        return {**asdict(self), "label": self.label(), "description": self.describe()}

    def matches(self, report: dict) -> bool:
        """Whether a runner's epoch report is about this (live) target."""
        if not self.live or report.get("seed") != self.seed:
            return False
        if self.kind == "train":
            return report.get("role") in ("student", "model")
        if self.kind == "bornagain":
            return report.get("role") == "generation" and report.get("generation") == self.generation
        return (report.get("role") == "student" and report.get("student") == 0
                and report.get("combine") == self.combine)


def resolve(cfg: Config) -> Target:
    """The target of a trial's config (a trial trains one seed: its first)."""
    t, seed = cfg.tune, cfg.seed_list()[0]
    name = t.target
    if t.kind == "train":
        return Target("train", "student", seed)
    if t.kind == "bornagain":
        name = "last" if name == "auto" else name
        return Target("bornagain", name, seed, generation=cfg.bornagain.generations if name == "last" else None,
                      live=name == "last")
    combine = cfg.ensemble.combine
    if name == "auto":
        name = "student" if combine else "ensemble"
    return Target("ensemble", name, seed, combine=combine[0] if combine else "mean_probs", live=name == "student")


def check(cfg: Config) -> Target:
    """The sweep's target, or a one-line ConfigError (before Ray starts)."""
    t = cfg.tune
    if t.target not in ALLOWED[t.kind]:
        raise ConfigError(f"tune.target={t.target} does not apply to tune.kind={t.kind}; choose one of "
                          f"{', '.join(ALLOWED[t.kind])}")
    target = resolve(cfg)
    if target.name == "student" and target.kind == "ensemble" and not cfg.ensemble.combine:
        raise ConfigError("tune.target=student: ensemble.combine is empty, so no student is trained; "
                          "set tune.target=ensemble or give ensemble.combine=[mean_probs]")
    if not target.live and t.scheduler != "fifo":
        raise ConfigError(f"tune.target={target.name} is known only when a trial ends, but tune.scheduler="
                          f"{t.scheduler} decides during training; use tune.scheduler=fifo or a target "
                          f"reported each epoch (bornagain: last; ensemble: student)")
    return target


# ---------------------------------------------------------------- figures read back from a run directory


def _rows(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("models", [])
    except (OSError, ValueError):
        return []


def _better(metric: str):
    return (lambda a, b: a > b) if metric.endswith("acc") else (lambda a, b: a < b)


def _best_row(rows: list[dict], metric: str) -> Optional[dict]:
    better, best = _better(metric), None
    for row in rows:
        value = row.get(metric)
        if value is not None and (best is None or better(value, best[metric])):
            best = row
    return best


def epoch_reports(run_dir: Path, role: str, seed: int, generation: Optional[int] = None) -> list[dict]:
    """One model's per-epoch reports rebuilt from records.csv (train and val rows of each epoch).

    The first rows of each epoch are taken: with several models of one role (ensemble students),
    the first one trained or packed first is student 0 of the first combination."""
    reports: dict[int, dict] = {}
    seen = set()
    with open(run_dir / "records.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["role"] != role or row["seed"] != str(seed) or row["split"] not in ("train", "val"):
                continue
            if generation is not None and row["generation"] != str(generation):
                continue
            epoch = int(row["epoch"])
            if (epoch, row["split"]) in seen:
                continue
            seen.add((epoch, row["split"]))
            report = reports.setdefault(epoch, {"epoch": epoch, "lr": float(row["lr"]),
                                                "seconds": float(row["seconds"])})
            for name in ("loss", "acc", "nll", "ece"):
                if row.get(name) not in (None, ""):
                    report[f"{row['split']}_{name}"] = float(row[name])
    return [reports[e] for e in sorted(reports)]


def final_reports(target: Target, run_dir: Path, metric: str) -> list[dict]:
    """The reports of a target known only at the end (or of `last` when the chain stopped early)."""
    rows = [r for r in _rows(run_dir) if r.get("seed") == target.seed]
    if target.kind == "bornagain" and target.name in ("last", "best_generation"):
        generations = [r for r in rows if r.get("role") == "generation"]
        if not generations:
            return []
        chosen = (max(generations, key=lambda r: r["generation"]) if target.name == "last"
                  else _best_row(generations, metric))
        label = f"generation {chosen['generation']}"
        reports = epoch_reports(run_dir, "generation", target.seed, chosen["generation"])
        return [{**r, "target_model": label} for r in reports]
    if target.kind == "bornagain":
        chosen = _best_row([r for r in rows if r.get("role") == "ensemble"], metric)
    else:
        ensembles = [r for r in rows if r.get("role") == "ensemble" and r.get("combine") == target.combine]
        size = max((r["size"] for r in ensembles), default=None)
        chosen = next((r for r in ensembles if r["size"] == size), None)
    if chosen is None:
        return []
    return [{"val_acc": chosen.get("val_acc"), "val_nll": chosen.get("val_nll"),
             "target_model": label_of(chosen, target.kind)}]


def label_of(row: dict, kind: str) -> str:
    """A summary row's model, in words: `teacher cnn1d`, `generation 1`, `member 3`, `ens_1..2`, ..."""
    role = row.get("role")
    if role == "teacher":
        return f"teacher {row.get('name')}"
    if role == "generation":
        return f"generation {row.get('generation')}"
    if role == "member":
        return f"member {row.get('member')}"
    if role == "student" and kind == "ensemble":
        return f"student {row.get('student')} {row.get('combine')}"
    if role == "ensemble":
        return row.get("name") if kind == "bornagain" else f"ensemble {row.get('combine')}"
    return str(role)


def others_of(run_dir: Path, kind: str, target_label: Optional[str], seed: int) -> dict:
    """label -> {val_acc, val_nll} of every model in the run's summary other than the target
    (for an ensemble run, only the full-size ensembles)."""
    rows = _rows(run_dir)
    full = max((r.get("size") or 0 for r in rows if r.get("role") == "ensemble"), default=0)
    found = {}
    for row in rows:
        if kind == "ensemble" and row.get("role") == "ensemble" and row.get("size") != full:
            continue
        label = label_of(row, kind)
        if kind == "train" and row.get("role") in ("student", "model"):
            label = "student"
        if row.get("seed") != seed:
            label += f" seed {row.get('seed')}"
        if label != target_label:
            found[label] = {"val_acc": row.get("val_acc"), "val_nll": row.get("val_nll")}
    return found
