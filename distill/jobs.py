"""Training several models of one run: packed with torch.func where the models allow, else in turn.

Used by the ensemble members and students (`ensembles`) and the seeds of a born-again
generation (`bornagain`).

    jobs = [Job(key="member0-s0", arch=ModelConfig(name="mlp"), seed=0, tags={...}), ...]
    fit_jobs(jobs, data, train_cfg, run, pack=True, device=device)   # fills job.model, job.result, job.row

Jobs of one architecture (equal model sections) form a group; a group of two or more is
trained at once with `distill.packed.fit_packed` when `pack` is on and `packed.can_pack`
agrees (no BatchNorm, no active dropout, objectives that need only logits), else its
models are trained one after another with `engine.fit`. Either way each model's
checkpoints are `run.checkpoint_dir(job.key)/{last,best}.pt` (a packed group also keeps
its joint state in `<first key>-pack<K>/last.pt`), so a killed run resumes where it
stopped: finished models return at once, an interrupted one continues from its last epoch.
Each model is built right before it trains, from `engine.seed_everything(job.seed)`, so
its weights, and the RNG state its training starts from, do not depend on what ran before.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Callable, Optional

from torch import nn

from . import engine, packed
from .config import ModelConfig, TrainConfig, to_dict
from .models import count_params
from .runner import Progress, chain
from .store import Run, fit_summary


@dataclasses.dataclass
class Job:
    """One model to train: where its checkpoints go, what it is, how it is seeded and tagged."""

    key: str                       # checkpoint key, e.g. member3-s0
    arch: ModelConfig
    seed: int                      # weights and data order
    tags: dict                     # copied into records.csv rows and the summary row
    label: str = ""                # progress label
    report: dict = dataclasses.field(default_factory=dict)  # keys added to every on_epoch report
    objective: Any = None          # None: cross-entropy on the labels
    model: Optional[nn.Module] = None
    result: Optional[engine.FitResult] = None
    row: Optional[dict] = None     # the summary row (fit_summary)


def arch_key(arch: ModelConfig) -> str:
    return json.dumps(to_dict(arch), sort_keys=True)


def build(job: Job, data) -> nn.Module:
    return engine.new_model(job.arch, data, job.seed)


def groups_of(jobs: list[Job]) -> list[list[Job]]:
    """Jobs with equal architectures, in order of first appearance."""
    found: dict[str, list[Job]] = {}
    for job in jobs:
        found.setdefault(arch_key(job.arch), []).append(job)
    return list(found.values())


def fit_jobs(jobs: list[Job], data, train: TrainConfig, run: Run, *, pack: bool, device,
             on_epoch: Optional[Callable[[dict], None]] = None, show: Optional[Progress] = None,
             say: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Train every job (see the module docstring); returns one log entry per group: how it trained."""
    show = show or Progress(False)
    log = []
    for group in groups_of(jobs):
        models = [build(job, data) for job in group] if pack and len(group) > 1 else None
        ok, why = (packed.can_pack(models, [j.objective for j in group]) if models is not None
                   else (False, "packing is off" if not pack else "only one model"))
        names = ", ".join(job.key for job in group)
        entry = {"models": [job.key for job in group], "architecture": group[0].arch.name, "packed": ok,
                 "why": why}
        log.append(entry)
        say(f"{names}: {'packed' if ok else 'one after another'} ({why})")
        if ok:
            _fit_packed(group, models, data, train, run, device, on_epoch, show)
        else:
            for job in group:
                _fit_one(job, data, train, run, device, on_epoch, show)
    return log


def _fit_one(job: Job, data, train, run, device, on_epoch, show) -> None:
    job.model = build(job, data)
    show.start(job.label, train.epochs)
    report = (lambda r: on_epoch({**r, **job.report})) if on_epoch else None
    job.result = engine.fit(job.model, data, train, seed=job.seed, objective=job.objective, tags=job.tags,
                            checkpoint_dir=run.checkpoint_dir(job.key), emit=run.emit,
                            on_epoch=chain(show.epoch, report), device=device)
    job.row = fit_summary(job.result, job.tags, count_params(job.model))
    show.done(job.row)


def _fit_packed(group: list[Job], models, data, train, run, device, on_epoch, show) -> None:
    count = len(group)
    show.start(f"{group[0].label} .. {group[-1].label} ({count} packed)", train.epochs)

    def report(r: dict) -> None:
        k = r["model"]
        if k == count - 1:  # one bar step per epoch, after the last model's report
            show.epoch(r)
        if on_epoch:
            on_epoch({**{key: v for key, v in r.items() if key != "model"}, **group[k].report})

    results = packed.fit_packed(
        models, data, train, seeds=[job.seed for job in group], objectives=[job.objective for job in group],
        tags=[job.tags for job in group], checkpoint_dir=run.checkpoint_dir(f"{group[0].key}-pack{count}"),
        model_dirs=[run.checkpoint_dir(job.key) for job in group], on_epoch=report, emit=run.emit, device=device)
    for job, model, result in zip(group, models, results):
        job.model, job.result = model, result
        job.row = fit_summary(result, job.tags, count_params(model))
        show.label = job.label
        show.done(job.row)


def stderr_line(enabled: bool) -> Callable[[str], None]:
    def say(line: str) -> None:
        if enabled:
            print(line, file=sys.stderr, flush=True)
    return say
