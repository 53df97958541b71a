"""Born-again chains (Furlanello et al., ICML 2018): each student becomes the next teacher.

    distill bornagain ban-mnist1d seeds=[0,1,2]
    distill bornagain ban-mnist1d seeds=[0] train.epochs=2 bornagain.generations=2   # tiny

Generation 0 learns from labels. Generation g = 1..G is a fresh model (of `model.name`,
`bornagain.model`, or the g-th of `bornagain.models`) taught by `bornagain.teacher`:
`previous` (generation g-1 of the same seed) or `ensemble` (generations 0..g-1 of the same
seed, combined by the distillation objective). The loss is `distill.method` (`ban`, `kd`, `cwtm`, `dkpp`, ... : `distill list
methods`). Generation g of seed s is initialised and shuffled with its own seeds,
`model_seeds(s, "generation", g)` (generation 0: s; g >= 1: s * 1009 + g * 7919; the one rule of
`distill.training.seeds`), recorded in its row as `init_seed` and `data_seed`.

The seeds of one generation are trained by `distill.training.jobs.fit_jobs` (as ensemble members
are): at once, stacked, when `distill.training.replicas.can_stack` allows it (a logit-only loss;
BatchNorm and dropout stack, per model) and `bornagain.pack` is true; otherwise one after another. The choice
is logged and written into the summary.

Evaluated: every generation on validation and test, and the born-again ensembles Ens x k
(mean probabilities of generations 1..k, and of 0..k) as `ensemble` rows, whose cost figures
are the sums of their generations' (`distill.export.cost.ensemble_row_cost`). With
`bornagain.stop`, the chain ends early when the newest generation is not better on
validation than the one before; the summary says why it stopped.

Teacher-assistant chains (TAKD, Mirzadeh et al. 2020): `bornagain.models` gives each generation
after 0 its own architecture (teacher -> assistant(s) -> student). With two or more of them
(`bornagain.direct`), each seed also trains the direct baseline, role `direct`: generation 0
distilled straight into the last generation's architecture with the same loss and the last
generation's seed (`direct_jobs`), so the page pairs the chain's student with direct KD by seed.

A chain killed in generation g and started again with the same command returns the
finished generations from their checkpoints and resumes generation g at its last epoch.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Optional

import torch

from distill.config import Config, ModelConfig
from distill.export.cost import ensemble_row_cost
from distill.training.experiment import data_on_device, prepare
from distill.training.evaluation import predict
from distill.teachers.fidelity import fidelity
from distill.training.jobs import Job, arch_key, fit_jobs
from distill.training.seeds import model_seeds
from distill.training.metrics import probs_metrics
from distill.models import create_model
from distill.methods.objectives import CROSS_ENTROPY_INFO, loss_tags, make_objective
from distill.teachers.signals import combine_log_probs
from distill.teachers.sources import stand_in_student
from distill.kinds.bornagain import KIND, unread_teacher_keys
from distill.runs.store import summary_row
from distill.schema import from_dict


def generation_model_config(cfg: Config, generation: int) -> ModelConfig:
    """Generation g's architecture: the model section for 0; `bornagain.models` (one for all or one
    per generation), else `bornagain.model`, else the model section for g >= 1."""
    sections = cfg.bornagain.models
    if generation > 0 and sections:
        i = 0 if len(sections) == 1 else generation - 1
        return from_dict(ModelConfig, sections[i], prefix=f"bornagain.models[{i}].")
    if generation == 0 or cfg.bornagain.model is None:
        return cfg.model
    return ModelConfig(**{**cfg.model.__dict__, "name": cfg.bornagain.model})


def teacher_generations(cfg: Config, generation: int) -> list[int]:
    """Which generations teach generation g."""
    if generation == 0:
        return []
    return [generation - 1] if cfg.bornagain.teacher == "previous" else list(range(generation))


def parent_name(cfg: Config, generation: int) -> Optional[str]:
    gens = teacher_generations(cfg, generation)
    if not gens:
        return None
    return f"generation {gens[0]}" if len(gens) == 1 else f"ensemble of generations {gens[0]}..{gens[-1]}"


def should_stop(cfg: Config, val_by_generation: dict[int, list[float]], generation: int) -> Optional[str]:
    """The reason to stop after `generation`, or None to go on (validation accuracy only)."""
    rule = cfg.bornagain.stop
    if rule == "never" or generation == 0:
        return None
    new, old = val_by_generation[generation], val_by_generation[generation - 1]
    gain = statistics.fmean(new) - statistics.fmean(old)
    if rule == "delta":
        limit, what = cfg.bornagain.stop_delta, f"stop_delta {cfg.bornagain.stop_delta:.4f}"
    else:
        spread = statistics.stdev(new + old) if len(new + old) > 1 else 0.0
        limit, what = spread, f"the seeds' spread {spread:.4f}"
    if gain <= limit:
        return (f"generation {generation} gained {gain:+.4f} mean validation accuracy over generation "
                f"{generation - 1}, not more than {what}")
    return None


def direct_jobs(cfg: Config, data, device, models: dict, last: int) -> list[Job]:
    """TAKD's baseline (Mirzadeh et al. 2020): generation 0 of each seed distilled straight into the
    architecture of generation `last`, with the chain's loss and generation `last`'s seed (so its
    initialisation and batches): role `direct`. Only for a chain of `bornagain.models` with 2+
    generations (with one, it would be generation 1 again)."""
    if not (cfg.bornagain.models and cfg.bornagain.direct and last >= 2):
        return []
    arch, jobs = generation_model_config(cfg, last), []
    for seed in models:
        seeds = model_seeds(seed, "direct", last)
        objective, info = make_objective(cfg.distill, [models[seed][0]], data, device,
                                         seed=seeds.data, student=stand_in_student(cfg, arch, data),
                                         description="generation 0 (direct)", epochs=cfg.train.epochs)
        jobs.append(Job.seeded(seeds, key=f"direct-s{seed}", arch=arch,
                        tags={"role": "direct", "name": arch.name, "seed": seed, "parent": "generation 0",
                              **loss_tags(info)},
                        label=f"direct KD {arch.name} seed {seed}",
                        report={"role": "direct", "seed": seed, "epochs": cfg.train.epochs}, objective=objective))
    return jobs


def direct_note(cfg: Config, direct: list[Job], last: int) -> Optional[dict]:
    """summary.json's `direct`: what the direct baseline is, or None when the run has none."""
    if not direct:
        return None
    return {"architecture": direct[0].arch.name, "teacher": "generation 0", "compared_with": f"generation {last}",
            "seed": f"generation {last}'s (the same initialisation and batches)", "loss": cfg.distill.method}


