"""8 seeds of the MNIST-1D MLP trained stacked in one engine.fit against one engine.fit per seed.

    .venv/bin/python benchmarks/pack_seeds.py            # 8 seeds, 40-100-100-10 MLP, 10 epochs
    .venv/bin/python benchmarks/pack_seeds.py --quick    # a smoke test

This is what `distill bornagain` does with the seeds of one generation: `engine.fit` of all
seeds at once (stacked parameters, batched matrix products) against `engine.fit` once per
seed, with the same seeds, batches, AdamW one-cycle schedule and step count, each including
evaluation after every epoch and atomic checkpoints; both through autograd. One process,
interleaved rounds, medians. Figure: `speedup` = sequential / packed wall time (`speedup_cpu`: the
same from the process's CPU time, which other work on a shared machine does not inflate). Also
`matmul_ceiling`: sequential wall time / (steps x the time of one packed step's batched
matrix products alone, forward and backward): the speedup stacking could reach if
everything else in the stacked run were free.
Writes benchmarks/results/pack_seeds.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch

from distill import engine
from distill.config import load_config
from distill.data import load_data


def make_models(cfg, data, seeds):
    return [engine.new_model(cfg.model, data, seed) for seed in seeds]


def sequential(cfg, data, seeds, folder: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one engine.fit per seed."""
    started, cpu = time.perf_counter(), time.process_time()
    for seed, model in zip(seeds, make_models(cfg, data, seeds)):
        engine.fit_one(model, data, cfg.train, seed=seed, checkpoint_dir=folder / f"s{seed}")
    return time.perf_counter() - started, time.process_time() - cpu


def packed_run(cfg, data, seeds, folder: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one engine.fit of all seeds stacked."""
    started, cpu = time.perf_counter(), time.process_time()
    engine.fit(make_models(cfg, data, seeds), data, cfg.train, seeds=seeds, model_dirs=[folder / f"s{s}" for s in seeds])
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, both sides alike: "
                        "steadier on a shared machine; 0 = all CPUs, as a run uses by default)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds = 2, 1
    cfg = load_config(None, [
        "dataset.name=mnist1d", "dataset.num_samples=5000", "dataset.augment=none", "model.name=mlp",
        "model.width=100", "model.depth=2", f"train.epochs={args.epochs}", "train.batch_size=128", "train.lr=0.003",
        "train.weight_decay=0.01", "train.device=cpu", f"train.threads={args.threads}"])
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = list(range(args.seeds))
    times = {"packed": [], "sequential": []}
    cpu = {"packed": [], "sequential": []}
    runners = {"packed": packed_run, "sequential": sequential}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in runners.items():  # warm-up
            fn(load_config(None, ["train.epochs=1", "model.name=mlp", "train.device=cpu"]), data, seeds[:2],
               Path(tmp) / f"warm-{name}")
        for r in range(args.rounds):
            for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
                wall, seconds = runners[name](cfg, data, seeds, Path(tmp) / f"{name}-{r}")
                times[name].append(wall)
                cpu[name].append(seconds)
    pk, sq = statistics.median(times["packed"]), statistics.median(times["sequential"])
    steps = args.epochs * -(-data.size("train") // cfg.train.batch_size)
    matmuls = common.packed_matmul_seconds(engine.new_model(cfg.model, data, 0), args.seeds, cfg.train.batch_size)
    figures = {"speedup": round(sq / pk, 3), "packed_seconds": round(pk, 3), "sequential_seconds": round(sq, 3),
               # CPU time of the process (one thread: the work itself; other tenants do not advance this clock)
               "speedup_cpu": round(statistics.median(cpu["sequential"]) / statistics.median(cpu["packed"]), 3),
               "packed_cpu_seconds": round(statistics.median(cpu["packed"]), 3),
               "sequential_cpu_seconds": round(statistics.median(cpu["sequential"]), 3),
               # the speedup if the packed run cost nothing but its batched matrix products
               "matmul_ceiling": round(sq / (steps * matmuls), 3), "packed_matmul_ms_per_step": round(1e3 * matmuls, 3),
               "seeds": args.seeds, "model": "mlp 40-100-100-10", "epochs": args.epochs, "rounds": args.rounds,
               "threads": torch.get_num_threads()}
    print(common.table([(k, statistics.median(v), min(v), max(v)) for k, v in times.items()],
                       ("seeds", "median s", "min s", "max s")))
    print(f"speedup (sequential / packed): {figures['speedup']}x wall, {figures['speedup_cpu']}x CPU; "
          f"ceiling set by the packed step's batched matrix "
          f"products alone ({figures['packed_matmul_ms_per_step']} ms per step): {figures['matmul_ceiling']}x")
    print(f"wrote {common.write_result(__file__, figures, args.out)}")
    return figures


if __name__ == "__main__":
    main()
