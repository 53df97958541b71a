"""The `search:` section: checked before Ray starts, then turned into a Ray Tune param space.

    search:
      distill.temperature: {grid: [1, 2, 4, 8, 16]}   # every value, crossed with the other grids
      distill.alpha: {choice: [0.1, 0.5, 0.9]}        # one value drawn per sample
      train.lr: {loguniform: [1.0e-4, 1.0e-1]}        # log-uniform in [low, high]
      train.weight_decay: {uniform: [0.0, 1.0e-3]}    # uniform in [low, high]
      model.width: {randint: [16, 129]}               # integer in [low, high): high excluded, as in Ray

A key is any leaf config key (`distill list keys`). `seeds: [0, 1]` in the config becomes one
more grid dimension, so every configuration is repeated once per seed and each trial trains
one seed. Grids are crossed with each other; random dimensions are drawn `tune.num_samples`
times for every grid point (Ray's semantics).

In the Ray param space every key is the dotted config key itself (`seeds` holds a one-seed
list), so a trial's config is the base config with those keys set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import Config, build_config
from distill.schema import set_dotted, to_dict
from distill.errors import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
RANDOM_KINDS = ("choice", "uniform", "loguniform", "randint")
# keys whose value is a path on disk: made absolute before trials run (Ray moves a trial's cwd)
PATH_KEYS = ("dataset.root", "distill.teacher")
NOT_SEARCHABLE = {"name": "the experiment name", "run_id": "the sweep folder name",
                  "seeds": "put the seeds in `seeds: [...]`; each becomes a grid dimension",
                  "search": "the search section itself"}
EXAMPLE = "e.g. distill.alpha: {grid: [0.1, 0.5, 0.9]} or distill.temperature: {loguniform: [1, 20]}"


@dataclass(frozen=True)
class Dimension:
    """One searched key: `kind` is one of KINDS; `values` the grid/choice values or [low, high]."""

    key: str
    kind: str
    values: tuple

    def representatives(self) -> list:
        """Values checked against the config before anything runs."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [low, high]


def _leaf_keys() -> dict[str, Any]:
    """dotted leaf key -> its annotation, for every key of `Config`."""
    found = {}

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = prefix + (f.metadata.get("key") or f.name)
            tp = hints[f.name]
            if typing.get_origin(tp) is typing.Union:  # Optional[Section], e.g. teacher.model
                tp = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
            else:
                found[key] = tp

    walk(Config, "")
    from distill.methods.options import all_options  # each method's options: keys of the distill section

    found.update({f"distill.{option.key}": option.type for option, _ in all_options()})
    return found


def _check_key(key) -> None:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError(f"search: {key!r} is not a dotted config key like distill.alpha")
    top = key.split(".")[0]
    if key in NOT_SEARCHABLE or top in ("search", "tune"):
        what = NOT_SEARCHABLE.get(key) or NOT_SEARCHABLE.get(top) or "how the sweep itself runs"
        raise ConfigError(f"search.{key}: cannot be searched ({what})")
    leaves = _leaf_keys()
    if key in leaves:
        return
    # below a free mapping (model.kwargs.depth) any name is allowed
    if any(key.startswith(leaf + ".") and tp is dict for leaf, tp in leaves.items()):
        return
    if any(leaf.startswith(key + ".") for leaf in leaves):
        raise ConfigError(f"search.{key}: is a section; search its keys instead (e.g. {key}.<key>)")
    close = [leaf for leaf in leaves if leaf.split(".")[-1] == key.split(".")[-1]]
    hint = f" (did you mean {close[0]}?)" if close else " (`distill list keys` names them)"
    raise ConfigError(f"search.{key}: unknown config key{hint}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_dimension(key: str, spec) -> Dimension:
    """Check one `search:` entry's shape (not yet its values against the config)."""
    where = f"search.{key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: expected exactly one of {', '.join(KINDS)} ({EXAMPLE}); got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values, e.g. {{{kind}: [0.1, 0.5]}}; "
                              f"got {values!r}")
        return Dimension(key, kind, tuple(values))
    if not isinstance(values, list) or len(values) != 2 or not all(_is_number(v) for v in values):
        raise ConfigError(f"{where}: {kind} needs [low, high], two numbers, e.g. {{{kind}: [1, 20]}}; got {values!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high; got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs 0 < low < high; got [{low}, {high}]")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: randint needs two integers [low, high) (high excluded); got {values!r}")
    return Dimension(key, kind, (low, high))


