"""Training 8 ensemble members stacked in one engine.fit against one after another.

    .venv/bin/python benchmarks/pack_members.py            # 8 MNIST-1D MLPs (40-100-100-10), 10 epochs
    .venv/bin/python benchmarks/pack_members.py --quick    # a smoke test

Both sides run the ensemble's own member training (`distill.training.jobs.fit_jobs`, as
`distill ensemble` does) on the same device-resident MNIST-1D data with the same seeds,
batches, AdamW one-cycle schedule and step count, including what a run does around the
steps: validation and test evaluation after every epoch, atomic last/best checkpoints and
records.csv. Packed: one engine.fit trains all 8 stacked; sequential: 8 fits of one. One
process, interleaved rounds, medians. Figure: `speedup` = sequential / packed wall time
(also `speedup_steps`, from the summed epoch-loop times without evaluation).
Writes benchmarks/results/pack_members.json.
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
from distill.runs.store import Run
from ensembles.experiment import member_seed
from distill.training.jobs import Job, fit_jobs


def train_members(cfg, data, pack: bool, folder: Path) -> tuple[float, float]:
    """(wall seconds, summed epoch-loop seconds) of training cfg.ensemble.members members."""
    run = Run.open(cfg, "ensemble", folder)
    jobs = [Job(key=f"member{m}-s0", arch=cfg.model, seed=member_seed(0, m),
                tags={"role": "member", "name": cfg.model.name, "seed": 0, "member": m})
            for m in range(cfg.ensemble.members)]
    started = time.perf_counter()
    log = fit_jobs(jobs, data, cfg.train, run, pack=pack, device=torch.device("cpu"))
    wall = time.perf_counter() - started
    assert log[0]["packed"] == pack, log
    return wall, sum(job.result.train_seconds for job in jobs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, both sides alike: on a "
                        "machine shared with other work two threads spin-wait; 0 = all CPUs, as a run uses by default)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 round")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/pack_members.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds = 2, 1
    overrides = ["dataset.name=mnist1d", "dataset.num_samples=5000", "dataset.augment=none", "model.name=mlp",
                 "model.width=100", "model.depth=2", f"train.epochs={args.epochs}", "train.batch_size=128",
                 "train.lr=0.003", "train.weight_decay=0.01", "train.device=cpu", f"train.threads={args.threads}",
                 f"ensemble.members={args.members}"]
    cfg = load_config(None, overrides)
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    times = {"packed": [], "sequential": []}
    steps = {"packed": [], "sequential": []}
    with tempfile.TemporaryDirectory() as tmp:
        warm = load_config(None, overrides[:-1] + ["train.epochs=1", "ensemble.members=2"])
        for pack in (True, False):  # warm-up: first calls pay for allocations and lazy init
            train_members(warm, data, pack, Path(tmp) / f"warm-{pack}")
        for r in range(args.rounds):
            for kind in ("packed", "sequential") if r % 2 == 0 else ("sequential", "packed"):
                wall, loop = train_members(cfg, data, kind == "packed", Path(tmp) / f"{kind}-{r}")
                times[kind].append(wall)
                steps[kind].append(loop)
    packed_s, seq_s = statistics.median(times["packed"]), statistics.median(times["sequential"])
    figures = {
        "speedup": round(seq_s / packed_s, 3),
        "speedup_steps": round(statistics.median(steps["sequential"]) / statistics.median(steps["packed"]), 3),
        "packed_seconds": round(packed_s, 3), "sequential_seconds": round(seq_s, 3),
        "members": args.members, "model": "mlp 40-100-100-10", "epochs": args.epochs,
        "steps_per_member": args.epochs * -(-data.size("train") // cfg.train.batch_size),
        "rounds": args.rounds, "threads": torch.get_num_threads(),
    }
    rows = [(kind, statistics.median(times[kind]), statistics.median(steps[kind]),
             min(times[kind]), max(times[kind])) for kind in ("sequential", "packed")]
    print(common.table(rows, ("members", "median s", "epoch-loop s", "min s", "max s")))
    print(f"speedup (sequential / packed): {figures['speedup']}x wall, {figures['speedup_steps']}x epoch loop")
    print(f"wrote {common.write_result(__file__, figures, args.out)}")
    return figures


if __name__ == "__main__":
    main()
