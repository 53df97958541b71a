"""How far one MNIST-1D MLP's numbers move when only the order of its float sums changes.

    .venv/bin/python benchmarks/float_order.py            # 5 seeds, 60 epochs: the committed sweep's recipe
    .venv/bin/python benchmarks/float_order.py --quick    # 2 seeds, 4 epochs: a smoke test

The same model, seeds, batches, optimizer and schedule (the MLP student of `tune-mnist1d-kd`:
AdamW, lr 0.01, one-cycle, 60 epochs), trained three ways that compute the same formulas with
sums in another order: alone at 1 thread (the reference), alone at 2 threads, and the 5 seeds
stacked in one fit (batched matrix products, as a packed sweep trains them). Figures, each
against the reference: the largest weight difference after the first epoch and at the end,
the largest per-seed change of the selected validation accuracy, and the change of the mean
over seeds (what a sweep ranks by). A difference of one rounding step grows through training;
this measures how large it gets, which bounds what two layouts of one sweep can be expected
to agree on. Writes benchmarks/results/float_order.json.
"""

from __future__ import annotations

import argparse
import statistics

import common
import torch

from distill import engine
from distill.config import DatasetConfig, ModelConfig, TrainConfig
from distill.data import load_data


def train_all(data, model_cfg, seeds, epochs: int, threads: int, stacked: bool):
    """(models, selected validation accuracies) of the seeds trained alone or stacked."""
    torch.set_num_threads(threads)
    train = TrainConfig(epochs=epochs, batch_size=128, lr=0.01, weight_decay=0.01, schedule="onecycle",
                        optimizer="adamw", device="cpu", threads=threads)
    models = [engine.new_model(model_cfg, data, s) for s in seeds]
    if stacked:
        results = engine.fit(models, data, train, seeds=seeds)
    else:
        results = [engine.fit_one(model, data, train, seed=s) for model, s in zip(models, seeds)]
    return models, [r.selected["val"]["acc"] for r in results]


def weight_gap(models, reference) -> float:
    return max((a - b).abs().max().item() for x, y in zip(models, reference)
               for a, b in zip(x.state_dict().values(), y.state_dict().values()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 2, 4
    data = load_data(DatasetConfig(name="mnist1d", num_samples=5000, val_fraction=0.1, augment="none"))
    model_cfg = ModelConfig(name="mlp", width=100, depth=2)
    seeds = list(range(args.seeds))
    ways = {"alone_2_threads": (2, False), "stacked_1_thread": (1, True)}
    figures: dict = {}
    rows = []
    first_ref, _ = train_all(data, model_cfg, seeds, 1, 1, False)
    ref, ref_acc = train_all(data, model_cfg, seeds, args.epochs, 1, False)
    figures["reference_mean_val_acc"] = round(statistics.mean(ref_acc), 5)
    for name, (threads, stacked) in ways.items():
        first, _ = train_all(data, model_cfg, seeds, 1, threads, stacked)
        models, acc = train_all(data, model_cfg, seeds, args.epochs, threads, stacked)
        gaps = [abs(a - b) for a, b in zip(acc, ref_acc)]
        figures.update({f"{name}_weight_gap_epoch_1": float(f"{weight_gap(first, first_ref):.3g}"),
                        f"{name}_weight_gap_end": float(f"{weight_gap(models, ref):.3g}"),
                        f"{name}_max_seed_val_acc_change": round(max(gaps), 5),
                        f"{name}_mean_val_acc_change": round(statistics.mean(acc) - statistics.mean(ref_acc), 5)})
        rows.append((name, f'{figures[f"{name}_weight_gap_epoch_1"]:.2e}', f'{figures[f"{name}_weight_gap_end"]:.2e}',
                     figures[f"{name}_max_seed_val_acc_change"], figures[f"{name}_mean_val_acc_change"]))
    figures.update({"seeds": args.seeds, "epochs": args.epochs, "model": "mlp 40-100-100-10",
                    "reference": "each seed alone at 1 thread"})
    print(common.table(rows, ("against alone at 1 thread", "|dw| epoch 1", "|dw| end", "max seed val acc change",
                              "mean val acc change")))
    print(f"wrote {common.write_result(__file__, figures, args.out)}")
    return figures


if __name__ == "__main__":
    main()
