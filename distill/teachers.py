"""Teacher signals and the distillation objective that the engine minimises.

    distill train configs/mnist1d-kd.yaml seeds=[0,1,2,3,4]             # teacher section: trained first
    distill train configs/mnist1d-mlp.yaml distill.teacher=runs/cnn/abc  # a finished run directory
    distill train configs/mnist1d-mlp.yaml distill.teacher=runs/a,runs/b distill.combine=mean_logits
    distill train configs/mnist1d-mlp.yaml distill.teacher=preds.npy     # black-box: logits or probabilities

From Python (born-again generations, ensemble members already in memory):

    objective, loss_info = make_objective(cfg.distill, [teacher], data, device)
    engine.fit(student, data, cfg.train, seed=0, objective=objective)

A teacher signal gives per-teacher logits (K, B, C) for a batch. They are combined in the
objective at the current temperature T: `mean_probs` -> p_t = mean_k softmax(z_k / T);
`mean_logits` -> p_t = softmax(mean_k z_k / T); `per_teacher_kl` -> one KL per teacher, summed.
Probabilities from a predictions file become log-probabilities, which act as logits.

Teacher-logit cache (automatic, logged in loss_info["cache"] and once on stderr): with
`dataset.augment=none` every teacher's logits for the whole train split are computed once
(eval mode, inference mode) and indexed by the batch's `idx`; otherwise the teacher runs
online (eval mode, no grad) on exactly the augmented batch the student sees. White-box
methods (fitnet, attention, rkd) always run the teacher online, with forward hooks on the
named layers. kd, ban, ban_l and tfkd_self at constant T and alpha give the training loop
their logit gradient (`DistillObjective.gradient_step`, see losses.kd_logit_gradient) and
their loss values once per epoch (`deferred_loss_sum`); with a schedule they take
`losses.fused_kd`. With a cache and a constant T the teacher's p_t^T for the whole train
split is computed once per T value.

T and alpha follow `value_at(schedule, start, end, progress)`: constant, linear or cosine
from `distill.temperature` to `distill.temperature_end` (same for alpha), e.g. hot early,
cool late.

Every check of the input (a path that does not exist, a checkpoint that does not fit the
model, a predictions file with the wrong rows or columns, a layer that does not exist)
raises a one-line `UserError`/`ConfigError` before `runner.train` creates a run directory.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .config import Config, DistillConfig, ModelConfig, TrainConfig, from_dict, read_yaml, to_dict
from .errors import ConfigError, UserError

#: loss_info of a model trained from labels alone
CROSS_ENTROPY_INFO = {"method": "cross_entropy", "reduction": "mean", "t2_scaling": False, "teacher": None}

_LOGGED: set[str] = set()


def log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        print(f"distill: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- schedules (pure functions)


def value_at(schedule: str, start: float, end: Optional[float], progress: float) -> float:
    """A value that goes from `start` to `end` as training `progress` goes from 0 to 1.

    constant (or end = null): start; linear: start + (end - start) * progress;
    cosine: end + (start - end) * (1 + cos(pi * progress)) / 2.
    """
    if end is None or schedule == "constant" or start == end:
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


# ---------------------------------------------------------------- teacher signals


class ModelSignal:
    """Teachers in memory. `logits(x, idx)` -> (K, B, C), from the cache or run online."""

    def __init__(self, models: list[nn.Module], data, device, cached: bool):
        self.models = list(models)
        self.data = data
        self.device = device
        self.cached = cached
        self.table: Optional[torch.Tensor] = None  # (K, N, C) logits of the train split when cached
        self.ready = False

    def prepare(self) -> None:
        """Move the teachers to the device, put them in eval mode, fill the cache. Called at the
        first step, so that a teacher trained after the objective was built is the one used."""
        if self.ready:
            return
        from .engine import predict

        for model in self.models:
            model.to(self.device).eval()
        if self.cached:
            with torch.inference_mode():
                table = torch.stack([predict(m, self.data, "train") for m in self.models])
            self.table = table.clone()  # a normal tensor: usable by autograd outside inference mode
        self.ready = True

    def logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[:, idx]
        with torch.no_grad():
            if len(self.models) == 1:  # a view, not a copy
                return self.models[0](x).float().unsqueeze(0)
            return torch.stack([m(x).float() for m in self.models])


class FileSignal:
    """A teacher's predictions read from a file: (1, N, C) logits for the train split."""

    cached = True

    def __init__(self, logits_train: torch.Tensor):
        self.table = logits_train[None]
        self.models: list[nn.Module] = []

    def prepare(self) -> None:
        pass

    def logits(self, x, idx):
        return self.table[:, idx]


