"""tuning: searches over any config key, run as Ray Tune trials on one machine or a cluster.

    distill tune tune-mnist1d-kd                 # T x alpha x seeds on MNIST-1D
    distill tune tune-mnist1d-kd train.epochs=2 dataset.num_samples=400 seeds=[0]  # tiny CPU check

From Python: `tuning.run(cfg, out="runs")` returns the experiment folder, whose sweep.json
lists every trial; it raises `TrialsFailed` naming the failed trials once the others are done,
and `SweepInterrupted` after SIGINT/SIGTERM (sweep.json then says `interrupted`).
See `tuning.space` for the `search:` section, `tuning.target` for the one model each trial
reports to Tune (`tune.target`), `tuning.trainable` for what one trial does, `tuning.sweep`
for schedulers, Ray start-up, signals, resume and where files go, `tuning.summary` for
sweep.json and `tuning.choose` for how the best configuration is chosen.
"""

from .space import Dimension, parse_search
from .sweep import SweepInterrupted, TrialsFailed, experiment_dir, run
from .trainable import TrialDiverged

__all__ = ["Dimension", "SweepInterrupted", "TrialDiverged", "TrialsFailed", "experiment_dir", "parse_search",
           "run"]
