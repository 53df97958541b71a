"""Distillation losses, each a pure function of logits (or features) with its formula in the docstring.

    from distill.losses import METHODS
    out = METHODS["kd"](student_logits, teacher_logits, targets, temperature=4.0, alpha=0.9)
    out["loss"].backward()
    python -m distill.cli list methods

Every loss takes `(student_logits, teacher_logits, targets, *, temperature, alpha, **extra)`
and returns a dict of named tensors: `loss` (what is minimised), `kd_loss` (the teacher
term), `task_loss` (the label term). `distill.method` picks one by name; `LOSS_INFO[name]`
says how it reduces over the batch, whether the soft term is scaled by T^2, what teacher
signal it needs (`signal`: logits, features or none) and how `loss` mixes the two terms
(`mix`: alpha -> alpha * kd + (1 - alpha) * task; teacher_only -> kd; sum -> kd + task;
smoothing -> see label_smoothing).

Notation: p^T = softmax(z / T); KL(p || q) = sum_c p_c (log p_c - log q_c), averaged over the
batch ("batchmean"); CE(y, s) = -log softmax(s)_y averaged over the batch.

Choices made here (the born-again paper, Furlanello et al. 2018, uses T = 1 throughout):
- `ban` is the teacher term alone, T^2 * KL(p_t^T || p_s^T) (KL rather than CE to the
  teacher's distribution: same gradient, zero at a perfect match); alpha is ignored.
- `ban_l` is BAN+L, the unweighted sum T^2 * KL + CE(y, s); alpha is ignored.
- `cwtm`, `dkpp` mix with the label loss by alpha like kd; alpha = 1 is the paper's control.

`fused_kd` is a fast path of kd/ban/ban_l/tfkd_self: one autograd Function whose backward is
written out (tests compare it with `kd`). Faster still, and what the training loop uses when T
and alpha are constant: `kd_logit_gradient` gives d loss / d logits directly (no loss value,
no autograd node: the loop calls `logits.backward(gradient)`), and `kd_loss_sum` gives
the loss values afterwards, once per epoch, from the logits the steps kept.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

METHODS: dict[str, Callable[..., dict]] = {}

#: how each method reduces over the batch and whether the soft term is scaled by T^2;
#: written into every run's summary so that numbers from different code can be compared.
LOSS_INFO: dict[str, dict] = {}


def register(name: str, reduction: str, t2_scaling: bool, *, signal: str = "logits", mix: str = "alpha"):
    def add(fn):
        METHODS[name] = fn
        LOSS_INFO[name] = {"method": name, "reduction": reduction, "t2_scaling": t2_scaling,
                           "signal": signal, "mix": mix}
        return fn
    return add


def list_methods() -> list[str]:
    return [f"{name}: {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in METHODS.items()]


def mix_terms(method: str, kd_loss: torch.Tensor, task_loss: torch.Tensor, alpha: float) -> torch.Tensor:
    """`loss` from the teacher and label terms as `LOSS_INFO[method]["mix"]` says."""
    mix = LOSS_INFO[method]["mix"]
    if mix == "teacher_only":
        return kd_loss
    if mix == "sum":
        return kd_loss + task_loss
    return alpha * kd_loss + (1 - alpha) * task_loss


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch (batchmean)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def _kl_to_probs(student_logits, teacher_probs, temperature):
    """KL(p || softmax(s/T)), batchmean, for a given teacher distribution p (zeros allowed)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_p_s, teacher_probs, reduction="batchmean")


# ---------------------------------------------------------------- black-box (logits) methods