class NoSignal:
    cached = False
    table = None
    models: list[nn.Module] = []

    def prepare(self) -> None:
        pass


def combine_probs(teacher_logits: torch.Tensor, temperature: float, combine: str, elementwise: bool = False):
    """(K, B, C) logits -> (P, per-example sum_c P log P summed over teachers, mass, log-probs or None).

    mean_probs: P = mean_k softmax(z_k/T); mean_logits: P = softmax(mean_k z_k / T);
    per_teacher_kl: P = sum_k softmax(z_k/T) (mass K: one KL per teacher). elementwise=True
    gives the P log P terms (B, C) before the sum over classes.
    """
    k = teacher_logits.shape[0]
    reduce = (lambda terms: terms) if elementwise else (lambda terms: terms.sum(-1))
    if k == 1 or combine == "mean_logits":
        log_p = F.log_softmax(teacher_logits.mean(0) * (1.0 / temperature), dim=1)
        probs = log_p.exp()
        return probs, reduce(probs * log_p), 1.0, log_p
    log_p_each = F.log_softmax(teacher_logits * (1.0 / temperature), dim=2)
    if combine == "mean_probs":
        log_p = torch.logsumexp(log_p_each, dim=0) - math.log(k)
        probs = log_p.exp()
        return probs, reduce(probs * log_p), 1.0, log_p
    probs_each = log_p_each.exp()
    return probs_each.sum(0), reduce((probs_each * log_p_each).sum(0)), float(k), None


def class_major_probs(teacher_logits: torch.Tensor, temperature: float, combine: str):
    """combine_probs for the fused kd: (P as (C, B), sum over the batch of sum_c P log P, mass).

    One teacher (or mean_logits) is normalised class-major, where torch's CPU log_softmax is
    several times faster than over a short last dimension, and the entropy term is one dot
    product; other combinations go through combine_probs."""
    if teacher_logits.shape[0] == 1 or combine == "mean_logits":
        z = teacher_logits[0] if teacher_logits.shape[0] == 1 else teacher_logits.mean(0)
        log_p = F.log_softmax(z.t() * (1.0 / temperature), dim=0)   # (C, B)
        probs = log_p.exp()
        return probs, torch.dot(probs.flatten(), log_p.flatten()), 1.0
    probs, neg_entropy, mass, _ = combine_probs(teacher_logits, temperature, combine)
    return probs.t().contiguous(), neg_entropy.sum(), mass


def effective_logits(teacher_logits: torch.Tensor, temperature: float, combine: str) -> torch.Tensor:
    """One (B, C) tensor z with softmax(z / T) = the combined teacher distribution at T."""
    if teacher_logits.shape[0] == 1 or combine == "mean_logits":
        return teacher_logits.mean(0)
    log_p = torch.logsumexp(F.log_softmax(teacher_logits / temperature, dim=2), dim=0)
    return log_p * temperature  # softmax(log p) = p


# ---------------------------------------------------------------- white-box helpers


def resolve_layers(model: nn.Module, names: list[str], key: str, who: str) -> list[nn.Module]:
    """Modules of `model` named `names`; a ConfigError naming the available layers otherwise."""
    modules = dict(getattr(model, "_orig_mod", model).named_modules())
    for name in names:
        if name not in modules or name == "":
            available = ", ".join(n for n in modules if n)
            raise ConfigError(f"{key}: the {who} has no layer {name!r}; its layers are {available}")
    return [modules[n] for n in names]


def capture(model: nn.Module, layers: list[str], x: torch.Tensor, key: str, who: str):
    """model(x) and the outputs of the named layers, in order (forward hooks, removed after)."""
    found: dict[int, torch.Tensor] = {}
    modules = resolve_layers(model, layers, key, who)
    handles = [m.register_forward_hook(lambda _m, _i, out, i=i: found.__setitem__(i, out))
               for i, m in enumerate(modules)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    feats = []
    for i, name in enumerate(layers):
        out = found.get(i)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"{key}: the {who}'s layer {name!r} did not give one tensor in its forward pass; "
                              f"pick another layer")
        feats.append(out)
    return logits, feats


