"""Progress of a sweep: one line per trial state change, and Tune's view of each trial's status."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ray import tune

from . import space
from .summary import mode_of

_CURRENT: list = []  # the TrialLines of the sweep this process runs now


def _current_lines() -> "TrialLines":
    return _CURRENT[0] if _CURRENT else TrialLines()


class TrialLines(tune.Callback):
    """Progress: one line per trial state change (start, retry, done, stopped, failed); also
    remembers each trial's best and Tune's view of its status for sweep.json.

    `Tuner.restore` unpickles the callbacks of the first session; this one unpickles as the
    current process's instance, so `--resume` reads the statuses of the session it runs."""

    def __init__(self, enabled: bool = True, metric: str = "val_acc"):
        self.enabled, self.metric = enabled, metric
        self.best: dict[str, float] = {}
        self.status: dict[str, str] = {}  # trial id -> Tune's status when the loop last stepped
        _CURRENT[:] = [self]

    def __reduce__(self):
        return _current_lines, ()

    def _say(self, trials, trial, text: str, ending: bool = False) -> None:
        if not self.enabled:
            return
        ended = sum(t.status in ("TERMINATED", "ERROR") or (ending and t is trial) for t in trials)
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] trial {trial.trial_id} {text} ({ended}/{len(trials)} ended)", file=sys.stderr, flush=True)

    def on_step_end(self, iteration, trials, **info):
        for trial in trials:  # a trial ended (complete, error) stays so; live ones are followed
            if self.status.get(trial.trial_id) not in ("TERMINATED", "ERROR"):
                self.status[trial.trial_id] = trial.status

    def status_of(self, result) -> str | None:
        """Tune's status of the trial of a Result (its folder is named `<trial id>_<values>`)."""
        name = Path(result.path).name
        return next((s for tid, s in self.status.items() if name == tid or name.startswith(tid + "_")), None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is not None:
            old = self.best.get(trial.trial_id)
            if old is None or (value > old if mode_of(self.metric) == "max" else value < old):
                self.best[trial.trial_id] = value

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(trials, trial, f"started: {space.describe(trial.config) or 'base config'}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "TERMINATED"
        result = trial.last_result or {}
        epochs = result.get("training_iteration", 0)
        m = self.metric
        figures = (f"{m} last {result[m]:.4f} (target epoch {result.get('epoch', epochs)}), best "
                   f"{self.best.get(trial.trial_id, result[m]):.4f}") if m in result else "no figures"
        ended = "done" if result.get("done") else "stopped early by the scheduler"
        self._say(trials, trial, f"{ended} after {epochs} target epochs ({result.get('target_model', 'target')}): "
                                 f"{figures}", ending=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "ERROR"
        self._say(trials, trial, f"FAILED: {_reason(trial.error_file)}", ending=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trials, trial, f"failed ({_reason(trial.error_file)}); retrying from its last checkpoint")


def _reason(error_file) -> str:
    """The last line of a Ray error file: `TrialDiverged: train_loss is nan at epoch 2`."""
    try:
        lines = [ln.strip() for ln in Path(error_file).read_text().splitlines() if ln.strip()]
    except (OSError, TypeError):
        return "unknown error"
    return lines[-1] if lines else "unknown error"
