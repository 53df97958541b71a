"""Distillation losses, each written once as its paper's formula.

    from distill.losses import METHODS
    terms = METHODS["kd"](student_logits, teacher_logits, targets, temperature=4.0)
    # terms = {"teacher": T^2 KL(p_t^T || p_s^T), "task": CE(y, s)}
    python -m distill.cli list methods       # each method: its paper, what it matches, its keys

Every method takes `(student_logits, teacher_logits, targets, *, temperature, **options)` and
returns a dict of named terms: `teacher` (the term that reads the teacher, or a virtual
teacher; DKD and DIST have two such terms, `tckd`/`nckd` and `inter`/`intra`) and `task`
(the label term, always CE(y, s) on the raw student logits). It never mixes them: the
objective's one mixer (`distill.objectives.mix`) weighs the terms with alpha, as
`LOSS_INFO[name]["mix"]` says:

    alpha         loss = alpha * teacher + (1 - alpha) * task      (kd, cwtm, dkpp, tfkd_*, ctkd, reverse_kl,
                                                                    jsd, skew_kl, tvd, white-box)
    teacher_only  loss = teacher                                   (ban; task is logged only)
    sum           loss = teacher + task                            (ban_l)
    smoothing     loss = eps * teacher + (1 - eps) * task          (label_smoothing, eps = distill.smoothing)
    dkd           loss = task + w(epoch) * (dkd_alpha * tckd + dkd_beta * nckd)   (w: the warm-up ramp)
    dist          loss = task + dist_beta * inter + dist_gamma * intra
    wttm          loss = task + wttm_beta * teacher
    labels        loss = task                                      (labels: the teacher read for fidelity only)

`LOSS_INFO[name]` also says how the teacher term reduces, whether it is scaled by T^2 and which
signal it reads (`logits`, `features`, `none`); `ABOUT[name]` what it matches, its keys, its paper.

Notation: p^T = softmax(z / T); KL(p || q) = sum_c p_c (log p_c - log q_c), averaged over the
batch ("batchmean"); CE(y, s) = -log softmax(s)_y averaged over the batch. Reductions are
over the last two dimensions (batch, class), so the same formula serves any leading shape.

Choices (the born-again paper uses T = 1 throughout): `ban` is the teacher term alone (KL rather
than CE to the teacher: the same gradient, zero at a perfect match); `ban_l` is BAN+L, the
unweighted sum; `cwtm` and `dkpp` mix with the label loss by alpha like kd (alpha = 1: the paper's).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .loss_parts import (angles, attention_map, cross_entropy, kl_logs, log_mixture, pairwise_distances,  # noqa: F401 (re-exported)
                         pearson_distance, permute_non_argmax, tempered_log_probs, virtual_teacher_log_probs)

METHODS: dict[str, Callable[..., dict]] = {}
LOSS_INFO: dict[str, dict] = {}
#: per method, for `distill list methods`: what it matches, the distill.* keys it reads, its paper
ABOUT: dict[str, dict] = {}
MIXES = ("alpha", "teacher_only", "sum", "smoothing", "dkd", "dist", "wttm", "labels")
#: keys every run records in its loss_info whatever the method (the rest of a method's keys are its own)
COMMON_KEYS = ("temperature", "alpha", "layers", "teacher_layers", "feature_weight")


def register(name: str, reduction: str, t2_scaling: bool, *, signal: str = "logits", mix: str = "alpha",
             matches: str, keys: tuple, paper: str):
    """Add a method: its formula, how it reduces and mixes, and (for the listing) what it matches,
    the distill.* keys it reads and its paper."""
    assert mix in MIXES, mix

    def add(fn):
        METHODS[name] = fn
        LOSS_INFO[name] = {"method": name, "reduction": reduction, "t2_scaling": t2_scaling,
                              "signal": signal, "mix": mix}
        ABOUT[name] = {"matches": matches, "keys": tuple(keys), "paper": paper}
        return fn
    return add


def own_keys(name: str) -> tuple:
    """The distill.* keys only `name` reads (recorded in its loss_info next to the common ones)."""
    return tuple(key for key in ABOUT[name]["keys"] if key not in COMMON_KEYS)


def list_methods() -> list[str]:
    """One line per method: `name: paper. Matches ...; keys: ...`."""
    return [f"{name}: {a['paper']}. Matches {a['matches']}; keys (distill.*): {', '.join(a['keys']) or 'none'}"
            for name, a in ABOUT.items()]


# ---------------------------------------------------------------- building blocks


def kl_to_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || softmax(s/T)), batchmean, for a teacher distribution p (zeros allowed: 0 log 0 = 0)."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = teacher_probs.clamp_min(1e-30).log()
    return (teacher_probs * (log_p - log_q)).sum(-1).mean(-1)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch (batchmean)."""
    return kl_logs(*tempered_log_probs(student_logits, teacher_logits, temperature))