def absolute_paths(key: str, value):
    """A path-valued key's relative path, made absolute against the current folder."""
    if key in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
        return str(Path(value).resolve())
    return value


def base_dict(cfg: Config) -> dict:
    """The config every trial starts from: no search section, paths absolute."""
    data = to_dict(cfg)
    data["search"] = {}
    for key in PATH_KEYS:
        section, name = key.split(".")
        data[section][name] = absolute_paths(key, data[section][name])
    return data


def flat_search(search: dict, prefix: str = "") -> dict:
    """`search:` with nested sections flattened to dotted keys: the YAML form `distill.alpha: {grid: ...}`
    and the override form `search.distill.alpha={grid: ...}` (which nests) mean the same."""
    flat = {}
    for key, spec in search.items():
        full = f"{prefix}{key}"
        if isinstance(spec, dict) and spec and not any(k in KINDS for k in spec) and full not in _leaf_keys():
            flat.update(flat_search(spec, full + "."))
        else:
            flat[full] = spec
    return flat


def _integer_key(key: str) -> bool:
    """Whether `key` holds integers only (int or Optional[int]): a uniform draw of floats never fits it."""
    tp = _leaf_keys().get(key)
    args = typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)
    return int in args and float not in args


def teacher_path_problem(value, unfinished_ok: bool = False) -> str | None:
    """What is wrong with a distill.teacher value as paths on disk (each must exist; a run directory must
    have finished unless `unfinished_ok`, distill.teacher_unfinished), or None. Torch-free, so a sweep
    checks it before Ray starts."""
    from distill.runs.store import read_meta

    if not isinstance(value, str):
        return None
    for part in (p.strip() for p in value.split(",") if p.strip()):
        path = Path(part).expanduser()
        if not path.exists():
            return f"{path} does not exist; give a run directory, a checkpoint (.pt) or a predictions file"
        if path.is_dir():
            meta = read_meta(path / "meta.json")  # damaged: a one-line UserError naming it
            if meta and meta.get("status") != "done" and not unfinished_ok:
                return (f"the run {path} did not finish (its meta.json says {meta.get('status')}); finish it, or "
                        f"set distill.teacher_unfinished=true to use it as it is")
    return None


def parse_search(cfg: Config) -> list[Dimension]:
    """Every `search:` entry checked: a real key, one of the five kinds, values the config accepts
    (a float draw on an integer key is refused; teacher paths must exist)."""
    base = base_dict(cfg)
    unfinished_ok = bool(base["distill"].get("teacher_unfinished"))
    problem = teacher_path_problem(base["distill"]["teacher"], unfinished_ok)
    if problem is not None:
        raise ConfigError(f"distill.teacher: {problem}")
    dims = []
    for key, spec in flat_search(cfg.search).items():
        _check_key(key)
        dim = parse_dimension(key, spec)
        if dim.kind in ("uniform", "loguniform") and _integer_key(key):
            low, high = dim.values
            raise ConfigError(f"search.{key}: {dim.kind} draws fractions, but {key} is an integer; use "
                              f"{{randint: [{math.ceil(low)}, {math.floor(high) + 1}]}} (high excluded) or a grid")
        if key == "distill.teacher":
            for value in dim.values:
                problem = teacher_path_problem(absolute_paths(key, value), unfinished_ok)
                if problem is not None:
                    raise ConfigError(f"search.distill.teacher: value {value!r}: {problem}")
        for value in dim.representatives():
            data = copy.deepcopy(base)
            set_dotted(data, key.split("."), absolute_paths(key, value))
            if key == "distill.method":
                keep_method_options(data)
            try:
                build_config(data)
            except ConfigError as err:
                raise ConfigError(f"search.{key}: value {value!r} is not allowed ({err})") from None
        dims.append(dim)
    return dims


