"""The driver of `distill tune`: start (or join) Ray, run the trials, write sweep.json.

    distill tune tune-mnist1d-kd                       # Ray started here, all CPUs
    distill tune tune-mnist1d-kd tune.scheduler=asha   # stop poor trials early
    distill tune tune-mnist1d-kd --address 10.0.0.1:6379   # join a `ray start` cluster
    distill tune tune-mnist1d-kd --resume              # after the driver was killed
    distill tune tune-mnist1d-kd train.epochs=2 dataset.num_samples=500 seeds=[0]  # tiny

Where things go: `<storage>/<sweep-id>/`, where storage is `tune.storage_path` or
`OUT/<name>` and the sweep id is `run_id` or a hash of the resolved config (so the same
command with `--resume` finds the same folder; without the seeds in the stacked layout, so
more seeds train only the new ones). How models are laid out in trials is `tuning.plan`'s
(`tune.seeds`, `tune.pack`; `distill tune --dry-run` prints it): in the stacked layout each
(configuration, seed) is a run directory under `runs/`, Tune's folder is `tune-s<seeds>-<hash>/`,
and a trial trains a pack (`tuning.packed`); with `tune.seeds=trials` each trial folder is a run
directory (config.yaml, meta.json, records.csv, summary.json, checkpoints/) beside Ray's
files; `sweep.json` (`tuning.summary`) lists the trials, their sampled values, status,
run directories, the target model's figures, the other models' figures, and the best
configuration (`tuning.choose`). What reaches Tune is the target model's validation
figures only (`tuning.target`); ASHA's `grace_period`/`max_t` count its epochs.

SIGINT (Ctrl-C) or SIGTERM: Tune stops the trials and saves its state; unfinished trials
are `interrupted` (never `stopped` or `done`), sweep.json says `interrupted` with the
signal, `best_config` (from finished configurations only) is marked provisional, and
`SweepInterrupted` is raised: the command prints one line saying how to resume and exits
130 (SIGINT) or 143 (SIGTERM). The same command with `--resume` continues.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from distill import kinds
from distill.config import Config
from distill.errors import UserError
from ray import tune

from . import cluster, space
from . import plan as plans
from . import target as targets
from .choose import print_table
from .lines import TrialLines
from .signals import SweepInterrupted, _Signals
from .summary import SweepStopped, mode_of, stopped, write_interrupted, write_sweep
from .trainable import _read_json, kind_runner, run_trial

__all__ = ["SweepInterrupted", "SweepStopped", "TrialsFailed", "experiment_dir", "mode_of", "run", "write_sweep"]


class TrialsFailed(Exception):
    """Some trials failed; the others finished. `failed` maps trial folder -> reason."""

    def __init__(self, path: Path, failed: dict[str, str], total: int):
        self.path, self.failed = path, failed
        listed = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
        super().__init__(f"{len(failed)} of {total} trials failed ({listed}); the others finished, "
                         f"see {path / 'sweep.json'}")


def epochs_per_trial(cfg: Config, dims: list[space.Dimension]) -> int:
    """The target's epochs in the longest trial (the top of ASHA's rungs): every live target
    (student, generation, ensemble student) trains `train.epochs`."""
    for dim in dims:
        if dim.key == "train.epochs":
            numbers = [v for v in dim.values if isinstance(v, (int, float))]
            if numbers:
                return int(max(numbers))
    return cfg.train.epochs


def _scheduler(cfg: Config, dims, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    t = cfg.tune
    if t.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max(max_t, t.grace_period),
                             grace_period=t.grace_period, reduction_factor=t.reduction_factor,
                             stop_last_trials=False)  # a trial at the top rung finishes on its own
    if t.scheduler == "pbt":
        found = space.mutations(dims)
        check_scheduler(cfg, dims)
        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=t.perturbation_interval,
                                       hyperparam_mutations=found)
    return FIFOScheduler()


def check_scheduler(cfg: Config, dims) -> None:
    """PBT perturbs searched keys: with nothing searched it has nothing to do (one line, before Ray)."""
    if cfg.tune.scheduler == "pbt" and not dims:
        raise UserError("tune.scheduler=pbt perturbs searched keys, but search: is empty; "
                        "add e.g. search.distill.alpha={uniform: [0.1, 0.9]}")


def _searcher(cfg: Config, metric: str, mode: str, plan=None):
    if cfg.tune.search_alg != "optuna":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("tune.search_alg=optuna needs optuna: pip install 'distill-runner[optuna]' "
                        "(or pip install optuna)") from None
    searcher = OptunaSearch(metric=metric, mode=mode)
    seeds = cfg.seeds
    if seeds is not None and len(seeds) > 1 and not (plan and plan.stacked):  # stacked: one trial has every seed
        from ray.tune.search import Repeater

        searcher = Repeater(searcher, repeat=len(seeds), set_index=True)
    return searcher


def _trial_dirname(trial) -> str:
    return space.trial_dirname(trial.trial_id, trial.config)


def experiment_dir(cfg: Config, out: str | Path) -> Path:
    return plans.sweep_folder(cfg, out)


def _affects_teacher(cfg: Config, key: str) -> bool:
    if key.startswith(("dataset.", "teacher.")) or key == "distill.teacher":
        return True
    return key.startswith("train.") and key.split(".", 1)[1] not in cfg.teacher.train


def _shares_teacher(cfg: Config, dims) -> bool:
    """The trials may share a teacher trained once: the kind reads a teacher section, there is one, and
    no searched key changes it."""
    return (kinds.get(cfg.tune.kind).shares_teacher and cfg.teacher.model is not None
            and cfg.distill.teacher is None and not any(_affects_teacher(cfg, dim.key) for dim in dims))


def shared_teacher(cfg: Config, dims, path: Path, progress: bool, run_id: str = "teacher") -> str | None:
    """Train the `teacher` section's model once per seed, before the trials, and return its run dir.

    Every trial would otherwise train the same teacher again (same seed, same data, same
    settings). Only when no searched key changes the teacher; the trials then read it as
    `distill.teacher`. It trains in this process, from labels, and resumes like any run.
    """
    if not _shares_teacher(cfg, dims):
        return None
    from distill.config import build_config
    from distill.schema import to_dict
    from distill.training.runner import train
    from distill.teachers.sources import teacher_train_config

    data = to_dict(cfg)
    data.update(model=to_dict(cfg.teacher.model), train=to_dict(teacher_train_config(cfg)),
                teacher={"model": None, "train": {}}, search={}, run_id=run_id)
    data["distill"] = {}  # trained from labels: no distillation option applies
    run_dir = path / run_id
    if progress:
        print(f"distill: training the teacher once per seed for every trial, in {run_dir}", file=sys.stderr)
    return str(train(build_config(data), path, run_dir=run_dir, progress=progress))


def shared_teachers(cfg: Config, dims, path: Path, progress: bool) -> dict | None:
    """The stacked layout's `shared_teacher`: seed -> the run directory of its teacher. Finished teacher
    runs in the sweep folder are reused; the seeds without one train in a new `teacher-s<seeds>` run."""
    import yaml

    if not _shares_teacher(cfg, dims):
        return None
    found = {}
    for folder in sorted(path.glob("teacher*")):
        try:
            done = _read_json(folder / "meta.json").get("status") == "done"
            seeds = yaml.safe_load((folder / "config.yaml").read_text()).get("seeds") or []
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            continue
        for seed in seeds if done else []:
            found.setdefault(seed, str(folder))
    missing = [s for s in cfg.seed_list() if s not in found]
    if missing:
        data = space.base_dict(cfg)
        # the teacher learns from labels: the base's distill section (every searched method's options,
        # which only each configuration's own method may read) is not its to check
        data.update(seeds=missing, run_id="teacher-s" + "-".join(str(s) for s in missing), distill={})
        from distill.config import build_config

        run_dir = Path(shared_teacher(build_config(data), dims, path, progress, run_id=data["run_id"]))
        found.update({s: str(run_dir) for s in missing})
    return {s: found[s] for s in cfg.seed_list()}


def run(cfg: Config, out: str | Path = "runs", *, address: str | None = None, resume: bool = False,
        progress: bool = True) -> Path:
    """Run the sweep of `cfg.search` x seeds as Tune trials; returns the experiment folder.

    Raises `TrialsFailed` (after every other trial finished and sweep.json is written) when
    any trial failed, `SweepInterrupted` (after sweep.json is written) on SIGINT or SIGTERM,
    `cluster.RayUnavailable` when Ray cannot start or be joined, `SweepStopped` (sweep.json:
    interrupted, with the reason) when Tune itself fails, e.g. on a full disk.
    """
    dims = space.parse_search(cfg)  # everything about the input is checked before Ray starts
    targets.check(cfg)
    kind_runner(cfg.tune.kind)  # importable here (a kind outside this package: DISTILL_KINDS, PYTHONPATH)
    cluster.check_address(address)
    check_scheduler(cfg, dims)
    cluster.check_local_resources(cfg, address)
    plan = plans.make_plan(cfg, dims, plans.local_slots(cfg) if address is None else 1)
    path = experiment_dir(cfg, out)
    experiment = path / plans.tune_folder(plan) if plan.stacked else path  # Tune's own folder
    _searcher(cfg, cfg.tune.metric, mode_of(cfg.tune.metric), plan)  # optuna installed?
    if resume and _read_status(path) == "done" and _read_json(path / "sweep.json").get("tune") in (None, experiment.name):
        if progress:
            print(f"distill: the sweep in {path} is finished; nothing to resume (sweep.json has its results)",
                  file=sys.stderr)
        return path
    plans.preflight(cfg, dims, plan)  # each configuration's data, model, teacher and method, as its run checks them
    restorable = tune.Tuner.can_restore(str(experiment)) if experiment.exists() else False
    if restorable and not resume:
        raise UserError(f"{path} holds this sweep already; add --resume to continue it (finished trials are "
                        f"kept), or delete that folder")
    if resume and not restorable and progress:
        print(f"distill: nothing to resume in {path}; starting the sweep", file=sys.stderr)

    base = space.base_dict(cfg)
    base["train"]["threads"] = max(1, int(cfg.tune.cpus_per_trial))  # torch threads = the trial's CPUs
    if not plan.stacked:  # each epoch's Tune report carries that epoch's checkpoint
        base["train"]["checkpoint_seconds"] = 0.0
    if cfg.tune.gpus_per_trial == 0 and cfg.train.device == "auto":
        base["train"]["device"] = "cpu"  # a trial without a GPU never touches one
    signals = _Signals()
    signals.install()
    session, interrupted = None, None
    try:
        session = cluster.start(address)  # before the shared teacher: a Ray that cannot start costs nothing
        signals.install()  # ray.init sets a SIGTERM handler of its own
        cluster.check_resources(cfg)
        teachers = None
        if plan.stacked:
            teachers = shared_teachers(cfg, dims, path, progress)
            if teachers is not None:
                base["teacher"] = {"model": None, "train": {}}
        else:
            teacher = shared_teacher(cfg, dims, path, progress)
            if teacher is not None:
                base["distill"]["teacher"], base["teacher"] = teacher, {"model": None, "train": {}}
        lines = TrialLines(progress, cfg.tune.metric)
        try:
            grid = _fit(cfg, dims, base, experiment, restorable, lines, progress, plan, teachers)
            interrupted = signals.name or ("SIGINT" if _unfinished(grid, lines) else None)
            summary = write_sweep(path, cfg, grid, tune_status={Path(r.path).name: lines.status_of(r) for r in grid},
                                  interrupted=interrupted, plan=plan if plan.stacked else None)
        except Exception as err:  # noqa: BLE001 - Tune itself failed (a full disk): recorded, not a crash
            problem = err if isinstance(err, UserError) else stopped(path, cfg, err)
            if problem is err:
                raise
            raise problem from err
    except KeyboardInterrupt:
        name = signals.name or "SIGINT"
        if _read_status(path) != "interrupted":
            try:
                write_interrupted(path, cfg, name, "before Tune could list the trials")
            except OSError:
                pass  # a full disk: the exit status and the line on stderr still say it
        raise SweepInterrupted(path, name) from None
    finally:
        signals.restore()
        cluster.stop(session)
    if progress:
        print_table(summary)
        if summary.get("packs"):
            from .packsummary import pack_lines

            print("\n".join(pack_lines(summary)), file=sys.stderr, flush=True)
    if interrupted:
        raise SweepInterrupted(path, interrupted)
    failed = {t["trial"]: t["reason"] for t in summary["trials"] if t["status"] == "failed"}
    if failed:
        raise TrialsFailed(path, failed, len(summary["trials"]))
    return path


def _read_status(path: Path):
    return _read_json(path / "sweep.json").get("status")


def _unfinished(grid, lines: TrialLines) -> bool:
    """Whether Tune's loop ended with trials still live: it was interrupted (Ctrl-C)."""
    return any(lines.status_of(r) not in ("TERMINATED", "ERROR") and r.error is None
               for r in grid)


