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
Every variant goes through the objective interface and the one mixer; kd's two terms are one autograd
node with the gradient written out (distill.methods.parts.kd_terms, tested against losses.kd). A fit's time is the median epoch time of its training
phase as the engine reports it (`seconds` of each epoch: the steps and the epoch's train-loss
bookkeeping, evaluation excluded; the first epoch dropped as warm-up), wall clock. Each
round fits all three variants back to back; each figure is the median over rounds of the
round's variant / plain ratio (paired, because this shared machine's speed drifts by
10-20%). Writes benchmarks/results/kd_overhead.json with `cached_over_plain` and
`online_over_plain`; `*_cpu` are the same ratios of the process's CPU time per epoch (training and
evaluation; with one thread the work itself, which other tenants of a shared machine do not inflate).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import common  # noqa: E402  (puts the repository on sys.path)

from distill import engine  # noqa: E402
from distill.config import DatasetConfig, ModelConfig, TrainConfig
from distill.methods import DistillConfig
from distill.data import load_data  # noqa: E402
from distill.methods.objectives import make_objective  # noqa: E402


def epoch_seconds(student_cfg, data, train, objective, seed) -> tuple[list[float], list[float]]:
    """Seconds of each epoch's training phase but the first (warm-up), as the engine reports them, and the
    process's CPU seconds from one epoch's report to the next (training and evaluation; one thread: the
    work itself, which other tenants of a shared machine do not inflate)."""
    student = engine.new_model(student_cfg, data, seed)
    seconds: list[float] = []
    marks: list[float] = []

    def report(r: dict) -> None:
        seconds.append(r["seconds"])
        marks.append(time.process_time())
    engine.fit_one(student, data, train, seed=seed, objective=objective, device=torch.device("cpu"), on_epoch=report)
    return seconds[1:], [b - a for a, b in zip(marks[:-1], marks[1:])]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="paired rounds of the three variants")
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
        engine.fit_one(teacher, data, TrainConfig(epochs=2, device="cpu"), seed=123)  # any sensible teacher will do
        cached, info_cached = make_objective(distill_cfg, [teacher], data, "cpu", cache="cached")
        online, _ = make_objective(distill_cfg, [teacher], data, "cpu", cache="online")
        variants = {"plain": None, "cached": cached, "online": online}

        # paired rounds: this machine's speed drifts by 10-20% over seconds (other tenants), so
        # each round times all three variants back to back (in a rotating order) and the figure
        # is the median over rounds of that round's ratio, not a ratio of pooled medians
        cpu: dict[str, list[float]] = {name: [] for name in variants}  # (wall clock; the name is historical)
        process: dict[str, list[float]] = {name: [] for name in variants}  # CPU time, training and evaluation
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names[round_ % 3:] + names[:round_ % 3]:
                wall, work = epoch_seconds(student_cfg, data, train, variants[name], round_)
                cpu[name].append(statistics.median(wall))
                process[name].append(statistics.median(work))

        def paired(times: dict, name: str) -> float:
            return statistics.median(a / b for a, b in zip(times[name], times["plain"]))

        medians = {name: statistics.median(values) for name, values in cpu.items()}
        ratios = {name: paired(cpu, name) for name in variants}
        suffix = "" if student_name == "mlp" else f"_{student_name}"
        result.update({
            f"cached_over_plain{suffix}": round(ratios["cached"], 4),
            f"online_over_plain{suffix}": round(ratios["online"], 4),
            f"cached_over_plain_cpu{suffix}": round(paired(process, "cached"), 4),
            f"online_over_plain_cpu{suffix}": round(paired(process, "online"), 4),
            f"cached_over_plain_rounds{suffix}": [round(a / b, 3) for a, b in zip(cpu["cached"], cpu["plain"])],
            # other tenants only ever add time: the ratio of each variant's fastest fit is a second,
            # less noise-prone estimate of the intrinsic cost
            f"cached_over_plain_min{suffix}": round(min(cpu["cached"]) / min(cpu["plain"]), 4),
            f"online_over_plain_min{suffix}": round(min(cpu["online"]) / min(cpu["plain"]), 4),
            f"plain_epoch_ms{suffix}": round(1000 * medians["plain"], 3),
            f"cached_epoch_ms{suffix}": round(1000 * medians["cached"], 3),
            f"online_epoch_ms{suffix}": round(1000 * medians["online"], 3),
        })
        print(f"student {student_name}: {'variant':<8} {'ms/epoch':>9} {'/ plain':>8}"
              f"   median of {args.rounds} paired rounds, {args.epochs - 1} epochs each")
        for name in variants:
            print(f"{'':<{len(student_name) + 10}}{name:<8} {1000 * medians[name]:>9.2f} {ratios[name]:>8.3f}")
    result.update({
        "clock": "wall time of the training phase, as engine.fit reports each epoch's seconds",
        "method": "median over paired rounds of (variant / plain), each the median of a fit's epochs",
        "rounds": args.rounds, "epochs_measured_per_fit": args.epochs - 1,
        "student": "mlp 40-100-100-10 (headline); *_cnn1d: the 3-layer 32-channel 1-D CNN",
        "teacher_online": "same architecture as the student",
        "train_examples": data.size("train"), "batch_size": train.batch_size, "torch_threads": torch.get_num_threads(),
        "loss": {k: info_cached[k] for k in ("method", "reduction", "t2_scaling", "temperature", "alpha")},
    })
    print(f"wrote {common.write_result(__file__, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
