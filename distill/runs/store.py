"""The run directory: what every experiment writes, and what `results` reads.

    OUT/<name>/<run-id>/
      config.yaml   the resolved config
      meta.json     status (running/done/failed + reason), versions, git commit, device, times
      records.csv   one row per (role, generation, member, seed, epoch, split)
      summary.json  {"status": ..., "models": [row, ...]}: one flat row per evaluated model
      checkpoints/  <model key>/last.pt and best.pt, written atomically
      .lock         held (flock) by the process writing the run: "pid N on HOST"
      tensorboard/, mlflow.db, mlartifacts/, tracking.json   mirrors, only with log.tensorboard /
                    log.mlflow (distill/runs/tracking.py; rebuilt each session, never read back)

The run id defaults to a hash of the resolved config, so the same command finds the same
folder and resumes from its checkpoints. Every file is written to a temp file, fsync'd and
moved into place (JSON never holds NaN: non-finite numbers are written as null). records.csv
is rebuilt from the checkpoints on every start, so a resumed run has exactly the rows of one
that never stopped. One process at a time writes a run folder: a second command on the same
folder exits with a one-line error naming the holder. A run that stops on an error or a
signal is marked failed in meta.json with the reason (best effort: on a full disk even that
may not be writable).
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import json
import math
import os
import platform
import subprocess
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Callable, Optional

from distill.runs import tracking
from distill.runs.atomic import write_bytes_atomic
from distill.config import Config, config_hash, dump_yaml
from distill.schema import to_dict
from distill.errors import UserError

RECORD_COLUMNS = ["role", "name", "generation", "member", "seed", "epoch", "split",
                  "loss", "acc", "nll", "ece", "lr", "seconds", "method", "reduction", "t2_scaling",
                  "temperature"]  # temperature: a learned T (ctkd) at the end of the epoch, else empty

SUMMARY_KEYS = ["role", "name", "seed", "generation", "member", "size", "combine", "parent", "selected_epoch",
                "val_acc", "val_nll", "test_acc", "test_nll", "test_ece", "test_acc_last", "params", "train_seconds"]


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, obj) -> None:
    """JSON that every reader accepts: NaN and infinities become null (json.dumps would write bare NaN)."""
    write_text_atomic(path, json.dumps(finite(obj), indent=2, allow_nan=False, default=_json_default) + "\n")


def finite(value):
    """`value` with every non-finite float (in lists and dicts too) replaced by None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # numpy / torch scalars
        except (TypeError, ValueError, RuntimeError):
            return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _json_default(value):
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
    """A summary.json row with every key of docs/design.md (null where it does not apply)."""
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
        test_acc_last=last["test"]["acc"], params=params, train_seconds=round(result.train_seconds, 3),
        **({"val_ppl": sel["val"]["ppl"], "test_ppl": sel["test"]["ppl"]} if "ppl" in sel["val"] else {}),  # LMs
        **extra)


_LOCKS: dict[str, int] = {}  # run folder -> the open .lock file this process holds


def lock_run_dir(path: Path) -> None:
    """Take `path/.lock` (flock, exclusive) for this process; a one-line UserError naming the
    holder when another process has it. The OS drops the lock when its process ends, however it
    ends, so a lock left by a killed run is never in the way."""
    key = str(path.resolve())
    if key in _LOCKS:
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{path} is being written by {holder} (the same run started twice?); wait for it to "
                        f"end, or pass run_id=... or --out to start a separate run") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {platform.node()}\n".encode())
    _LOCKS[key] = fd


