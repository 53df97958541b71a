"""Run directories on disk -> tidy pandas frames.

    import results
    models = results.load(["runs/"])            # one row per summary.json model row
    records = results.load_records(["runs/"])   # records.csv rows, with a `run` column

A run directory is any folder holding a `summary.json` (docs/design.md, "Run directory");
folders are searched recursively, so a Ray Tune experiment folder with its trial folders
works as well as a single run. Only files are read: this module never imports torch or
the `distill` engine.

A run that cannot be read (summary.json damaged or of the wrong shape, no evaluated model
yet) is never dropped silently: it is named with the reason in a warning line on stderr and
in `frame.attrs["left_out"]` (the report's "Runs left out" section); when no run at all can
be read, `NoRuns` says why.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Iterable, Union

import pandas as pd
import yaml

PathLike = Union[str, Path]

# the keys of a summary.json model row (distill/runs/store.py SUMMARY_KEYS), in order
SUMMARY_KEYS = ["role", "name", "seed", "generation", "member", "size", "combine", "parent", "selected_epoch",
                "val_acc", "val_nll", "test_acc", "test_nll", "test_ece", "test_acc_last", "params", "train_seconds"]

# summary.json "loss" keys -> column names (others become loss_<key>)
LOSS_COLUMNS = {"method": "loss_method", "reduction": "loss_reduction", "t2_scaling": "loss_t2_scaling",
                "temperature": "temperature", "alpha": "alpha"}

SKIP_DIRS = {"checkpoints", "__pycache__", ".git"}


class NoRuns(ValueError):
    """A path holds no run directory (no summary.json anywhere below it)."""


def _as_list(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [Path(p) for p in paths]


def _summaries_below(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.name == "summary.json" else []
    found = []
    for path in sorted(root.rglob("summary.json")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            found.append(path)
    return found


def find_runs(paths: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """Every run directory (a folder with summary.json) under `paths`, each path checked.

    Raises `NoRuns` naming the first path that does not exist or holds no run.
    """
    runs: list[Path] = []
    for root in _as_list(paths):
        if not root.exists():
            raise NoRuns(f"{root} does not exist")
        found = [p.parent for p in _summaries_below(root)]
        if not found:
            raise NoRuns(f"{root} holds no run directory (no summary.json below it)")
        runs.extend(r for r in found if r not in runs)
    if not runs:
        raise NoRuns("no paths given")
    return runs


def _read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _read_config(run: Path) -> dict:
    try:
        loaded = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def file_problem(path: Path, kind: str = "json") -> str | None:
    """What is wrong with a run's meta.json, config.yaml or a sweep.json, if it is there: None when it
    is missing or a readable mapping, else the reason (naming the file)."""
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        return f"{path.name} cannot be read ({type(err).__name__})"
    try:
        loaded = json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        return f"{path.name} is not valid {kind.upper()} ({str(err).strip().splitlines()[0][:100]})"
    if not isinstance(loaded, dict):
        return f"{path.name} is not a mapping of keys (it holds {type(loaded).__name__})"
    if path.name == "meta.json" and not isinstance(loaded.get("status", ""), str):
        return f"meta.json has status {loaded.get('status')!r}, not a word"
    if path.name == "sweep.json" and not isinstance(loaded.get("trials", []), list):
        return "sweep.json has no list of trials"
    return None


def _cell(value):
    """A value a DataFrame cell can hold and group by: lists and dicts become JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def flatten(mapping: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; an empty dict stays one leaf ('{}')."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = _cell(value)
    return flat


_WARNED: set = set()  # damaged sweep.json files already named on stderr


def _sweep_root(run: Path) -> str | None:
    for parent in run.parents:
        if (parent / "sweep.json").exists():
            problem = file_problem(parent / "sweep.json")
            if problem is not None and str(parent) not in _WARNED:
                _WARNED.add(str(parent))
                print(f"results: warning: {parent}: {problem}; its trials are read without it", file=sys.stderr,
                      flush=True)
            return str(parent)
    return None


def _run_columns(run: Path, summary: dict) -> dict:
    """The columns every model row of one run shares."""
    config = _read_config(run)
    meta = _read_json(run / "meta.json")
    shared = {"run": str(run), "experiment": config.get("name", run.parent.name),
              "status": summary.get("status", meta.get("status")), "kind": meta.get("kind")}
    sweep = _sweep_root(run)
    if sweep is not None:
        shared["sweep"] = sweep
    loss = summary.get("loss")
    if isinstance(loss, dict):
        for key, value in loss.items():
            shared[LOSS_COLUMNS.get(key, f"loss_{key}")] = _cell(value)
    for key, value in summary.items():  # other top-level keys a runner adds
        if key in ("status", "loss", "models"):
            continue
        if isinstance(value, dict):
            shared.update({f"{key}_{k}": v for k, v in flatten(value).items()})
        else:
            shared[key] = _cell(value)
    shared.update({f"cfg.{k}": v for k, v in flatten(config).items()})
    return shared


NUMBER_KEYS = ("seed", "generation", "member", "size", "selected_epoch", "val_acc", "val_nll", "test_acc",
               "test_nll", "test_ece", "test_acc_last", "params", "train_seconds")


def read_summary(run: Path) -> tuple[dict, str | None]:
    """(summary.json of `run`, None), or ({}, the reason it cannot be used)."""
    for name, kind in (("meta.json", "json"), ("config.yaml", "yaml")):
        problem = file_problem(run / name, kind)
        if problem is not None:
            return {}, problem
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        return {}, f"summary.json cannot be read ({type(err).__name__}: {err})"
    except ValueError as err:
        return {}, f"summary.json is not valid JSON ({str(err).splitlines()[0][:100]})"
    if not isinstance(summary, dict) or not isinstance(summary.get("models", []), list):
        return {}, "summary.json is not a mapping with a list of model rows under `models`"
    for i, row in enumerate(summary.get("models") or []):
        if not isinstance(row, dict):
            return {}, f"summary.json: model row {i} is not a mapping of keys"
        for key in NUMBER_KEYS:
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                return {}, f"summary.json: model row {i} has {key} = {value!r}, not a number"
        if not isinstance(row.get("role"), str):
            return {}, f"summary.json: model row {i} has no role"
    if not summary.get("models"):
        status = summary.get("status") or _read_json(run / "meta.json").get("status") or "unknown"
        return {}, f"no evaluated model yet (status {status})"
    return summary, None


def warn_left_out(left_out: list[dict]) -> None:
    for item in left_out:
        print(f"results: warning: left out {item['run']}: {item['reason']}", file=sys.stderr, flush=True)


def load(paths: Union[PathLike, Iterable[PathLike]]) -> pd.DataFrame:
    """One row per summary.json model row of every run under `paths`.

    Columns: the row's own keys (role, name, seed, generation, member, size, combine,
    parent, selected_epoch, val_acc, ..., plus any extra key such as gap_recovered), then
    `run` (the run directory), `experiment` (config name), `status`, `kind` (meta.json),
    `sweep` (folder holding sweep.json, for Tune trials), the loss info flattened
    (`loss_method`, `loss_reduction`, `loss_t2_scaling`, `temperature`, `alpha`, ...),
    and every leaf of config.yaml as `cfg.<dotted key>` (lists as JSON text).
    Accuracies stay fractions in [0, 1]. Runs that cannot be read are warned about on stderr
    and listed in `frame.attrs["left_out"]` ([{"run", "reason"}]). Raises `NoRuns` if a path
    holds no run, or if no run can be read.
    """
    rows, left_out = [], []
    for run in find_runs(paths):
        summary, problem = read_summary(run)
        if problem is not None:
            left_out.append({"run": str(run), "reason": problem})
            continue
        shared = _run_columns(run, summary)
        for model in summary["models"]:
            row = {key: None for key in SUMMARY_KEYS}
            row.update({k: _cell(v) for k, v in model.items()})
            # a model row's own key wins over a run-level column of the same name
            row.update({k: v for k, v in shared.items() if k not in model})
            rows.append(row)
    warn_left_out(left_out)
    if not rows:
        bad = left_out[0]
        more = f" (and {len(left_out) - 1} more run(s) left out)" if len(left_out) > 1 else ""
        raise NoRuns(f"no readable run in {', '.join(str(p) for p in _as_list(paths))}: "
                     f"{bad['run']}: {bad['reason']}{more}")
    frame = pd.DataFrame(rows)
    first = SUMMARY_KEYS + [c for c in frame.columns if c not in SUMMARY_KEYS and not c.startswith("cfg.")]
    frame = frame[first + [c for c in frame.columns if c.startswith("cfg.")]]
    frame.attrs["left_out"] = left_out
    return frame


def load_records(paths: Union[PathLike, Iterable[PathLike]]) -> pd.DataFrame:
    """records.csv of every run under `paths`, with `run` and `experiment` columns.

    Runs without records.csv are skipped; the frame is empty (with the record columns) if
    none has any rows. Raises `NoRuns` if a path holds no run.
    """
    frames = []
    for run in find_runs(paths):
        path = run / "records.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        try:
            records = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, OSError) as err:  # pandas' parser errors are ValueErrors
            warn_left_out([{"run": str(run), "reason": f"records.csv cannot be read ({type(err).__name__}: "
                                                       f"{str(err).strip().splitlines()[0][:100]})"}])
            continue
        if records.empty:
            continue
        records.insert(0, "run", str(run))
        records.insert(1, "experiment", _read_config(run).get("name", run.parent.name))
        frames.append(records)
    if not frames:
        return pd.DataFrame(columns=["run", "experiment", "role", "name", "generation", "member", "seed", "epoch",
                                     "split", "loss", "acc", "nll", "ece", "lr", "seconds"])
    return pd.concat(frames, ignore_index=True)
