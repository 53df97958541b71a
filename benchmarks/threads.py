"""Small-model epoch time at the default thread policy against every fixed thread count, with one
busy process competing for the cores.

    .venv/bin/python benchmarks/threads.py            # MNIST-1D MLP and 1-D CNN, 9 rounds
    .venv/bin/python benchmarks/threads.py --quick    # a smoke test

The default is what `distill train` does when train.threads is not given: null (auto), the count
by the model's work per step (1 for small models) and the machine's free cores
(distill.export.cost.fit_threads), with OMP_WAIT_POLICY=PASSIVE set before torch loads, as the
command line sets it. It is timed against train.threads=1, 2, ..., cores in interleaved rounds
(the order rotating), each a fresh model trained by engine.fit_one for a few epochs (evaluation
and checkpoints included), while one other process spins on a core (`while True: pass`,
started and stopped here). Figures: `<model>_default_over_best` = the median epoch at the
default / the smallest median epoch of the fixed counts; the headline `default_over_best` is
the MLP's (target <= 1.2). What the passive wait policy is worth: a child process without
OMP_WAIT_POLICY (libgomp's default: idle threads spin a while before they sleep) times the same
fixed counts under the same competing process (`<model>_epoch_s_threads_<n>_omp_default`).
Writes benchmarks/results/threads.json.
"""

from __future__ import annotations

import os
import sys

if "--child" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as distill.cli.dispatch does, before torch loads

import argparse  # noqa: E402
import statistics  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402
import torch  # noqa: E402

from distill import engine  # noqa: E402
from distill.config import DatasetConfig, ModelConfig, TrainConfig  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.export.cost import cpu_count  # noqa: E402

MODELS = {"mlp": ModelConfig(name="mlp", width=100, depth=2), "cnn1d": ModelConfig(name="cnn1d", width=32)}


def epoch_seconds(model_cfg: ModelConfig, data, threads, epochs: int, seed: int) -> tuple[float, int]:
    """Seconds per epoch of one fit at `threads` (None: the default), and the count it trained with."""
    train = TrainConfig(epochs=epochs, batch_size=128, lr=0.003, weight_decay=0.01, device="cpu",
                        threads=threads, cost_budget=0.0, checkpoint_seconds=0.0)
    engine.setup_torch(train)
    model = engine.new_model(model_cfg, data, seed)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        engine.fit_one(model, data, train, seed=seed, checkpoint_dir=Path(folder))
        return (time.perf_counter() - started) / epochs, torch.get_num_threads()


def time_settings(data, settings: list, args) -> tuple[dict, dict]:
    """Seconds per epoch of each model at each setting over args.rounds interleaved rounds, and the
    thread count the default chose for each model."""
    times = {(name, s): [] for name in MODELS for s in settings}
    chosen = {}
    for name, model_cfg in MODELS.items():  # warm-up: first calls pay for allocations and lazy init
        epoch_seconds(model_cfg, data, 1, 1, 0)
    for r in range(args.rounds):
        for name, model_cfg in MODELS.items():
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for s in order:
                seconds, used = epoch_seconds(model_cfg, data, s, args.epochs, r)
                times[name, s].append(seconds)
                if s is None:
                    chosen[name] = used
    return times, chosen


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the fixed counts, JSON on stdout
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 1, 1
    cores = cpu_count()
    settings = ([] if args.child else [None]) + list(range(1, cores + 1))  # None: the default
    data = load_data(DatasetConfig(name="mnist1d", num_samples=5000, augment="none"))
    if args.child:
        return print(json.dumps({f"{name}_epoch_s_threads_{s}_omp_default": round(statistics.median(
            time_settings(data, [s], args)[0][name, s]), 4) for name in MODELS for s in settings}))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the competing process
    try:
        time.sleep(0.5)  # let it take its core
        times, chosen = time_settings(data, settings, args)
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        child = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--epochs",
                                str(args.epochs)], capture_output=True, text=True, env=env, check=True)
        spinning = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        busy.kill()
        busy.wait()
    rows, figures = [], {"cores": cores, "competing_processes": 1,
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), **spinning}
    for name in MODELS:
        print(name, {str(s): [round(t * 1000) for t in times[name, s]] for s in settings}, file=sys.stderr)
        medians = {s: statistics.median(times[name, s]) for s in settings}
        best = min(medians[s] for s in settings if s is not None)
        figures[f"{name}_default_threads"] = chosen[name]
        figures[f"{name}_epoch_s_default"] = round(medians[None], 4)
        for s in settings[1:]:
            figures[f"{name}_epoch_s_threads_{s}"] = round(medians[s], 4)
        figures[f"{name}_default_over_best"] = round(medians[None] / best, 3)
        rows.append((name, chosen[name], medians[None] * 1000, *(medians[s] * 1000 for s in settings[1:]),
                     medians[None] / best))
    figures["default_over_best"] = figures["mlp_default_over_best"]
    figures.update({"rounds": args.rounds, "epochs": args.epochs})
    header = ("model", "default threads", "default ms/epoch", *(f"{s} threads ms/epoch" for s in settings[1:]),
              "default/best")
    print(common.table(rows, header))
    print(f"wrote {common.write_result(__file__, figures, args.out)}")
    return figures


if __name__ == "__main__":
    main()