@register("kd", reduction="batchmean", t2_scaling=True)
def kd(student_logits, teacher_logits, targets, *, temperature: float, alpha: float) -> dict:
    """Hinton et al. 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, s)."""
    kd_loss = soft_kl(student_logits, teacher_logits, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


@register("ban", reduction="batchmean", t2_scaling=True, mix="teacher_only")
def ban(student_logits, teacher_logits, targets, *, temperature: float, alpha: float = 1.0) -> dict:
    """Born-again networks (Furlanello et al. 2018), teacher term only: T^2 * KL(p_t^T || p_s^T); alpha ignored."""
    kd_loss = soft_kl(student_logits, teacher_logits, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets).detach()  # logged, not trained on
    return {"loss": kd_loss, "kd_loss": kd_loss, "task_loss": task_loss}


@register("ban_l", reduction="batchmean", t2_scaling=True, mix="sum")
def ban_l(student_logits, teacher_logits, targets, *, temperature: float, alpha: float = 1.0) -> dict:
    """BAN+L: T^2 * KL(p_t^T || p_s^T) + CE(y, s), the unweighted sum; alpha ignored."""
    kd_loss = soft_kl(student_logits, teacher_logits, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": kd_loss + task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


@register("cwtm", reduction="weighted_sum", t2_scaling=False)
def cwtm(student_logits, teacher_logits, targets, *, temperature: float, alpha: float) -> dict:
    """Confidence-weighted by teacher max: alpha * sum_i w_i CE(argmax t_i, s_i) + (1 - alpha) * CE(y, s).

    w_i = max_c p_t,i^T / sum_j max_c p_t,j^T over the batch (T only shapes the weights;
    the paper uses T = 1). The weights are constants (no gradient flows to the teacher).
    """
    with torch.no_grad():
        confidence, teacher_class = F.softmax(teacher_logits / temperature, dim=1).max(dim=1)
        weights = confidence / confidence.sum()
    per_example = F.cross_entropy(student_logits, teacher_class, reduction="none")
    kd_loss = (weights * per_example).sum()
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


def permute_non_argmax(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each row's probabilities with the non-argmax entries randomly permuted (argmax stays put)."""
    keys = torch.rand(probs.shape, generator=generator, device=probs.device if generator is None
                      else generator.device).to(probs.device)
    top = probs.argmax(dim=1, keepdim=True)
    keys.scatter_(1, top, -1.0)  # the argmax sorts first, the rest in random order
    order = keys.argsort(dim=1)  # order[:, 0] = argmax; order[:, 1:] = a random arrangement of the others
    ranked = probs.sort(dim=1, descending=True).values  # ranked[:, 0] = the max
    return torch.zeros_like(probs).scatter(1, order, ranked)


@register("dkpp", reduction="batchmean", t2_scaling=True)
def dkpp(student_logits, teacher_logits, targets, *, temperature: float, alpha: float,
         generator: Optional[torch.Generator] = None) -> dict:
    """Dark knowledge with permuted predictions: alpha * T^2 * KL(perm(p_t^T) || p_s^T) + (1 - alpha) * CE(y, s).

    perm() moves each example's non-argmax teacher probabilities to randomly permuted
    classes (the argmax keeps its class and value), drawn from `generator`.
    """
    with torch.no_grad():
        permuted = permute_non_argmax(F.softmax(teacher_logits / temperature, dim=1), generator)
    kd_loss = _kl_to_probs(student_logits, permuted, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


@register("tfkd_self", reduction="batchmean", t2_scaling=True)
def tfkd_self(student_logits, teacher_logits, targets, *, temperature: float, alpha: float) -> dict:
    """Teacher-free KD, self-training (Yuan et al. 2020): kd with a pre-trained copy of the student as teacher."""
    return kd(student_logits, teacher_logits, targets, temperature=temperature, alpha=alpha)


def virtual_teacher_log_probs(targets: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """log p_v: correct_prob on the true class, (1 - correct_prob) / (C - 1) on each other class."""
    other = (1.0 - correct_prob) / (num_classes - 1)
    probs = torch.full((targets.shape[0], num_classes), other, device=targets.device)
    probs.scatter_(1, targets[:, None], correct_prob)
    return probs.log()


@register("tfkd_reg", reduction="batchmean", t2_scaling=True, signal="none")
def tfkd_reg(student_logits, teacher_logits, targets, *, temperature: float, alpha: float,
             correct_prob: float = 0.9) -> dict:
    """Teacher-free KD, virtual teacher (Yuan et al. 2020): alpha * T^2 * KL(p_v^T || p_s^T) + (1 - alpha) * CE(y, s).

    p_v^T = softmax(log p_v / T) with p_v = correct_prob on the true class and
    (1 - correct_prob) / (C - 1) elsewhere; `teacher_logits` is ignored.
    """
    virtual = virtual_teacher_log_probs(targets, student_logits.shape[1], correct_prob)
    kd_loss = soft_kl(student_logits, virtual, temperature) * temperature**2
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


@register("label_smoothing", reduction="mean", t2_scaling=False, signal="none", mix="smoothing")
def label_smoothing(student_logits, teacher_logits, targets, *, temperature: float = 1.0, alpha: float = 0.0,
                    smoothing: float = 0.1) -> dict:
    """Label smoothing (Szegedy et al. 2016): (1 - eps) * CE(y, s) + eps * CE(uniform, s); T, alpha ignored."""
    log_p = F.log_softmax(student_logits, dim=1)
    task_loss = -log_p.gather(1, targets[:, None]).mean()
    uniform_loss = -log_p.mean()  # mean over batch and classes = CE(uniform, s) averaged over the batch
    return {"loss": (1 - smoothing) * task_loss + smoothing * uniform_loss, "kd_loss": uniform_loss,
            "task_loss": task_loss}


# ---------------------------------------------------------------- white-box (feature) methods


@register("fitnet", reduction="mean", t2_scaling=False, signal="features")
def fitnet(student_logits, teacher_logits, targets, *, temperature: float = 1.0, alpha: float,
           student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """FitNets hints (Romero et al. 2015): alpha * w * sum_l mean((r_l(f_s,l) - f_t,l)^2) + (1 - alpha) * CE(y, s).

    `student_features` are already passed through the learned projections r_l (the
    objective owns them); the mean is over every element of the layer's output.
    """
    kd_loss = sum(F.mse_loss(s, t) for s, t in zip(student_features, teacher_features)) * weight
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: a = mean_c f_c^2 over channels, flattened, L2-normalised per example."""
    if features.dim() < 3:
        features = features.unsqueeze(-1)  # (B, C) -> one position per channel
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


@register("attention", reduction="mean", t2_scaling=False, signal="features")
def attention(student_logits, teacher_logits, targets, *, temperature: float = 1.0, alpha: float,
              student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Attention transfer: alpha * w * sum_l mean_(b, j) (a_s,l - a_t,l)^2 + (1 - alpha) * CE(y, s), a = attention_map."""
    kd_loss = sum((attention_map(s) - attention_map(t)).pow(2).mean()
                  for s, t in zip(student_features, teacher_features)) * weight
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


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
def rkd(student_logits, teacher_logits, targets, *, temperature: float = 1.0, alpha: float,
        student_features: list, teacher_features: list, weight: float = 1.0) -> dict:
    """Relational KD (Park et al. 2019): alpha * w * sum_l [huber(psi_D) + 2 huber(psi_A)] + (1 - alpha) * CE(y, s).

    psi_D: pairwise distances of the flattened features over the batch, divided by their
    mean; psi_A: cosines of the angles of all triplets; huber = smooth L1, mean over
    pairs/triplets. Weights 1 : 2 are the paper's 25 : 50.
    """
    kd_loss = 0.0
    for s, t in zip(student_features, teacher_features):
        s, t = s.flatten(1), t.flatten(1)
        kd_loss = kd_loss + F.smooth_l1_loss(_pairwise_distances(s), _pairwise_distances(t))
        kd_loss = kd_loss + 2.0 * F.smooth_l1_loss(_angles(s), _angles(t))
    kd_loss = kd_loss * weight
    task_loss = F.cross_entropy(student_logits, targets)
    return {"loss": alpha * kd_loss + (1 - alpha) * task_loss, "kd_loss": kd_loss, "task_loss": task_loss}


# ---------------------------------------------------------------- fused kd (the fast path)


class _FusedKD(torch.autograd.Function):
    """loss = w_kd * T^2 * (sum(H) - sum(P * log softmax(s/T))) / B + w_task * CE(y, s).

    Works class-major: the logits are transposed to (C, B) and `teacher_probs_cb` is (C, B),
    because on CPU torch's log_softmax over a short last dim (C = 10) costs about ten times
    more than over the first dim of the transposed tensor (measured: 46 vs 4 us for 128 x 10).
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_probs_cb, neg_entropy_sum, targets, temperature, w_kd, w_task, mass):
        batch = student_logits.shape[0]
        logits_cb = student_logits.t()
        log_p = torch.log_softmax(torch.stack([logits_cb * (1.0 / temperature), logits_cb]), dim=1)  # (2, C, B)
        log_p_soft, log_p_hard = log_p.unbind(0)
        cross = torch.dot(teacher_probs_cb.reshape(-1), log_p_soft.reshape(-1))
        picked = log_p_hard.gather(0, targets[None]).sum()
        # [loss, kd_loss, task_loss] = M @ [sum H, sum P log p_s^T, sum log p_s(y)] in one small product
        parts = torch.stack([neg_entropy_sum, cross, picked])
        loss, kd_loss, task_loss = (_mixing_matrix(temperature, w_kd, w_task, batch, parts) @ parts).unbind(0)
        ctx.save_for_backward(log_p, teacher_probs_cb, targets)
        ctx.constants = (temperature, w_kd, w_task, batch, mass)
        ctx.mark_non_differentiable(kd_loss, task_loss)
        return loss, kd_loss, task_loss

    @staticmethod
    def backward(ctx, grad_loss, _grad_kd, _grad_task):
        log_p, teacher_probs_cb, targets = ctx.saved_tensors
        temperature, w_kd, w_task, batch, mass = ctx.constants
        # d/ds [T^2 KL] = T (mass * softmax(s/T) - P); d/ds CE = softmax(s) - onehot(y); all / B
        probs_soft, probs_hard = log_p.exp().unbind(0)
        grad = teacher_probs_cb.mul(-w_kd * temperature / batch)
        grad.add_(probs_soft, alpha=w_kd * temperature * mass / batch)
        grad.add_(probs_hard, alpha=w_task / batch)
        grad.scatter_add_(0, targets[None], _constant_row(batch, -w_task / batch, grad))
        return grad.mul_(grad_loss).t().contiguous(), None, None, None, None, None, None, None


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _mixing_matrix(temperature, w_kd, w_task, batch, like) -> torch.Tensor:
    key = ("mix", temperature, w_kd, w_task, batch, like.dtype, like.device)
    if key not in _CONSTANTS:
        if len(_CONSTANTS) > 256:  # a temperature schedule makes many keys
            _CONSTANTS.clear()
        kd_row = [temperature**2 / batch, -(temperature**2) / batch, 0.0]
        task_row = [0.0, 0.0, -1.0 / batch]
        loss_row = [w_kd * a + w_task * b for a, b in zip(kd_row, task_row)]
        _CONSTANTS[key] = torch.tensor([loss_row, kd_row, task_row], dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def _constant_row(batch, value, like) -> torch.Tensor:
    key = ("row", batch, value, like.dtype, like.device)
    if key not in _CONSTANTS:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        _CONSTANTS[key] = torch.full((1, batch), value, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def fused_kd(student_logits: torch.Tensor, teacher_probs: torch.Tensor, neg_entropy_sum: torch.Tensor,
             targets: torch.Tensor, *, temperature: float, w_kd: float, w_task: float, mass: float = 1.0,
             class_major: bool = False) -> dict:
    """kd's value and gradient from precomputed teacher probabilities, in one autograd Function.

    `teacher_probs` P (B, C), or (C, B) with class_major=True, is p_t^T (or a sum of K teachers' p_t^T: one KL per teacher);
    `neg_entropy_sum` is sum over the batch (and teachers) of sum_c p log p, a constant; `mass`
    is each row's total probability (K when P sums K teachers).
    loss = w_kd * T^2 * KL + w_task * CE(y, s); kd: (w_kd, w_task) = (alpha, 1 - alpha).
    Backward: (w_kd * T * (mass * softmax(s/T) - P) + w_task * (softmax(s) - onehot(y))) / B.
    """
    teacher_probs_cb = teacher_probs.t() if class_major is False else teacher_probs
    loss, kd_loss, task_loss = _FusedKD.apply(student_logits, teacher_probs_cb, neg_entropy_sum, targets,
                                              float(temperature), float(w_kd), float(w_task), float(mass))
    return {"loss": loss, "kd_loss": kd_loss, "task_loss": task_loss}


#: methods whose loss is w_kd * T^2 * KL(p_t^T || p_s^T) + w_task * CE(y, s): they take the fused path
FUSED_WEIGHTS: dict[str, Callable[[float], tuple[float, float]]] = {
    "kd": lambda alpha: (alpha, 1.0 - alpha),
    "tfkd_self": lambda alpha: (alpha, 1.0 - alpha),
    "ban": lambda alpha: (1.0, 0.0),
    "ban_l": lambda alpha: (1.0, 1.0),
}


# ---------------------------------------------------------------- kd as a logit gradient (the fastest path)


def kd_gradient_targets(teacher_probs: torch.Tensor, targets: torch.Tensor, *, temperature: float,
                        w_kd: float, w_task: float) -> torch.Tensor:
    """Q = w_kd * T * P + w_task * onehot(y), (N, C): the part of the kd gradient that does not
    depend on the student, for every example at once (see kd_logit_gradient)."""
    q = teacher_probs * (w_kd * temperature)
    q[torch.arange(targets.shape[0], device=targets.device), targets] += w_task
    return q


def kd_gradient_constants(temperature: float, w_kd: float, w_task: float, mass: float, like: torch.Tensor):
    """(scale (2, 1, 1) = [1/T, 1], weights (1, 2) = [w_kd * T * mass, w_task]) for kd_logit_gradient."""
    scale = torch.tensor([[[1.0 / temperature]], [[1.0]]], dtype=like.dtype, device=like.device)
    weights = torch.tensor([[w_kd * temperature * mass, w_task]], dtype=like.dtype, device=like.device)
    return scale, weights


def kd_logit_gradient(student_logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                      weights: torch.Tensor, target_weight: float = 1.0) -> torch.Tensor:
    """d/ds of w_kd * T^2 * KL(P || softmax(s/T)) + w_task * CE(y, s), batch-averaged, as (B, C):

        (w_kd * T * (mass * softmax(s/T) - P) + w_task * (softmax(s) - onehot(y))) / B
      = (weights @ [softmax(s/T); softmax(s)] - target_weight * Q) / B

    with `targets` Q (B, C) the batch's rows of kd_gradient_targets (or w_kd * T * P alone, the
    one-hot then subtracted by the caller) and (scale, weights) from kd_gradient_constants.
    Three ops: a product, one softmax over both temperatures, one matrix product."""
    batch, classes = student_logits.shape
    # detached: the ops below would otherwise record autograd nodes that nothing uses
    probs = torch.softmax(student_logits.detach() * scale, dim=-1)  # (2, B, C)
    grad = torch.addmm(targets.reshape(1, -1), weights, probs.view(2, -1),
                       beta=-target_weight / batch, alpha=1.0 / batch)
    return grad.view(batch, classes)


def kd_loss_sum(student_logits: torch.Tensor, teacher_probs_cb: torch.Tensor, neg_entropy_sum: torch.Tensor,
                targets: torch.Tensor, *, temperature: float, w_kd: float, w_task: float) -> torch.Tensor:
    """Sum over the examples of w_kd * T^2 * (sum_c P log P - sum_c P log softmax(s/T)) + w_task * CE(y, s).

    `student_logits` (N, C); `teacher_probs_cb` P class-major (C, N) (a sum of K teachers'
    distributions for one KL per teacher); `neg_entropy_sum` sum over examples of sum_c P log P.
    Divided by N it is kd's `loss` over those examples: the once-per-epoch loss of the gradient
    path's steps (kd_loss_weights + kd_loss_sum_weighted where the weights are kept, which is
    also better conditioned: each KL term is formed before the sum)."""
    logits_cb = student_logits.to(teacher_probs_cb.dtype).t().contiguous()
    scale = torch.tensor([[[1.0 / temperature]], [[1.0]]], dtype=logits_cb.dtype, device=logits_cb.device)
    log_p = torch.log_softmax(logits_cb * scale, dim=1)  # (2, C, N)
    cross = torch.dot(teacher_probs_cb.reshape(-1), log_p[0].reshape(-1))
    picked = log_p[1].gather(0, targets[None]).sum()
    return (w_kd * temperature**2) * (neg_entropy_sum - cross) - w_task * picked


def kd_loss_weights(teacher_probs_cb: torch.Tensor, targets: torch.Tensor, neg_entropy_cb: torch.Tensor, *,
                    temperature: float, w_kd: float, w_task: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, A), each (2, C, N) class-major, for kd_loss_sum_weighted: W = [w_kd T^2 P, w_task onehot(y)],
    A = [w_kd T^2 P log P (the elementwise terms `neg_entropy_cb`), 0]."""
    scale = w_kd * temperature**2
    onehot = torch.zeros_like(teacher_probs_cb)
    onehot[targets, torch.arange(targets.shape[0], device=targets.device)] = w_task
    return (torch.stack([teacher_probs_cb * scale, onehot]),
            torch.stack([neg_entropy_cb * scale, torch.zeros_like(onehot)]))


def kd_loss_sum_weighted(student_logits: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """sum(A - W * [log softmax(s/T); log softmax(s)]) for (N, C) logits and (W, A) from
    kd_loss_weights: the summed kd loss, each KL term w_kd T^2 P (log P - log q) formed before
    the sum. Class-major, one log_softmax for both temperatures, one fused multiply-subtract."""
    logits_cb = student_logits.to(weights.dtype).t().contiguous()
    scale = torch.tensor([[[1.0 / temperature]], [[1.0]]], dtype=logits_cb.dtype, device=logits_cb.device)
    log_p = torch.log_softmax(logits_cb * scale, dim=1)  # (2, C, N)
    return torch.addcmul(offsets, weights, log_p, value=-1.0).sum()
