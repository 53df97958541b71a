"""The one model a trial is about: only its validation figures reach Tune.

A trial may train several models (a teacher, the generations of a born-again chain, the
members of an ensemble), but a sweep must choose on one of them. `tune.target` names it
(default `auto`); each experiment kind declares the models a sweep may choose on
(`distill.kinds.TuneTarget`; `distill list kinds` names them), for example:

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

Targets known only when the run ends send nothing during training; at the end the trial
reports the chosen model's epochs in order (from records.csv), or, for a model that has no
epochs (an ensemble), one report with its final validation figures (`training_iteration` 1).
Schedulers that decide during training (ASHA, PBT) cannot work with them: `tune.scheduler=fifo`
is required (checked before Ray starts). A live target that sent nothing (a born-again chain
that `bornagain.stop` ended before generation G) is chosen at the end in the same way.

Every report carries `target_model`, the target's label (e.g. `generation 2`). The other
models' validation figures are read from the run's summary.json into sweep.json's `others`
column (`others_of`); they never reach the metric.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from distill import kinds
from distill.config import Config
from distill.errors import ConfigError

# reported every epoch, when the runner has them (validation only: Tune never sees test figures)
REPORTED = ("epoch", "lr", "seconds", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll", "val_ece")


@dataclass(frozen=True)
class Target:
    """The model a trial reports: the kind's TuneTarget `name`, resolved for one config and seed."""

    kind: str
    name: str
    seed: int
    text: str = ""                      # its label (target_model of every report)
    description: str = ""
    fields: dict = field(default_factory=dict)  # what marks its epoch reports (live targets)
    live: bool = True                   # known before training: its reports are forwarded as they come

    def label(self) -> str:
        return self.text

    def describe(self) -> str:
        return self.description

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "seed": self.seed, "live": self.live, **self.fields,
                "label": self.label(), "description": self.describe()}

    def matches(self, report: dict) -> bool:
        """Whether a runner's epoch report is about this (live) target."""
        if not self.live or report.get("seed") != self.seed:
            return False
        return all(report.get(k) in v if isinstance(v, tuple) else report.get(k) == v
                   for k, v in self.fields.items())


def _declared(cfg: Config) -> kinds.TuneTarget:
    return kinds.get(cfg.tune.kind).target(cfg.tune.target, cfg)


def resolve(cfg: Config) -> Target:
    """The target of a trial's config (a trial trains one seed: its first)."""
    declared, seed = _declared(cfg), cfg.seed_list()[0]
    return Target(cfg.tune.kind, declared.name, seed, declared.text(declared.label, cfg),
                  declared.text(declared.description, cfg), declared.fields(cfg), declared.live)


def check(cfg: Config) -> Target:
    """The sweep's target, or a one-line ConfigError (before Ray starts)."""
    t, kind = cfg.tune, kinds.get(cfg.tune.kind)
    if t.target not in kind.target_names():
        raise ConfigError(f"tune.target={t.target} does not apply to tune.kind={t.kind}; choose one of "
                          f"{', '.join(kind.target_names())}")
    target = resolve(cfg)
    if not target.live and t.scheduler != "fifo":
        live = ", ".join(x.name for x in kind.targets if x.live) or "none"
        raise ConfigError(f"tune.target={target.name} is known only when a trial ends, but tune.scheduler="
                          f"{t.scheduler} decides during training; use tune.scheduler=fifo or a target "
                          f"reported each epoch ({t.kind}: {live})")
    return target


# ---------------------------------------------------------------- figures read back from a run directory


def _rows(run_dir: Path) -> list[dict]:
    """summary.json's model rows (the mappings among them); [] when it is missing or damaged."""
    try:
        found = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    rows = found.get("models") if isinstance(found, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

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


def final_reports(cfg: Config, target: Target, run_dir: Path) -> list[dict]:
    """The reports of a target chosen when the run is done (see the module docstring)."""
    declared = _declared(cfg)
    if declared.choose is None:
        return []
    rows = [r for r in _rows(run_dir) if r.get("seed") == target.seed]
    chosen = declared.choose(rows, cfg.tune.metric, cfg)
    if chosen is None:
        return []
    label = label_of(chosen, target.kind)
    if chosen.get("selected_epoch") is not None:  # a trained model: its epochs, in order
        reports = epoch_reports(run_dir, chosen["role"], target.seed, chosen.get("generation"))
        return [{**r, "target_model": label} for r in reports]
    return [{"val_acc": chosen.get("val_acc"), "val_nll": chosen.get("val_nll"), "target_model": label}]


def label_of(row: dict, kind: str) -> str:
    """A summary row's model, in words, as its kind names it: `teacher cnn1d`, `generation 1`, ..."""
    return kinds.get(kind).label(row)


def others_of(run_dir: Path, kind: str, target_label: Optional[str], seed: int) -> dict:
    """label -> {val_acc, val_nll} of every model in the run's summary other than the target; of
    rows with one label (ensembles of 2, 3, ... members), the largest."""
    found, sizes = {}, {}
    for row in _rows(run_dir):
        label = label_of(row, kind)
        if row.get("seed") != seed:
            label += f" seed {row.get('seed')}"
        size = row.get("size") or 0
        if label == target_label or size < sizes.get(label, 0):
            continue
        sizes[label] = size
        found[label] = {"val_acc": row.get("val_acc"), "val_nll": row.get("val_nll")}
    return found