class Projection(nn.Module):
    """FitNet regressor: a 1x1 conv when the layouts agree, else flatten -> Linear -> reshape."""

    def __init__(self, student_shape: tuple, teacher_shape: tuple):
        super().__init__()
        self.teacher_shape = tuple(teacher_shape)
        same_layout = len(student_shape) == len(teacher_shape) and student_shape[1:] == teacher_shape[1:]
        if same_layout and len(student_shape) == 2:
            self.map = nn.Conv1d(student_shape[0], teacher_shape[0], 1)
            self.flat = False
        elif same_layout and len(student_shape) == 3:
            self.map = nn.Conv2d(student_shape[0], teacher_shape[0], 1)
            self.flat = False
        else:
            self.map = nn.Linear(math.prod(student_shape), math.prod(teacher_shape))
            self.flat = True

    def forward(self, features):
        if self.flat:
            return self.map(features.flatten(1)).view(-1, *self.teacher_shape)
        return self.map(features)


# ---------------------------------------------------------------- the objective


class DistillObjective(nn.Module):
    """objective(model, x, y, idx, progress) -> {loss, logits, kd_loss, task_loss, temperature, alpha}.

    An nn.Module so that FitNet's projections are trained and checkpointed with the student;
    the teachers are kept out of its parameters (plain attributes) and never trained.
    """

    def __init__(self, cfg: DistillConfig, signal, combine: str, seed: int = 0, projections=None,
                 teacher_layers: Optional[list[str]] = None):
        super().__init__()
        self.cfg = cfg
        self.method = cfg.method
        self.info = losses.LOSS_INFO[cfg.method]
        self.signal = signal
        self.combine = combine
        self.seed = seed
        self.projections = projections  # nn.ModuleList or None
        self.student_layers = list(cfg.layers)
        self.teacher_layers = teacher_layers or list(cfg.layers)
        self.fused = cfg.method in losses.FUSED_WEIGHTS
        self.constant_temperature = cfg.temperature_end is None or cfg.temperature_schedule == "constant"
        self._table_key: Optional[float] = None  # T of the precomputed P and entropy below
        self._table_probs = self._table_neg_entropy = None
        self._table_mass = 1.0
        self.train_targets: Optional[torch.Tensor] = None  # labels of the train split (set by _build)
        constant_alpha = cfg.alpha_end is None or cfg.alpha_schedule == "constant" or cfg.alpha_end == cfg.alpha
        # the training loop's gradient path (see gradient_step): kd-family losses at constant T and alpha
        self.gradient_path = self.fused and self.constant_temperature and constant_alpha
        self._gradient_parts: Optional[tuple] = None
        self._loss_weights: Optional[tuple] = None  # kd_loss_weights of the whole train split, built once

    def schedule(self, progress: float) -> tuple[float, float]:
        c = self.cfg
        return (value_at(c.temperature_schedule, c.temperature, c.temperature_end, progress),
                value_at(c.alpha_schedule, c.alpha, c.alpha_end, progress))

    def _teacher_table(self, temperature: float):
        """p_t^T and sum_c p log p for every train example, once per value of T (cached signals)."""
        if self._table_key != temperature:
            probs, neg_entropy, mass, _ = combine_probs(self.signal.table, temperature, self.combine)
            # class-major (C, N): a batch's columns come out as the (C, B) block fused_kd works on
            self._table_probs, self._table_neg_entropy, self._table_mass = probs.t().contiguous(), neg_entropy, mass
            self._table_key = temperature
        return self._table_probs, self._table_neg_entropy, self._table_mass

    def forward(self, model, x, y, idx, progress):
        self.signal.prepare()
        temperature, alpha = self.schedule(progress)
        if self.info["signal"] == "features":
            return self._features(model, x, y, temperature, alpha)
        logits = model(x)
        student = logits if logits.dtype == torch.float32 else logits.float()
        if self.info["signal"] == "none":
            extra = ({"correct_prob": self.cfg.correct_prob} if self.method == "tfkd_reg"
                     else {"smoothing": self.cfg.smoothing})
            out = losses.METHODS[self.method](student, None, y, temperature=temperature, alpha=alpha, **extra)
        elif self.fused:
            if self.signal.table is not None and self.constant_temperature:
                table_probs, table_neg_entropy, mass = self._teacher_table(temperature)
                probs = table_probs.index_select(1, idx)
                neg_entropy = table_neg_entropy.index_select(0, idx).sum()
            else:
                probs, neg_entropy, mass = class_major_probs(self.signal.logits(x, idx), temperature, self.combine)
            w_kd, w_task = losses.FUSED_WEIGHTS[self.method](alpha)
            out = losses.fused_kd(student, probs, neg_entropy, y, temperature=temperature, w_kd=w_kd,
                                  w_task=w_task, mass=mass, class_major=True)
        else:
            out = self._generic(student, self.signal.logits(x, idx), y, temperature, alpha, progress)
        out["logits"] = logits
        return out

    def _gradient_setup(self, like: torch.Tensor) -> tuple:
        """(Q table (N, C) or None when online, scale, weights, T, w_kd, w_task), built once."""
        if self._gradient_parts is None:
            temperature, alpha = self.schedule(0.0)
            w_kd, w_task = losses.FUSED_WEIGHTS[self.method](alpha)
            table = None
            if self.signal.table is not None:
                probs_cb, _, mass = self._teacher_table(temperature)
                targets = self.train_targets.to(probs_cb.device)
                table = losses.kd_gradient_targets(probs_cb.t(), targets, temperature=temperature, w_kd=w_kd,
                                                   w_task=w_task).contiguous()
            else:
                mass = float(len(self.signal.models)) if self.combine == "per_teacher_kl" else 1.0
            scale, weights = losses.kd_gradient_constants(temperature, w_kd, w_task, mass, like)
            self._gradient_parts = (table, scale, weights, temperature, w_kd, w_task)
        return self._gradient_parts

    @property
    def gradient_ready(self) -> bool:
        """Whether gradient_step applies (a kd-family method at constant T and alpha)."""
        return self.gradient_path and self.train_targets is not None

    def gradient_rows(self) -> Optional[torch.Tensor]:
        """The per-example table the training loop gathers with each batch for gradient_step
        (the cached Q of kd_gradient_targets, (N, C)), or None."""
        if not self.gradient_ready:
            return None
        self.signal.prepare()
        if self.signal.table is None:
            return None
        return self._gradient_setup(self.signal.table)[0]

    def gradient_step(self, model, x, y, idx, progress, rows: Optional[torch.Tensor] = None) -> Optional[dict]:
        """The training loop's fast path: {logits, logits_grad, keep} instead of {loss, logits}.

        The loop calls `logits.backward(logits_grad)` (losses.kd_logit_gradient: no loss value and
        no autograd node in the step) and passes every step's `keep` to `deferred_loss_sum` at the
        end of the epoch, which computes the loss values from the logits the steps kept. `rows`:
        the batch's rows of `gradient_rows()`, when the loop gathered them with the batch. None
        where it does not apply (a T or alpha schedule, a method outside the kd family); the
        training loop uses it in fp32 only. The result equals `forward` + backward to float
        rounding (tests/test_teachers.py)."""
        if not self.gradient_ready:
            return None
        self.signal.prepare()
        logits = model(x)
        student = logits if logits.dtype == torch.float32 else logits.float()
        table, scale, weights, temperature, w_kd, w_task = self._gradient_setup(student)
        if table is not None:  # cached: Q = w_kd T P + w_task onehot(y) of the batch's examples
            targets = rows if rows is not None else table.index_select(0, idx)
            grad = losses.kd_logit_gradient(student, targets, scale, weights)
            return {"logits": logits, "logits_grad": grad if student is logits else grad.to(logits.dtype),
                    "keep": idx}
        teacher_logits = self.signal.logits(x, idx)  # online: (K, B, C)
        if teacher_logits.shape[0] == 1:
            probs = torch.softmax(teacher_logits[0] * (1.0 / temperature), dim=-1)
        else:
            probs = combine_probs(teacher_logits, temperature, self.combine)[0]
        grad = losses.kd_logit_gradient(student, probs.float(), scale, weights, target_weight=w_kd * temperature)
        if w_task:  # - w_task * onehot(y) / B
            grad.scatter_add_(1, y[:, None], losses._constant_row(y.shape[0], -w_task / y.shape[0], grad).t())
        return {"logits": logits, "logits_grad": grad if student is logits else grad.to(logits.dtype),
                "keep": teacher_logits}

    def deferred_loss_sum(self, kept: list, outputs: list, labels: list) -> torch.Tensor:
        """Sum over the epoch's examples of the kd loss, from the logits of each gradient step
        (`outputs`), its labels, and its `keep` (batch positions when cached, teacher logits online).

        Cached, with the positions of a whole epoch (every train example once, as the training
        loops keep them): the logits are put back in the train split's order and meet loss
        weights computed once (no gather of the teacher's table each epoch)."""
        table, _, _, temperature, w_kd, w_task = self._gradient_setup(outputs[0])
        student = torch.cat(outputs)
        if table is not None:
            positions = torch.cat(kept)
            probs_cb, neg_entropy, _ = self._teacher_table(temperature)
            if positions.shape[0] == table.shape[0]:  # a whole epoch: a permutation of the split
                if self._loss_weights is None:
                    terms = combine_probs(self.signal.table, temperature, self.combine, elementwise=True)[1]
                    self._loss_weights = losses.kd_loss_weights(
                        probs_cb, self.train_targets.to(probs_cb.device), terms.t(), temperature=temperature,
                        w_kd=w_kd, w_task=w_task)
                in_order = torch.empty_like(student).index_copy_(0, positions, student)
                return losses.kd_loss_sum_weighted(in_order, *self._loss_weights, temperature)
            probs_cb, neg_entropy_sum = probs_cb.index_select(1, positions), neg_entropy.index_select(0, positions).sum()
        else:
            probs, neg_entropy, _, _ = combine_probs(torch.cat(kept, dim=1), temperature, self.combine)
            probs_cb, neg_entropy_sum = probs.t(), neg_entropy.sum()
        return losses.kd_loss_sum(student, probs_cb, neg_entropy_sum, torch.cat(labels),
                                  temperature=temperature, w_kd=w_kd, w_task=w_task)

    def _generic(self, student, teacher_logits, y, temperature, alpha, progress):
        extra = {}
        if self.method == "dkpp":
            # deterministic per step (and per seed), whatever happened before: resumable
            step_seed = (self.seed * 1_000_003 + int(round(progress * 1e9))) % 2**63
            extra["generator"] = torch.Generator(device=student.device).manual_seed(step_seed)
        fn = losses.METHODS[self.method]
        if self.combine == "per_teacher_kl" and teacher_logits.shape[0] > 1:
            outs = [fn(student, z, y, temperature=temperature, alpha=alpha, **extra) for z in teacher_logits]
            kd_loss = sum(o["kd_loss"] for o in outs)
            task_loss = outs[0]["task_loss"]
            return {"loss": losses.mix_terms(self.method, kd_loss, task_loss, alpha), "kd_loss": kd_loss,
                    "task_loss": task_loss}
        teacher = effective_logits(teacher_logits, temperature, self.combine)
        return fn(student, teacher, y, temperature=temperature, alpha=alpha, **extra)

    def _features(self, model, x, y, temperature, alpha):
        logits, student_feats = capture(model, self.student_layers, x, "distill.layers", "student")
        teacher = self.signal.models[0]
        with torch.no_grad():
            _, teacher_feats = capture(teacher, self.teacher_layers, x, "distill.teacher_layers", "teacher")
        if self.projections is not None:
            student_feats = [p(f) for p, f in zip(self.projections, student_feats)]
        student = logits if logits.dtype == torch.float32 else logits.float()
        out = losses.METHODS[self.method](student, None, y, temperature=temperature, alpha=alpha,
                                          student_features=student_feats,
                                          teacher_features=[f.float() for f in teacher_feats],
                                          weight=self.cfg.feature_weight)
        out["logits"] = logits
        return out


