"""One objective for K stacked models: what `engine.fit` calls once per step instead of K times.

    step_objective = stacked_objective(objectives)   # None: call each model's objective in turn
    terms = step_objective.terms(batch, logits, features, progress)   # batch and logits (K, B, ...): (K,) terms

An objective that is itself `stackable` (cross-entropy, mutual learning) serves all K. K `Distill`
objectives of one method that reads teacher logits, differing only in T, alpha, the mixer's
options (DKD's, DIST's, WTTM's weights) and their teachers, become one `StackedDistill`: the
method's formula (`Distill.logit_terms`, written once) runs under `torch.func.vmap` over the
K models with each model's T, and its weights are (K,) tensors of each model's alpha (the mixer,
`objectives.mix`, takes those). This is what packs of objective-only configurations (one
student, several T and alpha) train with. tests/test_stacked.py holds it against K separate
calls, values and gradients.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.func import vmap

from distill.methods.objectives import Distill, Objective


def stacked_objective(objectives: list) -> Optional[Objective]:
    """The one objective that takes K >= 2 models' stacked batches, or None (call each in turn)."""
    first = objectives[0]
    if len(objectives) < 2:
        return None
    if all(o.stackable and type(o) is type(first) for o in objectives):
        return first
    return StackedDistill(objectives) if can_stack_distill(objectives) else None


def can_stack_distill(objectives: list) -> bool:
    """K Distill objectives whose terms one vmapped call can compute (see the module docstring)."""
    first = objectives[0]
    if not all(type(o) is Distill for o in objectives):
        return False
    method = first.method
    if method.signal != "logits" or method.draws or method.temperature == "learned" or method.mix == "labels":
        return False
    counts = {len(o.signal.models) if o.signal.models else o.signal.table.shape[0] for o in objectives}
    return len(counts) == 1 and all(
        o.method is method and o.combine == first.combine and o.cfg.standardize == first.cfg.standardize
        and method.values(o.cfg, "loss") == method.values(first.cfg, "loss") for o in objectives)


def same_signal(a, b) -> bool:
    """The same teachers in memory, read the same way (or the very same signal): one read serves both."""
    return a is b or (type(a) is type(b) and bool(a.models) and len(a.models) == len(b.models)
                      and all(x is y for x, y in zip(a.models, b.models))
                      and (a.cached, a.top_k, a.device) == (b.cached, b.top_k, b.device))


class StackedDistill(Objective):
    """K Distill objectives as one (see the module docstring); the K objectives keep their own state."""

    stackable = True

    def __init__(self, parts: list[Distill]):
        super().__init__()
        self.parts = list(parts)  # a plain list: their state is each part's own (nothing is trained here)
        first = parts[0]
        self.shared = all(same_signal(p.signal, first.signal) for p in parts)  # read once for all K
        options = first.method.values(first.cfg, "loss")

        def one(student, teacher, targets, temperature):
            return first.logit_terms(student, teacher, targets, temperature, options)

        self._terms = vmap(one, in_dims=(0, 1 if self.shared else 0, 0, 0))
        self._values: dict = {}  # (name, values, device) -> the (K,) tensor, made once per distinct values
        self.device = torch.device("cpu")  # of the logits of the last terms() call: where the weights go

    def _tensor(self, name: str, values: list) -> torch.Tensor:
        key = (name, tuple(values), str(self.device))
        if key not in self._values:
            self._values[key] = torch.tensor(values, dtype=torch.float32, device=self.device)
        return self._values[key]

    def terms(self, batch, logits, features, progress):
        student = logits.float()
        self.device = student.device
        for part in self.parts:
            part.signal.prepare()
        if self.shared:  # (n, K * B, C) -> (n, K, B, C)
            k, b = batch.idx.shape[:2]
            teacher = self.parts[0].signal.logits(batch.x.flatten(0, 1), batch.idx.flatten()).unflatten(1, (k, b))
        else:
            teacher = torch.stack([p.signal.logits(x, i) for p, x, i in zip(self.parts, batch.x, batch.idx)])
        temperature = self._tensor("T", [float(p.temperature(progress)) for p in self.parts])
        return self._terms(student, teacher, batch.y, temperature)

    def weights(self, progress):
        """Each term's weight: one float when all K agree (the mixer then skips zeros), else a (K,) tensor."""
        each = [p.weights(progress) for p in self.parts]
        values = {name: [w[name] for w in each] for name in each[0]}
        return {name: v[0] if all(x == v[0] for x in v) else self._tensor(name, v) for name, v in values.items()}