def unlock_run_dir(path: Path) -> None:
    fd = _LOCKS.pop(str(path.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the file releases the flock


def _has_checkpoints(path: Path) -> bool:
    return any(path.glob("checkpoints/*/last*.pt"))


class Run:
    """One run directory. Create it only after the config and the data have been checked."""

    def __init__(self, path: Path, cfg: Config, kind: str):
        self.path = Path(path)
        self.cfg = cfg
        self.kind = kind
        self.meta: dict = {}
        self.tracker: Optional[tracking.Tracker] = None  # log.tensorboard / log.mlflow mirrors
        self.finished: Optional[dict] = None  # the summary of a finished run, opened read-only

    @classmethod
    def open(cls, cfg: Config, kind: str, out: str | Path = "runs", run_dir: str | Path | None = None) -> "Run":
        """Create `out/<name>/<run-id>/` (or `run_dir`), or reopen it to resume; hold its lock.
        A finished run (`finished_summary`) is opened read-only: nothing in it is written again."""
        path = Path(run_dir) if run_dir is not None else Path(out) / cfg.name / (cfg.run_id or config_hash(cfg))
        run = cls(path, cfg, kind)
        config_text = dump_yaml(cfg)
        config_path = path / "config.yaml"
        if config_path.exists() and not tracking.same_run_config(_read_text(config_path), config_text):
            raise UserError(f"{path} holds a run with a different config; pick another run_id=... or --out, "
                            f"or delete that folder")
        old = read_meta(path / "meta.json")
        if old.get("kind", kind) != kind:
            raise UserError(f"{path} holds a `distill {old['kind']}` run with the same config; pick another "
                            f"run_id=... or --out for this `distill {kind}` run")
        run.finished = finished_summary(path) if old.get("status") == "done" else None
        if run.finished is not None:
            run.meta = old
            if cfg.log.tensorboard or cfg.log.mlflow or cfg.log.wandb:  # mirrors asked of a finished run: filled from its files
                run.tracker = tracking.start(path, cfg, kind, config_text)
            return run
        path.mkdir(parents=True, exist_ok=True)
        lock_run_dir(path)
        try:
            (path / "checkpoints").mkdir(exist_ok=True)
            write_text_atomic(config_path, config_text)
            run.meta = {
                "kind": kind, "status": "running", "reason": None,
                "created": old.get("created", _now()), "started": _now(), "finished": None,
                "resumed": _has_checkpoints(path), "sessions": old.get("sessions", 0) + 1,
                "versions": versions(), "git_commit": git_commit(), "host": platform.node(), "pid": os.getpid(),
                "command": " ".join(sys.argv),
            }
            run.write_meta()
            with open(path / "records.csv", "w", newline="") as f:  # rebuilt from checkpoints as models resume
                csv.writer(f).writerow(RECORD_COLUMNS)
        except OSError as err:  # a full disk: meta.json says so if anything can still be written
            run.meta = run.meta or dict(old)
            run.fail(one_line(err))
            unlock_run_dir(path)
            raise
        run.tracker = tracking.start(path, cfg, kind, config_text)
        return run

    def checkpoint_dir(self, key: str, model_cfg=None) -> Path:
        """One model's checkpoint folder; with `model_cfg`, its architecture is written there as
        model.json (what `distill export` rebuilds the model from)."""
        folder = self.path / "checkpoints" / key
        if model_cfg is not None and self.finished is None:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "model.json", to_dict(model_cfg))
        return folder

    def write_meta(self, **updates) -> None:
        """meta.json with `updates`; on a full disk, written in place over the old file if that fits."""
        if self.finished is not None:
            return
        self.meta.update(updates)
        try:
            write_json_atomic(self.path / "meta.json", self.meta)
        except OSError:
            if not write_in_place(self.path / "meta.json", self.meta):
                raise

    def emit(self, rows: list[dict]) -> None:
        """Append history rows to records.csv."""
        if self.finished is not None:
            return
        with open(self.path / "records.csv", "a", newline="") as f:
            writer = csv.DictWriter(f, RECORD_COLUMNS, extrasaction="ignore")
            writer.writerows(rows)
        if self.tracker:
            self.tracker.rows(rows)

    def write_summary(self, models: list[dict], status: str, **extra) -> dict:
        if self.finished is not None:
            return self.finished
        summary = {"status": status, **extra, "models": models}
        write_json_atomic(self.path / "summary.json", summary)
        if self.tracker:
            self.tracker.summary(models)
        return summary

    def finish(self, status: str, reason: Optional[str] = None, **extra) -> None:
        if self.finished is not None:
            return
        self.write_meta(status=status, reason=reason, finished=_now(), **extra)
        if self.tracker:  # the mirrors end with the run's status (never raises)
            self.tracker, tracker = None, self.tracker
            tracker.finish(status, reason)

    def fail(self, reason: str, details: Optional[str] = None, **extra) -> None:
        """Mark the run failed with `reason` (and error.txt), as far as the disk still allows."""
        try:
            self.finish("failed", reason, **extra)
            if details is not None:
                write_text_atomic(self.path / "error.txt", details)
        except OSError:
            pass  # a full or vanished disk: the exit status and stderr still say what happened


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read ({type(err).__name__}); delete that run folder or pick another "
                        f"--out") from None