def _fit(cfg: Config, dims, base: dict, path: Path, restorable: bool, lines: TrialLines, progress: bool,
         plan: plans.Plan, teachers: dict | None):
    """Tuner.fit of a new or restored sweep in Tune's folder `path`; returns Tune's ResultGrid."""
    metric, mode = cfg.tune.metric, mode_of(cfg.tune.metric)
    optuna = cfg.tune.search_alg == "optuna"
    seeds = list(cfg.seeds) if cfg.seeds is not None else None
    resources = {"cpu": cfg.tune.cpus_per_trial, "gpu": cfg.tune.gpus_per_trial}
    if plan.stacked:  # a trial: a pack of configurations, every seed of each (tuning.packed)
        from .packed import run_pack

        trainable = tune.with_resources(tune.with_parameters(
            run_pack, base=base, sweep_dir=str(path.parent), tune_dir=str(path), configs=plan.configs,
            packs=plan.packs, seeds=plan.seeds, teachers=teachers), resources)
        params = (space.param_space(dims, None, grid_as_choice=True) if optuna else
                  {"pack": tune.grid_search(list(range(len(plan.packs))))})
        repeats = 1
    else:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base, experiment_dir=str(path),
                                 kind=cfg.tune.kind, seeds=seeds if optuna else None), resources)
        params = space.param_space(dims, seeds, grid_as_choice=optuna)
        repeats = len(seeds) if optuna and seeds else 1
    quiet = logging.getLogger("ray.tune.tune")  # its "interrupted ... Tuner.restore(...)" lines: we say it once
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        if restorable:
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            max_t = epochs_per_trial(cfg, dims)
            tuner = tune.Tuner(
                trainable,
                param_space=params,
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode, scheduler=_scheduler(cfg, dims, max_t),
                    search_alg=_searcher(cfg, metric, mode, plan),
                    num_samples=1 if plan.stacked and not optuna else cfg.tune.num_samples * repeats,
                    max_concurrent_trials=cfg.tune.max_concurrent_trials or None,
                    reuse_actors=cfg.tune.reuse_actors,
                    trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    name=path.name, storage_path=str(path.parent), verbose=0,
                    # PBT: a trial at its last epoch is stopped before the scheduler is asked, so it
                    # is never paused to exploit another trial after it has finished training (the
                    # trainable sends that last report only once its run directory is complete)
                    stop={"training_iteration": max_t} if cfg.tune.scheduler == "pbt" else None,
                    callbacks=[lines],
                    failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=_checkpoints_kept(cfg))))
        grid = tuner.fit()
        if restorable and _lost_checkpoints(grid) and not _unfinished(grid, lines):
            # the driver died between Ray deleting a trial's old checkpoint (num_to_keep) and the
            # snapshot naming its newer one: that trial's snapshot points at a deleted folder and
            # Ray cannot restore it; restart it (and any other failed trial) from scratch
            if progress:
                print("distill: restarting from scratch the trials whose last snapshotted checkpoint was "
                      "deleted before the driver died", file=sys.stderr)
            errored = {Path(result.path) for result in grid if result.error is not None}
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=True)
            grid = tuner.fit()
            # a restarted trial gets a new trial id, so a new folder: the old one holds only a partial
            # run that no result names any more, which reports would otherwise read
            for folder in errored - {Path(result.path) for result in grid}:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        quiet.setLevel(level)
    return grid


def _lost_checkpoints(grid) -> bool:
    """Whether a trial failed because the checkpoint Ray's snapshot names no longer exists."""
    return any(result.error is not None and "does not exist on storage anymore" in str(result.error)
               for result in grid)


def _checkpoints_kept(cfg: Config) -> int | None:
    """Tune checkpoints kept per trial: the newest 2, except under PBT, where none is deleted.

    A PBT exploit hands one trial's checkpoint to another; Ray's per-trial checkpoint manager
    of the receiving trial later deletes that folder when it falls out of its newest N, and the
    owner's manager may already have deleted it: the trial then fails with "Path not found"
    (seen here with num_to_keep=2 and a perturbation every epoch; ray-project/ray#5549 and
    #8441 are older forms of the same race). Each checkpoint is one run's small `checkpoints/`
    tree, so keeping them all costs little."""
    return None if cfg.tune.scheduler == "pbt" else 2
