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

from . import engine
from .config import Config
from .cost import row_cost
from .data import load_data
from .fidelity import fidelity
from .models import count_params
from .objectives import CROSS_ENTROPY_INFO, loss_tags
from .progress import Progress, chain
from .sources import teacher_objective
from .store import Run, fit_summary, run_guarded


def train(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
          on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Train `model` once per seed (its teacher section first, if any); returns the run directory."""
    engine.setup_torch(cfg.train)
    device = engine.resolve_device(cfg.train.device)
    data = load_data(cfg.dataset).to(device)
    seeds = cfg.seed_list()
    plans = {seed: teacher_objective(cfg, data, seed, device) for seed in seeds}  # checks the teachers first
    run = Run.open(cfg, "train", out, run_dir)
    run.write_meta(device=str(device))
    show = Progress(progress)

    def fit(model, model_cfg, train_cfg, seed, tags, key, objective=None) -> dict:
        show.start(f"{tags['role']} {tags['name']} seed {seed}", train_cfg.epochs)
        # each report says which model it is about (a Tune trial reports only its target's epochs)
        report = on_epoch and (lambda r: on_epoch({**r, "role": tags["role"], "epochs": train_cfg.epochs}))
        result = engine.fit_one(model, data, train_cfg, seed=seed, objective=objective, tags=tags,
                                checkpoint_dir=run.checkpoint_dir(key, model_cfg), emit=run.emit,
                                on_epoch=chain(show.epoch, report), device=device)
        row = fit_summary(result, tags, count_params(model), **row_cost(model, data, train_cfg, device))
        show.done(row)
        return row

    def body() -> dict:
        rows = []
        for seed in seeds:
            objective, loss_info, section = plans[seed]
            if section is not None:  # the teacher section: trained first, from labels, in place
                tags = {"role": "teacher", "name": section.model_cfg.name, "seed": seed, "parent": None,
                        **loss_tags(CROSS_ENTROPY_INFO)}
                engine.seed_everything(seed)
                rows.append(fit(section.model, section.model_cfg, section.train, seed, tags, section.key))
            role = "student" if loss_info.get("teacher") else "model"
            tags = {"role": role, "name": cfg.model.name, "seed": seed, "parent": loss_info.get("teacher"),
                    **loss_tags(loss_info)}
            model = engine.new_model(cfg.model, data, seed)
            rows.append(fit(model, cfg.model, cfg.train, seed, tags, f"{role}-s{seed}", objective))
            if role == "student":  # agreement with (and KL from) its teacher, at the selected epoch
                rows[-1].update(fidelity(model, objective, data, cfg.train))
            run.write_summary(rows, "running", loss=loss_info)
        return run.write_summary(rows, "done", loss=loss_info)

    run_guarded(run, body)
    return run.path
