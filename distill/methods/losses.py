"""Distillation losses, each written once as its paper's formula, and each method's record.

    from distill.methods.losses import METHODS
    terms = METHODS["kd"](student_logits, teacher_logits, targets, temperature=4.0)
    # terms = {"teacher": T^2 KL(p_t^T || p_s^T), "task": CE(y, s)}
    python -m distill.cli list methods       # each method: its paper, what it matches, its keys and options

Every method takes `(student_logits, teacher_logits, targets, *, temperature, **options)` and
returns a dict of named terms: `teacher` (the term that reads the teacher, or a virtual
teacher; DKD and DIST have two such terms, `tckd`/`nckd` and `inter`/`intra`) and `task`
(the label term, always CE(y, s) on the raw student logits). It never mixes them: the
objective's one mixer (`distill.methods.objectives.mix`) weighs the terms as `METHODS[name].mix` says:

    alpha         loss = alpha * teacher + (1 - alpha) * task      (kd, cwtm, dkpp, tfkd_*, ctkd, reverse_kl,
                                                                    jsd, skew_kl, tvd, white-box)
    teacher_only  loss = teacher                                   (ban; task is logged only)
    sum           loss = teacher + task                            (ban_l)
    smoothing     loss = eps * teacher + (1 - eps) * task          (label_smoothing, eps = distill.smoothing)
    dkd           loss = task + w(epoch) * (dkd_alpha * tckd + dkd_beta * nckd)   (w: the warm-up ramp)
    dist          loss = task + dist_beta * inter + dist_gamma * intra
    wttm          loss = task + wttm_beta * teacher
    labels        loss = task                                      (labels: the teacher read for fidelity only)

`METHODS[name]` is the method's record (`distill.methods.Method`, made by `register`): also its
reduction, T^2 scaling, signal, paper and options (each distill.* key it reads and where it goes),
all that the objective, `distill list methods` and `check_options` read.

Notation: p^T = softmax(z / T); KL(p || q) = sum_c p_c (log p_c - log q_c), averaged over the
batch ("batchmean"); CE(y, s) = -log softmax(s)_y averaged over the batch. Reductions are
over the last two dimensions (batch, class), so the same formula serves any leading shape.
Each formula against its paper or its authors' code, and what still differs: docs/methods-audit.md.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from distill.methods.lm_losses import JSD_BETA, RECORDS as LM_RECORDS
from distill.methods.parts import (angles, attention_map, cross_entropy, generalized_jsd, kl_logs, kl_per_example,
                                   log_mixture, pairwise_distances, pearson_distance, permute_non_argmax, standardize,
                                   tempered_log_probs, tempered_log_softmax, virtual_teacher_probs)
from distill.methods import Method, Option

METHODS: dict[str, Method] = {}
#: each record's info(), the fields every run records (read by distill.teachers.sources and ensembles)
LOSS_INFO: dict[str, dict] = {}


def register(name: str, **record):
    """Add the method `name`: the decorated formula with the other fields of its record (`Method`)."""
    def add(fn):
        METHODS[name] = Method(name, fn, **record)
        LOSS_INFO[name] = METHODS[name].info()
        return fn
    return add


def check_options(method: str, given: set[str]) -> None:
    """ConfigError (one line) if `given`, the distill.* keys a config sets, holds one `method` does not
    read (an unknown method is left to distill.config.validate)."""
    if method in METHODS:
        METHODS[method].check(given)


def list_methods() -> list[str]:
    """One line per method: `name: paper. Matches ...; keys (distill.*): ...; options: key = default ...`."""
    return [method.describe() for method in METHODS.values()]


#: the options of the white-box methods
FEATURE_OPTIONS = (
    Option("layers", "layers", list[str], ["features"], {}, "student layers whose outputs are matched", to="layers"),
    Option("teacher_layers", "teacher_layers", Optional[list[str]], None, {},
           "the teacher's layers, one per student layer (null: the same names)", to="layers"),
    Option("feature_weight", "weight", float, 1.0, {"ge": 0.0}, "multiplier of the feature loss"),
)


# ---------------------------------------------------------------- black-box (logits) methods


@register("kd", reduction="batchmean", t2_scaling=True, paper="Hinton et al. 2015",
          matches="the teacher's softened probabilities, forward KL(p_t^T || p_s^T), mixed with the labels")
def kd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Hinton et al. 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s)."""
    kl = kl_logs(*tempered_log_probs(student_logits, teacher_logits, temperature))
    return {"teacher": kl * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("ban", reduction="batchmean", t2_scaling=True, mix="teacher_only",
          matches="the previous generation's softened probabilities alone, KL(p_t^T || p_s^T) (alpha ignored)",
          paper="Furlanello et al. 2018 (born-again networks)")
def ban(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Born-again networks (Furlanello et al. 2018), teacher term only: T^2 * KL(p_t^T || p_s^T); alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("ban_l", reduction="batchmean", t2_scaling=True, mix="sum",
          matches="the previous generation's softened probabilities plus the labels, unweighted",
          paper="Furlanello et al. 2018 (BAN+L)")
def ban_l(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """BAN+L: T^2 * KL(p_t^T || p_s^T) + CE(y, s), the unweighted sum; alpha ignored."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


@register("cwtm", reduction="weighted_sum", t2_scaling=False,
          matches="the labels, each example's cross-entropy weighted by the teacher's confidence (its max probability)",
          paper="Furlanello et al. 2018 (CWTM)")
def cwtm(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Confidence-weighted by teacher max (the paper's eq. 10): alpha * sum_i w_i CE(y_i, s_i) + (1 - alpha) * CE(y, s).

    The target is the label y_i, not the teacher's class; the teacher weighs the examples, w_i =
    max_c p_t,i^T / sum_j max_c p_t,j^T over the batch, constants (no gradient; the paper's T = 1)."""
    with torch.no_grad():
        confidence = tempered_log_softmax(teacher_logits, temperature).amax(dim=-1).exp()
        weights = confidence / confidence.sum(-1, keepdim=True)
    per_example = -tempered_log_softmax(student_logits).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return {"teacher": (weights * per_example).sum(-1), "task": cross_entropy(student_logits, targets)}


@register("dkpp", reduction="batchmean", t2_scaling=True, draws=True,
          matches="the teacher's probabilities with the non-argmax classes permuted",
          paper="Furlanello et al. 2018 (DKPP)")
def dkpp(student_logits, teacher_logits, targets, *, temperature: float,
         generator: Optional[torch.Generator] = None) -> dict:
    """Dark knowledge with permuted predictions: alpha * T^2 * KL(perm(p_t^T) || p_s^T) + (1 - alpha) * CE(y, s).

    perm() moves each example's non-argmax teacher probabilities to randomly permuted
    classes (the argmax keeps its class and value), drawn from `generator`.
    """
    with torch.no_grad():
        permuted = permute_non_argmax(tempered_log_softmax(teacher_logits, temperature).exp(), generator)
    kl = kl_logs(permuted.clamp_min(1e-30).log(), tempered_log_softmax(student_logits, temperature))
    return {"teacher": kl * temperature**2, "task": cross_entropy(student_logits, targets)}


#: Tf-KD's `multiplier` (their params.json), read by both Tf-KD methods
TFKD_MULTIPLIER = Option("tfkd_multiplier", "multiplier", float, 1.0, {"gt": 0.0},
                         "Tf-KD's multiplier of the teacher term (the authors' params.json `multiplier`)")


@register("tfkd_self", reduction="mean", t2_scaling=True, options=(TFKD_MULTIPLIER,),
          matches="a pre-trained copy of the student (self-training)", paper="Yuan et al. 2020 (teacher-free KD)")
def tfkd_self(student_logits, teacher_logits, targets, *, temperature: float, multiplier: float = 1.0) -> dict:
    """Teacher-free KD, self-training, as the authors' `loss_kd_self` computes it: alpha * m * T^2 *
    KL(p_t^T || p_s^T) / C + (1 - alpha) * CE(y, s), m = distill.tfkd_multiplier; their KL (KLDivLoss,
    reduction "mean") averages over batch and classes, hence 1 / C. The teacher: a trained copy of the student."""
    kl = kl_logs(*tempered_log_probs(student_logits, teacher_logits, temperature))
    scale = multiplier * temperature**2 / student_logits.shape[-1]
    return {"teacher": kl * scale, "task": cross_entropy(student_logits, targets)}


@register("tfkd_reg", reduction="mean", t2_scaling=False, signal="none", options=(
              Option("correct_prob", "correct_prob", float, 0.99, {"gt": 0.0, "lt": 1.0},
                     "the virtual teacher's probability of the true class before softening (theirs: 0.99)"),
              TFKD_MULTIPLIER),
          matches="a hand-made virtual teacher (correct_prob on the true class, softened by T), no teacher model",
          paper="Yuan et al. 2020 (teacher-free KD)")
def tfkd_reg(student_logits, teacher_logits, targets, *, temperature: float, correct_prob: float = 0.99,
             multiplier: float = 1.0) -> dict:
    """Teacher-free KD, virtual teacher, as the authors' `loss_kd_regularization` computes it:
    alpha * m * KL(p_v || softmax(s)) / C + (1 - alpha) * CE(y, s), m = distill.tfkd_multiplier.

    p_v = softmax(u / T) of the probabilities u themselves (not their logs): u = correct_prob
    on the true class, (1 - correct_prob) / (C - 1) elsewhere. The student is not tempered
    and there is no T^2; the KL averages over batch and classes (1 / C). `teacher_logits` is ignored.
    """
    virtual = tempered_log_softmax(virtual_teacher_probs(targets, student_logits.shape[-1], correct_prob), temperature)
    kl = kl_logs(virtual, tempered_log_softmax(student_logits))
    return {"teacher": kl * multiplier / student_logits.shape[-1], "task": cross_entropy(student_logits, targets)}


@register("label_smoothing", reduction="mean", t2_scaling=False, signal="none", mix="smoothing", temperature="none",
          matches="the labels smoothed towards the uniform distribution, no teacher", paper="Szegedy et al. 2016",
          options=(Option("smoothing", "smoothing", float, 0.1, {"ge": 0.0, "lt": 1.0},
                          "probability mass spread uniformly over the classes (the mixer's eps)", to="weights"),))
def label_smoothing(student_logits, teacher_logits, targets, *, temperature: float = 1.0) -> dict:
    """Label smoothing (Szegedy et al. 2016): (1 - eps) * CE(y, s) + eps * CE(uniform, s); T ignored.

    The uniform distribution is the teacher term, so the mixer's eps = distill.smoothing weighs it.
    """
    return {"teacher": -tempered_log_softmax(student_logits).mean(-1).mean(-1),
            "task": cross_entropy(student_logits, targets)}


@register("labels", reduction="mean", t2_scaling=False, mix="labels", temperature="none",
          paper="the from-labels baseline",
          matches="the labels only (CE); a teacher, when the run has one, is read for the fidelity figures alone")
def labels(student_logits, teacher_logits, targets, *, temperature: float = 1.0) -> dict:
    """Training from labels next to a teacher: CE(y, s); the teacher and T are not in the loss.

    The run still loads its teacher, so the model's row gets the same fidelity figures
    (agreement, KL) as a distilled student's, the baseline that KD's fidelity gain is read from.
    """
    return {"task": cross_entropy(student_logits, targets)}


# ---------------------------------------------------------------- modern logit methods


@register("reverse_kl", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, reverse KL(p_s^T || p_t^T) (mode-seeking)",
          paper="Gu et al. 2024 (MiniLLM), compared in GKD")
def reverse_kl(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Reverse KL (mode-seeking): alpha * T^2 * KL(p_s^T || p_t^T) + (1 - alpha) * CE(y, s)."""
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    return {"teacher": kl_logs(log_q, log_p) * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("jsd", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, generalised Jensen-Shannon divergence",
          paper="Agarwal et al. 2024 (GKD)", options=(JSD_BETA,))
def jsd(student_logits, teacher_logits, targets, *, temperature: float, beta: float = 0.5) -> dict:
    """Generalised JSD (GKD, Agarwal et al. 2024): alpha * T^2 * JSD(beta)(p_t^T || p_s^T) + (1 - alpha) * CE.

    JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q,
    P the teacher, Q the student (distill.jsd_beta; beta = 0.5 is the symmetric JSD, bounded by
    log 2). JSD(beta) / beta tends to KL(P || Q) as beta -> 0, and JSD(beta) / (1 - beta) to
    KL(Q || P) as beta -> 1; beta = 0 and 1 are those KLs themselves, as in TRL (parts.generalized_jsd).
    """
    divergence = generalized_jsd(*tempered_log_probs(student_logits, teacher_logits, temperature), beta)
    return {"teacher": divergence * temperature**2, "task": cross_entropy(student_logits, targets)}


@register("skew_kl", reduction="batchmean", t2_scaling=True,
          matches="the teacher's softened probabilities, skew KL to a teacher-student mixture",
          paper="Ko et al. 2024 (DistiLLM)",
          options=(Option("skew", "skew", float, 0.1, {"ge": 0.0, "lt": 1.0},
                          "skew of the mixture (0 = plain KL / reverse KL)"),
                   Option("skew_reverse", "reverse", bool, False, {},
                          "the skew reverse KL (SRKL) instead of the skew KL (SKL)")))
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
          paper="total variation distance as in Wen et al. 2023 (f-divergence KD)")
def tvd(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Total variation distance: alpha * T^2 * (1/2) sum_c |p_t^T - p_s^T| + (1 - alpha) * CE(y, s), in [0, T^2]."""
    log_p, log_q = tempered_log_probs(student_logits, teacher_logits, temperature)
    return {"teacher": 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1).mean(-1) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("dkd", reduction="batchmean", t2_scaling=True, mix="dkd",
          matches="the teacher's target-class and non-target-class probabilities, as two weighted terms",
          paper="Zhao et al. 2022 (decoupled KD)",
          options=(Option("dkd_alpha", "tckd", float, 1.0, {"ge": 0.0}, "weight of the target-class term TCKD",
                          to="weights"),
                   Option("dkd_beta", "nckd", float, 8.0, {"ge": 0.0}, "weight of the non-target-class term NCKD",
                          to="weights"),
                   Option("dkd_warmup_epochs", "warmup_epochs", float, 20.0, {"ge": 0.0},
                          "the teacher terms' weight grows as min(epoch / this, 1) (0 = off)", to="weights")))
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
        log_p = tempered_log_softmax(z, temperature)
        return torch.cat([log_p.gather(-1, target), log_p.masked_fill(mask, -math.inf).logsumexp(-1, True)], -1)

    def non_target_log(z):  # the target's log 0 set to 0 in both: its KL term is 1 * (0 - 0) = 0
        return tempered_log_softmax(z.masked_fill(mask, -math.inf), temperature).masked_fill(mask, 0.0)

    tckd = kl_logs(binary_log(teacher_logits), binary_log(student_logits))
    nckd = kl_logs(non_target_log(teacher_logits), non_target_log(student_logits))
    return {"tckd": tckd * temperature**2, "nckd": nckd * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("dist", reduction="mean", t2_scaling=True, mix="dist",
          matches="the teacher's per-example and per-class probability correlations (Pearson)",
          paper="Huang et al. 2022 (DIST)",
          options=(Option("dist_beta", "inter", float, 1.0, {"ge": 0.0},
                          "weight of the inter-class (per example) correlation term", to="weights"),
                   Option("dist_gamma", "intra", float, 1.0, {"ge": 0.0},
                          "weight of the intra-class (per class, over the batch) term", to="weights")))
def dist(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """DIST (Huang et al. 2022): CE(y, s) + beta * inter + gamma * intra.

    inter = T^2 mean_i d_p(p_s,i, p_t,i) (each example's class distribution),
    intra = T^2 mean_c d_p(p_s,:c, p_t,:c) (each class's column over the batch),
    d_p = 1 - Pearson correlation, p = softmax(z / T). The paper's defaults are beta = gamma = 1
    (distill.dist_beta, dist_gamma); its code uses T = 4, beta = gamma = 2 on CIFAR-100.
    """
    log_p_t, log_p_s = tempered_log_probs(student_logits, teacher_logits, temperature)
    p_s, p_t = log_p_s.exp(), log_p_t.exp()
    return {"inter": pearson_distance(p_s, p_t, -1).mean(-1) * temperature**2,
            "intra": pearson_distance(p_s, p_t, -2).mean(-1) * temperature**2,
            "task": cross_entropy(student_logits, targets)}


@register("wttm", reduction="weighted_mean", t2_scaling=False, mix="wttm", combine_at_t1=True,
          matches="the power-transformed teacher by the untempered student, examples weighted",
          paper="Zheng & Yang 2024 (WTTM)",
          options=(Option("wttm_beta", "teacher", float, 1.0, {"ge": 0.0},
                          "weight of the weighted transformed-teacher term (CE weight 1)", to="weights"),))
def wttm(student_logits, teacher_logits, targets, *, temperature: float) -> dict:
    """Weighted transformed teacher matching (Zheng & Yang 2024): CE(y, s) + beta * mean_i U_i KL(p~_t,i || q_i)

    The teacher is power-transformed, p~_t = p_t^gamma / U with U = sum_c p_t,c^gamma and
    gamma = 1 / T (so p~_t = softmax(t / T)); the student q = softmax(s) has no temperature;
    U_i (larger for smoother teacher outputs) weighs each example. beta = distill.wttm_beta.
    An ensemble of teachers is combined at T = 1 (p_t), before the transform.
    """
    log_p = tempered_log_softmax(teacher_logits)
    log_u = (log_p / temperature).logsumexp(-1)   # log sum_c p_c^gamma
    per_example = kl_per_example(tempered_log_softmax(log_p, temperature), tempered_log_softmax(student_logits))
    return {"teacher": (log_u.exp() * per_example).mean(-1), "task": cross_entropy(student_logits, targets)}


@register("ctkd", reduction="batchmean", t2_scaling=True, temperature="learned",
          matches="the teacher's softened probabilities at a learned, adversarial temperature",
          paper="Li et al. 2023 (curriculum temperature KD)",
          options=(Option("ctkd_lambda", "lambda_max", float, 1.0, {"ge": 0.0},
                          "largest gradient-reversal strength on the learned temperature", to="temperature"),
                   Option("ctkd_loops", "loops", float, 10.0, {"ge": 0.0},
                          "epochs over which the reversal strength rises from 0 to ctkd_lambda", to="temperature")))
def ctkd(student_logits, teacher_logits, targets, *, temperature) -> dict:
    """Curriculum temperature KD (Li et al. 2023): kd at a learned T, T adversarial to the student.

    min_student max_T alpha * T^2 KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s); `temperature` is the
    tensor T = 1 + 20 sigmoid(GRL(theta, lambda)) of the objective's parameter theta (see
    distill.methods.objectives.ctkd_temperature; GRL: identity forward, gradient times -lambda backward),
    lambda rising from 0 to distill.ctkd_lambda over distill.ctkd_loops epochs (ctkd_reversal).
    """
    return kd(student_logits, teacher_logits, targets, temperature=temperature)


# ---------------------------------------------------------------- white-box (feature) methods


@register("fitnet", reduction="mean", t2_scaling=False, signal="features",
          matches="the teacher's intermediate features through learned projections (MSE)",
          paper="Romero et al. 2015 (FitNets)", temperature="none", options=FEATURE_OPTIONS)
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
          paper="Zagoruyko & Komodakis 2017 (AT)", temperature="none", options=FEATURE_OPTIONS)
def attention(student_logits, teacher_logits, targets, *, temperature: float = 1.0,
              student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Attention transfer: alpha * w * sum_l mean_(b, j) (a_s,l - a_t,l)^2 + (1 - alpha) * CE(y, s), a = attention_map."""
    transfer = sum((attention_map(s) - attention_map(t)).pow(2).mean()
                   for s, t in zip(student_features, teacher_features))
    return {"teacher": transfer * weight, "task": cross_entropy(student_logits, targets)}


@register("rkd", reduction="mean", t2_scaling=False, signal="features",
          matches="the distances and angles between examples in the teacher's feature space",
          paper="Park et al. 2019 (relational KD)", temperature="none", options=FEATURE_OPTIONS)
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


for _name, _formula, _record in LM_RECORDS:  # the language-model methods: distill.methods.lm_losses
    register(_name, **_record)(_formula)
