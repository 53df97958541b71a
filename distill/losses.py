"""Distillation losses, each written once as its paper's formula.

    from distill.losses import METHODS
    terms = METHODS["kd"](student_logits, teacher_logits, targets, temperature=4.0)
    # terms = {"teacher": T^2 KL(p_t^T || p_s^T), "task": CE(y, s)}
    python -m distill.cli list methods

Every method takes `(student_logits, teacher_logits, targets, *, temperature, **options)` and
returns a dict of named terms: `teacher` (the term that reads the teacher, or a virtual
teacher) and `task` (the label term), plus any extra figures. It never mixes them: the
objective's one mixer (`distill.objectives.mix`) weighs the terms with alpha, as
`LOSS_INFO[name]["mix"]` says:

    alpha         loss = alpha * teacher + (1 - alpha) * task      (kd, cwtm, dkpp, tfkd_*, white-box)
    teacher_only  loss = teacher                                   (ban; task is logged only)
    sum           loss = teacher + task                            (ban_l)
    smoothing     loss = eps * teacher + (1 - eps) * task          (label_smoothing, eps = distill.smoothing)

`LOSS_INFO[name]` also says how the teacher term reduces over the batch, whether it is
scaled by T^2 and which teacher signal it reads (`logits`, `features` or `none`); every run
records it, so that numbers from different code can be compared.

Notation: p^T = softmax(z / T); KL(p || q) = sum_c p_c (log p_c - log q_c), averaged over the
batch ("batchmean"); CE(y, s) = -log softmax(s)_y averaged over the batch. Reductions are
over the last two dimensions (batch, class), so the same formula serves any leading shape.

Choices (the born-again paper, Furlanello et al. 2018, uses T = 1 throughout): `ban` is the
teacher term alone (KL rather than CE to the teacher: the same gradient, zero at a perfect
match); `ban_l` is BAN+L, the unweighted sum; `cwtm` and `dkpp` mix with the label loss by
alpha like kd (alpha = 1 is the paper's control).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

METHODS: dict[str, Callable[..., dict]] = {}
LOSS_INFO: dict[str, dict] = {}
MIXES = ("alpha", "teacher_only", "sum", "smoothing")


def register(name: str, reduction: str, t2_scaling: bool, *, signal: str = "logits", mix: str = "alpha"):
    assert mix in MIXES, mix

    def add(fn):
        METHODS[name] = fn
        LOSS_INFO[name] = {"method": name, "reduction": reduction, "t2_scaling": t2_scaling,
                              "signal": signal, "mix": mix}
        return fn
    return add


def list_methods() -> list[str]:
    return [f"{name}: {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in METHODS.items()]


# ---------------------------------------------------------------- building blocks


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE(y, s) = -log softmax(s)_y, averaged over the batch (dim -2)."""
    return -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(-1)


def kl_to_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || softmax(s/T)), batchmean, for a teacher distribution p (zeros allowed: 0 log 0 = 0)."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = teacher_probs.clamp_min(1e-30).log()
    return (teacher_probs * (log_p - log_q)).sum(-1).mean(-1)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch (batchmean)."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1)


# ---------------------------------------------------------------- black-box (logits) methods