# ---------------------------------------------------------------- black-box (logits) methods


@register("kd", reduction="batchmean", t2_scaling=True, keys=("temperature", "alpha"), paper="Hinton et al. 2015",
          matches="the teacher's softened probabilities, forward KL(p_t^T || p_s^T), mixed with the labels")
def kd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Hinton et al. 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s)."""
    return {"teacher": soft_kl(student_logits, teacher_logits, temperature) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("ban", reduction="batchmean", t2_scaling=True, mix="teacher_only",
          matches="the previous generation's softened probabilities alone, KL(p_t^T || p_s^T) (alpha ignored)",
          keys=("temperature",), paper="Furlanello et al. 2018 (born-again networks)")
def ban(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Born-again networks (Furlanello et al. 2018), teacher term only: T^2 * KL(p_t^T || p_s^T); alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("ban_l", reduction="batchmean", t2_scaling=True, mix="sum",
          matches="the previous generation's softened probabilities plus the labels, unweighted",
          keys=("temperature",), paper="Furlanello et al. 2018 (BAN+L)")
def ban_l(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """BAN+L: T^2 * KL(p_t^T || p_s^T) + CE(y, s), the unweighted sum; alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("cwtm", reduction="weighted_sum", t2_scaling=False,
          matches="the teacher's argmax class, examples weighted by its confidence",
          keys=("temperature", "alpha"), paper="Furlanello et al. 2018 (CWTM)")
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


@register("dkpp", reduction="batchmean", t2_scaling=True,
          matches="the teacher's probabilities with the non-argmax classes permuted",
          keys=("temperature", "alpha"), paper="Furlanello et al. 2018 (DKPP)")
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


@register("tfkd_self", reduction="batchmean", t2_scaling=True,
          matches="a pre-trained copy of the student (self-training)",
          keys=("temperature", "alpha"), paper="Yuan et al. 2020 (teacher-free KD)")
def tfkd_self(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Teacher-free KD, self-training (Yuan et al. 2020): kd with a pre-trained copy of the student as teacher."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("tfkd_reg", reduction="batchmean", t2_scaling=True, signal="none",
          matches="a hand-made virtual teacher (correct_prob on the true class), no teacher model",
          keys=("temperature", "alpha", "correct_prob"), paper="Yuan et al. 2020 (teacher-free KD)")
def tfkd_reg(student_logits, teacher_logits, targets, *, temperature: float, correct_prob: float = 0.9) -> dict:
    """Teacher-free KD, virtual teacher (Yuan et al. 2020): alpha * T^2 * KL(p_v^T || p_s^T) + (1 - alpha) * CE(y, s).

    p_v^T = softmax(log p_v / T) with p_v = correct_prob on the true class and
    (1 - correct_prob) / (C - 1) elsewhere; `teacher_logits` is ignored.
    """
    virtual = virtual_teacher_log_probs(targets, student_logits.shape[-1], correct_prob)
    return kd(student_logits, virtual, targets, temperature=temperature)


