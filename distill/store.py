"""The run directory: what every experiment writes, and what `results` reads.

    OUT/<name>/<run-id>/
      config.yaml   the resolved config
      meta.json     status (running/done/failed + reason), versions, git commit, device, times
      records.csv   one row per (role, generation, member, seed, epoch, split)
      summary.json  {"status": ..., "models": [row, ...]}: one flat row per evaluated model
      checkpoints/  <model key>/last.pt and best.pt, written atomically

The run id defaults to a hash of the resolved config, so the same command finds the same
folder and resumes from its checkpoints. Every file is written to a temp file and moved
into place. records.csv is rebuilt from the checkpoints on every start, so a resumed run
has exactly the rows of one that never stopped.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

from .config import Config, config_hash, dump_yaml
from .errors import UserError

RECORD_COLUMNS = ["role", "name", "generation", "member", "seed", "epoch", "split",
                  "loss", "acc", "nll", "ece", "lr", "seconds", "method", "reduction", "t2_scaling",
                  "temperature"]  # temperature: a learned T (ctkd) at the end of the epoch, else empty

SUMMARY_KEYS = ["role", "name", "seed", "generation", "member", "size", "combine", "parent", "selected_epoch",
                "val_acc", "val_nll", "test_acc", "test_nll", "test_ece", "test_acc_last", "params", "train_seconds"]


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> Optional[str]:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "ray", "numpy", "pandas"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", None)
    return found


def summary_row(**values) -> dict:
    """A summary.json row with every key of DESIGN.md (null where it does not apply)."""
    row = {key: None for key in SUMMARY_KEYS}
    row.update(values)
    return row


def fit_summary(result, tags: dict, params: int, **extra) -> dict:
    """The summary row of one trained model from its `engine.FitResult`."""
    sel, last = result.selected, result.last
    return summary_row(
        **{k: tags.get(k) for k in ("role", "name", "seed", "generation", "member", "parent")},
        selected_epoch=result.selected_epoch,
        val_acc=sel["val"]["acc"], val_nll=sel["val"]["nll"],
        test_acc=sel["test"]["acc"], test_nll=sel["test"]["nll"], test_ece=sel["test"]["ece"],
        test_acc_last=last["test"]["acc"], params=params, train_seconds=round(result.train_seconds, 3), **extra)


class Run:
    """One run directory. Create it only after the config and the data have been checked."""

    def __init__(self, path: Path, cfg: Config, kind: str):
        self.path = Path(path)
        self.cfg = cfg
        self.kind = kind
        self.meta: dict = {}

    @classmethod
    def open(cls, cfg: Config, kind: str, out: str | Path = "runs", run_dir: str | Path | None = None) -> "Run":
        """Create `out/<name>/<run-id>/` (or `run_dir`), or reopen it to resume."""
        path = Path(run_dir) if run_dir is not None else Path(out) / cfg.name / (cfg.run_id or config_hash(cfg))
        run = cls(path, cfg, kind)
        config_text = dump_yaml(cfg)
        config_path = path / "config.yaml"
        if config_path.exists() and config_path.read_text() != config_text:
            raise UserError(f"{path} holds a run with a different config; pick another run_id=... or --out, "
                            f"or delete that folder")
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        write_text_atomic(config_path, config_text)
        old = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
        run.meta = {
            "kind": kind, "status": "running", "reason": None,
            "created": old.get("created", _now()), "started": _now(), "finished": None,
            "resumed": bool(old), "sessions": old.get("sessions", 0) + 1,
            "versions": versions(), "git_commit": git_commit(), "host": platform.node(),
            "command": " ".join(sys.argv),
        }
        run.write_meta()
        with open(path / "records.csv", "w", newline="") as f:  # rebuilt from checkpoints as models resume
            csv.writer(f).writerow(RECORD_COLUMNS)
        return run

    def checkpoint_dir(self, key: str) -> Path:
        return self.path / "checkpoints" / key

    def write_meta(self, **updates) -> None:
        self.meta.update(updates)
        write_json_atomic(self.path / "meta.json", self.meta)

    def emit(self, rows: list[dict]) -> None:
        """Append history rows to records.csv."""
        with open(self.path / "records.csv", "a", newline="") as f:
            writer = csv.DictWriter(f, RECORD_COLUMNS, extrasaction="ignore")
            writer.writerows(rows)

    def write_summary(self, models: list[dict], status: str, **extra) -> dict:
        summary = {"status": status, **extra, "models": models}
        write_json_atomic(self.path / "summary.json", summary)
        return summary

    def finish(self, status: str, reason: Optional[str] = None) -> None:
        self.write_meta(status=status, reason=reason, finished=_now())


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
