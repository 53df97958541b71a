"""One Tune trial of the stacked layout (`tuning.plan`): a pack of configurations, every seed of each.

The trial trains its members (`tuning.packrun`) and reports to Tune, per epoch of the target, the
mean over seeds of each configuration's validation figures: `val_acc`, `val_nll`, ... are the
mean of the pack's best configuration at that epoch (of its only one, under ASHA or Optuna: what
the scheduler or searcher decides on), `c<i>_val_acc`, `c<i>_val_nll` each configuration's mean.
An epoch is reported once every member has it in a checkpoint (written every
`train.checkpoint_seconds` and at the end); the last once every member's run directory is complete. Members trained one after another report together at the end.

A Tune checkpoint is a reference, not a copy: a small folder holding `tune.json` (how many
reports Tune has, and the member run directories it refers to). The members' own checkpoints
are the state; a restarted trial (retry, `--resume`) resumes them and sends Tune only what its
checkpoint does not hold.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from pathlib import Path
from typing import Optional

from . import target as targets
from .space import trial_config
from .trainable import REPORTED, TrialDiverged, _now, _read_json, _write_json, mark_ended, node_id

FIGURES = ("val_acc", "val_nll")  # each configuration's means, reported as c<i>_<figure>


def pack_params(params: dict, configs: Optional[list], packs: list) -> list[dict]:
    """The configurations of a trial: a pack of the plan, or (Optuna) the trial's own values."""
    if configs is not None and "pack" in params:
        return [configs[i] for i in packs[int(params["pack"])]]
    return [{k: v for k, v in params.items() if k != "__trial_index__"}]


def member_config(base: dict, params: dict, seed: int, name: str, teachers: Optional[dict]):
    top = {"run_id": name}
    if teachers:
        top["distill.teacher"] = teachers[seed]
    return trial_config({**base, "seeds": [seed]}, params, **top)


def _members(sweep: Path, base: dict, params_list: list[dict], seeds: list, teachers):
    from .packrun import Member
    from .plan import member_name

    found = []
    for c, params in enumerate(params_list):
        for seed in seeds:
            name = member_name(params, seed)
            found.append(Member(len(found), c, params, seed, member_config(base, params, seed, name, teachers),
                                sweep / "runs" / name))
    return found


def _mean(values: list):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


class Reports:
    """Each member's target reports by epoch, and what Tune has been sent."""

    def __init__(self, members, target_of, epochs: int, trial_dir: Path, sent: int, metric: str):
        self.members, self.target_of, self.epochs = members, target_of, epochs
        self.by_member: list[dict[int, dict]] = [{} for _ in members]
        self.confirmed = [0] * len(members)  # epochs each member holds in a checkpoint
        self.trial_dir, self.sent, self.metric = trial_dir, sent, metric
        self.configs = max(m.config for m in members) + 1

    def rows(self, index: int, rows: list[dict]) -> None:
        """History rows of a member (live, or replayed from its checkpoint when it resumes)."""
        target = self.target_of[index]
        for row in rows:
            if row.get("split") not in ("train", "val") or not target.matches(row):
                continue
            report = self.by_member[index].setdefault(int(row["epoch"]), {"epoch": int(row["epoch"]),
                                                                          "lr": row.get("lr"),
                                                                          "seconds": row.get("seconds")})
            for name in ("loss", "acc", "nll", "ece"):
                if row.get(name) is not None:
                    report[f"{row['split']}_{name}"] = float(row[name])

    def finished(self, index: int) -> None:
        m = self.members[index]
        for role in ("student", "model"):
            for report in targets.epoch_reports(m.run_dir, role, m.seed):
                self.by_member[index][report["epoch"]] = report
        self.confirmed[index] = self.epochs

    def epoch(self, index: int, epoch: int) -> None:
        self.confirmed[index] = max(self.confirmed[index], epoch)

    def ready(self) -> int:
        """The last epoch every member has in a checkpoint and in its reports."""
        e = min(self.confirmed)
        while e > 0 and not all(e in r for r in self.by_member):
            e -= 1
        return e

    def report(self, epoch: int) -> dict:
        means = []
        for c in range(self.configs):
            rows = [self.by_member[m.index][epoch] for m in self.members if m.config == c]
            means.append({k: _mean([r.get(k) for r in rows]) for k in REPORTED if k != "epoch"})
        sign = 1.0 if self.metric.endswith("acc") else -1.0

        def rank(c: int) -> tuple:
            value = means[c].get(self.metric)
            return (value is not None, sign * value if value is not None else 0.0)

        best = max(range(self.configs), key=rank)
        out = {k: v for k, v in means[best].items() if v is not None}
        out.update(epoch=epoch, configurations=self.configs, models=len(self.members), best_configuration=best)
        for c in range(self.configs):
            out.update({f"c{c}_{k}": means[c].get(k) for k in FIGURES})
        return out

    def send(self, upto: int, where: dict) -> None:
        """Send Tune the epochs up to `upto` it does not have, each with a reference checkpoint."""
        from ray import tune

        ref = self.trial_dir / "tune-ref"
        ref.mkdir(exist_ok=True)
        while self.sent < upto:
            report = self.report(self.sent + 1)
            self.sent += 1
            _write_json(ref / "tune.json", {"sent": self.sent,
                                            "members": [str(m.run_dir) for m in self.members]})
            tune.report({**report, **where}, checkpoint=tune.Checkpoint.from_directory(str(ref)))


