"""Evaluation: logits of whole splits, and the metrics of K models after each epoch.

    logits = predict(model, data, "test")            # (N, C), float32, in the split's order
    per_model = evaluate(replicas, data, train_cfg)  # [{"val": {...}, "test": {...}}] per model
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from distill.config import TrainConfig
from distill.training.metrics import split_metrics
from distill.training.replicas import make_replicas

SPLITS_EVALUATED = ("val", "test")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def use_channels_last(train: TrainConfig, device: torch.device, input_shape) -> bool:
    if len(input_shape) != 3:  # only images (C, H, W)
        return False
    return train.channels_last if train.channels_last is not None else device.type == "cuda"


@torch.inference_mode()
def split_logits(logits_of: Callable, data, splits, batch_size: int, precision: str = "fp32") -> list[torch.Tensor]:
    """(K, N, C) float32 logits of whole splits, in order, from `logits_of(x) -> (K, B, C)`."""
    results = []
    for split in splits:
        with autocast(data.x[split].device, precision):
            outputs = [logits_of(x).float() for x, _ in data.eval_batches(split, batch_size)]
        results.append(torch.cat(outputs, dim=1))
    return results


def predict(model: nn.Module, data, split: str, batch_size: int = 1024, precision: str = "fp32",
            channels_last: bool = False) -> torch.Tensor:
    """Logits (N, C) of one model on a whole split (float32, on the data's device), in order."""
    replicas = make_replicas([model], channels_last=channels_last)
    was_training = model.training
    model.eval()
    try:
        return split_logits(replicas.eval_logits, data, [split], batch_size, precision)[0][0]
    finally:
        model.train(was_training)


def evaluate(replicas, data, train: TrainConfig) -> list[dict]:
    """Every model on validation and test: [{split: {loss, acc, nll, ece}}] per model, one host sync.
    Chunks of eval_batch_size / K examples: K models' activations of a chunk stay in cache."""
    replicas.train(False)
    rows = max(32, train.eval_batch_size // len(replicas.models))
    logits = split_logits(replicas.eval_logits, data, SPLITS_EVALUATED, rows, train.precision)
    replicas.train(True)
    per_model = split_metrics(logits, [data.y[s] for s in SPLITS_EVALUATED])
    return [dict(zip(SPLITS_EVALUATED, metrics)) for metrics in per_model]
