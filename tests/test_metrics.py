"""The vectorised metrics against a plain per-example, per-bin reference."""

import math

import torch

from distill.training.metrics import classification_metrics, probs_metrics, split_metrics


def reference(logits: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> dict:
    probs = torch.softmax(logits.double(), -1).tolist()
    n = len(probs)
    nll = sum(-math.log(p[t]) for p, t in zip(probs, targets.tolist())) / n
    acc = sum(max(range(len(p)), key=p.__getitem__) == t for p, t in zip(probs, targets.tolist())) / n
    ece = 0.0
    for b in range(bins):
        members = [(max(p), max(range(len(p)), key=p.__getitem__) == t) for p, t in zip(probs, targets.tolist())
                   if b / bins < max(p) <= (b + 1) / bins]
        if members:
            conf = sum(c for c, _ in members) / len(members)
            hit = sum(h for _, h in members) / len(members)
            ece += len(members) / n * abs(hit - conf)
    return {"acc": acc, "nll": nll, "ece": ece}


def test_split_metrics_match_reference_for_models_and_splits():
    g = torch.Generator().manual_seed(0)
    sizes, classes, models = (37, 64, 5), 7, 3
    logits = [torch.randn(models, n, classes, generator=g) * 3 for n in sizes]
    targets = [torch.randint(0, classes, (n,), generator=g) for n in sizes]
    result = split_metrics(logits, targets)
    assert len(result) == models and all(len(r) == len(sizes) for r in result)
    for m in range(models):
        for s in range(len(sizes)):
            want = reference(logits[s][m], targets[s])
            got = result[m][s]
            for key in ("acc", "nll", "ece"):
                assert abs(got[key] - want[key]) < 1e-5, (m, s, key)
            assert got["loss"] == got["nll"]


def test_single_split_helpers_agree():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    a = classification_metrics(logits, targets)
    b = probs_metrics(logits.softmax(-1), targets)
    want = reference(logits, targets)
    for key in ("acc", "nll", "ece"):
        assert abs(a[key] - want[key]) < 1e-5 and abs(b[key] - want[key]) < 1e-5
