"""Checkpoint files: written atomically, read with a clear error, the previous one kept.

    save_atomic(state, folder / "last.pt")        # temp file + os.replace; the old file -> last.prev.pt
    state = load_state(folder / "last.pt")         # last.pt, else last.prev.pt, else None

A training state (`last.pt`) is {"epoch", "train_seconds", "rng", "optimizer", "seeds",
"models": [weights per model], "objectives": [state per model or None], "histories":
[JSON rows per model], "bests": [best validation epoch per model]}: the same schema for one
model or K stacked ones (see distill/engine.py). `best.pt` is {"epoch", "model", "val"}.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from distill.runs.atomic import write_bytes_atomic
from distill.errors import UserError


def save_atomic(obj, path: Path, keep_previous: bool = False) -> None:
    """torch.save to a temp file in the same folder (fsync'd), then os.replace: never a half-written
    file, no .tmp left behind on a full disk, SIGINT/SIGTERM held until the file is in place.
    With keep_previous, the file it replaces stays as <name>.prev.pt (a fallback if the new one
    is ever found damaged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialised in memory, written in one call
    torch.save(obj, buffer)

    def keep():
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))

    write_bytes_atomic(path, buffer.getbuffer(), before_replace=keep)


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def load_checkpoint(path: Path, device="cpu") -> dict:
    """torch.load of a checkpoint this project wrote; a one-line UserError naming the file if it is damaged.
    Loaded with weights_only (tensors and plain values, nothing else unpickled): a file is never code."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}: {_first_line(err)}); "
                        f"{_remedy(path)}") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds no training state; {_remedy(path)}")
    return state


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:120] if lines else "no message"


def _remedy(path: Path) -> str:
    if path.name == "best.pt":  # the validation-best weights of the epochs trained so far are gone
        return f"delete the folder {path.parent} to train that model again from the start"
    return f"delete {path.parent / (path.stem + '*')} to train that model again from the start"


STATE_KEYS = ("epoch", "train_seconds", "rng", "optimizer", "seeds", "models", "objectives", "histories", "bests")


def check_state(state: dict, path: Path, count: Optional[int] = None) -> dict:
    """A training state's keys and shapes (see the module docstring); a one-line UserError naming
    the file and what is wrong. `count`: the number of models the fit trains."""
    missing = [key for key in STATE_KEYS if key not in state]
    problem = f"it has no {', '.join(missing)}" if missing else None
    if problem is None:
        epoch = state["epoch"]
        lists = [key for key in ("models", "objectives", "histories", "bests", "seeds")
                 if not isinstance(state[key], (list, tuple))]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            problem = f"its epoch is {epoch!r}, not a count of epochs"
        elif lists:
            problem = f"its {lists[0]} is a {type(state[lists[0]]).__name__}, not a list"
        elif len({len(state[k]) for k in ("models", "objectives", "histories", "bests")}) != 1:
            problem = "its models, objectives, histories and bests differ in length"
        elif count is not None and len(state["models"]) != count:
            problem = f"it holds {len(state['models'])} models, this fit trains {count}"
        elif not all(isinstance(m, dict) for m in state["models"]):
            problem = "its models are not weight mappings"
    if problem is not None:
        raise UserError(f"checkpoint {path} is not a training state of this run ({problem}); {_remedy(path)}")
    return state


def load_best(path: Path, device="cpu") -> dict:
    """A best.pt ({"epoch", "model", "val"}), checked; a one-line UserError naming it if not."""
    state = load_checkpoint(path, device)
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("epoch"), int):
        raise UserError(f"checkpoint {path} holds no validation-best weights (expected epoch and model); "
                        f"{_remedy(path)}")
    return state


def load_state(path: Path, device="cpu", count: Optional[int] = None) -> Optional[dict]:
    """The newest readable training state: `path`, else its .prev file (a damaged last.pt costs
    the epochs since the one before, never the run; the damaged file is renamed <name>.damaged
    and named in one line on stderr), else None when neither exists. A damaged file with no
    readable fallback raises the one-line UserError naming it. Each is checked (`check_state`)."""
    previous = previous_path(path)

    def load(which: Path) -> dict:
        return check_state(load_checkpoint(which, device), which, count)

    if not path.exists():
        return load(previous) if previous.exists() else None
    try:
        return load(path)
    except UserError as err:
        if not previous.exists():
            raise
        problem = err
    try:
        state = load(previous)
    except UserError:
        raise problem from None
    damaged = path.with_name(path.name + ".damaged")
    os.replace(path, damaged)  # else the next save would push it over the good .prev file
    print(f"distill: warning: checkpoint {path} cannot be read (kept as {damaged.name}); resuming from "
          f"{previous.name} at epoch {state.get('epoch')}", file=sys.stderr, flush=True)
    return state


def pack_rows(rows: list[dict]) -> str:
    """History rows as one JSON string (pickling thousands of small dicts costs more than a small epoch)."""
    return json.dumps(rows)


def unpack_rows(packed) -> list[dict]:
    return json.loads(packed) if isinstance(packed, str) else packed


def rng_state() -> dict:
    # python's and numpy's states as one bytes object each: torch.save visits every element
    # of a 625-int tuple, which costs more than a small model's epoch
    state = {"torch": torch.get_rng_state(), "numpy": pickle.dumps(np.random.get_state()),
             "python": pickle.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(pickle.loads(state["numpy"]))
    random.setstate(pickle.loads(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
