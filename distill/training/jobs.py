"""Training several models of one run: packed with torch.func where the models allow, else in turn.

Used by `distill train` (its teacher sections, then its models: `distill.training.runner`), the
ensemble members and students (`ensembles`) and the seeds of a born-again generation
(`bornagain`).

    jobs = [Job(key="member0-s0", arch=ModelConfig(name="mlp"), seed=0, tags={...}), ...]
    fit_jobs(jobs, data, train_cfg, run, pack=True, device=device)   # fills job.model, job.result, job.row

Each job's summary row carries its model's cost (`distill.export.cost.row_cost`), measured once after
its training ends.

Jobs of one architecture (equal model sections) form a group; a group of two or more is
trained in one `engine.fit` with stacked parameters when `pack` is on and
`replicas.can_stack` agrees (BatchNorm and dropout stack, per model; convolutions not on the CPU, where
they run slower stacked; not BatchNorm with
momentum=None, nor objectives with parameters of their own, that read intermediate features
or that run the student themselves), else its models are trained one after another, each in
its own `engine.fit`.
Either way each model's checkpoints are `run.checkpoint_dir(job.key)/{last,best}.pt` (a
stacked group keeps its training state in `<first key>-pack<K>/last.pt`), so a killed run
resumes where it stopped: finished models return at once, an interrupted one continues
from its last epoch.
Each model is built right before it trains, from `engine.seed_everything` of its init seed, so
its weights, and the RNG state its training starts from, do not depend on what ran before; its
batches come in the order of its data seed (`job.seed`). Both come from the one seed rule,
`distill.training.seeds.model_seeds` (`Job.seeded`), and are recorded in its summary row
(`init_seed`, `data_seed`).
A job with a `given` model (built elsewhere, e.g. the teacher section of `distill train`,
which its student's objective reads) trains that module in place, from the same seeding.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional

from torch import nn

from distill import engine
from distill.config import ModelConfig, TrainConfig
from distill.schema import from_dict, to_dict
from distill.export.cost import row_cost
from distill.models.parts import count_params
from distill.runs.progress import Progress
from distill.training.replicas import can_stack
from distill.training.seeds import Seeds, seed_columns
from distill.runs.store import Run, fit_summary


@dataclasses.dataclass
class Job:
    """One model to train: where its checkpoints go, what it is, how it is seeded and tagged."""

    key: str                       # checkpoint key, e.g. member3-s0
    arch: ModelConfig
    seed: int                      # data order (and weights, unless init_seed says otherwise)
    tags: dict                     # copied into records.csv rows and the summary row
    label: str = ""                # progress label
    report: dict = dataclasses.field(default_factory=dict)  # keys added to every on_epoch report
    objective: Any = None          # None: cross-entropy on the labels
    given: Optional[nn.Module] = None  # a model built elsewhere, trained in place instead of a fresh one
    init_seed: Optional[int] = None    # weights: None = `seed` (distill.training.seeds gives both)
    model: Optional[nn.Module] = None
    result: Optional[engine.FitResult] = None
    row: Optional[dict] = None     # the summary row (fit_summary)


    @classmethod
    def seeded(cls, seeds: Seeds, **fields) -> "Job":
        """A job with the (init, data) seeds of `distill.training.seeds.model_seeds`."""
        return cls(seed=seeds.data, init_seed=seeds.init, **fields)

    @property
    def seeds(self) -> Seeds:
        return Seeds(self.seed if self.init_seed is None else self.init_seed, self.seed)


def archs_for(sections: list[dict], count: int, default: ModelConfig, key: str) -> list[ModelConfig]:
    """The architecture of each of `count` models: `sections` (model-section mappings under the config
    key `key`, one for all or one each; checked as model sections) or, when empty, `default`."""
    if not sections:
        return [default] * count
    archs = [from_dict(ModelConfig, s, prefix=f"{key}[{i}].") for i, s in enumerate(sections)]
    return archs * count if len(archs) == 1 else archs


def arch_key(arch: ModelConfig) -> str:
    return json.dumps(to_dict(arch), sort_keys=True)


def build(job: Job, data) -> nn.Module:
    """A fresh model from the job's init seed, or its `given` one (the global RNG seeded alike)."""
    if job.given is not None:
        engine.seed_everything(job.seeds.init)
        return job.given
    return engine.new_model(job.arch, data, job.seeds.init)


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
        if pack and len(group) > 1:  # the models a stacked fit trains (a group that cannot stack is built anew)
            for job in group:
                job.model = build(job, data)
            ok, why = can_stack([j.model for j in group], [j.objective for j in group], device=device)
        else:
            ok, why = False, "packing is off" if not pack else "only one model"
        log.append({"models": [job.key for job in group], "architecture": group[0].arch.name, "packed": ok,
                    "why": why})
        say(f"{', '.join(job.key for job in group)}: {'packed' if ok else 'one after another'} ({why})")
        for part in ([group] if ok else [[job] for job in group]):
            _fit(part, data, train, run, device, on_epoch, show)
    return log


def _fit(part: list[Job], data, train, run, device, on_epoch, show) -> None:
    """One engine.fit over these jobs' models (one model, or a stacked group)."""
    count = len(part)
    if count == 1:  # built right before it trains: the RNG it starts from is its own seed's
        part[0].model = build(part[0], data)
    show.start(part[0].label if count == 1 else f"{part[0].label} .. {part[-1].label} ({count} packed)",
               train.epochs)

    def report(r: dict) -> None:
        if r["model"] == count - 1:  # one bar step per epoch, after the last model's report
            show.epoch(r)
        if on_epoch:  # `seed` is the run seed (the engine's is the data seed)
            job = part[r["model"]]
            on_epoch({**{key: v for key, v in r.items() if key != "model"}, "seed": job.tags.get("seed", r["seed"]),
                      **job.report})

    results = engine.fit([job.model for job in part], data, train, seeds=[job.seed for job in part],
                         objectives=[job.objective for job in part], tags=[job.tags for job in part],
                         model_dirs=[run.checkpoint_dir(job.key, job.arch) for job in part], on_epoch=report,
                         emit=run.emit, device=device)
    for job, result in zip(part, results):
        job.result = result
        job.row = fit_summary(result, job.tags, count_params(job.model), **seed_columns(job.seeds),
                              **row_cost(job.model, data, train, device))  # once, after training
        show.label = job.label
        show.done(job.row)
