"""Born-again networks: multi-generation self-distillation (`distill bornagain`).

    import bornagain
    run_dir = bornagain.run(cfg)          # cfg from distill.load_config("ban-mnist1d")
"""

from .chain import run, should_stop

__all__ = ["run", "should_stop"]