@register("kd", reduction="batchmean", t2_scaling=True)
def kd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Hinton et al. 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s)."""
    return {"teacher": soft_kl(student_logits, teacher_logits, temperature) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("ban", reduction="batchmean", t2_scaling=True, mix="teacher_only")
def ban(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Born-again networks (Furlanello et al. 2018), teacher term only: T^2 * KL(p_t^T || p_s^T); alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("ban_l", reduction="batchmean", t2_scaling=True, mix="sum")
def ban_l(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """BAN+L: T^2 * KL(p_t^T || p_s^T) + CE(y, s), the unweighted sum; alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("cwtm", reduction="weighted_sum", t2_scaling=False)
def cwtm(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Confidence-weighted by teacher max: alpha * sum_i w_i CE(argmax t_i, s_i) + (1 - alpha) * CE(y, s).

    w_i = max_c p_t,i^T / sum_j max_c p_t,j^T over the batch (T only shapes the weights; the
    paper uses T = 1). The weights are constants (no gradient flows to the teacher).
    """
    with torch.no_grad():
        confidence, teacher_class = F.softmax(teacher_logits / temperature, dim=-1).max(dim=-1)
        weights = confidence / confidence.sum(-1, keepdim=True)
    per_example = -F.log_softmax(student_logits, dim=-1).gather(-1, teacher_class.unsqueeze(-1)).squeeze(-1)
    return {"teacher": (weights * per_example).sum(-1), "task": cross_entropy(student_logits, targets)}


def permute_non_argmax(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each row's probabilities with the non-argmax entries randomly permuted (argmax stays put)."""
    device = probs.device if generator is None else generator.device
    keys = torch.rand(probs.shape, generator=generator, device=device).to(probs.device)
    top = probs.argmax(dim=1, keepdim=True)
    keys.scatter_(1, top, -1.0)  # the argmax sorts first, the rest in random order
    order = keys.argsort(dim=1)  # order[:, 0] = argmax; order[:, 1:] = a random arrangement of the others
    ranked = probs.sort(dim=1, descending=True).values  # ranked[:, 0] = the max
    return torch.zeros_like(probs).scatter(1, order, ranked)


@register("dkpp", reduction="batchmean", t2_scaling=True)
def dkpp(student_logits, teacher_logits, targets, *, temperature: float,
         generator: Optional[torch.Generator] = None) -> dict:
    """Dark knowledge with permuted predictions: alpha * T^2 * KL(perm(p_t^T) || p_s^T) + (1 - alpha) * CE(y, s).

    perm() moves each example's non-argmax teacher probabilities to randomly permuted
    classes (the argmax keeps its class and value), drawn from `generator`.
    """
    with torch.no_grad():
        permuted = permute_non_argmax(F.softmax(teacher_logits / temperature, dim=1), generator)
    return {"teacher": kl_to_probs(student_logits, permuted, temperature) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("tfkd_self", reduction="batchmean", t2_scaling=True)
def tfkd_self(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Teacher-free KD, self-training (Yuan et al. 2020): kd with a pre-trained copy of the student as teacher."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


def virtual_teacher_log_probs(targets: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """log p_v: correct_prob on the true class, (1 - correct_prob) / (C - 1) on each other class."""
    other = (1.0 - correct_prob) / (num_classes - 1)
    probs = torch.full((*targets.shape, num_classes), other, device=targets.device)
    probs.scatter_(-1, targets.unsqueeze(-1), correct_prob)
    return probs.log()


@register("tfkd_reg", reduction="batchmean", t2_scaling=True, signal="none")
def tfkd_reg(student_logits, teacher_logits, targets, *, temperature: float, correct_prob: float = 0.9) -> dict:
    """Teacher-free KD, virtual teacher (Yuan et al. 2020): alpha * T^2 * KL(p_v^T || p_s^T) + (1 - alpha) * CE(y, s).

    p_v^T = softmax(log p_v / T) with p_v = correct_prob on the true class and
    (1 - correct_prob) / (C - 1) elsewhere; `teacher_logits` is ignored.
    """
    virtual = virtual_teacher_log_probs(targets, student_logits.shape[-1], correct_prob)
    return kd(student_logits, virtual, targets, temperature=temperature)


@register("label_smoothing", reduction="mean", t2_scaling=False, signal="none", mix="smoothing")
def label_smoothing(student_logits, teacher_logits, targets, *, temperature: float = 1.0) -> dict:
    """Label smoothing (Szegedy et al. 2016): (1 - eps) * CE(y, s) + eps * CE(uniform, s); T ignored.

    The uniform distribution is the teacher term, so the mixer's eps = distill.smoothing weighs it.
    """
    log_p = F.log_softmax(student_logits, dim=-1)
    return {"teacher": -log_p.mean(-1).mean(-1), "task": cross_entropy(student_logits, targets)}


# ---------------------------------------------------------------- white-box (feature) methods


@register("fitnet", reduction="mean", t2_scaling=False, signal="features")
def fitnet(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
           student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """FitNets hints (Romero et al. 2015): alpha * w * sum_l mean((r_l(f_s,l) - f_t,l)^2) + (1 - alpha) * CE(y, s).

    `student_features` are already passed through the learned projections r_l (the
    objective owns them); the mean is over every element of the layer's output.
    """
    hint = sum(F.mse_loss(s, t) for s, t in zip(student_features, teacher_features))
    return {"teacher": hint * weight, "task": cross_entropy(student_logits, targets)}


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: a = mean_c f_c^2 over channels, flattened, L2-normalised per example."""
    if features.dim() < 3:
        features = features.unsqueeze(-1)  # (B, C) -> one position per channel
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


@register("attention", reduction="mean", t2_scaling=False, signal="features")
def attention(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
              student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Attention transfer: alpha * w * sum_l mean_(b, j) (a_s,l - a_t,l)^2 + (1 - alpha) * CE(y, s), a = attention_map."""
    transfer = sum((attention_map(s) - attention_map(t)).pow(2).mean()
                   for s, t in zip(student_features, teacher_features))
    return {"teacher": transfer * weight, "task": cross_entropy(student_logits, targets)}


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """||e_i - e_j|| for all pairs, normalised by their mean over i != j (Park et al. 2019, psi_D)."""
    d = (e[:, None, :] - e[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    off = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    d = d * off  # the diagonal (clamped) is exactly zero
    return d / d[off].mean().clamp_min(1e-12)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between e_i - e_j and e_k - e_j, for all (i, j, k) (psi_A)."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # diff[j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


@register("rkd", reduction="mean", t2_scaling=False, signal="features")
def rkd(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
        student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Relational KD (Park et al. 2019): alpha * w * sum_l [huber(psi_D) + 2 huber(psi_A)] + (1 - alpha) * CE(y, s).

    psi_D: pairwise distances of the flattened features over the batch, divided by their
    mean; psi_A: cosines of the angles of all triplets; huber = smooth L1, mean over
    pairs/triplets. Weights 1 : 2 are the paper's 25 : 50.
    """
    relational = 0.0
    for s, t in zip(student_features, teacher_features):
        s, t = s.flatten(1), t.flatten(1)
        relational = relational + F.smooth_l1_loss(_pairwise_distances(s), _pairwise_distances(t))
        relational = relational + 2.0 * F.smooth_l1_loss(_angles(s), _angles(t))
    return {"teacher": relational * weight, "task": cross_entropy(student_logits, targets)}
