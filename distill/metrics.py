"""Classification metrics computed on the device from a split's logits: one host sync per call."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """ECE with equal-width confidence bins: sum_b |B|/n * |acc(B) - conf(B)|."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).to(probs.dtype)
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 cannot occur for a softmax
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.zeros(bins, dtype=probs.dtype, device=probs.device).index_add_(0, which, torch.ones_like(confidence))
    conf_sum = torch.zeros_like(count).index_add_(0, which, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, which, correct)
    return (conf_sum - acc_sum).abs().sum() / targets.numel()


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """acc, nll (mean cross-entropy), ece and loss (= nll) of a whole split."""
    logits = logits.float()
    nll = F.cross_entropy(logits, targets)
    probs = logits.softmax(dim=1)
    acc = (probs.argmax(dim=1) == targets).float().mean()
    ece = expected_calibration_error(probs, targets)
    acc_v, nll_v, ece_v = torch.stack([acc, nll, ece]).tolist()
    return {"loss": nll_v, "acc": acc_v, "nll": nll_v, "ece": ece_v}


def probs_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The same metrics for an ensemble's (or any) probabilities."""
    probs = probs.float()
    nll = -probs.clamp_min(1e-12).log().gather(1, targets[:, None]).mean()
    acc = (probs.argmax(dim=1) == targets).float().mean()
    ece = expected_calibration_error(probs, targets)
    acc_v, nll_v, ece_v = torch.stack([acc, nll, ece]).tolist()
    return {"loss": nll_v, "acc": acc_v, "nll": nll_v, "ece": ece_v}
