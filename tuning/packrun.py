"""One pack's training: its (configuration, seed) members in one `fit_jobs` call (imports torch).

Each member is a `distill train` run directory of one seed (`<sweep>/runs/<configuration>-s<seed>/`:
config.yaml, meta.json, records.csv, summary.json, checkpoints/), so reports, `distill export` and
`distill.teacher=<member>` read it like any run. The members' students share the data, the
architecture and the training recipe (a pack differs only in keys the objective reads), so
`fit_jobs` trains them as one group: stacked in one `engine.fit` where `replicas.can_stack` allows,
else one after another. Members of one seed with the same teacher share one teacher signal (its
cached logits are computed once). A member already finished is not trained again: its run is read.
A stacked fit keeps its training state in the first member's `checkpoints/<key>-pack<K>/`, and every
model writes its own last.pt and best.pt in its own run, so a killed pack resumes with the same numbers.
The cost figures (FLOPs, latency) are measured once per architecture and copied to each member's row.
"""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path
from typing import Callable, Optional

from distill.config import Config
from distill.export.cost import row_cost
from distill.methods.objectives import CROSS_ENTROPY_INFO, loss_tags
from distill.runs.store import Run, one_line, unlock_run_dir
from distill.teachers.fidelity import fidelity
from distill.teachers.sources import teacher_objective
from distill.training.experiment import prepare
from distill.training.jobs import Job, fit_jobs
from distill.training.seeds import model_seeds

MEMBER = "pack_member"  # the tag and report key naming a model's member (never written to a run's files)


@dataclasses.dataclass
class Member:
    index: int       # in the pack
    config: int      # the configuration's index in the pack
    params: dict     # its sampled values
    seed: int
    cfg: Config      # one seed: the config of its run
    run_dir: Path


class PackRun:
    """The members' runs seen as one `Run` by `fit_jobs`: a job key `<member>:<key>` is `<key>` in that
    member's run; history rows go to the run of the member they name (`on_rows` sees them too)."""

    def __init__(self, runs: list[Run], on_rows: Callable[[int, list[dict]], None]):
        self.runs, self.on_rows = runs, on_rows

    def checkpoint_dir(self, key: str, model_cfg=None) -> Path:
        member, _, own = key.partition(":")
        return self.runs[int(member)].checkpoint_dir(own, model_cfg)

    def emit(self, rows: list[dict]) -> None:
        by: dict[int, list[dict]] = {}
        for row in rows:
            by.setdefault(row[MEMBER], []).append({k: v for k, v in row.items() if k != MEMBER})
        for member, part in by.items():
            self.runs[member].emit(part)
            self.on_rows(member, part)


def _share_signals(plans: dict, members: list[Member]) -> None:
    """Members of one seed taught by the same teacher read one signal (one teacher cache)."""
    shared = {}
    for m in members:
        objective = plans[m.index][0]
        signal = getattr(objective, "signal", None)
        if signal is None or plans[m.index][2] is not None or m.cfg.distill.teacher is None:
            continue
        key = (m.seed, m.cfg.distill.teacher, type(signal), getattr(signal, "cached", None),
               getattr(signal, "top_k", None))
        if key in shared:
            objective.signal = shared[key]
        else:
            shared[key] = signal


def train_pack(members: list[Member], *, on_rows: Callable[[int, list[dict]], None],
               on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = False) -> list[Optional[dict]]:
    """Train the members not finished yet; returns each member's summary (None for none)."""
    cfg0 = members[0].cfg
    if any(m.cfg.train != cfg0.train or m.cfg.model != cfg0.model or m.cfg.dataset != cfg0.dataset for m in members):
        raise ValueError("a pack's members must share the model, data and training sections")
    setup = prepare(cfg0, progress)
    data, device = setup.data, setup.device
    runs = [Run.open(m.cfg, "train", run_dir=m.run_dir) for m in members]
    todo = [m for m in members if runs[m.index].finished is None]
    summaries: list[Optional[dict]] = [runs[m.index].finished for m in members]
    if not todo:
        return summaries
    try:
        plans = {m.index: teacher_objective(m.cfg, data, m.seed, device) for m in todo}
        _share_signals(plans, todo)
        for m in todo:
            runs[m.index].write_meta(device=str(device))
        teachers, students = [], []
        teacher_train = None
        for m in todo:
            objective, info, section = plans[m.index]
            if section is not None:
                teacher_train = section.train
                teachers.append(Job.seeded(
                    section.seeds, key=f"{m.index}:{section.key}", arch=section.model_cfg, given=section.model,
                    tags={"role": "teacher", "name": section.model_cfg.name, "seed": m.seed, "parent": None,
                          **loss_tags(CROSS_ENTROPY_INFO), MEMBER: m.index},
                    label=f"teacher seed {m.seed}",
                    report={"role": "teacher", "epochs": section.train.epochs, MEMBER: m.index}))
            role = "student" if info.get("teacher") else "model"
            students.append(Job.seeded(  # the seed rule of `distill train` (distill.training.seeds)
                model_seeds(m.seed, role), key=f"{m.index}:{role}-s{m.seed}", arch=m.cfg.model, objective=objective,
                tags={"role": role, "name": m.cfg.model.name, "seed": m.seed, "parent": info.get("teacher"),
                      **loss_tags(info), MEMBER: m.index},
                label=f"{role} {m.cfg.model.name} {m.run_dir.name}",
                report={"role": role, "epochs": m.cfg.train.epochs, MEMBER: m.index}))
        run = PackRun(runs, on_rows)
        packing: dict[str, str] = {}

        def fit(jobs: list[Job], train) -> None:
            quiet = dataclasses.replace(train, cost_budget=0.0)  # measured once below, not per model
            for entry in fit_jobs(jobs, data, quiet, run, pack=True, device=device, on_epoch=on_epoch,
                                  show=setup.show, say=setup.say):
                how = "packed" if entry["packed"] else "one after another"
                packing[jobs[0].tags["role"]] = f"{how}: {entry['why']} ({len(entry['models'])} models of this trial)"
            cost = row_cost(jobs[0].model, data, train, device)
            for job in jobs:
                job.row.pop(MEMBER, None)
                job.row.update(cost)

        if teachers:
            fit(teachers, teacher_train)
        fit(students, cfg0.train)
        for m, job in zip(todo, students):
            if job.tags["role"] == "student":
                job.row.update(fidelity(job.model, job.objective, data, m.cfg.train))
            rows = [j.row for j in teachers if j.tags[MEMBER] == m.index] + [job.row]
            summaries[m.index] = runs[m.index].write_summary(rows, "done", loss=plans[m.index][1], packing=packing,
                                                             pack={"members": len(members), "trained": len(todo)})
            runs[m.index].finish("done")
        return summaries
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        for m in todo:
            runs[m.index].fail("terminated by SIGTERM" if name == "SIGTERM" else "interrupted", signal=name)
        raise
    except Exception as err:  # noqa: BLE001 - recorded in every unfinished member, then re-raised
        for m in todo:
            if summaries[m.index] is None:
                runs[m.index].fail(one_line(err), traceback.format_exc())
        raise
    finally:
        for m in todo:
            unlock_run_dir(runs[m.index].path)
