"""Shared test helpers: tiny configs on generated data, run on CPU."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


#: a language-model config small enough for a test: a 1-layer GPT on 10 generated Python docstrings
TINY_LM = ["dataset.name=pydoc", "dataset.text.documents=10", "dataset.text.block=16", "dataset.val_fraction=0.2",
           "dataset.text.test_fraction=0.2", "model.name=gpt", "model.width=16", "model.depth=1",
           "model.kwargs={heads: 2}", "train.epochs=2", "train.batch_size=32", "train.lr=0.003",
           "train.device=cpu", "train.threads=1", "seeds=[0]", "train.checkpoint_seconds=0"]


class Killed(Exception):
    """Raised from an `on_epoch` callback: the run dies there, as a crash would."""


def kill_at(**where):
    """An `on_epoch` callback that raises Killed at the first report matching every key=value."""
    def callback(report: dict) -> None:
        if all(report.get(key) == value for key, value in where.items()):
            raise Killed
    return callback


def tiny_overrides(**extra) -> list[str]:
    """A config small enough for a test: MNIST-1D with 400 examples, a small MLP, 3 epochs."""
    base = {
        "dataset.name": "mnist1d", "dataset.num_samples": 400, "model.name": "mlp", "model.width": 32,
        "train.epochs": 3, "train.batch_size": 64, "train.lr": 0.01, "train.threads": 1, "train.device": "cpu",
        "train.checkpoint_seconds": 0,  # a checkpoint every epoch, so resume tests resume mid-run
    }
    base.update(extra)
    if base["dataset.name"] not in ("mnist1d", "fake") and "dataset.num_samples" not in extra:
        del base["dataset.num_samples"]  # a dataset sized by its files reads none (an error if given)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny():
    return tiny_overrides
