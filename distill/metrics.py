"""Classification metrics computed on the device: accuracy, NLL and expected calibration error.

`split_metrics` is the workhorse: M models on S splits in one vectorised pass and one host
sync (the engine evaluates validation and test together; packed training evaluates all its
models at once). The per-call helpers below are thin views of it.
"""

from __future__ import annotations

from typing import Sequence

import torch

ECE_BINS = 15


def split_metrics(scores: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                  bins: int = ECE_BINS) -> list[list[dict[str, float]]]:
    """Metrics of M models on S splits; `result[m][s]` = {loss, acc, nll, ece}.

    scores[s]: (M, N_s, C) logits or log-probabilities of split s (normalised here: the
    probabilities are softmax(scores)); targets[s]: (N_s,) labels.
    acc: share of argmax predictions equal to the label; nll (= loss): mean -log p(label);
    ece: equal-width confidence bins, bin b holding confidences in (b/bins, (b+1)/bins],
    sum_b |B|/n * |acc(B) - conf(B)| = sum_b |correct_sum(B) - conf_sum(B)| / n.

    Written with max/exp/sum rather than log_softmax: torch's CPU softmax kernels are slow for
    a handful of classes (about 100 us for 1400 x 10), more than the rest of this together.
    """
    n_splits = len(targets)
    device = targets[0].device
    x = torch.cat(list(scores), dim=1).float()                            # (M, N, C)
    n_models = x.shape[0]
    target = torch.cat(list(targets))                                     # (N,)
    top, predicted = x.max(dim=2)
    shifted = x - top.unsqueeze(2)
    mass = shifted.exp().sum(dim=2)                                       # sum_c exp(x_c - max)
    nll = mass.log() - shifted.gather(2, target.expand(n_models, -1).unsqueeze(2)).squeeze(2)
    confidence = mass.reciprocal()                                        # the top class's probability
    correct = (predicted == target).to(x.dtype)
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1         # a softmax is never 0
    sizes = torch.tensor([t.numel() for t in targets], device=device)
    split_of = torch.repeat_interleave(torch.arange(n_splits, device=device), sizes, output_size=target.numel())
    slot = (torch.arange(n_models, device=device)[:, None] * n_splits + split_of) * bins + which
    values = torch.stack([torch.ones_like(confidence), confidence, correct, nll], dim=-1)
    sums = torch.zeros(n_models * n_splits * bins, 4, device=device, dtype=x.dtype)
    sums = sums.index_add_(0, slot.flatten(), values.flatten(0, 1)).view(n_models, n_splits, bins, 4)
    totals = sums.sum(dim=2)                                              # (M, S, 4)
    count = totals[..., 0]
    ece = (sums[..., 1] - sums[..., 2]).abs().sum(dim=2) / count
    table = torch.stack([totals[..., 2] / count, totals[..., 3] / count, ece], dim=-1).tolist()
    return [[{"loss": nll_v, "acc": acc_v, "nll": nll_v, "ece": ece_v} for acc_v, nll_v, ece_v in per_model]
            for per_model in table]


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """acc, nll (mean cross-entropy), ece and loss (= nll) of one model's logits on one split."""
    return split_metrics([logits[None]], [targets])[0][0]


def probs_log(probs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of (an ensemble's) probabilities, 0 clamped to 1e-12."""
    return probs.float().clamp_min(1e-12).log()


def probs_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The same metrics for an ensemble's (or any) probabilities."""
    return split_metrics([probs_log(probs)[None]], [targets])[0][0]
