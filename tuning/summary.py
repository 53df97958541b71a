"""sweep.json: every trial's status, its target's figures, the other models' figures, the best.

A trial's status is the driver's word, from how Tune left it:

    done         its run directory is complete (meta.json `done`)
    failed       it raised (NaN loss, an error); `reason` is the last line of the error
    stopped      ASHA or PBT stopped it early (Tune ended it without an error, not done)
    interrupted  the sweep was interrupted (SIGINT, SIGTERM) before it finished;
                 `distill tune CONFIG --resume` continues it

`best_<metric>` is the best of the target's reported epochs and `last` its last reported
epoch (`epochs` counts them); `others` holds the other models of the trial (teacher,
generations, members, ensembles) from its summary.json, never used to choose. The best
trial and `best_config` come only from finished trials (see `tuning.choose`); after an
interruption `best_config` is marked provisional.
"""

from __future__ import annotations

import datetime as dt
import errno
import math
import pickle
import shutil
from pathlib import Path
from typing import Optional

from distill.config import Config

from . import target as targets
from .choose import best_config
from .trainable import _read_json as _read, mark_ended


def mode_of(metric: str) -> str:
    return "max" if metric.endswith("acc") else "min"


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _status(result, meta: dict, tune_status: Optional[str], scheduler: str, interrupted: Optional[str],
            epochs: int) -> tuple[str, Optional[str]]:
    """(status, reason) of one trial; see the module docstring."""
    if result.error is not None:
        reason = meta.get("reason") if meta.get("status") == "failed" else None
        return "failed", reason or str(result.error).strip().splitlines()[-1]
    if meta.get("status") == "done":
        return "done", None
    if tune_status == "TERMINATED" and scheduler != "fifo":
        return "stopped", f"stopped early by the {scheduler} scheduler after {epochs} target epochs"
    if interrupted:
        return "interrupted", (f"the sweep was interrupted ({interrupted}) after {epochs} target epochs of this "
                               f"trial; `distill tune CONFIG --resume` continues it")
    return "failed", f"ended after {epochs} target epochs without finishing its run"


def trial_entry(result, cfg: Config, metric_names, tune_status, interrupted) -> dict:
    run_dir = Path(result.path)
    meta, info = _read(run_dir / "meta.json"), _read(run_dir / "trial.json")
    last = result.metrics or {}
    history = result.metrics_dataframe
    bests = {}  # the best of each validation figure over the target's reported epochs
    for name in metric_names:
        if history is not None and name in history and history[name].notna().any():
            bests[name] = float(history[name].max() if mode_of(name) == "max" else history[name].min())
    epochs = last.get("training_iteration", 0)
    status, reason = _status(result, meta, tune_status, cfg.tune.scheduler, interrupted, epochs)
    if status in ("stopped", "interrupted") and meta:
        mark_ended(run_dir, status, reason)  # the run directory says what sweep.json says
    seed = info.get("seed")
    label = last.get("target_model")
    return {
        "trial": run_dir.name, "trial_id": last.get("trial_id") or info.get("trial_id"),
        "params": {k: v for k, v in (result.config or {}).items() if k != "__trial_index__"},
        "seed": seed, "status": status, "reason": reason, "run_dir": str(run_dir),
        "target_model": label, "epochs": epochs,
        **{f"best_{name}": _clean(bests.get(name)) for name in metric_names},
        "last": {k: _clean(last.get(k)) for k in ("epoch", "val_acc", "val_nll", "train_loss")},
        "others": targets.others_of(run_dir, cfg.tune.kind, label, seed) if seed is not None else {},
        "seconds": last.get("time_total_s"),
        "nodes": sorted({a["node_id"] for a in info.get("attempts", []) if a.get("node_id")}),
        "attempts": len(info.get("attempts", [])),
    }


