"""distill: knowledge-distillation experiments on torch and Ray Tune.

    import distill
    cfg = distill.load_config("mnist1d-cnn", ["train.epochs=3"])   # a preset name or a YAML path
    run_dir = distill.train(cfg)
"""

from distill.config import Config, load_config
from distill.errors import ConfigError, UserError

__version__ = "0.1.0"


def train(cfg, out="runs", **kwargs):
    """Train one model per seed (see `distill.training.runner.train`); returns the run directory."""
    from distill.training.runner import train as _train

    return _train(cfg, out, **kwargs)


def model_cost(model, input_shape, device="cpu", **kwargs):
    """Parameters, bytes, FLOPs, latency and throughput of `model` (see `distill.export.cost.model_cost`).
    A model of a finished run is saved for plain torch by `from distill.export import export`
    (not re-exported here: the submodule `distill.export` would take the name over once imported)."""
    from distill.export.cost import model_cost as _model_cost

    return _model_cost(model, input_shape, device, **kwargs)


__all__ = ["Config", "ConfigError", "UserError", "load_config", "model_cost", "train", "__version__"]
