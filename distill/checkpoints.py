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
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import UserError


def save_atomic(obj, path: Path, keep_previous: bool = False) -> None:
    """torch.save to a temp file in the same folder, then os.replace: never a half-written file.
    With keep_previous, the file it replaces stays as <name>.prev.pt (a fallback if the new one
    is ever found damaged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()  # serialised in memory, written in one call
    torch.save(obj, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial temp file behind
        raise
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def load_checkpoint(path: Path, device="cpu") -> dict:
    """torch.load of a checkpoint this project wrote; a one-line UserError naming the file if it is damaged."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                        f"delete it to train that model again from its previous checkpoint") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds no training state; delete it to train that model again")
    return state


def load_state(path: Path, device="cpu") -> Optional[dict]:
    """The newest readable training state: `path`, else its .prev file (a damaged last.pt costs
    the epochs since the one before, never the run), else None."""
    problem = None
    for candidate in (path, previous_path(path)):
        if candidate.exists():
            try:
                return load_checkpoint(candidate, device)
            except UserError as err:
                problem = problem or err
    if problem is not None and not previous_path(path).exists():
        raise problem
    return None


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