def _cache_decision(distill_cfg: DistillConfig, signal_kind: str, data, cache: str) -> tuple[bool, str]:
    """(cached?, why) for a teacher signal; cache = auto, cached or online (forced, e.g. benchmarks)."""
    info = losses.LOSS_INFO[distill_cfg.method]
    if signal_kind == "file":
        why = "predictions file: one fixed output per training example"
        if data.augment != "none":
            why += f" (dataset.augment={data.augment}: the teacher does not see the augmented batch)"
        return True, f"cached ({why})"
    if info["signal"] == "features":
        return False, "online (white-box method: the teacher's features of the student's batch)"
    if cache == "cached":
        return True, "cached (asked for)"
    if cache == "online":
        return False, "online (asked for)"
    if data.augment == "none":
        return True, (f"cached (dataset.augment=none: teacher logits computed once for the "
                      f"{data.size('train')} training examples)")
    return False, f"online (dataset.augment={data.augment}: the teacher sees the student's augmented batch)"


def _loss_info(distill_cfg: DistillConfig, combine: Optional[str], teacher: Optional[str], teachers: int,
               cache: Optional[str]) -> dict:
    c = distill_cfg
    info = dict(losses.LOSS_INFO[c.method])
    info.update(temperature=c.temperature, temperature_end=c.temperature_end,
                temperature_schedule=c.temperature_schedule if c.temperature_end is not None else "constant",
                alpha=c.alpha, alpha_end=c.alpha_end,
                alpha_schedule=c.alpha_schedule if c.alpha_end is not None else "constant",
                combine=combine if teachers > 1 else None, teacher=teacher, teachers=teachers, cache=cache)
    if c.method == "label_smoothing":
        info["smoothing"] = c.smoothing
    if c.method == "tfkd_reg":
        info["correct_prob"] = c.correct_prob
    if info["signal"] == "features":
        info.update(layers=list(c.layers), teacher_layers=list(c.teacher_layers or c.layers),
                    feature_weight=c.feature_weight)
    return info