def run_pack(params: dict, *, base: dict, sweep_dir: str, tune_dir: str, configs: Optional[list], packs: list,
             seeds: list, teachers: Optional[dict] = None) -> None:
    """The Tune function trainable of the stacked layout (bound with `tune.with_parameters`)."""
    from ray import tune

    from .packrun import MEMBER, train_pack
    from .space import trial_dirname

    context = tune.get_context()
    trial_dir = Path(tune_dir) / (context.get_trial_name() or trial_dirname(context.get_trial_id(), params))
    trial_dir.mkdir(parents=True, exist_ok=True)
    members = _members(Path(sweep_dir), base, pack_params(params, configs, packs), seeds, teachers)
    epochs = members[0].cfg.train.epochs
    target_of = [targets.resolve(m.cfg) for m in members]
    checkpoint = tune.get_checkpoint()
    sent = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as source:
            sent = int(_read_json(Path(source) / "tune.json").get("sent", 0))
    book = Reports(members, target_of, epochs, trial_dir, sent, members[0].cfg.tune.metric)
    where = {"node_id": node_id(), "target_model": target_of[0].label()}
    info = _read_json(trial_dir / "trial.json") or {"trial_id": context.get_trial_id(), "params": params,
                                                    "seeds": seeds, "members": [m.run_dir.name for m in members],
                                                    "attempts": []}
    info["attempts"].append({"node_id": where["node_id"], "hostname": platform.node(), "pid": os.getpid(),
                             "started": _now(), "restored_from": checkpoint.path if checkpoint else None})
    _write_json(trial_dir / "trial.json", info)

    def on_epoch(report: dict) -> None:
        loss = report.get("train_loss")
        if loss is None or not math.isfinite(loss):
            raise TrialDiverged(f"train_loss is {loss} at epoch {report.get('epoch')}")
        index = report[MEMBER]
        if not target_of[index].matches(report):
            return
        if report.get("checkpointed"):  # reported once it is in a checkpoint (train.checkpoint_seconds)
            book.epoch(index, report["epoch"])
        book.send(min(book.ready(), epochs - 1), where)  # the last epoch once every run is complete

    try:
        summaries = train_pack(members, on_rows=book.rows, on_epoch=on_epoch)
        for m, summary in zip(members, summaries):
            if summary is not None:
                book.finished(m.index)
        book.send(book.ready(), where)
    except SystemExit:  # Tune stops a function trial from inside `tune.report`
        scheduled = members[0].cfg.tune.scheduler != "fifo"
        for m in members:
            mark_ended(m.run_dir, "stopped" if scheduled else "interrupted",
                       f"stopped by Tune after {book.sent} reported epochs of its pack ({trial_dir.name})"
                       if scheduled else f"the sweep stopped after {book.sent} reported epochs of its pack; "
                       f"`distill tune CONFIG --resume` continues it")
        raise
