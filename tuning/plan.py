"""How a sweep's models are laid out in Tune trials, decided before anything starts (no torch, no Ray).

    tune.seeds=stacked (default)  one trial trains every seed of its configuration(s), stacked where the
                                  model allows, and reports the mean over seeds to Tune
    tune.seeds=trials             one trial per (configuration, seed), as before
    tune.pack=N (default 16)      configurations that differ only in keys the objective reads (distill.*
                                  except the teacher) and share everything else train as one stacked fit
                                  in one trial, N at most; 0 = off

Packs need the configurations before the sweep starts and a scheduler that judges whole trials:
`tune.scheduler=fifo` with `tune.search_alg=basic`. ASHA keeps configurations unpacked (it stops a
trial, and a pack's configurations must not be stopped together for one member's figures);
Optuna proposes one configuration at a time, so each is its own trial (its seeds still stacked).
PBT, and kinds other than `train`, run one trial per seed (PBT copies one trial's weights into
another). Packs are split until every trial slot (this machine's CPUs / tune.cpus_per_trial) has one,
where there are configurations enough. In the stacked layout the random dimensions are drawn here, from a generator seeded by
the sweep id, so a resumed or extended sweep draws the same configurations.

Each (configuration, seed) is a run directory of its own, `<sweep>/runs/<configuration>-s<seed>/`,
named by the configuration's values: the same command with more seeds finds the finished ones and
trains only the new seeds (the sweep id leaves the seeds out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from pathlib import Path
from typing import Optional

from distill.config import Config
from distill.schema import to_dict

from . import space

NOT_OBJECTIVE = ("distill.teacher", "distill.teacher_unfinished")  # change the teacher, not the objective


def objective_key(key: str) -> bool:
    """Whether a searched key is read by the distillation objective only (T, alpha, the method, its options)."""
    return key.startswith("distill.") and key not in NOT_OBJECTIVE


@dataclasses.dataclass
class Plan:
    layout: str                         # "stacked" or "trials"
    why: str                            # why this layout, in words
    seeds: list
    configs: Optional[list]             # each configuration's sampled values; None: drawn by Optuna as it runs
    packs: list                         # stacked: the configurations (indices) of each trial
    pack_why: str
    models: int                         # models trained in all (students, or each kind's target models)
    epochs: int                         # their epochs
    teacher_epochs: int                 # the shared teacher's epochs (once per seed), 0 when none
    trials: int

    @property
    def stacked(self) -> bool:
        return self.layout == "stacked"


def sweep_id(cfg: Config) -> str:
    """The sweep folder name: `run_id`, else a hash of the resolved config without the seeds (and
    tune.pack, tune.seeds: how models are grouped, not what they are) in the stacked layout."""
    if cfg.run_id:
        return cfg.run_id
    data = {k: v for k, v in to_dict(cfg).items() if k not in ("preset", "paper", "log", "seeds")}
    data["tune"] = {k: v for k, v in data["tune"].items() if k not in ("pack", "seeds")}
    return "sweep-" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def sweep_folder(cfg: Config, out) -> Path:
    """The sweep folder: `run_id`, else a hash of the config (without the seeds when they are stacked:
    the same command with more seeds finds the same folder and trains only the new seeds)."""
    from distill.config import config_hash

    root = Path(cfg.tune.storage_path) if cfg.tune.storage_path else Path(out) / cfg.name
    if _layout(cfg)[0] == "stacked":
        return root.resolve() / sweep_id(cfg)
    return root.resolve() / (cfg.run_id or f"sweep-{config_hash(cfg)}")


def dry_run(cfg: Config, out) -> list[str]:
    """`distill tune --dry-run`: the input checked as a sweep checks it, then the plan; nothing starts."""
    from . import target

    dims = space.parse_search(cfg)
    target.check(cfg)
    if cfg.tune.scheduler == "pbt" and not dims:
        from distill.errors import UserError

        raise UserError("tune.scheduler=pbt perturbs searched keys, but search: is empty; "
                        "add e.g. search.distill.alpha={uniform: [0.1, 0.9]}")
    plan = make_plan(cfg, dims, local_slots(cfg))
    preflight(cfg, dims, plan)
    folder = sweep_folder(cfg, out)
    return ([f"distill tune --dry-run: {cfg.name}, sweep folder {folder}"] + describe(plan, cfg, folder)
            + ["nothing was started (no Ray, no training)"])


def preflight(cfg: Config, dims: list, plan: Plan) -> None:
    """Each configuration of the sweep checked as its kind's run checks its input before it writes anything
    (`Kind.preflight`: the data, the model, every seed's teacher and method), so bad input is one line before
    Ray starts, not a failure in every trial. With Optuna (configurations drawn later): the base and each
    searched value. A kind without a preflight is checked in its trials."""
    from distill import kinds
    from distill.errors import UserError

    check = kinds.get(cfg.tune.kind).preflight_function()
    if check is None:
        return
    base = space.base_dict(cfg)
    found = plan.configs if plan.configs is not None else \
        [{}] + [{dim.key: value} for dim in dims for value in dim.representatives()]
    loaded: dict = {}
    for params in found or [{}]:
        absolute = {key: space.absolute_paths(key, value) for key, value in params.items()}
        try:
            check(space.trial_config(base, absolute), loaded)
        except UserError as err:  # ConfigError is one too
            where = f"search: the configuration {space.describe(params)}: " if params else ""
            raise UserError(f"{where}{err}") from None


def tune_folder(plan: Plan) -> str:
    """The Tune experiment's folder inside the sweep folder: one per seed list and packing."""
    seeds = "-".join(str(s) for s in plan.seeds)
    text = json.dumps([plan.configs, plan.packs], sort_keys=True, default=str)
    return f"tune-s{seeds}-" + hashlib.sha256(text.encode()).hexdigest()[:6]


def member_name(params: dict, seed: int) -> str:
    """A (configuration, seed)'s run folder name: its values, short, and a hash of them."""
    tag = space.trial_dirname("", params).lstrip("_")[:60] or "base"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{tag}-{digest}-s{seed}"


def _draw(dim: space.Dimension, rng: random.Random):
    if dim.kind == "choice":
        return rng.choice(list(dim.values))
    low, high = dim.values
    if dim.kind == "uniform":
        return rng.uniform(low, high)
    if dim.kind == "loguniform":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.randrange(low, high)


def configurations(cfg: Config, dims: list) -> list[dict]:
    """Every configuration of a basic search: the grids crossed, each point with `tune.num_samples`
    draws of the random dimensions (a generator seeded by the sweep id)."""
    grids = [d for d in dims if d.kind == "grid"]
    randoms = [d for d in dims if d.kind != "grid"]
    rng = random.Random(sweep_id(cfg))
    found = []
    for point in itertools.product(*[d.values for d in grids]):
        for _ in range(cfg.tune.num_samples if randoms else 1):
            params = {d.key: space.absolute_paths(d.key, v) for d, v in zip(grids, point)}
            params.update({d.key: space.absolute_paths(d.key, _draw(d, rng)) for d in randoms})
            found.append(params)
    return found


def _layout(cfg: Config) -> tuple[str, str]:
    t = cfg.tune
    if t.seeds == "trials":
        return "trials", "tune.seeds=trials: one trial per (configuration, seed)"
    if t.kind != "train":
        return "trials", (f"tune.kind={t.kind}: seeds stacked in one trial are implemented for tune.kind=train; "
                          f"one trial per (configuration, seed)")
    if t.scheduler == "pbt":
        return "trials", "tune.scheduler=pbt copies one trial's weights into another: one trial per (configuration, seed)"
    return "stacked", "tune.seeds=stacked: one trial trains every seed of its configuration(s)"


def _packs(cfg: Config, configs: Optional[list], slots: int) -> tuple[list, str]:
    t = cfg.tune
    if configs is None:
        return [], "tune.search_alg=optuna proposes one configuration at a time: each is its own trial"
    single = [[i] for i in range(len(configs))]
    if t.pack <= 1:
        return single, f"tune.pack={t.pack}: each configuration its own trial"
    if t.scheduler != "fifo":
        return single, (f"tune.scheduler={t.scheduler} stops trials one by one: each configuration its own trial "
                        f"(packs need tune.scheduler=fifo)")
    groups: dict[str, list[int]] = {}
    for i, params in enumerate(configs):  # equal in every key the objective does not read
        rest = {k: v for k, v in params.items() if not objective_key(k)}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(i)
    packs = []
    for members in groups.values():
        count = math.ceil(len(members) / t.pack)
        size = math.ceil(len(members) / count)
        packs += [members[i:i + size] for i in range(0, len(members), size)]
    while len(packs) < slots and max(len(p) for p in packs) > 1:  # one pack per trial slot at least
        largest = max(range(len(packs)), key=lambda i: len(packs[i]))
        half = math.ceil(len(packs[largest]) / 2)
        packs[largest:largest + 1] = [packs[largest][:half], packs[largest][half:]]
    return packs, (f"tune.pack={t.pack}: configurations that differ only in distill.* keys (not the teacher) "
                   f"share a trial and one stacked fit; at least one trial per slot ({slots} trial(s) at once)")


def local_slots(cfg: Config) -> int:
    """Trials this machine runs at once: its CPUs / tune.cpus_per_trial (and tune.max_concurrent_trials)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    slots = max(1, int(cpus // cfg.tune.cpus_per_trial))
    return min(slots, cfg.tune.max_concurrent_trials) if cfg.tune.max_concurrent_trials else slots


def _epochs(cfg: Config, params: dict) -> int:
    return int(params.get("train.epochs", cfg.train.epochs))


def make_plan(cfg: Config, dims: list, slots: int = 1) -> Plan:
    """The sweep's layout (see the module docstring); `dims` from `space.parse_search`; `slots`: trials
    that run at once (packs are split until each slot has one, where they can be)."""
    from distill import kinds

    layout, why = _layout(cfg)
    seeds = cfg.seed_list()
    optuna = cfg.tune.search_alg == "optuna"
    configs = None if optuna else configurations(cfg, dims)
    packs, pack_why = _packs(cfg, configs, slots) if layout == "stacked" else ([], "")
    count = len(configs) if configs is not None else cfg.tune.num_samples
    epochs = (sum(_epochs(cfg, p) for p in configs) if configs is not None else count * cfg.train.epochs) * len(seeds)
    teacher_epochs = 0
    if cfg.teacher.model is not None and cfg.distill.teacher is None:
        per = int(cfg.teacher.train.get("epochs", cfg.train.epochs))
        affects = [d for d in dims if d.key.startswith(("dataset.", "teacher.")) or
                   (d.key.startswith("train.") and d.key.split(".", 1)[1] not in cfg.teacher.train)]
        shared = kinds.get(cfg.tune.kind).shares_teacher and not affects
        teacher_epochs = per * len(seeds) * (1 if shared else count)
    trials = (len(packs) if layout == "stacked" and configs is not None else
              count if layout == "stacked" else count * len(seeds))
    return Plan(layout, why, seeds, configs, packs, pack_why, count * len(seeds), epochs, teacher_epochs, trials)


def describe(plan: Plan, cfg: Config, folder: Optional[Path] = None) -> list[str]:
    """`distill tune --dry-run`: the trials, packs, models per pack and the estimated cost in epochs."""
    from .space import describe as values

    lines = [f"layout: {plan.why}"]
    seeds = f"{len(plan.seeds)} seed(s) {plan.seeds}"
    count = len(plan.configs) if plan.configs is not None else cfg.tune.num_samples
    lines.append(f"{count} configuration(s) x {seeds} = {plan.models} models; {plan.trials} Tune trial(s)")
    reused = 0
    if plan.stacked and plan.configs is not None:
        lines.append(f"packing: {plan.pack_why}")
        for n, pack in enumerate(plan.packs):
            names = [plan.configs[i] for i in pack]
            done = sum(_finished(folder, member_name(p, s)) for p in names for s in plan.seeds) if folder else 0
            reused += done
            shown = "; ".join(values(p) or "base config" for p in names[:4]) + (" ..." if len(names) > 4 else "")
            lines.append(f"  trial {n}: {len(pack)} configuration(s) x {len(plan.seeds)} seeds = "
                         f"{len(pack) * len(plan.seeds)} models in one fit"
                         f"{f' ({done} finished already, reused)' if done else ''}: {shown}")
    elif plan.stacked:
        lines.append(f"packing: {plan.pack_why}")
    teacher = f" + {plan.teacher_epochs} teacher epochs" if plan.teacher_epochs else ""
    per = plan.epochs // max(plan.models, 1)
    left = plan.epochs - reused * per
    lines.append(f"estimated cost: {plan.epochs} model epochs{teacher} = {plan.epochs + plan.teacher_epochs} epochs"
                 + (f"; {reused} model(s) finished already, {left} model epochs left" if reused else ""))
    return lines


def _finished(folder: Path, name: str) -> bool:
    try:
        meta = json.loads((folder / "runs" / name / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("status") == "done"
