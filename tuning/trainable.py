"""One Tune trial: build its config, run `tune.kind`, report its target model's epochs.

The trial writes the run directory (docs/design.md) straight into its trial folder on the
experiment's storage (`<storage_path>/<sweep-id>/<trial folder>/`), next to Ray's own
files (params.json, result.json, progress.csv, checkpoint_NNNNNN/). Only the target
model's validation figures (never test; see `tuning.target`) reach Tune, each with a Tune
checkpoint: a reference to the run's `checkpoints/` tree (one small tune.json), or under PBT,
which hands one trial's checkpoint to another, a copy of that tree. Which reports were received and which
sent is kept in that tree (`checkpoints/tune.json`), so the counts come from what the
runner said, never from a formula, and travel with each Tune checkpoint.

On a restart (retry after a failure, `--resume`, a PBT exploit) the trial puts the tree of
`tune.get_checkpoint()` back in place and the runner resumes from it, so Tune's iteration
count and the target's epochs always agree. Without a Tune checkpoint, a tree from which
no report was sent yet (e.g. a teacher half trained) is kept and resumed; otherwise the
trial starts from scratch.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Optional

from . import target as targets
from .space import trial_config, trial_dirname
from .target import REPORTED  # noqa: F401 - re-exported


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def kind_runner(kind: str):
    """The function one trial runs: the experiment kind's run (`distill.kinds`)."""
    from distill import kinds

    return kinds.get(kind).run_function()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict:
    """A JSON mapping, or {} when the file is missing, damaged or not a mapping."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_json(path: Path, obj) -> None:
    from distill.runs.store import write_json_atomic  # the one writer of run files (fsync, NaN as null)

    write_json_atomic(path, obj)


def node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only informative
        return None


def restore_checkpoints(run_dir: Path, checkpoint) -> str | None:
    """Make `run_dir/checkpoints` exactly the reported Tune checkpoint; without one, keep a tree
    from which nothing was reported yet, else empty it. A reference checkpoint (`tune.json` naming
    the tree) keeps the tree, which resumes from its own checkpoints, and says how many reports
    Tune has: the reports received beyond those are sent again."""
    target = run_dir / "checkpoints"
    if checkpoint is None and Book(target).sent == 0:
        return None
    sent = None
    if checkpoint is not None:
        with checkpoint.as_directory() as source:
            found = _read_json(Path(source) / "tune.json")
            if found.get("reference") and [p.name for p in Path(source).iterdir()] == ["tune.json"]:
                sent = int(found.get("sent", 0))
    if sent is not None:
        book = Book(target)
        if not target.is_dir() or len(book.received) < sent:  # the tree is gone: train again, skip what Tune has
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            book = Book(target)
        book.sent = sent
        book.save()
        return checkpoint.path
    if target.exists():
        shutil.rmtree(target)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as source:
        shutil.copytree(source, target)
    return checkpoint.path


def mark_ended(run_dir: Path, status: str, reason: str, attempt: Optional[int] = None) -> None:
    """Write `status` (stopped, interrupted) into an unfinished run's meta.json and summary.json.

    With `attempt` (the trial's own thread), only while that attempt (index into trial.json's
    attempts) is the trial's newest: a PBT exploit pauses a trial and restarts it with
    another's checkpoint, and with actor reuse the old attempt's thread can unwind after the
    new attempt began (or even finished); it must not overwrite that attempt's status."""
    if attempt is not None and len(_read_json(run_dir / "trial.json").get("attempts", [])) != attempt + 1:
        return
    if _read_json(run_dir / "meta.json").get("status") in (None, "done", "failed"):
        return
    for name in ("meta.json", "summary.json"):
        data = _read_json(run_dir / name)
        if data:
            data["status"] = status
            if name == "meta.json":
                data.update(reason=reason, finished=_now())
            _write_json(run_dir / name, data)


class Book:
    """`checkpoints/tune.json`: the target's reports received from the runner and how many were sent.

    Written before each Tune report, inside the tree that report checkpoints, so a restored
    Tune checkpoint says exactly which of the target's epochs Tune has."""

    def __init__(self, root: Path):
        self.path = root / "tune.json"
        data = _read_json(self.path)
        self.received: list[dict] = data.get("received", [])
        self.sent: int = data.get("sent", 0)

    def save(self) -> None:
        if self.path.parent.is_dir():
            _write_json(self.path, {"received": self.received, "sent": self.sent})

    def receive(self, report: dict) -> None:
        self.received.append(report)
        self.save()

    def send_rest(self, run_dir: Path, where: dict, upto: Optional[int] = None, reference: bool = False) -> None:
        """Send the received reports not sent yet (up to `upto`), each with the checkpoints tree, or with
        a reference to it (`reference`: a folder holding one small tune.json, whatever the model's size)."""
        from ray import tune

        while self.sent < min(len(self.received), len(self.received) if upto is None else upto):
            report = self.received[self.sent]
            self.sent += 1
            self.save()
            folder = run_dir / "checkpoints"
            if reference:
                folder = run_dir / "tune-ref"
                folder.mkdir(exist_ok=True)
                _write_json(folder / "tune.json", {"reference": str(run_dir / "checkpoints"), "sent": self.sent})
            tune.report({**report, **where}, checkpoint=tune.Checkpoint.from_directory(str(folder)))