@torch.inference_mode()
def ensemble_rows(cfg: Config, data, models: dict[int, torch.nn.Module], seed: int,
                  costs: dict[int, dict] | None = None) -> list[dict]:
    """Ens x k rows: mean probabilities of generations 1..k and of 0..k, on validation and test;
    with `costs` (generation -> its summary row), each row's cost is the sum of its generations'."""
    logits = {split: {g: predict(m, data, split, cfg.train.eval_batch_size, cfg.train.precision)
                      for g, m in models.items()} for split in ("val", "test")}
    rows = []
    last = max(models)
    for first in (1, 0):
        for k in range(max(first, 1), last + 1):
            gens = list(range(first, k + 1))
            if len(gens) < 2:
                continue
            metrics = {split: probs_metrics(combine_log_probs(torch.stack([logits[split][g] for g in gens]),
                                                              "mean_probs").exp(), data.y[split])
                       for split in logits}
            rows.append(summary_row(
                role="ensemble", name=f"ens_{first}..{k}", seed=seed, generation=k, size=len(gens),
                combine="mean_probs", parent=f"generations {first}..{k}",
                val_acc=metrics["val"]["acc"], val_nll=metrics["val"]["nll"], test_acc=metrics["test"]["acc"],
                test_nll=metrics["test"]["nll"], test_ece=metrics["test"]["ece"],
                test_acc_last=None, **ensemble_row_cost([costs[g] for g in gens] if costs else [])))
    return rows


def _checked(cfg: Config, data, device) -> list[ModelConfig]:
    """The generations' architectures, each built once, and the loss's own checks (layers, options) on a
    stand-in teacher: before the run folder exists."""
    archs = [generation_model_config(cfg, g) for g in range(cfg.bornagain.generations + 1)]
    with torch.random.fork_rng(devices=[]):
        for arch in {arch_key(a): a for a in archs}.values():
            create_model(arch, data.input_shape, data.num_classes)
        make_objective(cfg.distill, [create_model(archs[0], data.input_shape, data.num_classes)], data, device,
                       seed=cfg.seed_list()[0], student=stand_in_student(cfg, archs[1], data),
                       description=parent_name(cfg, 1), epochs=cfg.train.epochs)
    return archs


