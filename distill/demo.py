"""The main job of `make demo`: every kind of experiment, small, on CPU, in a few minutes.

    python -m distill.demo                 # writes demo-runs/ and demo-runs/report/
    python -m distill.demo --out /tmp/d    # elsewhere

Stages (each a real run directory, resumable, read back by `results`):
  1. the MNIST-1D MLP from labels (the baseline every student is compared with)
  2. Hinton KD: a 1-D CNN teacher trained first, distilled into the same MLP
  3. a born-again chain of MLPs (generation 0 from labels, 2 born-again generations,
     seeds trained at once with torch.func)
  4. ensemble collapse: 3 CNN members, their ensemble, distilled into one MLP
  5. a T x alpha sweep of KD as Ray Tune trials
  6. a report: tables with 95% intervals over seeds, plots, a comparison page

The figures are smaller than the presets' (fewer epochs, 3 seeds): the demo shows the
machinery end to end; the README's numbers come from the full presets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import load_config, presets_root

CONFIGS = presets_root()
SMALL = ["seeds=[0,1,2]", "train.epochs=30", "dataset.num_samples=3000"]


def stage(title: str):
    print(f"\n=== {title}", file=sys.stderr, flush=True)
    return time.perf_counter()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-runs", help="folder for the demo's runs (default: demo-runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    runs = []

    from .runner import train

    stage("1/6 MLP from labels (MNIST-1D)")
    runs.append(train(load_config(CONFIGS / "mnist1d-mlp.yaml", SMALL + ["name=demo-mlp"]), out))

    stage("2/6 KD: CNN teacher -> MLP student")
    runs.append(train(load_config(CONFIGS / "mnist1d-kd.yaml", SMALL + ["name=demo-kd", "teacher.train.epochs=30"]),
                      out))

    import bornagain

    stage("3/6 born-again chain (BAN, 2 generations, seeds packed)")
    runs.append(bornagain.run(load_config(CONFIGS / "ban-mnist1d.yaml", SMALL + [
        "name=demo-ban", "bornagain.generations=2"]), out))

    import ensembles

    stage("4/6 ensemble collapse: 3 CNN members -> MLP")
    runs.append(ensembles.run(load_config(CONFIGS / "ensemble-mnist1d.yaml", SMALL + [
        "name=demo-ensemble", "ensemble.members=3"]), out))

    import tuning

    stage("5/6 T x alpha sweep on Ray Tune (KD, 2 x 2 grid, 1 seed)")
    runs.append(tuning.run(load_config(CONFIGS / "tune-mnist1d-kd.yaml", [
        "name=demo-tune", "seeds=[0]", "train.epochs=10", "teacher.train.epochs=10", "dataset.num_samples=2000",
        "search.distill.temperature={grid: [1, 4]}", "search.distill.alpha={grid: [0.5, 0.9]}"]), out))

    import results

    stage("6/6 report")
    page = results.report(runs, out / "report")
    print(f"\ndemo done in {time.perf_counter() - started:.0f} s; report: {page}", file=sys.stderr)
    print(Path(page).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