@register("label_smoothing", reduction="mean", t2_scaling=False, signal="none", mix="smoothing",
          matches="the labels smoothed towards the uniform distribution, no teacher",
          keys=("smoothing",), paper="Szegedy et al. 2016")
def label_smoothing(student_logits, teacher_logits, targets, *, temperature: float = 1.0) -> dict:
    """Label smoothing (Szegedy et al. 2016): (1 - eps) * CE(y, s) + eps * CE(uniform, s); T ignored.

    The uniform distribution is the teacher term, so the mixer's eps = distill.smoothing weighs it.
    """
    log_p = F.log_softmax(student_logits, dim=-1)
    return {"teacher": -log_p.mean(-1).mean(-1), "task": cross_entropy(student_logits, targets)}


@register("labels", reduction="mean", t2_scaling=False, mix="labels", keys=(), paper="the from-labels baseline",
          matches="the labels only (CE); a teacher, when the run has one, is read for the fidelity figures alone")
def labels(student_logits, teacher_logits, targets, *, temperature: float = 1.0) -> dict:
    """Training from labels next to a teacher: CE(y, s); the teacher and T are not in the loss.

    The run still loads its teacher, so the model's row gets the same fidelity figures
    (agreement, KL) as a distilled student's, the baseline that KD's fidelity gain is read from.
    """
    return {"task": cross_entropy(student_logits, targets)}


