"""tuning: searches over any config key, run as Ray Tune trials on one machine or a cluster.

    distill tune tune-mnist1d-kd                 # T x alpha x seeds on MNIST-1D
    distill tune tune-mnist1d-kd train.epochs=2 dataset.num_samples=400 seeds=[0]  # tiny CPU check

From Python: `tuning.run(cfg, out="runs")` returns the experiment folder, whose sweep.json
lists every trial; it raises `TrialsFailed` naming the failed trials once the others are done,
and `SweepInterrupted` after SIGINT/SIGTERM (sweep.json then says `interrupted`).
See `tuning.space` for the `search:` section, `tuning.target` for the one model each trial
reports to Tune (`tune.target`), `tuning.trainable` for what one trial does, `tuning.sweep`
for schedulers, Ray start-up, signals, resume and where files go, `tuning.summary` for
sweep.json, `tuning.choose` for how the best configuration is chosen, and `tuning.plan` for how
seeds and configurations are packed into trials (`distill tune --dry-run` prints it).
"""

from .space import Dimension, parse_search

_LAZY = {"SweepInterrupted": "signals", "TrialsFailed": "sweep", "experiment_dir": "sweep", "run": "sweep",
         "TrialDiverged": "trainable"}


def __getattr__(name: str):
    """Ray is imported only when a sweep runs (`distill tune --dry-run` never imports it)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Dimension", "SweepInterrupted", "TrialDiverged", "TrialsFailed", "experiment_dir", "parse_search",
           "run"]
