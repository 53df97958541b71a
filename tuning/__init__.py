"""tuning: searches over any config key, run as Ray Tune trials on one machine or a cluster.

    distill tune configs/tune-mnist1d-kd.yaml                 # T x alpha x seeds on MNIST-1D
    distill tune configs/tune-mnist1d-kd.yaml train.epochs=2 dataset.num_samples=400 seeds=[0]  # tiny CPU check

From Python: `tuning.run(cfg, out="runs")` returns the experiment folder, whose sweep.json
lists every trial; it raises `TrialsFailed` naming the failed trials once the others are done.
See `tuning.space` for the `search:` section, `tuning.trainable` for what one trial does,
and `tuning.sweep` for schedulers, Ray start-up, resume and where files go.
"""

from .space import Dimension, parse_search
from .sweep import TrialsFailed, experiment_dir, run
from .trainable import TrialDiverged

__all__ = ["Dimension", "TrialDiverged", "TrialsFailed", "experiment_dir", "parse_search", "run"]