def _probe_shapes(model: nn.Module, layers: list[str], data, key: str, who: str) -> list[tuple]:
    """Output shapes (without the batch) of the named layers on two training examples."""
    was_training = model.training
    model.eval()
    x = data.x["train"][:2]
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        _, feats = capture(model, layers, x.to(device), key, who)
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in feats]


def _white_box_parts(distill_cfg: DistillConfig, teacher: nn.Module, student: Optional[nn.Module], data,
                     seed: int):
    """(projections or None, teacher layer names), checking every layer name and shape."""
    student_layers = list(distill_cfg.layers)
    teacher_layers = list(distill_cfg.teacher_layers or distill_cfg.layers)
    if len(teacher_layers) != len(student_layers):
        raise ConfigError(f"distill.teacher_layers: {len(teacher_layers)} layers but distill.layers has "
                          f"{len(student_layers)}; give one teacher layer per student layer")
    if student is None:
        raise ValueError(f"make_objective: method {distill_cfg.method} needs `student=` (a model of the "
                         f"student's architecture) to check layer names and shapes")
    teacher_shapes = _probe_shapes(teacher, teacher_layers, data, "distill.teacher_layers", "teacher")
    student_shapes = _probe_shapes(student, student_layers, data, "distill.layers", "student")
    if distill_cfg.method == "attention":
        for s_name, t_name, s, t in zip(student_layers, teacher_layers, student_shapes, teacher_shapes):
            if s[1:] != t[1:]:
                raise ConfigError(f"distill.layers: attention transfer needs the same spatial size, but student "
                                  f"layer {s_name!r} gives {s} and teacher layer {t_name!r} gives {t}; pick "
                                  f"layers of equal resolution")
    projections = None
    if distill_cfg.method == "fitnet":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            projections = nn.ModuleList(Projection(s, t) for s, t in zip(student_shapes, teacher_shapes))
    return projections, teacher_layers