def check(cfg: Config, loaded: Optional[dict] = None) -> None:
    """What `run` checks before it writes anything (the kind's preflight: distill tune, each configuration)."""
    unread_teacher_keys(cfg)
    _checked(cfg, *data_on_device(cfg, loaded))


def run(cfg: Config, out: str | Path = "runs", *, run_dir: str | Path | None = None,
        on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True) -> Path:
    """Train the chain for every seed; returns the run directory (see the module docstring).

    `on_epoch` receives each epoch's report (train and validation figures) with `role`,
    `generation`, `seed` and `epochs` (the generation's epoch count) added; generations come
    one after another, so a Tune trial sees the chain's epochs in order.
    """
    unread_teacher_keys(cfg)  # before anything loads: a teacher this kind does not read is an error
    setup = prepare(cfg, progress)
    data, device, seeds, show, say = setup.data, setup.device, setup.seeds, setup.show, setup.say
    archs = _checked(cfg, data, device)
    run = setup.open(KIND.name, out, run_dir)

    def body() -> dict:
        rows: list[dict] = []
        models: dict[int, dict[int, torch.nn.Module]] = {s: {} for s in seeds}  # seed -> generation -> model
        val_by_generation: dict[int, list[float]] = {}
        packing: dict[int, str] = {}
        loss_info: dict = {}
        stopped = None
        for g in range(cfg.bornagain.generations + 1):
            model_cfg = generation_model_config(cfg, g)
            jobs = []
            for seed in seeds:
                teachers = [models[seed][t] for t in teacher_generations(cfg, g)]
                objective, info = None, CROSS_ENTROPY_INFO
                own = model_seeds(seed, "generation", g)
                if teachers:
                    objective, loss_info = make_objective(
                        cfg.distill, teachers, data, device, seed=own.data,
                        student=stand_in_student(cfg, model_cfg, data), description=parent_name(cfg, g),
                        epochs=cfg.train.epochs)
                    info = loss_info
                jobs.append(Job.seeded(own, key=f"gen{g}-s{seed}", arch=model_cfg,
                                tags={"role": "generation", "name": model_cfg.name, "seed": seed, "generation": g,
                                      "parent": parent_name(cfg, g), **loss_tags(info)},
                                label=f"generation {g} seed {seed}",
                                report={"role": "generation", "generation": g, "seed": seed,
                                        "epochs": cfg.train.epochs},
                                objective=objective))
            (entry,) = fit_jobs(jobs, data, cfg.train, run, pack=cfg.bornagain.pack, device=device,
                                on_epoch=on_epoch, show=show, say=say)
            how = "packed" if entry["packed"] else "one after another"
            packing[g] = f"{how}: {entry['why'] if cfg.bornagain.pack else 'pack=false'}"
            for seed, job in zip(seeds, jobs):
                if job.objective is not None:  # generations >= 1: fidelity to the generation(s) that taught it
                    job.row.update(fidelity(job.model, job.objective, data, cfg.train))
                models[seed][g] = job.model.eval()
                rows.append(job.row)
            val_by_generation[g] = [r["val_acc"] for r in rows if r["generation"] == g and r["role"] == "generation"]
            run.write_summary(rows, "running", loss=loss_info or None, packing=packing)
            stopped = should_stop(cfg, val_by_generation, g)
            if stopped:
                say(f"stopping the chain: {stopped}")
                break
        for seed in seeds:
            generation_rows = {r["generation"]: r for r in rows if r["role"] == "generation" and r["seed"] == seed}
            rows.extend(ensemble_rows(cfg, data, models[seed], seed, generation_rows))
        last = max(val_by_generation)
        direct = direct_jobs(cfg, data, device, models, last)
        if direct:  # TAKD's baseline: generation 0 straight into the last architecture
            (entry,) = fit_jobs(direct, data, cfg.train, run, pack=cfg.bornagain.pack, device=device,
                                on_epoch=on_epoch, show=show, say=say)
            packing["direct"] = f"{'packed' if entry['packed'] else 'one after another'}: {entry['why']}"
            for job in direct:
                job.row.update(fidelity(job.model, job.objective, data, cfg.train))
                rows.append(job.row)
        return run.write_summary(rows, "done", loss=loss_info or None, packing=packing,
                                 generations_trained=last, direct=direct_note(cfg, direct, last),
                                 stopped={"after_generation": last, "reason": stopped or
                                          f"all {cfg.bornagain.generations} generations trained"})

    return setup.finish(run, body)