def write_sweep(path: Path, cfg: Config, grid, *, tune_status: Optional[dict] = None,
                interrupted: Optional[str] = None, plan=None) -> dict:
    """Write and return sweep.json. `tune_status`: trial folder name -> Tune's status at the end;
    `interrupted`: the signal that stopped the sweep, if one did; `plan` (`tuning.plan`) of the stacked
    layout: one entry per (configuration, seed), and the packs (`tuning.packsummary`)."""
    from distill.runs.store import write_json_atomic

    metric, mode = cfg.tune.metric, mode_of(cfg.tune.metric)
    names = ("val_acc", "val_nll")
    packs = None
    if plan is not None:
        from .packsummary import entries

        found = [entries(r, cfg, plan, path, (tune_status or {}).get(Path(r.path).name), interrupted) for r in grid]
        trials = sorted((m for members, _ in found for m in members), key=lambda t: t["trial"])
        packs = sorted((pack for _, pack in found), key=lambda p: p["trial"])
    else:
        trials = sorted((trial_entry(r, cfg, names, (tune_status or {}).get(Path(r.path).name), interrupted)
                         for r in grid), key=lambda t: t["trial"])
    finished = [t for t in trials if t["status"] == "done" and t[f"best_{metric}"] is not None]
    best = (max if mode == "max" else min)(finished, key=lambda t: t[f"best_{metric}"]) if finished else None
    unfinished = sum(t["status"] != "done" for t in trials)
    provisional = (f"the sweep was interrupted ({interrupted}) with {unfinished} trial(s) unfinished; "
                   f"--resume finishes them" if interrupted else None)
    summary = {
        "best_config": best_config(trials, metric, mode, provisional=provisional),
        "name": cfg.name, "sweep": path.name, "path": str(path), "kind": cfg.tune.kind,
        "target": targets.check(cfg).as_dict(),
        "scheduler": cfg.tune.scheduler, "search_alg": cfg.tune.search_alg, "metric": metric, "mode": mode,
        "status": ("interrupted" if interrupted else
                   "failed" if any(t["status"] == "failed" for t in trials) else "done"),
        "reason": provisional,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": {s: sum(t["status"] == s for t in trials) for s in ("done", "stopped", "interrupted", "failed")},
        "epochs": sum(t["epochs"] for t in trials), "best": best, "trials": trials,
    }
    if plan is not None:
        from .plan import tune_folder

        summary.update(layout={"seeds": "stacked", "pack": cfg.tune.pack, "why": plan.why, "packing": plan.pack_why},
                       seeds=plan.seeds, tune=tune_folder(plan), packs=packs)
    write_json_atomic(path / "sweep.json", summary)
    return summary


def write_interrupted(path: Path, cfg: Config, signal_name: Optional[str], where: str = "", *,
                      reason: Optional[str] = None) -> dict:
    """sweep.json and error.txt of a sweep interrupted before Tune could list its trials (by
    `signal_name`, or for `reason`: Tune failed under it)."""
    from distill.runs.store import write_json_atomic, write_text_atomic

    path.mkdir(parents=True, exist_ok=True)
    reason = reason or (f"interrupted by {signal_name} {where}; `distill tune CONFIG --resume` (same config and "
                        f"overrides) continues it")
    summary = {"best_config": None, "name": cfg.name, "sweep": path.name, "path": str(path),
               "kind": cfg.tune.kind, "target": targets.check(cfg).as_dict(), "scheduler": cfg.tune.scheduler,
               "search_alg": cfg.tune.search_alg, "metric": cfg.tune.metric, "mode": mode_of(cfg.tune.metric),
               "status": "interrupted", "reason": reason, "signal": signal_name,
               "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "counts": {}, "epochs": 0, "best": None, "trials": []}
    write_json_atomic(path / "sweep.json", summary)
    write_text_atomic(path / "error.txt", reason + "\n")
    return summary


class SweepStopped(OSError):
    """Tune failed under the sweep on a full disk; sweep.json says `interrupted` with the reason."""


def disk_full(err: BaseException, path: Path) -> bool:
    """Whether `err` (or what caused it) is a full disk: ENOSPC, or Tune's saved state unreadable on a
    disk with next to no space left (Tune's UnpicklingError of a file it could not finish)."""
    seen, hops = err, 0
    while seen is not None and hops < 20:
        if (isinstance(seen, OSError) and seen.errno == errno.ENOSPC) or "No space left on device" in str(seen):
            return True
        if isinstance(seen, (pickle.UnpicklingError, EOFError)):
            try:
                return shutil.disk_usage(path if path.exists() else path.parent).free < 64 * 2**20
            except OSError:
                return True
        seen, hops = seen.__cause__ or seen.__context__, hops + 1
    return False


def stopped(path: Path, cfg: Config, err: BaseException) -> BaseException:
    """Record a sweep that Tune failed under (sweep.json `interrupted`, with the reason) and return the
    error to raise: `SweepStopped` on a full disk (one line, exit 1), else `err` itself (a bug)."""
    full = disk_full(err, path)
    lines = str(err).strip().splitlines()
    cause = f"{type(err).__name__}: {lines[-1][:200] if lines else 'no message'}"
    if full:
        reason = f"the disk is full ({cause}); free some space, then `distill tune CONFIG --resume` continues it"
    else:
        reason = f"Tune failed ({cause}); `distill tune CONFIG --resume` continues the sweep"
    try:
        write_interrupted(path, cfg, None, reason=reason)
    except OSError:
        pass  # not even sweep.json fits: stderr still says it
    return SweepStopped(errno.ENOSPC, f"the sweep in {path} stopped: {reason}") if full else err