def _build(distill_cfg: DistillConfig, signal, signal_kind: str, data, combine: Optional[str], cache: str,
           description: Optional[str], seed: int, student: Optional[nn.Module]):
    combine = combine or distill_cfg.combine
    info = losses.LOSS_INFO[distill_cfg.method]
    teachers = len(signal.models) if signal_kind == "models" else (1 if signal_kind == "file" else 0)
    projections, teacher_layers = None, None
    if info["signal"] == "none":
        signal, cache_note = NoSignal(), None
    else:
        if info["signal"] == "features":
            if signal_kind != "models" or teachers != 1:
                raise UserError(f"distill.method: {distill_cfg.method} needs one teacher model in memory "
                                f"(its layers are hooked); got {teachers if signal_kind == 'models' else 'a predictions file'}"
                                f"; use kd for ensembles and predictions files")
            projections, teacher_layers = _white_box_parts(distill_cfg, signal.models[0], student, data, seed)
        cached, cache_note = _cache_decision(distill_cfg, signal_kind, data, cache)
        signal.cached = cached if signal_kind == "models" else signal.cached
        log_once(f"teacher outputs {cache_note}")
    objective = DistillObjective(distill_cfg, signal, combine, seed, projections, teacher_layers)
    objective.train_targets = data.y["train"]
    return objective, _loss_info(distill_cfg, combine, description, teachers, cache_note)


def stand_in_student(distill_cfg: DistillConfig, model_cfg: ModelConfig, data) -> Optional[nn.Module]:
    """A throwaway model of the student's architecture for `make_objective(student=...)`, built
    only for the white-box methods (their layer names and shapes are checked against it), without
    touching the global RNG, so the real student's weights do not depend on it."""
    from .models import create_model

    if losses.LOSS_INFO[distill_cfg.method]["signal"] != "features":
        return None
    with torch.random.fork_rng(devices=[]):
        return create_model(model_cfg, data.input_shape, data.num_classes)


