"""Epoch time of `distill`'s engine over a bare PyTorch loop doing the same work.

    .venv/bin/python benchmarks/engine_overhead.py            # MNIST-1D MLP and CNN
    .venv/bin/python benchmarks/engine_overhead.py --quick    # a smoke test

Both train the same model on the same device-resident data with the same batches (the
engine's generator seeds and order; the bare loop indexes the tensors at every step, as
plain code does, the engine gathers each chunk of batches once), optimizer (AdamW),
one-cycle schedule and step count, and
evaluate validation and test accuracy after every epoch, in one process, in interleaved
rounds. The engine also writes its checkpoints (last and best, atomically) and records,
computes NLL and calibration error, and keeps its running sums on the device: that is
the overhead measured. Figure: `engine_over_bare` = median engine epoch / median bare
epoch, taken as the median over rounds of each round's ratio, for the MLP (where fixed costs weigh most) and the CNN; the headline is the MLP's.
`engine_over_bare_cpu*`: the same from the process's CPU time (one thread: the work itself, which other
tenants of a shared machine do not inflate; waits for the disk are not in it).
Writes benchmarks/results/engine_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F

from distill import engine
from distill.config import DatasetConfig, ModelConfig, TrainConfig
from distill.data import load_data


def bare_epochs(model_cfg, data, train: TrainConfig, seed: int) -> tuple[float, float]:
    """The plainest loop that does the same training and evaluation; (wall, CPU) seconds per epoch."""
    model = engine.new_model(model_cfg, data, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True)
    x_all, y_all = data.x["train"], data.y["train"]
    n = x_all.shape[0]
    steps_per_epoch = -(-n // train.batch_size)
    total = steps_per_epoch * train.epochs
    step = 0
    started, cpu = time.perf_counter(), time.process_time()
    for epoch in range(train.epochs):
        model.train()
        g = torch.Generator().manual_seed(engine.epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g)  # the engine's order (same generator, same draw)
        for start in range(0, n, train.batch_size):
            idx = order[start:start + train.batch_size]
            x, y = x_all[idx], y_all[idx]
            for group in opt.param_groups:
                group["lr"] = engine.lr_at(step, total, steps_per_epoch, train)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            for split in ("val", "test"):
                (model(data.x[split]).argmax(1) == data.y[split]).float().mean().item()
    return (time.perf_counter() - started) / train.epochs, (time.process_time() - cpu) / train.epochs


def engine_epochs(model_cfg, data, train: TrainConfig, seed: int) -> tuple[float, float]:
    model = engine.new_model(model_cfg, data, seed)
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        started, cpu = time.perf_counter(), time.process_time()
        engine.fit_one(model, data, train, seed=seed, checkpoint_dir=Path(folder), emit=rows.extend)
        return (time.perf_counter() - started) / train.epochs, (time.process_time() - cpu) / train.epochs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per fit (one-off costs spread as in a run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both loops (0 = all CPUs)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 1, 2
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.003, weight_decay=0.01, device="cpu",
                        threads=args.threads)
    engine.setup_torch(train)
    data = load_data(DatasetConfig(name="mnist1d", num_samples=5000, augment="none"))
    models = {"mlp": ModelConfig(name="mlp", width=100, depth=2), "cnn1d": ModelConfig(name="cnn1d", width=32)}
    times = {(name, kind): [] for name in models for kind in ("bare", "engine")}
    cpu = {(name, kind): [] for name in models for kind in ("bare", "engine")}
    for model_name, model_cfg in models.items():  # warm-up: first calls pay for allocations and lazy init
        bare_epochs(model_cfg, data, TrainConfig(epochs=1, device="cpu"), 0)
        engine_epochs(model_cfg, data, TrainConfig(epochs=1, device="cpu"), 0)
    # paired rounds: this machine's speed drifts by 10-20% over seconds, so each round times
    # both loops back to back (the order alternating) and the figure is the median of the
    # rounds' ratios
    for r in range(args.rounds):
        for model_name, model_cfg in models.items():
            order = ("bare", "engine") if r % 2 == 0 else ("engine", "bare")
            for kind in order:
                run = bare_epochs if kind == "bare" else engine_epochs
                wall, seconds = run(model_cfg, data, train, r)
                times[model_name, kind].append(wall)
                cpu[model_name, kind].append(seconds)
    rows, figures = [], {}
    for model_name in models:
        bare = statistics.median(times[model_name, "bare"])
        eng = statistics.median(times[model_name, "engine"])
        ratio = statistics.median(e / b for e, b in zip(times[model_name, "engine"], times[model_name, "bare"]))
        rows.append((model_name, bare * 1000, eng * 1000, ratio))
        figures[f"engine_over_bare_{model_name}"] = round(ratio, 3)
        # the same from the process's CPU time (one thread: the work done, which other tenants of a shared
        # machine do not inflate; waits for the disk, such as the checkpoints' fsync, are not in it)
        figures[f"engine_over_bare_cpu_{model_name}"] = round(statistics.median(
            e / b for e, b in zip(cpu[model_name, "engine"], cpu[model_name, "bare"])), 3)
    figures["engine_over_bare"] = figures["engine_over_bare_mlp"]
    figures["engine_over_bare_cpu"] = figures["engine_over_bare_cpu_mlp"]
    figures.update({"rounds": args.rounds, "epochs": args.epochs, "threads": torch.get_num_threads()})
    print(common.table(rows, ("model", "bare ms/epoch", "engine ms/epoch", "engine/bare")))
    print(f"wrote {common.write_result(__file__, figures, args.out)}")
    return figures


if __name__ == "__main__":
    main()
