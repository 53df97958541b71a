"""Ensemble evaluation: pure functions of the members' logits, on the device.

    from ensembles.evaluate import combine_probs, disagreement, size_curve
    probs = combine_probs(logits, "mean_logits")        # logits: (K, n, C) of K members
    rows = size_curve({"val": v, "test": t}, {"val": yv, "test": yt})

Combinations of K members' logits z_k (evaluated at temperature 1), those the students are
distilled from (distill.teachers.signals.combine_log_probs):
  mean_probs   p = mean_k softmax(z_k)
  mean_logits  p = softmax(mean_k z_k), which is also the normalised geometric mean of the p_k,
               softmax(mean_k log softmax(z_k)), exactly (no second name for it)

Size curve: for k = 1..K, the metrics of every subset of k members, averaged (every subset
when there are at most `limit` = 100 of them, which holds for K <= 8; else `limit` subsets
drawn without repeats by a generator fixed by (K, k)). No subset is chosen by a score, so the
curve uses no test data to select anything; k = K is the one full ensemble.

Diversity: `disagreement` is the share of examples on which two members' predicted classes
differ, averaged over all pairs; `gain_over_mean_member` is the ensemble's accuracy minus
the mean accuracy of its own members. Both are reported on the test split.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Optional

from torch import Tensor

from distill.training.metrics import probs_metrics
from distill.teachers.signals import combine_log_probs

COMBINES = ("mean_probs", "mean_logits")


def combine_probs(logits: Tensor, how: str) -> Tensor:
    """(K, n, C) logits of K members -> (n, C) probabilities of their ensemble, as the students are
    distilled from it (see the docstring)."""
    return combine_log_probs(logits.float(), how).exp()


def disagreement(preds: Tensor) -> Optional[float]:
    """(K, n) predicted classes -> mean over the K(K-1)/2 pairs of the share of examples where they differ.

    None for one member (no pairs).
    """
    k = preds.shape[0]
    if k < 2:
        return None
    differ = (preds[:, None, :] != preds[None, :, :]).float().mean(-1)  # (K, K), zero diagonal
    return (differ.sum() / (k * (k - 1))).item()


def subsets(n: int, k: int, limit: int = 100) -> list[tuple[int, ...]]:
    """Subsets of size k of range(n): all of them if there are at most `limit`, else `limit` at random."""
    if math.comb(n, k) <= limit:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(n * 1009 + k)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < limit:
        chosen.add(tuple(sorted(rng.sample(range(n), k))))
    return sorted(chosen)


def gap_recovered(student: float, mean_member: float, ensemble: float) -> Optional[float]:
    """(student - mean member) / (ensemble - mean member); None when the ensemble gains nothing."""
    gap = ensemble - mean_member
    if abs(gap) < 1e-12:
        return None
    return (student - mean_member) / gap


def size_curve(logits: dict[str, Tensor], targets: dict[str, Tensor], combines=COMBINES,
               params: Optional[list[int]] = None, limit: int = 100) -> list[dict]:
    """One row per (size k = 1..K, combination): val/test metrics averaged over the subsets of size k.

    `logits`: split -> (K, n, C) for the splits "val" and "test"; `targets`: split -> (n,).
    Row keys: size, combine, subsets (how many were averaged), val_acc, val_nll, test_acc,
    test_nll, test_ece, disagreement, gain_over_mean_member (test), params (total of a subset).
    """
    count = logits["test"].shape[0]
    member_acc = {split: (logits[split].argmax(-1) == targets[split]).float().mean(-1) for split in logits}
    test_preds = logits["test"].argmax(-1).flatten(1)  # (K, n), or (K, n * L) tokens of an LM
    rows = []
    for size in range(1, count + 1):
        chosen = subsets(count, size, limit)
        sums: dict[str, dict[str, float]] = {how: {} for how in combines}
        diversity = []
        for subset in chosen:
            index = list(subset)
            diversity.append(disagreement(test_preds[index]))
            mean_member = member_acc["test"][index].mean().item()
            for how in combines:
                figures = {}
                for split in ("val", "test"):
                    metrics = probs_metrics(combine_probs(logits[split][index], how), targets[split])
                    figures.update({f"{split}_{name}": metrics[name] for name in ("acc", "nll", "ece")})
                figures["gain_over_mean_member"] = figures["test_acc"] - mean_member
                if params is not None:
                    figures["params"] = sum(params[i] for i in index)
                for key, value in figures.items():
                    sums[how][key] = sums[how].get(key, 0.0) + value
        for how in combines:
            mean = {key: value / len(chosen) for key, value in sums[how].items()}
            rows.append({
                "size": size, "combine": how, "subsets": len(chosen),
                "val_acc": mean["val_acc"], "val_nll": mean["val_nll"], "test_acc": mean["test_acc"],
                "test_nll": mean["test_nll"], "test_ece": mean["test_ece"],
                "disagreement": None if size == 1 else sum(diversity) / len(diversity),
                "gain_over_mean_member": mean["gain_over_mean_member"],
                "params": round(mean["params"]) if params is not None else None,
            })
    return rows
