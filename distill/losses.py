"""Distillation losses, each a pure function of logits with its formula in the docstring.

    from distill.losses import METHODS
    out = METHODS["kd"](student_logits, teacher_logits, targets, temperature=4.0, alpha=0.9)
    out["loss"].backward()

Every loss returns a dict of named tensors: `loss` (what is minimised), `kd_loss` (the
teacher term), `task_loss` (the label term). `distill.method` picks one by name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

METHODS: dict[str, Callable[..., dict]] = {}

#: how each method reduces over the batch and whether the soft term is scaled by T^2;
#: written into every run's summary so that numbers from different code can be compared.
LOSS_INFO: dict[str, dict] = {}


def register(name: str, reduction: str, t2_scaling: bool):
    def add(fn):
        METHODS[name] = fn
        LOSS_INFO[name] = {"method": name, "reduction": reduction, "t2_scaling": t2_scaling}
        return fn
    return add


def list_methods() -> list[str]:
    return [f"{name}: {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in METHODS.items()]


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch (batchmean)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


@register("kd", reduction="batchmean", t2_scaling=True)
def kd(student_logits, teacher_logits, targets, *, temperature: float, alpha: float) -> dict:
    """Hinton et al. 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s)."""
    kd_loss = soft_kl(student_logits, teacher_logits, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}
