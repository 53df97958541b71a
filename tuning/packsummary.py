"""sweep.json of the stacked layout: one `trials` entry per (configuration, seed), as before, plus `packs`.

Each (configuration, seed) entry has the keys of a trial of the one-trial-per-seed layout (`trial`
is the member's run folder, `params` its values and `seeds: [seed]`, `status`, `best_val_acc`, ...)
read from its own run directory, and `pack`, the Tune trial that trained it; so `tuning.choose`
and the report read both layouts alike. `packs` lists the Tune trials: their configurations,
seeds, models, seconds, how their models trained (`packing`) and Tune's view of them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from distill.config import Config

from . import target as targets
from .packed import pack_params
from .plan import Plan, member_name
from .summary import _clean, _read, _status, mode_of
from .trainable import mark_ended


def _figures(run_dir: Path, seed: int) -> list[dict]:
    for role in ("student", "model"):
        try:
            reports = targets.epoch_reports(run_dir, role, seed)
        except (OSError, KeyError, ValueError):
            return []
        if reports:
            return reports
    return []


def _best(reports: list[dict], name: str):
    values = [r[name] for r in reports if r.get(name) is not None and math.isfinite(r[name])]
    if not values:
        return None
    return max(values) if mode_of(name) == "max" else min(values)


def entries(result, cfg: Config, plan: Plan, sweep: Path, tune_status: Optional[str],
            interrupted: Optional[str]) -> tuple[list[dict], dict]:
    """(the member entries, the pack entry) of one Tune trial's Result."""
    info = _read(Path(result.path) / "trial.json")
    last = result.metrics or {}
    configs = pack_params(result.config or {}, plan.configs, plan.packs)
    label = targets.resolve(cfg).label()
    members = []
    for params in configs:
        for seed in plan.seeds:
            run_dir = sweep / "runs" / member_name(params, seed)
            meta = _read(run_dir / "meta.json")
            reports = _figures(run_dir, seed) if (run_dir / "records.csv").exists() else []
            status, reason = _status(result, meta, tune_status, cfg.tune.scheduler, interrupted, len(reports))
            if status in ("stopped", "interrupted") and meta:
                mark_ended(run_dir, status, reason)
            final = reports[-1] if reports else {}
            members.append({
                "trial": run_dir.name, "trial_id": last.get("trial_id") or info.get("trial_id"),
                "params": {**params, "seeds": [seed]}, "seed": seed, "status": status, "reason": reason,
                "run_dir": str(run_dir), "target_model": label, "epochs": len(reports),
                **{f"best_{name}": _clean(_best(reports, name)) for name in ("val_acc", "val_nll")},
                "last": {k: _clean(final.get(k)) for k in ("epoch", "val_acc", "val_nll", "train_loss")},
                "others": targets.others_of(run_dir, cfg.tune.kind, label, seed),
                "seconds": (last.get("time_total_s") or 0.0) / (len(configs) * len(plan.seeds)),
                "nodes": sorted({a["node_id"] for a in info.get("attempts", []) if a.get("node_id")}),
                "attempts": len(info.get("attempts", [])), "pack": Path(result.path).name,
            })
    first = _read(Path(members[0]["run_dir"]) / "summary.json") if members else {}
    pack = {"trial": Path(result.path).name, "trial_id": info.get("trial_id"), "tune_status": tune_status,
            "configurations": configs, "seeds": plan.seeds, "models": len(members),
            "trained": (first.get("pack") or {}).get("trained"), "packing": first.get("packing"),
            "seconds": last.get("time_total_s"), "reported_epochs": last.get("training_iteration", 0),
            "error": None if result.error is None else str(result.error).strip().splitlines()[-1]}
    return members, pack


def pack_lines(summary: dict) -> list[str]:
    """One line per pack for the printed table."""
    return [f"pack {p['trial']}: {len(p['configurations'])} configuration(s) x {len(p['seeds'])} seed(s), "
            f"{p['trained'] or 0} model(s) trained now, {p['seconds'] or 0:.1f} s"
            + "".join(f"; {role}: {how}" for role, how in (p["packing"] or {}).items())
            for p in summary.get("packs", [])]
