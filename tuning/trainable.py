"""One Tune trial: build its config, run `tune.kind`, report every epoch with a checkpoint.

The trial writes the run directory of DESIGN.md straight into its trial folder on the
experiment's storage (`<storage_path>/<sweep-id>/<trial folder>/`), next to Ray's own
files (params.json, result.json, progress.csv, checkpoint_NNNNNN/). After each epoch it
reports the validation figures (never test) with a Tune checkpoint holding the run's
`checkpoints/` tree. On a restart (retry after a failure, `--resume`, a PBT exploit) it
puts the tree of `tune.get_checkpoint()` back in place and the runner resumes from it, so
Tune's iteration count and the epochs trained always agree; without a Tune checkpoint it
starts from scratch.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
from pathlib import Path

from .space import reports_per_run, trial_config, trial_dirname

# reported every epoch, when the runner has them (validation only: Tune never sees test figures)
REPORTED = ("epoch", "lr", "seconds", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll", "val_ece")


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def kind_runner(kind: str):
    """The function one trial runs: `distill.runner.train`, `bornagain.run` or `ensembles.run`."""
    if kind == "train":
        from distill.runner import train

        return train
    import importlib

    from distill.errors import UserError

    module_name = {"bornagain": "bornagain", "ensemble": "ensembles"}[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"tune.kind={kind} needs the {module_name} package, which cannot be imported ({err})") \
            from None
    if not callable(getattr(module, "run", None)):
        raise UserError(f"tune.kind={kind}: {module_name}.run is not available in this installation")
    return module.run


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only informative
        return None


def restore_checkpoints(run_dir: Path, checkpoint) -> str | None:
    """Make `run_dir/checkpoints` exactly the reported Tune checkpoint (or empty without one)."""
    target = run_dir / "checkpoints"
    if target.exists():
        shutil.rmtree(target)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as source:
        shutil.copytree(source, target)
    return checkpoint.path


def mark_stopped(run_dir: Path, epochs: int, attempt: int) -> None:
    """The scheduler stopped the trial: its run directory says so instead of `running`.

    Only while this attempt (index into trial.json's attempts) is the trial's newest and the
    run is not done: a PBT exploit pauses a trial and restarts it with another's checkpoint,
    and with actor reuse the stopped attempt's thread can unwind after the new attempt began
    (or even finished); it must not overwrite that attempt's status."""
    if len(_read_json(run_dir / "trial.json").get("attempts", [])) != attempt + 1:
        return
    if _read_json(run_dir / "meta.json").get("status") == "done":
        return
    reason = f"stopped early by the trial scheduler after {epochs} reported epochs"
    for name in ("meta.json", "summary.json"):
        data = _read_json(run_dir / name)
        if data:
            data["status"] = "stopped"
            if name == "meta.json":
                data.update(reason=reason, finished=_now())
            _write_json(run_dir / name, data)


def _epochs_done(root: Path) -> int:
    """Epochs recorded in the `last.pt` files under a checkpoints tree."""
    from distill.checkpoints import load_checkpoint

    return sum(load_checkpoint(p)["epoch"] for p in root.glob("*/last.pt")) if root.is_dir() else 0


def _last_reports(run_dir: Path, count: int) -> list[dict]:
    """The per-epoch reports of the last `count` epochs in records.csv (train and val rows)."""
    import csv

    epochs: dict[tuple, dict] = {}
    with open(run_dir / "records.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] not in ("train", "val"):
                continue
            key = (row["role"], row["name"], row["generation"], row["member"], row["seed"], row["epoch"])
            report = epochs.setdefault(key, {"epoch": int(row["epoch"]), "lr": float(row["lr"]),
                                             "seconds": float(row["seconds"])})
            for name in ("loss", "acc", "nll", "ece"):
                if row.get(name) not in (None, ""):
                    report[f"{row['split']}_{name}"] = float(row[name])
    reports = [{k: v for k, v in r.items() if k in REPORTED} for r in epochs.values()]
    return reports[len(reports) - count:] if count > 0 else []


def _finished(run_dir: Path, cfg) -> bool:
    from distill.config import dump_yaml

    config_path = run_dir / "config.yaml"
    return (_read_json(run_dir / "meta.json").get("status") == "done" and config_path.exists()
            and config_path.read_text() == dump_yaml(cfg))


def run_trial(params: dict, *, base: dict, experiment_dir: str, kind: str, seeds=None) -> None:
    """The Tune function trainable (bound with `tune.with_parameters`)."""
    from ray import tune

    context = tune.get_context()
    # the trial's folder, named once when Tune created the trial (trial name = folder name); not
    # re-derived from `params`, which a PBT exploit changes
    run_dir = Path(experiment_dir) / (context.get_trial_name() or trial_dirname(context.get_trial_id(), params))
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_config(base, params, seeds=seeds, run_id=run_dir.name)
    checkpoint = tune.get_checkpoint()
    if _finished(run_dir, cfg):
        # finished, but Tune's snapshot did not know yet (the driver died): never train it again,
        # only tell Tune the epochs its snapshot missed
        missing = _epochs_done(run_dir / "checkpoints")
        if checkpoint is not None:
            with checkpoint.as_directory() as source:
                missing -= _epochs_done(Path(source))
        for report in _last_reports(run_dir, missing):
            tune.report({**report, "node_id": node_id()},
                        checkpoint=tune.Checkpoint.from_directory(str(run_dir / "checkpoints")))
        return
    restored_from = restore_checkpoints(run_dir, checkpoint)
    config_path = run_dir / "config.yaml"
    if checkpoint is not None and config_path.exists():
        from distill.config import dump_yaml

        if config_path.read_text() != dump_yaml(cfg):  # PBT continues another trial's weights with new values
            config_path.unlink()

    info = _read_json(run_dir / "trial.json") or {"trial_id": context.get_trial_id(), "params": params,
                                                  "attempts": []}
    info["attempts"].append({"node_id": node_id(), "hostname": platform.node(), "pid": os.getpid(),
                             "started": _now(), "restored_from": restored_from})
    _write_json(run_dir / "trial.json", info)
    attempt = len(info["attempts"]) - 1
    where = {"node_id": info["attempts"][-1]["node_id"]}
    reported = [0]
    # The trial's last report waits until the runner has written the whole run directory: a
    # scheduler that stops a trial at its last epoch (ASHA at max_t, PBT's stop criterion) stops
    # it inside that report, and it must not cut the summary short.
    expected = reports_per_run(kind, cfg.train.epochs, cfg.bornagain.generations, cfg.ensemble.members)
    done_before = _epochs_done(run_dir / "checkpoints")
    last = []

    def on_epoch(report: dict) -> None:
        loss = report.get("train_loss")
        if loss is None or not math.isfinite(loss):
            raise TrialDiverged(f"train_loss is {loss} at epoch {report.get('epoch')}")
        metrics = {key: report[key] for key in REPORTED if key in report}
        reported[0] += 1
        if done_before + reported[0] == expected:
            last.append(metrics)
            return
        tune.report({**metrics, **where},
                    checkpoint=tune.Checkpoint.from_directory(str(run_dir / "checkpoints")))

    runner = kind_runner(kind)
    try:
        runner(cfg, str(run_dir.parent), run_dir=run_dir, on_epoch=on_epoch, progress=False)
        if last:
            tune.report({**last[0], **where}, checkpoint=tune.Checkpoint.from_directory(str(run_dir / "checkpoints")))
    except SystemExit:  # how Tune stops a function trial from inside `tune.report`
        mark_stopped(run_dir, reported[0], attempt)
        raise