def param_space(dims: list[Dimension], seeds: list[int] | None, *, grid_as_choice: bool = False) -> dict:
    """Ray Tune's param space: dotted key -> tune domain (seeds as a grid of one-seed lists)."""
    from ray import tune

    space = {}
    for dim in dims:
        values = [absolute_paths(dim.key, v) for v in dim.values]
        if dim.kind == "grid" and not grid_as_choice:
            space[dim.key] = tune.grid_search(values)
        elif dim.kind in ("grid", "choice"):
            space[dim.key] = tune.choice(values)
        elif dim.kind == "uniform":
            space[dim.key] = tune.uniform(*values)
        elif dim.kind == "loguniform":
            space[dim.key] = tune.loguniform(*values)
        else:
            space[dim.key] = tune.randint(*values)
    if seeds is not None and not grid_as_choice:
        space["seeds"] = tune.grid_search([[s] for s in seeds])
    return space


def mutations(dims: list[Dimension]) -> dict:
    """PBT's hyperparam_mutations: every searched key, as a list or a distribution."""
    from ray import tune

    found = {}
    for dim in dims:
        if dim.kind in ("grid", "choice"):
            found[dim.key] = list(dim.values)
        elif dim.kind == "uniform":
            found[dim.key] = tune.uniform(*dim.values)
        elif dim.kind == "loguniform":
            found[dim.key] = tune.loguniform(*dim.values)
        else:
            found[dim.key] = tune.randint(*dim.values)
    return found


def trial_config(base: dict, params: dict, *, seeds: list[int] | None = None, **top) -> Config:
    """The checked config of one trial: `base` with the trial's sampled `params` set.

    `params` may carry Ray's `__trial_index__` (Optuna with repeats): it picks the seed.
    """
    data = copy.deepcopy(base)
    for key, value in params.items():
        if key == "__trial_index__":
            if seeds is not None:
                data["seeds"] = [seeds[int(value)]]
            continue
        set_dotted(data, key.split("."), value)
    for key, value in top.items():
        set_dotted(data, key.split("."), value)
    if "distill.method" in params:
        keep_method_options(data)
    return build_config(data)


def keep_method_options(data: dict) -> None:
    """A sweep over distill.method: a configuration keeps the options its own method reads (the base
    carries every searched method's), the others back at their defaults."""
    from distill.methods import DistillConfig
    from distill.methods import only_read
    from distill.methods.losses import METHODS

    method = METHODS.get(data["distill"]["method"])
    if method is not None:  # an unknown name is the config check's to name
        data["distill"] = only_read(data["distill"], method, to_dict(DistillConfig()))


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) == 1:
        return _short(value[0])
    return str(value)


def describe(params: dict) -> str:
    """`temperature=4,alpha=0.5,seeds=0`: a trial's sampled values, short."""
    return ",".join(f"{key.split('.')[-1]}={_short(value)}" for key, value in sorted(params.items())
                    if key != "__trial_index__")


def trial_dirname(trial_id: str, params: dict) -> str:
    """The trial folder name: Ray's trial id and the sampled values, safe for any filesystem."""
    tag = "_".join(f"{key.split('.')[-1]}-{_short(value)}" for key, value in sorted(params.items())
                   if key != "__trial_index__")
    tag = re.sub(r"[^\w.-]+", "", tag)[:80]
    return f"{trial_id}_{tag}" if tag else trial_id
