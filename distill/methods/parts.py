"""Building blocks of the loss formulas in `distill.methods.losses` (kept apart so that file reads as the list
of methods): the tempered log-softmax and KL from log-probabilities (written once: every formula, the
teacher signals and the fidelity figures read them), DKPP's permutation, TF-KD's virtual teacher,
logit standardisation, DIST's Pearson distance, attention maps and RKD's relations. Reductions are
over the last dims (class -1, batch -2).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE(y, s) = -log softmax(s)_y, averaged over the batch (dim -2). One (B, C) batch, or K models'
    (K, B, C) batches (one mean per model), take torch's fused F.cross_entropy: the same formula in
    one kernel (test_losses holds them against the written-out line below)."""
    if logits.dim() == 2:
        if _narrow(logits):  # the same loss in the (1, C, B) layout
            return F.cross_entropy(logits.t().unsqueeze(0), targets.unsqueeze(0))
        return F.cross_entropy(logits, targets)
    if logits.dim() == 3:  # (K, C, B) is F.cross_entropy's (N, C, d) layout
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1)
    return -tempered_log_softmax(logits).gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(-1)


def permute_non_argmax(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each row's probabilities with the non-argmax entries randomly permuted (argmax stays put)."""
    device = probs.device if generator is None else generator.device
    keys = torch.rand(probs.shape, generator=generator, device=device).to(probs.device)
    top = probs.argmax(dim=1, keepdim=True)
    keys.scatter_(1, top, -1.0)  # the argmax sorts first, the rest in random order
    order = keys.argsort(dim=1)  # order[:, 0] = argmax; order[:, 1:] = a random arrangement of the others
    ranked = probs.sort(dim=1, descending=True).values  # ranked[:, 0] = the max
    return torch.zeros_like(probs).scatter(1, order, ranked)


def virtual_teacher_probs(targets: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """Tf-KD's u: correct_prob on the true class, (1 - correct_prob) / (C - 1) on each other class."""
    other = (1.0 - correct_prob) / (num_classes - 1)
    probs = torch.full((*targets.shape, num_classes), other, device=targets.device)
    return probs.scatter_(-1, targets.unsqueeze(-1), correct_prob)


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Logit standardisation (Sun et al. 2024): Z(z) = (z - mean_c z) / (std_c z + 1e-7), per example.

    std is the unbiased (n - 1) standard deviation, as in the paper's code; softmax(Z(z) / T)
    then follows. `distill.standardize: true` applies it to student and teacher logits.
    """
    mean = logits.mean(-1, keepdim=True)
    return (logits - mean) / (logits.std(-1, keepdim=True) + 1e-7)


def tempered_log_softmax(logits: torch.Tensor, temperature=1.0) -> torch.Tensor:
    """log p^T = log softmax(z / T) over the classes (the last dim): every tempered distribution of the
    losses, the teacher signals and the fidelity figures is this line (p^T: its exp)."""
    z = logits if isinstance(temperature, (int, float)) and temperature == 1 else logits / temperature
    if _narrow(z):  # the same log-softmax, taken along a leading dim of the transposed view
        return F.log_softmax(z.transpose(-1, -2), dim=-2).transpose(-1, -2)
    return F.log_softmax(z, dim=-1)


def _narrow(logits: torch.Tensor) -> bool:
    """Fewer than 16 classes on the CPU: torch's CPU (log-)softmax along the last dim falls back to a scalar loop
    below one vector of 16 floats, 4-5x slower than along a leading dim (a transposed view), e.g. 13 vs 3 us for
    a (128, 10) batch (one thread); the result is the same function, to float rounding."""
    return logits.shape[-1] < 16 and logits.dim() >= 2 and logits.device.type == "cpu"


def tempered_log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """(log p_t^T, log p_s^T): the teacher's and the student's log-probabilities at temperature T."""
    return tempered_log_softmax(teacher_logits, temperature), tempered_log_softmax(student_logits, temperature)


def kl_per_example(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_c p_c (log p_c - log q_c) from log-probabilities, one value per example."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_logs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities, summed over classes, averaged over the batch (batchmean)."""
    return kl_per_example(log_p, log_q).mean(-1)


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) from log a and log b, for 0 <= w <= 1."""
    log_w = math.log(weight_a) if weight_a > 0 else -math.inf
    log_1w = math.log(1.0 - weight_a) if weight_a < 1 else -math.inf
    return torch.logaddexp(log_a + log_w, log_b + log_1w)


def generalized_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD's generalised JSD (Agarwal et al. 2024, TRL's `generalized_jsd_loss`), batchmean:
    JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q, P the teacher
    (log_p), Q the student (log_q); at the ends, as TRL: beta = 0 is KL(P || Q), beta = 1 is KL(Q || P)."""
    if beta == 0:
        return kl_logs(log_p, log_q)
    if beta == 1:
        return kl_logs(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)
    return beta * kl_logs(log_p, log_m) + (1.0 - beta) * kl_logs(log_q, log_m)


def pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """1 - Pearson correlation of a and b along `dim` (DIST's d_p), one value per other index."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return 1.0 - (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(1e-8)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: a = mean_c f_c^2 over channels, flattened, L2-normalised per example."""
    if features.dim() < 3:
        features = features.unsqueeze(-1)  # (B, C) -> one position per channel
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """||e_i - e_j|| for all pairs, normalised by their mean over i != j (Park et al. 2019, psi_D)."""
    d = (e[:, None, :] - e[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    off = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    d = d * off  # the diagonal (clamped) is exactly zero
    return d / d[off].mean().clamp_min(1e-12)


def angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between e_i - e_j and e_k - e_j, for all (i, j, k) (psi_A)."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # diff[j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def _kd_forward(student, teacher, targets, temperature) -> tuple:
    """kd's two terms, and their gradients wrt the student for a unit weight each (what backward scales):
    d/ds T^2 KL(p || softmax(s / T)) = T (softmax(s / T) - p); d/ds CE(y, s) = softmax(s) - onehot(y); both / n."""
    n = student.shape[-2]
    log_q = tempered_log_softmax(student, temperature)
    log_p = tempered_log_softmax(teacher, temperature)
    log_s = tempered_log_softmax(student)
    p = log_p.exp()
    kl = (p * (log_p - log_q)).sum(-1).mean(-1) * temperature**2
    ce = -log_s.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(-1)
    grad_kl = (log_q.exp() - p).mul_(temperature / n)
    grad_ce = log_s.exp().scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(log_s[..., :1], -1.0).expand(
        *targets.shape, 1)).div_(n)
    return kl, ce, grad_kl, grad_ce


def _kd_backward(ctx, grad_kl, grad_ce, *_):
    d_kl, d_ce = ctx.saved_tensors
    return d_kl * grad_kl.view(*grad_kl.shape, 1, 1) + d_ce * grad_ce.view(*grad_ce.shape, 1, 1), None, None, None


class _KDTerms(torch.autograd.Function):
    """kd's two terms in one autograd node (the fast path of `kd_terms`)."""

    @staticmethod
    def forward(ctx, student, teacher, targets, temperature):
        kl, ce, d_kl, d_ce = _kd_forward(student, teacher, targets, temperature)
        ctx.save_for_backward(d_kl, d_ce)
        return kl, ce

    backward = staticmethod(_kd_backward)


class _KDTermsVmap(torch.autograd.Function):
    """The same under torch.func.vmap (K stacked models, distill.methods.stacked): functorch needs this
    form, whose every call binds its arguments by inspect.signature (slow, so not the one-model path)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(student, teacher, targets, temperature):
        return _kd_forward(student, teacher, targets, temperature)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[2:])
        ctx.save_for_backward(*output[2:])

    backward = staticmethod(_kd_backward)


def kd_terms(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature) -> tuple:
    """(T^2 KL(p_t^T || p_s^T), CE(y, s)), kd's terms (distill.methods.losses.kd), each averaged over the
    batch, with their gradient wrt the student logits written out in one node: alpha T (softmax(s / T) - p_t)
    + (1 - alpha) (softmax(s) - onehot(y)) per example once mixed, instead of about a dozen autograd nodes.
    No gradient reaches the teacher or T (`Distill` uses it only when none is asked for).
    tests/test_stacked.py holds values and gradients against the plain formula."""
    if torch._C._functorch.is_batchedtensor(student):  # under vmap
        return _KDTermsVmap.apply(student, teacher, targets, temperature)[:2]
    return _KDTerms.apply(student, teacher, targets, temperature)
