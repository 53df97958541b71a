"""`distill train`: train one model per seed, from labels or from a teacher.

    distill train mnist1d-cnn seeds=[0,1,2]
    distill train mnist1d-cnn train.epochs=2 dataset.num_samples=500   # tiny CPU check

From Python: `distill.train(cfg)` returns the run directory. Everything that can be wrong
with the input (config, dataset folder, teacher) is checked before the run directory is
created; a run started again with the same command resumes from its checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from distill.config import Config
from distill.training.experiment import data_on_device, prepare
from distill.teachers.fidelity import fidelity
from distill.training.jobs import Job, fit_jobs
from distill.training.seeds import model_seeds
from distill.kinds.train import KIND
from distill.methods.objectives import CROSS_ENTROPY_INFO, loss_tags
from distill.teachers.sources import teacher_objective


def check(cfg: Config, loaded: Optional[dict] = None) -> None:
    """What `train` checks before it writes anything: the data, the model, and every seed's teacher and
    method (raising the same one-line errors). `distill tune` runs it for each configuration before Ray
    starts; `loaded` keeps the datasets already read (by dataset section) between calls."""
    from distill.teachers.sources import new_model

    data, device = data_on_device(cfg, loaded)
    new_model(cfg.model, data, 0)  # without touching the global RNG
    teacher_plans(cfg, data, device)


def teacher_plans(cfg: Config, data, device) -> dict:
    """seed -> (objective, loss_info, teacher section or None): every seed's teacher and method checked."""
    return {seed: teacher_objective(cfg, data, seed, device) for seed in cfg.seed_list()}


def train(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
          on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Train `model` once per seed (the seeds' teacher sections first, if any); returns the run directory.

    The teacher sections, then the models, are trained by `distill.training.jobs.fit_jobs`: the seeds at
    once, stacked, when `distill.training.replicas.can_stack` allows it, else one after another; the
    choice is said on stderr and written into the summary (`packing`, by role). Summary rows
    come per seed, its teacher first. `on_epoch` receives each epoch's report with `role`,
    `seed` and `epochs` (that model's epoch count) added. Seeds (`distill.training.seeds`): the
    model or student starts from the run seed, a teacher section from one of its own (unless
    distill.teacher_same_seed), so a teacher of the student's architecture never starts from the
    student's weights or sees its batches in its order.
    """
    setup = prepare(cfg, progress)
    data, device, seeds = setup.data, setup.device, setup.seeds
    plans = teacher_plans(cfg, data, device)  # checks the teachers first
    run = setup.open(KIND.name, out, run_dir)

    teachers, models = {}, {}  # seed -> Job
    teacher_train = None  # the teacher sections' train section (one for every seed)
    for seed in seeds:
        objective, loss_info, section = plans[seed]
        if section is not None:  # the teacher section: trained first, from labels, in place
            name, teacher_train = section.model_cfg.name, section.train
            teachers[seed] = Job.seeded(section.seeds, key=section.key, arch=section.model_cfg,
                                        given=section.model,
                                        tags={"role": "teacher", "name": name, "seed": seed, "parent": None,
                                              **loss_tags(CROSS_ENTROPY_INFO)},
                                        label=f"teacher {name} seed {seed}",
                                        report={"role": "teacher", "epochs": section.train.epochs})
        role = "student" if loss_info.get("teacher") else "model"
        models[seed] = Job.seeded(model_seeds(seed, role), key=f"{role}-s{seed}", arch=cfg.model,
                                  objective=objective,
                                  tags={"role": role, "name": cfg.model.name, "seed": seed,
                                        "parent": loss_info.get("teacher"), **loss_tags(loss_info)},
                                  label=f"{role} {cfg.model.name} seed {seed}",
                                  report={"role": role, "epochs": cfg.train.epochs})
    loss_info = plans[seeds[-1]][1]

    def body() -> dict:
        packing: dict[str, str] = {}  # role -> how its seeds trained

        def fit(jobs: list[Job], train_cfg) -> None:
            for entry in fit_jobs(jobs, data, train_cfg, run, pack=True, device=device, on_epoch=on_epoch,
                                  show=setup.show, say=setup.say):
                how = "packed" if entry["packed"] else "one after another"
                packing[jobs[0].tags["role"]] = f"{how}: {entry['why']}"

        def rows() -> list[dict]:
            return [job.row for seed in seeds for job in (teachers.get(seed), models[seed])
                    if job is not None and job.row is not None]

        if teachers:
            fit(list(teachers.values()), teacher_train)
            run.write_summary(rows(), "running", loss=loss_info, packing=packing)
        fit(list(models.values()), cfg.train)
        for job in models.values():
            if job.tags["role"] == "student":  # agreement with (and KL from) its teacher, at the selected epoch
                job.row.update(fidelity(job.model, job.objective, data, cfg.train))
        return run.write_summary(rows(), "done", loss=loss_info, packing=packing)

    return setup.finish(run, body)