# ---------------------------------------------------------------- modern logit methods


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Logit standardisation (Sun et al. 2024): Z(z) = (z - mean_c z) / (std_c z + 1e-7), per example.

    std is the unbiased (n - 1) standard deviation, as in the paper's code; softmax(Z(z) / T)
    then follows. `distill.standardize: true` applies it to student and teacher logits.
    """
    mean = logits.mean(-1, keepdim=True)
    return (logits - mean) / (logits.std(-1, keepdim=True) + 1e-7)


@register("reverse_kl", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, reverse KL(p_s^T || p_t^T) (mode-seeking)",
          keys=("temperature", "alpha"), paper="Gu et al. 2024 (MiniLLM), compared in GKD")
def reverse_kl(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Reverse KL (mode-seeking): alpha * T^2 * KL(p_s^T || p_t^T) + (1 - alpha) * CE(y, s)."""
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    return {"teacher": kl_logs(log_q, log_p) * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("jsd", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, generalised Jensen-Shannon divergence",
          keys=("temperature", "alpha", "jsd_beta"), paper="Agarwal et al. 2024 (GKD)")
def jsd(student_logits, teacher_logits, targets, *, temperature: float, beta: float = 0.5) -> dict:
    """Generalised JSD (GKD, Agarwal et al. 2024): alpha * T^2 * JSD(beta)(p_t^T || p_s^T) + (1 - alpha) * CE.

    JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q,
    P the teacher, Q the student (distill.jsd_beta; beta = 0.5 is the symmetric JSD, bounded by
    log 2). JSD(beta) / beta tends to KL(P || Q) as beta -> 0, and JSD(beta) / (1 - beta) to
    KL(Q || P) as beta -> 1.
    """
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    log_m = log_mixture(log_p, log_q, beta)
    divergence = beta * kl_logs(log_p, log_m) + (1.0 - beta) * kl_logs(log_q, log_m)
    return {"teacher": divergence * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("skew_kl", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, skew KL to a teacher-student mixture",
          keys=("temperature", "alpha", "skew", "skew_reverse"), paper="Ko et al. 2024 (DistiLLM)")
def skew_kl(student_logits, teacher_logits, targets, *, temperature: float, skew: float = 0.1,
            reverse: bool = False) -> dict:
    """Skew KL / skew reverse KL (DistiLLM, Ko et al. 2024): alpha * T^2 * D + (1 - alpha) * CE(y, s).

    SKL:  D = KL(p_t || skew p_t + (1 - skew) p_s)          (reverse = false)
    SRKL: D = KL(p_s || skew p_s + (1 - skew) p_t)          (reverse = true)
    p = softmax(z / T); skew = distill.skew (the paper's alpha, 0.1); skew = 0 gives KL / reverse KL.
    """
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    first, second = (log_q, log_p) if reverse else (log_p, log_q)
    divergence = kl_logs(first, log_mixture(first, second, skew))
    return {"teacher": divergence * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("tvd", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, total variation distance",
          keys=("temperature", "alpha"), paper="total variation distance as in Wen et al. 2023 (f-divergence KD)")
def tvd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Total variation distance: alpha * T^2 * (1/2) sum_c |p_t^T - p_s^T| + (1 - alpha) * CE(y, s), in [0, T^2]."""
    p = F.softmax(teacher_logits / temperature, dim=-1)
    q = F.softmax(student_logits / temperature, dim=-1)
    return {"teacher": 0.5 * (p - q).abs().sum(-1).mean(-1) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("dkd", reduction="batchmean", t2_scaling=True, mix="dkd",
          matches="the teacher's target-class and non-target-class probabilities, as two weighted terms",
          keys=("temperature", "dkd_alpha", "dkd_beta", "dkd_warmup_epochs"), paper="Zhao et al. 2022 (decoupled KD)")
def dkd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Decoupled KD (Zhao et al. 2022): CE(y, s) + w(e) * (alpha * TCKD + beta * NCKD).

    TCKD = T^2 KL(b_t || b_s), b = [p_y, 1 - p_y] the binary target/non-target split of p^T;
    NCKD = T^2 KL(p^_t || p^_s), p^ = softmax(z / T) over the non-target classes only.
    Defaults (distill.dkd_alpha, dkd_beta, dkd_warmup_epochs): alpha = 1, beta = 8, T = 4, and the
    warm-up w(e) = min(e / 20, 1) at epoch e = 1, 2, ... (the objective's weights).
    """
    target = targets.unsqueeze(-1)
    mask = torch.zeros_like(student_logits, dtype=torch.bool).scatter(-1, target, True)

    def binary_log(z):  # (log p_y, log (1 - p_y)) without subtracting probabilities
        log_p = F.log_softmax(z / temperature, dim=-1)
        return torch.cat([log_p.gather(-1, target), log_p.masked_fill(mask, -math.inf).logsumexp(-1, True)], -1)

    def non_target_log(z):
        return F.log_softmax((z / temperature).masked_fill(mask, -math.inf), dim=-1)

    tckd = kl_logs(binary_log(teacher_logits), binary_log(student_logits))
    log_t, log_s = non_target_log(teacher_logits), non_target_log(student_logits)
    nckd = (log_t.exp() * (log_t - log_s).masked_fill(mask, 0.0)).sum(-1).mean(-1)
    return {"tckd": tckd * temperature**2, "nckd": nckd * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("dist", reduction="mean", t2_scaling=True, mix="dist",
          matches="the teacher's per-example and per-class probability correlations (Pearson)",
          keys=("temperature", "dist_beta", "dist_gamma"), paper="Huang et al. 2022 (DIST)")
def dist(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """DIST (Huang et al. 2022): CE(y, s) + beta * inter + gamma * intra.

    inter = T^2 mean_i d_p(p_s,i, p_t,i) (each example's class distribution),
    intra = T^2 mean_c d_p(p_s,:c, p_t,:c) (each class's column over the batch),
    d_p = 1 - Pearson correlation, p = softmax(z / T). The paper's defaults are beta = gamma = 1
    (distill.dist_beta, dist_gamma); its code uses T = 4, beta = gamma = 2 on CIFAR-100.
    """
    p_s = F.softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    return {"inter": pearson_distance(p_s, p_t, -1).mean(-1) * temperature**2,
            "intra": pearson_distance(p_s, p_t, -2).mean(-1) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("wttm", reduction="weighted_mean", t2_scaling=False, mix="wttm",
          matches="the power-transformed teacher by the untempered student, examples weighted",
          keys=("temperature", "wttm_beta"), paper="Zheng & Yang 2024 (WTTM)")
def wttm(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Weighted transformed teacher matching (Zheng & Yang 2024): CE(y, s) + beta * mean_i U_i KL(p~_t,i || q_i)

    The teacher is power-transformed, p~_t = p_t^gamma / U with U = sum_c p_t,c^gamma and
    gamma = 1 / T (so p~_t = softmax(t / T)); the student q = softmax(s) has no temperature;
    U_i (larger for smoother teacher outputs) weighs each example. beta = distill.wttm_beta.
    """
    log_p = F.log_softmax(teacher_logits, dim=-1)
    log_u = (log_p / temperature).logsumexp(-1)   # log sum_c p_c^gamma
    log_p_tilde = log_p / temperature - log_u.unsqueeze(-1)
    log_q = F.log_softmax(student_logits, dim=-1)
    per_example = (log_p_tilde.exp() * (log_p_tilde - log_q)).sum(-1)
    return {"teacher": (log_u.exp() * per_example).mean(-1), "task": cross_entropy(student_logits, targets)}


@register("ctkd", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities at a learned, adversarial temperature",
          keys=("alpha", "ctkd_lambda", "ctkd_loops"), paper="Li et al. 2023 (curriculum temperature KD)")
def ctkd(student_logits, teacher_logits, targets, *, temperature) -> dict:
    """Curriculum temperature KD (Li et al. 2023): kd at a learned T, T adversarial to the student.

    min_student max_T alpha * T^2 KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s); `temperature` is the
    tensor T = 1 + 20 sigmoid(GRL(theta, lambda)) of the objective's parameter theta (see
    distill.objectives.ctkd_temperature; GRL: identity forward, gradient times -lambda backward),
    lambda rising from 0 to distill.ctkd_lambda over distill.ctkd_loops epochs (ctkd_reversal).
    """
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


# ---------------------------------------------------------------- white-box (feature) methods


@register("fitnet", reduction="mean", t2_scaling=False, signal="features",
          matches="the teacher's intermediate features through learned projections (MSE)",
          keys=("alpha", "layers", "teacher_layers", "feature_weight"), paper="Romero et al. 2015 (FitNets)")
def fitnet(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
           student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """FitNets hints (Romero et al. 2015): alpha * w * sum_l mean((r_l(f_s,l) - f_t,l)^2) + (1 - alpha) * CE(y, s).

    `student_features` are already passed through the learned projections r_l (the
    objective owns them); the mean is over every element of the layer's output.
    """
    hint = sum(F.mse_loss(s, t) for s, t in zip(student_features, teacher_features))
    return {"teacher": hint * weight, "task": cross_entropy(student_logits, targets)}


@register("attention", reduction="mean", t2_scaling=False, signal="features",
          matches="the teacher's spatial attention maps of the given layers",
          keys=("alpha", "layers", "teacher_layers", "feature_weight"), paper="Zagoruyko & Komodakis 2017 (AT)")
def attention(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
              student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Attention transfer: alpha * w * sum_l mean_(b, j) (a_s,l - a_t,l)^2 + (1 - alpha) * CE(y, s), a = attention_map."""
    transfer = sum((attention_map(s) - attention_map(t)).pow(2).mean()
                   for s, t in zip(student_features, teacher_features))
    return {"teacher": transfer * weight, "task": cross_entropy(student_logits, targets)}


@register("rkd", reduction="mean", t2_scaling=False, signal="features",
          matches="the distances and angles between examples in the teacher's feature space",
          keys=("alpha", "layers", "teacher_layers", "feature_weight"), paper="Park et al. 2019 (relational KD)")
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
        relational = relational + F.smooth_l1_loss(pairwise_distances(s), pairwise_distances(t))
        relational = relational + 2.0 * F.smooth_l1_loss(angles(s), angles(t))
    return {"teacher": relational * weight, "task": cross_entropy(student_logits, targets)}
