"""What every experiment kind's run does first and last: torch, device, data, seeds, the run
directory, progress, and the guard that marks the run done or failed.

    from distill.training.experiment import prepare
    setup = prepare(cfg, progress)                   # torch settings, device, data on it, seeds
    ...check everything about the input here: nothing is written yet (the same checks, as the kind's
    preflight `check(cfg, loaded)`, run on `data_on_device` for each configuration of a sweep)...
    run = setup.open(KIND.name, out, run_dir)         # the run directory, meta.json says running
    return setup.finish(run, body)                    # body() -> summary; the run is marked done/failed

A kind's run (see `distill.kinds`) is `prepare`, its own checks and plan, `open`, and a `body`
that trains through `distill.training.jobs.fit_jobs` and writes the summary rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from distill import engine
from distill.config import Config
from distill.data import Data, load_data
from distill.runs.progress import Progress, stderr_line
from distill.runs.store import Run, run_guarded


@dataclasses.dataclass
class Setup:
    cfg: Config
    device: object                 # torch.device
    data: Data                     # on the device
    seeds: list[int]
    show: Progress                 # progress bars (epochs of each model)
    say: Callable[[str], None]     # one line on stderr when progress is on

    def open(self, kind: str, out: str | Path, run_dir: str | Path | None, **meta) -> Run:
        """Create (or reopen, to resume) the run directory; meta.json records the device and `meta`."""
        run = Run.open(self.cfg, kind, out, run_dir)
        run.write_meta(device=str(self.device), **meta)
        return run

    def finish(self, run: Run, body: Callable[[], dict]) -> Path:
        """Run `body` under the guard (done, or failed with the reason and re-raised); the run's path."""
        run_guarded(run, body)
        return run.path


def data_on_device(cfg: Config, loaded: Optional[dict] = None) -> tuple[Data, object]:
    """(the dataset on the device, the device), torch settings untouched and nothing written: what `prepare`
    loads, and what a kind's preflight checks each configuration of a sweep against (`loaded` keeps the
    datasets read between calls, by section)."""
    import json

    from distill.schema import to_dict

    device = engine.resolve_device(cfg.train.device)
    loaded = {} if loaded is None else loaded
    key = json.dumps(to_dict(cfg.dataset), sort_keys=True, default=str)
    if key not in loaded:
        loaded[key] = load_data(cfg.dataset).to(device)
    return loaded[key], device


def prepare(cfg: Config, progress: bool = True) -> Setup:
    """Torch settings (threads, determinism), the device, the dataset on it and the seeds."""
    engine.setup_torch(cfg.train)
    data, device = data_on_device(cfg)
    return Setup(cfg, device, data, cfg.seed_list(), Progress(progress), stderr_line(progress))
