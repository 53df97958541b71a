"""Teacher signals: what a teacher gives the objective for a batch.

    signal = ModelSignal([teacher], data, device, cached=True)
    signal.prepare()                      # eval mode, on the device, cache filled
    z = signal.logits(x, idx)             # (K, B, C): K teachers' logits for the batch

Every signal has the same three members: `models` (teachers in memory, [] for a file),
`prepare()` and `logits(x, idx)`. A signal is prepared at the first training step, so a
teacher trained after the objective was built (the `teacher:` section) is the one read.

Cache: with `dataset.augment=none` the teachers' logits for the whole train split are
computed once (eval mode) and indexed by the batch's `idx`; with augmentation the teachers
run online on exactly the augmented batch the student sees. `cache_decision` says which,
and why, in words that end up in every run's `loss` record.

Several teachers (an ensemble) are combined at temperature T by `teacher_views`:
`mean_probs` -> p_t = mean_k softmax(z_k / T); `mean_logits` -> p_t = softmax(mean_k z_k / T);
`per_teacher_kl` -> one view per teacher (the objective sums their teacher terms).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from distill.methods import GEOMETRIC
from distill.methods.parts import tempered_log_softmax


class ModelSignal:
    """Teachers in memory: logits from the cache or run online (eval mode, no grad)."""

    def __init__(self, models: list[nn.Module], data, device, cached: bool, top_k: Optional[tuple] = None):
        self.models = list(models)
        self.data = data
        self.device = device
        self.cached = cached
        self.top_k = top_k  # language models: (k, rest): the cache keeps each position's top k (distill.training.lm)
        self.table: Optional[torch.Tensor] = None  # (K, N, C) logits of the train split when cached
        self.ready = False

    def prepare(self) -> None:
        if self.ready:
            return
        from distill.training.evaluation import predict

        for model in self.models:
            model.to(self.device).eval()
        if self.cached and self.top_k:
            from distill.training.lm import TopKCache

            self.table = TopKCache(self.models, self.data, *self.top_k)  # table[:, idx]: (K, B * L, V) logits
        elif self.cached:
            with torch.inference_mode():
                table = torch.stack([predict(m, self.data, "train") for m in self.models])
            self.table = table.clone()  # a normal tensor: usable outside inference mode
        self.ready = True

    def logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[:, idx]
        with torch.no_grad():
            return torch.stack([m(x).float() for m in self.models]).flatten(1, -2)  # LMs: (K, B * L, V)


class FileSignal:
    """A teacher's predictions read from a file: (1, N, C) logits of the train split."""

    cached = True

    def __init__(self, logits_train: torch.Tensor):
        self.table = logits_train[None]
        self.models: list[nn.Module] = []

    def prepare(self) -> None:
        pass

    def logits(self, x, idx):
        return self.table[:, idx]


def combine_log_probs(logits: torch.Tensor, combine: str, temperature=1.0) -> torch.Tensor:
    """(K, ..., C) logits of K models -> log-probabilities of their combination at T, the one
    definition that training, fidelity and ensemble evaluation read. mean_probs: log mean_k
    softmax(z_k / T), the distribution closest to all K in summed KL; mean_logits: log softmax(mean_k z_k / T),
    which is also the normalised geometric mean of the softmaxes exactly (log softmax(z) is z less a
    per-example constant), so that has no name of its own (distill.methods.GEOMETRIC)."""
    if combine == "mean_logits":
        return tempered_log_softmax(logits.mean(0), temperature)
    if combine == "mean_probs":
        return torch.logsumexp(tempered_log_softmax(logits, temperature), dim=0) - math.log(logits.shape[0])
    raise ValueError(GEOMETRIC if combine == "geometric" else
                     f"unknown combination {combine!r}; choose mean_probs or mean_logits")


def teacher_views(teacher_logits: torch.Tensor, temperature: float, combine: str) -> list[torch.Tensor]:
    """(K, B, C) teachers' logits -> the (B, C) logits z the loss reads, softmax(z / T) being
    the teacher distribution: one for mean_probs and mean_logits (T log p of the combination),
    one per teacher for per_teacher_kl (whose teacher terms are summed)."""
    if teacher_logits.shape[0] == 1:
        return [teacher_logits[0]]
    if combine == "per_teacher_kl":
        return list(teacher_logits)
    return [combine_log_probs(teacher_logits, combine, temperature) * temperature]


def cache_decision(method_signal: str, signal_kind: str, data, cache: str = "auto") -> tuple[bool, str]:
    """(cached?, why) for a teacher signal; cache = auto, cached or online (forced, e.g. benchmarks)."""
    if signal_kind == "file":
        why = "predictions file: one fixed output per training example"
        if data.augment != "none":
            why += f" (dataset.augment={data.augment}: the teacher does not see the augmented batch)"
        return True, f"cached ({why})"
    if method_signal == "features":
        return False, "online (white-box method: the teacher's features of the student's batch)"
    if cache in ("cached", "online"):
        return cache == "cached", f"{cache} (asked for)"
    if data.augment == "none":
        return True, (f"cached (dataset.augment=none: teacher logits computed once for the "
                      f"{data.size('train')} training examples)")
    return False, f"online (dataset.augment={data.augment}: the teacher sees the student's augmented batch)"
