"""What long work shows while it runs: epoch bars on a terminal, one line per finished model otherwise."""

from __future__ import annotations

import sys
from typing import Callable, Optional


class Progress:
    """Epoch progress: a tqdm bar on a terminal, one line per finished model otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start(self, label: str, epochs: int):
        if not self.enabled:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc=label, unit="epoch", leave=True, file=sys.stderr)
        self.label = label

    def epoch(self, report: dict):
        if self.bar is not None:
            if self.bar.n == 0 and report["epoch"] > 1:
                self.bar.update(report["epoch"] - 1)
            self.bar.set_postfix(val_acc=f"{report['val_acc']:.4f}", loss=f"{report['train_loss']:.4f}")
            self.bar.update(1)

    def done(self, row: dict):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(f"{self.label}: val_acc {row['val_acc']:.4f} test_acc {row['test_acc']:.4f} "
                  f"(epoch {row['selected_epoch']} selected on validation)", file=sys.stderr, flush=True)


def chain(*callbacks: Optional[Callable]) -> Callable:
    live = [c for c in callbacks if c is not None]
    return lambda value: [c(value) for c in live]


def stderr_line(enabled: bool) -> Callable[[str], None]:
    def say(line: str) -> None:
        if enabled:
            print(line, file=sys.stderr, flush=True)
    return say
