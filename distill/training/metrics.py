"""Classification metrics computed on the device: accuracy, NLL and expected calibration error.

`split_metrics` is the workhorse: M models on S splits in one vectorised pass and one host
sync (the engine evaluates validation and test together; packed training evaluates all its
models at once). The per-call helpers below are thin views of it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

ECE_BINS = 15


_LAYOUTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _layout(n_models: int, sizes: tuple[int, ...], bins: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(first ECE slot of each example (M, N), the bin boundaries): the same every epoch, kept."""
    key = (n_models, sizes, bins, str(device))
    if key not in _LAYOUTS:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        split_of = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
        base = (torch.arange(n_models, device=device)[:, None] * len(sizes) + split_of) * bins
        inner = torch.arange(1, bins, device=device, dtype=torch.float32) / bins
        _LAYOUTS[key] = (base, inner)
    return _LAYOUTS[key]


def split_metrics(scores: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                  bins: int = ECE_BINS) -> list[list[dict[str, float]]]:
    """Metrics of M models on S splits; `result[m][s]` = {loss, acc, nll, ece}.

    scores[s]: (M, N_s, C) logits or log-probabilities of split s (normalised here: the
    probabilities are softmax(scores)); targets[s]: (N_s,) labels.
    acc: share of argmax predictions equal to the label; nll (= loss): mean -log p(label);
    ece: equal-width confidence bins, bin b holding confidences in (b/bins, (b+1)/bins],
    sum_b |B|/n * |acc(B) - conf(B)| = sum_b |sum_{i in B} (conf_i - correct_i)| / n.

    Written with max/exp/sum rather than log_softmax (torch's CPU softmax kernels are slow for
    a handful of classes: about 100 us for 1400 x 10), and as few ops as the figures allow:
    after every epoch this runs on the validation and test splits together.
    """
    # a language model's (M, N, L, V) scores and (N, L) next tokens: N * L rows (distill/training/lm.py),
    # and its perplexity exp(nll) per token as well
    tokens = targets[0].dim() > 1
    scores, targets = [s.flatten(1, -2) for s in scores], [t.flatten() for t in targets]
    sizes = tuple(int(t.numel()) for t in targets)
    x = torch.cat(list(scores), dim=1) if len(scores) > 1 else scores[0]
    x = x.float()                                                          # (M, N, C)
    n_models = x.shape[0]
    target = torch.cat(list(targets)) if len(targets) > 1 else targets[0]  # (N,)
    base, inner = _layout(n_models, sizes, bins, x.device)
    top, predicted = x.max(dim=2)
    shifted = x - top.unsqueeze(2)
    mass = shifted.exp().sum(dim=2)                                       # sum_c exp(x_c - max)
    nll = mass.log() - shifted.gather(2, target.expand(n_models, -1).unsqueeze(2)).squeeze(2)
    confidence = mass.reciprocal()                                        # the top class's probability
    correct = (predicted == target).to(x.dtype)
    slot = base + torch.bucketize(confidence, inner)                      # bin b: (b/bins, (b+1)/bins]
    values = torch.stack([correct, nll, confidence - correct], dim=-1)
    sums = torch.zeros(n_models * len(sizes) * bins, 3, device=x.device, dtype=x.dtype)
    sums = sums.index_add_(0, slot.flatten(), values.flatten(0, 1)).view(n_models, len(sizes), bins, 3)
    totals = sums[..., :2].sum(dim=2)                                     # (M, S, 2)
    gaps = sums[..., 2].abs().sum(dim=2)                                  # (M, S)
    table = torch.cat([totals, gaps.unsqueeze(2)], dim=2).tolist()
    return [[{"loss": nll_s / n, "acc": correct_s / n, "nll": nll_s / n, "ece": gap / n,
              **({"ppl": math.exp(nll_s / n)} if tokens else {})}
             for (correct_s, nll_s, gap), n in zip(per_model, sizes)] for per_model in table]


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """acc, nll (mean cross-entropy), ece and loss (= nll) of one model's logits on one split."""
    return split_metrics([logits[None]], [targets])[0][0]


def probs_log(probs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of (an ensemble's) probabilities, 0 clamped to 1e-12."""
    return probs.float().clamp_min(1e-12).log()


def probs_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The same metrics for an ensemble's (or any) probabilities."""
    return split_metrics([probs_log(probs)[None]], [targets])[0][0]
