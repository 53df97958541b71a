"""Fidelity (Stanton et al. 2021, "Does knowledge distillation really work?"): how closely a
student matches the teacher it was distilled from, next to how accurate it is.

    from distill.teachers.fidelity import fidelity
    row.update(fidelity(student, objective, data, cfg.train))
    # {"val_agreement": ..., "test_agreement": ..., "test_teacher_kl": ...}

agreement = mean over examples of [argmax student = argmax teacher] (top-1 agreement);
teacher_kl = mean over examples of KL(p_teacher || p_student), both at T = 1, for the
student's selected (validation-best) weights. The teacher is what the objective reads:
one model, or an ensemble's combined prediction (mean_logits: softmax of the mean logits;
mean_probs and per_teacher_kl: the mean probabilities, the distribution that minimises the
sum of per-teacher KLs). Teachers known only by their training-split predictions (a
predictions file) or virtual teachers give None.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.methods.parts import kl_per_example, tempered_log_softmax
from distill.teachers.signals import combine_log_probs

KEYS = ("val_agreement", "test_agreement", "test_teacher_kl")


def teacher_log_probs(teacher_logits: torch.Tensor, combine: str) -> torch.Tensor:
    """(K, N, C) teachers' logits -> (N, C) log-probabilities of their combined prediction at T = 1
    (per_teacher_kl: the mean probabilities)."""
    return combine_log_probs(teacher_logits, "mean_logits" if combine == "mean_logits" else "mean_probs")


def agreement(student_logits: torch.Tensor, teacher_log_p: torch.Tensor) -> float:
    """Share of examples whose top-1 class is the teacher's."""
    return (student_logits.argmax(-1) == teacher_log_p.argmax(-1)).float().mean().item()


def teacher_kl(student_logits: torch.Tensor, teacher_log_p: torch.Tensor) -> float:
    """mean_i KL(p_teacher,i || softmax(s_i)) at T = 1, over every example (or token: (N, L, V) logits)."""
    return kl_per_example(teacher_log_p, tempered_log_softmax(student_logits.float())).mean().item()


@torch.inference_mode()
def split_fidelity(student: nn.Module, teachers: list[nn.Module], combine: str, data, split: str,
                   batch_size: int = 1024, precision: str = "fp32") -> tuple[float, float]:
    """(agreement, teacher_kl) of `student` with `teachers` (combined by `combine`) on one split."""
    from distill.training.evaluation import predict

    student_logits = predict(student, data, split, batch_size, precision)
    teacher_log_p = teacher_log_probs(torch.stack([predict(t, data, split, batch_size, precision)
                                                   for t in teachers]), combine)
    return agreement(student_logits, teacher_log_p), teacher_kl(student_logits, teacher_log_p)


def fidelity(student: nn.Module, objective, data, train=None) -> dict:
    """{val_agreement, test_agreement, test_teacher_kl} of a student with the teacher(s) of its
    objective (None values when no teacher model is in memory). `train` (a TrainConfig) gives the
    evaluation batch size and precision."""
    teachers, combine = objective.teachers() if objective is not None else ([], None)
    if not teachers:
        return dict.fromkeys(KEYS)
    batch, precision = (train.eval_batch_size, train.precision) if train is not None else (1024, "fp32")
    val_agreement, _ = split_fidelity(student, teachers, combine, data, "val", batch, precision)
    test_agreement, test_kl = split_fidelity(student, teachers, combine, data, "test", batch, precision)
    return {"val_agreement": val_agreement, "test_agreement": test_agreement, "test_teacher_kl": test_kl}