def _finished(run_dir: Path, cfg) -> bool:
    from distill.config import dump_yaml

    config_path = run_dir / "config.yaml"
    return (_read_json(run_dir / "meta.json").get("status") == "done" and config_path.exists()
            and config_path.read_text() == dump_yaml(cfg))


def _ending_reports(book: Book, cfg, target: targets.Target, run_dir: Path) -> None:
    """Once the run is done: a target known only now (or `last` of a chain that stopped early)
    gets its reports from the run directory."""
    if not target.live or not book.received:
        book.received = targets.final_reports(cfg, target, run_dir)
        book.sent = min(book.sent, len(book.received))
        book.save()


def run_trial(params: dict, *, base: dict, experiment_dir: str, kind: str, seeds=None) -> None:
    """The Tune function trainable (bound with `tune.with_parameters`)."""
    from ray import tune

    context = tune.get_context()
    # the trial's folder, named once when Tune created the trial (trial name = folder name); not
    # re-derived from `params`, which a PBT exploit changes
    run_dir = Path(experiment_dir) / (context.get_trial_name() or trial_dirname(context.get_trial_id(), params))
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_config(base, params, seeds=seeds, run_id=run_dir.name)
    target = targets.resolve(cfg)
    checkpoint = tune.get_checkpoint()
    where = {"node_id": node_id()}
    reference = cfg.tune.scheduler != "pbt"  # PBT hands a checkpoint to another trial: it must be a copy
    if _finished(run_dir, cfg):
        # finished, but Tune's snapshot did not know yet (the driver died): never train it again,
        # only send Tune the reports its checkpoint does not hold
        book = Book(run_dir / "checkpoints")
        if checkpoint is not None:
            with checkpoint.as_directory() as source:
                book.sent = Book(Path(source)).sent
        else:
            book.sent = 0
        _ending_reports(book, cfg, target, run_dir)
        book.send_rest(run_dir, where, reference=reference)
        return
    restored_from = restore_checkpoints(run_dir, checkpoint)
    config_path = run_dir / "config.yaml"
    if checkpoint is not None and config_path.exists():
        from distill.config import dump_yaml

        if config_path.read_text() != dump_yaml(cfg):  # PBT continues another trial's weights with new values
            config_path.unlink()

    info = _read_json(run_dir / "trial.json") or {"trial_id": context.get_trial_id(), "params": params,
                                                  "seed": target.seed, "attempts": []}
    info["attempts"].append({"node_id": where["node_id"], "hostname": platform.node(), "pid": os.getpid(),
                             "started": _now(), "restored_from": restored_from})
    _write_json(run_dir / "trial.json", info)
    attempt = len(info["attempts"]) - 1
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    book = Book(run_dir / "checkpoints")
    label = target.label()

    def on_epoch(report: dict) -> None:
        loss = report.get("train_loss")
        if loss is None or not math.isfinite(loss):
            raise TrialDiverged(f"train_loss is {loss} at epoch {report.get('epoch')}")
        if not target.matches(report):
            return  # another model's epoch: kept in the run directory, never in the metric
        book.receive({**{key: report[key] for key in REPORTED if key in report}, "target_model": label})
        # the target's last report waits until the runner has written the whole run directory: a
        # scheduler that stops a trial at its last epoch (ASHA at max_t, PBT's stop criterion) stops
        # it inside that report, and it must not cut the summary short
        final = report.get("epoch") == report.get("epochs", cfg.train.epochs)
        book.send_rest(run_dir, where, upto=len(book.received) - 1 if final else None, reference=reference)

    runner = kind_runner(kind)
    try:
        runner(cfg, str(run_dir.parent), run_dir=run_dir, on_epoch=on_epoch, progress=False)
        _ending_reports(book, cfg, target, run_dir)
        book.send_rest(run_dir, where, reference=reference)
    except SystemExit:  # how Tune stops a function trial from inside `tune.report`
        # under FIFO nothing but the sweep's end stops a trial; ASHA/PBT may (the driver has the last word)
        scheduled = cfg.tune.scheduler != "fifo"
        mark_ended(run_dir, "stopped" if scheduled else "interrupted",
                   (f"stopped by Tune after {book.sent} reported epochs of the target ({label}): the "
                    f"{cfg.tune.scheduler} scheduler, or the sweep ending") if scheduled else
                   f"the sweep stopped after {book.sent} reported epochs of the target ({label}); "
                   f"`distill tune CONFIG --resume` continues it", attempt)
        raise