def make_objective(distill_cfg: DistillConfig, teacher_models: list[nn.Module], data, device,
                   combine: Optional[str] = None, *, cache: str = "auto", seed: int = 0,
                   student: Optional[nn.Module] = None, description: Optional[str] = None):
    """Distil from models in memory: (objective, loss_info).

    `teacher_models` are K teachers (born-again generation g-1, ensemble members); their
    outputs are combined by `combine` (default `distill_cfg.combine`). `cache`: auto (see
    the module docstring), cached or online. `seed` fixes DKPP's permutations and FitNet's
    projections; `student` (any model of the student's architecture) is needed by the
    white-box methods to check layer names and shapes. `description` names the teacher in
    loss_info (default: "K teacher model(s) in memory").
    """
    if losses.LOSS_INFO[distill_cfg.method]["signal"] != "none" and not teacher_models:
        raise ValueError(f"make_objective: method {distill_cfg.method} needs at least one teacher model")
    signal = ModelSignal(teacher_models, data, device, cached=False)
    if description is None:
        description = f"{len(teacher_models)} teacher model{'s' if len(teacher_models) != 1 else ''} in memory"
    return _build(distill_cfg, signal, "models", data, combine, cache, description, seed, student)


# ---------------------------------------------------------------- teachers described by the config


@dataclasses.dataclass
class TeacherToTrain:
    """A teacher that runner.train must train (from labels) before the student."""

    key: str                 # checkpoint key, e.g. teacher-s0
    model: nn.Module         # the module the objective reads (trained in place)
    model_cfg: ModelConfig
    train: TrainConfig


def teacher_train_config(cfg: Config) -> TrainConfig:
    """The student's train section with `teacher.train` overrides applied."""
    return from_dict(TrainConfig, {**to_dict(cfg.train), **cfg.teacher.train}, prefix="teacher.train.")


def _new_model(model_cfg: ModelConfig, data, seed: int) -> nn.Module:
    from .models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same weights as seed_everything(seed); create_model(...)
        return create_model(model_cfg, data.input_shape, data.num_classes)


def _mismatch(model: nn.Module, state: dict) -> Optional[str]:
    """None if `state` loads into `model`, else a short description of the first differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing weights (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of other shapes (e.g. {shapes[0]})")
    return "; ".join(parts) or None


def _model_cfg_of_run(run_dir: Path) -> Optional[ModelConfig]:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return None
    data = read_yaml(config_path)
    section = data.get("model") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return None
    try:
        return from_dict(ModelConfig, section, prefix=f"{config_path}: model.")
    except ConfigError:
        return None


def _pick_checkpoint(run_dir: Path, seed: int) -> Path:
    root = run_dir / "checkpoints"
    keys = sorted(p.name for p in root.iterdir() if (p / "best.pt").is_file() or (p / "last.pt").is_file()) \
        if root.is_dir() else []
    if not keys:
        raise UserError(f"distill.teacher: {run_dir} holds no checkpoints (expected {root}/<model>/best.pt); "
                        f"give a finished run directory or a checkpoint file")
    same_seed = [k for k in keys if k.endswith(f"-s{seed}")]
    if len(same_seed) > 1:  # e.g. teacher-s0 and student-s0: the trained-from-labels or student model
        for role in ("model", "student", "generation", "member", "teacher"):
            chosen = [k for k in same_seed if k.startswith(role)]
            if chosen:
                same_seed = chosen[:1]
                break
    if len(same_seed) >= 1:
        key = same_seed[0]
    elif len(keys) == 1:
        key = keys[0]
    else:
        raise UserError(f"distill.teacher: {run_dir} has no checkpoint for seed {seed} (it has {', '.join(keys)}); "
                        f"give one checkpoint, e.g. {root / keys[0] / 'best.pt'}")
    best = root / key / "best.pt"
    return best if best.is_file() else root / key / "last.pt"


def load_teacher(path_text: str, cfg: Config, data, seed: int) -> tuple[nn.Module, str]:
    """A teacher from a run directory or a checkpoint file: (model, description)."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"distill.teacher: {path} does not exist; give a run directory, a checkpoint (.pt) "
                        f"or a predictions file (.npy/.csv)")
    if path.is_dir():
        checkpoint, run_dir = _pick_checkpoint(path, seed), path
    else:
        checkpoint = path
        run_dir = path.parent.parent.parent if path.parent.parent.name == "checkpoints" else None
    model_cfg = cfg.teacher.model or (run_dir and _model_cfg_of_run(run_dir)) or cfg.model
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise UserError(f"distill.teacher: {checkpoint} is not a readable torch checkpoint "
                        f"({type(err).__name__}); give a best.pt/last.pt of a run") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"distill.teacher: {checkpoint} holds no model weights; give a best.pt/last.pt of a run")
    model = _new_model(model_cfg, data, seed)
    problem = _mismatch(model, state)
    if problem is not None:
        raise UserError(f"distill.teacher: checkpoint {checkpoint} does not fit model {model_cfg.name} "
                        f"({problem}); set teacher.model.name (and width/depth) to the teacher's architecture, "
                        f"or give another checkpoint")
    model.load_state_dict(state)
    return model, str(checkpoint)


