"""SIGINT and SIGTERM during `distill tune`: both stop the sweep the way Ctrl-C stops Tune.

Inside `Tuner.fit`, Tune's own SIGINT handler stops the trials and saves the experiment
state; `_Signals` makes SIGTERM (SLURM, Kubernetes, `kill`) call that handler too, and
outside `fit` (the shared teacher, Ray start-up) both raise KeyboardInterrupt. The driver
then writes sweep.json (`interrupted`, with the signal) and raises `SweepInterrupted`.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from distill.errors import Interrupted


class SweepInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped the sweep; sweep.json says so. `exit_status` is 130 or 143;
    `how_to_resume` is what the command prints after "interrupted"."""

    def __init__(self, path: Path, signal_name: str):
        super().__init__(signal_name)
        self.path = path
        self.how_to_resume = f"the sweep's state is saved in {path}; continue it with the same command and --resume"


class _Signals:
    """SIGTERM does what Ctrl-C does (Tune's graceful stop inside `Tuner.fit`, else KeyboardInterrupt);
    remembers which signal came first."""

    def __init__(self):
        self.name = None
        self.old = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig, handler in ((signal.SIGINT, self._on_int), (signal.SIGTERM, self._on_term)):
            self.old.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    def _on_int(self, sig, frame):
        self.name = self.name or "SIGINT"
        raise KeyboardInterrupt

    def _on_term(self, sig, frame):
        self.name = self.name or "SIGTERM"
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler != self._on_int:
            handler(signal.SIGINT, frame)  # Tune's own: stop the trials, save the experiment state
        else:
            raise KeyboardInterrupt