def read_meta(path: Path) -> dict:
    """A run's meta.json ({} when there is none); a one-line UserError naming it when it is damaged."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(_read_text(path))
    except ValueError as err:
        meta = err
    if not isinstance(meta, dict) or not isinstance(meta.get("status", ""), str):
        raise UserError(f"{path} is damaged (not a JSON mapping with a status); delete it (the run resumes "
                        f"from its checkpoints) or pick another --out")
    return meta


def finished_summary(path: Path) -> Optional[dict]:
    """The summary of a finished run in `path`: meta.json and summary.json both `done`, and every model
    with a best.pt has its last.pt (a fit stopped while writing those is not finished); else None."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "done" or not isinstance(summary.get("models"), list):
        return None
    if any(not (best.parent / "last.pt").is_file() for best in path.glob("checkpoints/*/best.pt")):
        return None
    if not all(_intact(p) for p in path.glob("checkpoints/*/*.pt") if p.name in ("last.pt", "best.pt")):
        return None  # a damaged checkpoint: the same command resumes, and says which (checkpoints.load_state)
    return summary


def _intact(path: Path) -> bool:
    """Whether a checkpoint is a whole torch.save archive (every entry's CRC checked; nothing unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None and any(n.endswith("data.pkl") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def write_in_place(path: Path, obj) -> bool:
    """The last resort on a full disk: `obj` written over the existing file's own blocks (no new file
    is needed, so it often fits where a temp file does not). True when it was written."""
    data = json.dumps(finite(obj), allow_nan=False, default=_json_default).encode() + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        if len(data) > os.fstat(fd).st_size:  # only where the old file's blocks hold it all
            data = json.dumps({k: finite(obj).get(k) for k in ("kind", "status", "reason", "created", "started",
                                                                "finished", "sessions")}).encode() + b"\n"
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        try:
            os.fsync(fd)
        except OSError:
            pass
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _replay(run: Run) -> None:
    """Mirrors turned on for a finished run: every records.csv row and summary row, from its files."""
    parents = {(r.get("role"), r.get("name"), r.get("generation"), r.get("member"), r.get("seed")): r.get("parent")
               for r in run.finished["models"] if isinstance(r, dict)}
    rows = []
    with open(run.path / "records.csv", newline="") as f:
        for row in csv.DictReader(f):
            typed = {k: (None if v in ("", None) else v) for k, v in row.items()}
            for key in ("generation", "member", "seed", "epoch"):
                typed[key] = int(typed[key]) if typed.get(key) is not None else None
            for key in ("loss", "acc", "nll", "ece", "lr", "seconds", "temperature"):
                typed[key] = float(typed[key]) if typed.get(key) is not None else None
            ident = tuple(typed.get(k) for k in ("role", "name", "generation", "member", "seed"))
            rows.append({**typed, "parent": parents.get(ident)})
    run.tracker.rows(rows)
    run.tracker.summary([r for r in run.finished["models"] if isinstance(r, dict)])
    run.tracker.finish("done")


def one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


def run_guarded(run: Run, body: Callable[[], dict]) -> dict:
    """Run `body`, marking the run done, or failed with the reason (and re-raising): a signal
    (`errors.Interrupted`, or Ctrl-C) as "terminated by SIGTERM" / "interrupted", with the signal.
    The run folder's lock is released at the end. A finished run is not run again: its summary."""
    if run.finished is not None:
        if run.tracker is not None:
            try:
                _replay(run)
            except (OSError, ValueError, KeyError) as err:
                print(f"warning: the mirrors of {run.path} could not be filled from its files ({one_line(err)})",
                      file=sys.stderr, flush=True)
        return run.finished
    try:
        summary = body()
        run.finish("done")
        return summary
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        run.fail("terminated by SIGTERM" if name == "SIGTERM" else "interrupted", signal=name)
        raise
    except Exception as err:  # noqa: BLE001 - recorded, then re-raised
        run.fail(one_line(err), traceback.format_exc())
        raise
    finally:
        unlock_run_dir(run.path)