def read_predictions(path: Path, cfg: Config, data) -> tuple[torch.Tensor, str]:
    """Logits (N_train_split, C) for the train split from a .npy/.csv file of the original training set."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            try:
                array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError:  # a header row
                array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
    except (OSError, ValueError) as err:
        raise UserError(f"distill.teacher: cannot read predictions from {path} ({str(err).splitlines()[0]}); "
                        f"give a .npy array or a .csv of numbers, one row per training example") from None
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise UserError(f"distill.teacher: {path} holds an array of shape {array.shape}; give a 2-D array "
                        f"(one row per training example, one column per class)")
    rows, cols = array.shape
    name = cfg.dataset.name
    if cols != data.num_classes:
        raise UserError(f"distill.teacher: {path} has {cols} columns but {name} has {data.num_classes} classes; "
                        f"give one column per class (logits or probabilities)")
    n_train_set = data.size("train") + data.size("val")
    exact = cfg.dataset.train_subset is None
    needed = int(torch.cat([data.source_index["train"], data.source_index["val"]]).max()) + 1
    if (exact and rows != n_train_set) or rows < needed:
        raise UserError(f"distill.teacher: {path} has {rows} rows but the {name} training set has "
                        f"{n_train_set if exact else f'at least {needed}'} examples; give one row per "
                        f"training example (before the validation split, in the dataset's order)")
    if not np.isfinite(array).all():
        raise UserError(f"distill.teacher: {path} holds NaN or infinite values; give finite logits or probabilities")
    is_probs = bool((array >= 0).all() and (array <= 1).all() and np.allclose(array.sum(1), 1.0, atol=1e-3))
    values = torch.from_numpy(array).float()
    logits = values.clamp_min(1e-12).log() if is_probs else values
    index = data.source_index["train"].to("cpu")
    kind = "probabilities (used as log-probabilities)" if is_probs else "logits"
    return logits[index].to(data.x["train"].device), kind


def distillation_objective(cfg: Config, data, seed: int, device):
    """(objective or None, loss_info) for `distill train`, from `distill.teacher` or the teacher section.

    No teacher and no teacher section: a method that needs no teacher (tfkd_reg,
    label_smoothing) is applied, tfkd_self trains a copy of the model first, any other
    method means training from labels (None, CROSS_ENTROPY_INFO). The returned objective may
    carry `teacher_to_train` (a `TeacherToTrain`) that runner.train trains first.
    """
    d = cfg.distill
    signal_kind = losses.LOSS_INFO[d.method]["signal"]
    needs_student = signal_kind == "features"
    student = _new_model(cfg.model, data, seed) if needs_student else None
    if d.teacher is None:
        teacher_cfg = cfg.teacher.model or (cfg.model if d.method == "tfkd_self" else None)
        if teacher_cfg is None:
            if signal_kind == "none":
                return make_objective(d, [], data, device, seed=seed, description=None)
            return None, dict(CROSS_ENTROPY_INFO)
        key = f"teacher-s{seed}"
        teacher = _new_model(teacher_cfg, data, seed)
        objective, info = make_objective(d, [teacher], data, device, seed=seed, student=student, description=key)
        objective.teacher_to_train = TeacherToTrain(key, teacher, teacher_cfg, teacher_train_config(cfg))
        return objective, info
    if signal_kind == "none":
        raise ConfigError(f"distill.method: {d.method} uses no teacher, but distill.teacher is set; "
                          f"set distill.teacher=null or pick a method that uses one (e.g. kd)")
    paths = [p.strip() for p in d.teacher.split(",") if p.strip()]
    files = [p for p in paths if Path(p).suffix in (".npy", ".csv")]
    if files:
        if len(paths) > 1:
            raise UserError(f"distill.teacher: a predictions file ({files[0]}) must be the only teacher; "
                            f"combine several teachers' predictions into one file first")
        path = Path(paths[0]).expanduser()
        if not path.is_file():
            raise UserError(f"distill.teacher: {path} does not exist; give a predictions file (.npy/.csv), "
                            f"a run directory or a checkpoint")
        logits, kind = read_predictions(path, cfg, data)
        return _build(d, FileSignal(logits), "file", data, d.combine, "auto", f"{path} ({kind})", seed, student)
    loaded = [load_teacher(p, cfg, data, seed) for p in paths]
    models = [m for m, _ in loaded]
    description = ", ".join(desc for _, desc in loaded)
    return make_objective(d, models, data, device, seed=seed, student=student, description=description)
