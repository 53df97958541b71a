"""Shared test helpers: tiny configs on generated data, run on CPU."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def tiny_overrides(**extra) -> list[str]:
    """A config small enough for a test: MNIST-1D with 400 examples, a small MLP, 3 epochs."""
    base = {
        "dataset.name": "mnist1d", "dataset.num_samples": 400, "model.name": "mlp", "model.width": 32,
        "train.epochs": 3, "train.batch_size": 64, "train.lr": 0.01, "train.threads": 1, "train.device": "cpu",
        "train.checkpoint_seconds": 0,  # a checkpoint every epoch, so resume tests resume mid-run
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny():
    return tiny_overrides
