"""Epoch time of KD over plain cross-entropy training of the same student, in one process.

    .venv/bin/python benchmarks/kd_overhead.py              # MNIST-1D: MLP 40-100-100-10 and 1-D CNN students
    .venv/bin/python benchmarks/kd_overhead.py --quick      # a few seconds, for a smoke test

Three variants of `engine.fit` on the same student, data and batches, measured in rounds
for two students: the MLP (the headline figures; its 0.7 ms step makes fixed costs weigh
most) and the 1-D CNN (figures suffixed _cnn1d), each with a same-architecture teacher
(plain, cached, online, plain, cached, online, ...) so that drift hits all of them alike:
  plain   cross-entropy on labels (the engine's default objective: F.cross_entropy + autograd)
  cached  kd from teacher outputs computed once for the train split
  online  kd with a same-architecture teacher run on every batch (eval mode, no grad)
Both kd variants take the training loop's gradient path (`DistillObjective.gradient_step`):
d loss / d logits in three ops, `logits.backward(gradient)`, the loss values computed once
per epoch from the kept logits; that once-per-epoch cost is inside the measured time.
Each figure is the median epoch time of the training phase (from the first batch to the
end of the epoch's train-loss bookkeeping; evaluation excluded; the first epoch of each
fit is dropped as warm-up) divided by plain's median, in process CPU time (robust on a
shared machine; wall-clock ratios are written too, as wall_*). Writes
benchmarks/results/kd_overhead.json with `cached_over_plain` and `online_over_plain`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import common  # noqa: E402  (puts the repository on sys.path)

from distill import engine  # noqa: E402
from distill.config import DatasetConfig, DistillConfig, ModelConfig, TrainConfig  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.teachers import make_objective  # noqa: E402


class TimedData:
    """The data, with the CPU time (process time) of each epoch's training phase recorded.

    Measured from the first batch requested to the end of the engine's `epoch_sums` (the
    epoch's train loss and accuracy, which also takes the losses that gradient steps defer to
    the end of the epoch), so it covers exactly the engine's training steps and their loss
    bookkeeping, not the evaluation. CPU time, not wall time, because a shared machine's other
    processes stretch wall time by whole scheduler slices.
    """

    def __init__(self, data):
        self._data = data
        self.cpu_seconds: list[float] = []
        self._started = None

    def __getattr__(self, name):
        return getattr(self._data, name)

    def train_batches(self, *args, **kwargs):
        self._started = time.process_time()
        yield from self._data.train_batches(*args, **kwargs)

    def epoch_done(self) -> None:
        self.cpu_seconds.append(time.process_time() - self._started)


def epoch_seconds(student_cfg, data, train, objective, seed) -> tuple[list[float], list[float]]:
    """(wall, cpu) seconds of each epoch's training phase but the first (warm-up)."""
    student = engine.new_model(student_cfg, data, seed)
    timed = TimedData(data)
    epoch_sums = engine.epoch_sums

    def timed_epoch_sums(*args, **kwargs):  # the end of the training phase of an epoch
        result = epoch_sums(*args, **kwargs)
        timed.epoch_done()
        return result

    engine.epoch_sums = timed_epoch_sums
    try:
        result = engine.fit(student, timed, train, seed=seed, objective=objective, device=torch.device("cpu"))
    finally:
        engine.epoch_sums = epoch_sums
    wall = [row["seconds"] for row in result.history if row["split"] == "train"]
    return wall[1:], timed.cpu_seconds[1:]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the three variants")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is dropped)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a 40-100-100-10 MLP gains nothing from more, "
                             "and one thread is steadier on a shared machine); 0 = all")
    parser.add_argument("--quick", action="store_true", help="tiny and fast: a smoke test")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "kd_overhead.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 2, 2

    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.01, device="cpu", threads=args.threads)
    engine.setup_torch(train)
    data = load_data(DatasetConfig(name="mnist1d", num_samples=1000 if args.quick else 5000, augment="none"))
    distill_cfg = DistillConfig(method="kd", temperature=4.0, alpha=0.9)
    students = {  # the headline: the MNIST-1D paper's MLP (40-100-100-10), where fixed costs weigh most
        "mlp": ModelConfig(name="mlp", width=100, depth=2),
        "cnn1d": ModelConfig(name="cnn1d", width=32, depth=3),
    }
    result: dict = {}
    for student_name, student_cfg in students.items():
        teacher = engine.new_model(student_cfg, data, 123)  # same architecture as the student
        engine.fit(teacher, data, TrainConfig(epochs=2, device="cpu"), seed=123)  # any sensible teacher will do
        cached, info_cached = make_objective(distill_cfg, [teacher], data, "cpu", cache="cached")
        online, _ = make_objective(distill_cfg, [teacher], data, "cpu", cache="online")
        variants = {"plain": None, "cached": cached, "online": online}

        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name, objective in variants.items():
                w, c = epoch_seconds(student_cfg, data, train, objective, seed=round_)
                wall[name] += w
                cpu[name] += c
        medians = {name: statistics.median(values) for name, values in cpu.items()}
        wall_medians = {name: statistics.median(values) for name, values in wall.items()}
        suffix = "" if student_name == "mlp" else f"_{student_name}"
        result.update({
            f"cached_over_plain{suffix}": round(medians["cached"] / medians["plain"], 4),
            f"online_over_plain{suffix}": round(medians["online"] / medians["plain"], 4),
            f"wall_cached_over_plain{suffix}": round(wall_medians["cached"] / wall_medians["plain"], 4),
            f"wall_online_over_plain{suffix}": round(wall_medians["online"] / wall_medians["plain"], 4),
            f"plain_epoch_ms{suffix}": round(1000 * medians["plain"], 3),
            f"cached_epoch_ms{suffix}": round(1000 * medians["cached"], 3),
            f"online_epoch_ms{suffix}": round(1000 * medians["online"], 3),
        })
        print(f"student {student_name}: {'variant':<8} {'cpu ms/epoch':>13} {'/ plain':>8} {'wall ms/epoch':>14} "
              f"{'/ plain':>8}   medians of {len(cpu['plain'])} epochs each, {args.rounds} interleaved rounds")
        for name in variants:
            print(f"{'':<{len(student_name) + 10}}{name:<8} {1000 * medians[name]:>13.2f} "
                  f"{medians[name] / medians['plain']:>8.3f} {1000 * wall_medians[name]:>14.2f} "
                  f"{wall_medians[name] / wall_medians['plain']:>8.3f}")
    result.update({
        "clock": "process CPU time of the train loop (wall-clock ratios under wall_*)",
        "epochs_measured_per_variant": args.rounds * (args.epochs - 1),
        "student": "mlp 40-100-100-10 (headline); *_cnn1d: the 3-layer 32-channel 1-D CNN",
        "teacher_online": "same architecture as the student",
        "train_examples": data.size("train"), "batch_size": train.batch_size, "torch_threads": torch.get_num_threads(),
        "loss": {k: info_cached[k] for k in ("method", "reduction", "t2_scaling", "temperature", "alpha")},
    })
    print(f"wrote {common.write_result(__file__, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
