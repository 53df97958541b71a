"""`distill train`: train one model per seed, from labels or from a teacher.

    distill train configs/mnist1d-cnn.yaml seeds=[0,1,2]
    distill train configs/mnist1d-cnn.yaml train.epochs=2 dataset.num_samples=500   # tiny CPU check

From Python: `distill.train(cfg)` returns the run directory. Everything that can be wrong
with the input (config, dataset folder, teacher) is checked before the run directory is
created; a run started again with the same command resumes from its checkpoints.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

from . import engine
from .config import Config
from .data import load_data
from .models import count_params
from .store import Run, fit_summary


class Progress:
    """Epoch progress: a tqdm bar on a terminal, one line per finished model otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start(self, label: str, epochs: int):
        if not self.enabled:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc=label, unit="epoch", leave=True, file=sys.stderr)
        self.label = label

    def epoch(self, report: dict):
        if self.bar is not None:
            if self.bar.n == 0 and report["epoch"] > 1:
                self.bar.update(report["epoch"] - 1)
            self.bar.set_postfix(val_acc=f"{report['val_acc']:.4f}", loss=f"{report['train_loss']:.4f}")
            self.bar.update(1)

    def done(self, row: dict):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(f"{self.label}: val_acc {row['val_acc']:.4f} test_acc {row['test_acc']:.4f} "
                  f"(epoch {row['selected_epoch']} selected on validation)", file=sys.stderr, flush=True)


def chain(*callbacks: Optional[Callable]) -> Callable:
    live = [c for c in callbacks if c is not None]
    return lambda value: [c(value) for c in live]


def run_guarded(run: Run, body: Callable[[], dict]) -> dict:
    """Run `body`, marking the run done, or failed with the reason (and re-raising)."""
    try:
        summary = body()
    except KeyboardInterrupt:
        run.finish("failed", "interrupted")
        raise
    except Exception as err:  # noqa: BLE001 - recorded, then re-raised
        run.finish("failed", f"{type(err).__name__}: {err}")
        (run.path / "error.txt").write_text(traceback.format_exc())
        raise
    run.finish("done")
    return summary


def build_objective(cfg: Config, data, seed: int, device):
    """What a student minimises: (objective or None for cross-entropy, loss_info).

    From `distill.teacher`, the `teacher` section (a teacher trained first: the objective
    then carries `teacher_to_train`), or a method that needs no teacher; see distill.teachers.
    Checks everything (paths, checkpoints, layer names) before any run directory exists.
    """
    from .teachers import distillation_objective

    return distillation_objective(cfg, data, seed, device)


def loss_tags(loss_info: dict) -> dict:
    """The loss columns of records.csv: method, reduction, T^2 scaling."""
    return {"method": loss_info.get("method"), "reduction": loss_info.get("reduction"),
            "t2_scaling": loss_info.get("t2_scaling")}


def train(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
          on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Train `model` once per seed; returns the run directory."""
    engine.setup_torch(cfg.train)
    device = engine.resolve_device(cfg.train.device)
    data = load_data(cfg.dataset).to(device)
    seeds = cfg.seed_list()
    objectives = {seed: build_objective(cfg, data, seed, device) for seed in seeds}  # checks the teacher first
    run = Run.open(cfg, "train", out, run_dir)
    run.write_meta(device=str(device))
    show = Progress(progress)

    def body() -> dict:
        from .teachers import CROSS_ENTROPY_INFO

        rows = []
        for seed in seeds:
            objective, loss_info = objectives[seed]
            pending = getattr(objective, "teacher_to_train", None)
            if pending is not None:  # the teacher section: train the teacher first, from labels
                tags = {"role": "teacher", "name": pending.model_cfg.name, "seed": seed, "parent": None,
                        **loss_tags(CROSS_ENTROPY_INFO)}
                engine.seed_everything(seed)
                show.start(f"teacher {pending.model_cfg.name} seed {seed}", pending.train.epochs)
                result = engine.fit(pending.model, data, pending.train, seed=seed, tags=tags,
                                    checkpoint_dir=run.checkpoint_dir(pending.key), emit=run.emit,
                                    on_epoch=chain(show.epoch, on_epoch), device=device)
                row = fit_summary(result, tags, count_params(pending.model))
                show.done(row)
                rows.append(row)
            role = "student" if loss_info.get("teacher") else "model"
            tags = {"role": role, "name": cfg.model.name, "seed": seed,
                    "parent": loss_info.get("teacher"), **loss_tags(loss_info)}
            model = engine.new_model(cfg.model, data, seed)
            show.start(f"{role} {cfg.model.name} seed {seed}", cfg.train.epochs)
            result = engine.fit(model, data, cfg.train, seed=seed, objective=objective, tags=tags,
                                checkpoint_dir=run.checkpoint_dir(f"{role}-s{seed}"), emit=run.emit,
                                on_epoch=chain(show.epoch, on_epoch), device=device)
            row = fit_summary(result, tags, count_params(model))
            show.done(row)
            rows.append(row)
            run.write_summary(rows, "running", loss=loss_info)
        return run.write_summary(rows, "done", loss=loss_info)

    run_guarded(run, body)
    return run.path
