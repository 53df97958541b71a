"""What a training step minimises: the one objective interface, and its one mixer.

    objective = CrossEntropy()                               # training from labels
    objective, info = make_objective(cfg.distill, [teacher], data, device, seed=0)
    terms = objective.terms(batch, logits, features, progress)     # {"teacher": ..., "task": ...}
    loss = mix(terms, objective.weights(progress))                 # alpha * teacher + (1 - alpha) * task

An objective is an `nn.Module` (FitNet's projections, a learned temperature: its parameters
train and checkpoint with the student) with three members the training loop reads:

- `student_layers`: names of student layers whose outputs `terms` needs (white-box
  methods); the loop captures them during the forward pass. Empty for everything else.
- `terms(batch, logits, features, progress)`: named loss terms of one model's batch.
- `weights(progress)`: the weight of each term, e.g. alpha and 1 - alpha (with its schedule).

`mix` is the only place terms are combined, and `Distill` reads a method's options from its
record, so a new method is a formula in `losses` with its record (`register`) and nothing else.
T and alpha follow `value_at(schedule, start, end, progress)`.
"""

from __future__ import annotations

import abc
import importlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from distill.methods import losses
from distill.methods.parts import kd_terms
from distill.methods import DistillConfig
from distill.teachers.features import capture
from distill.teachers.signals import teacher_views

#: methods whose terms are exactly kd's: computed by `parts.kd_terms` (one autograd node, the same values)
FUSED_KD = (losses.kd, losses.ban, losses.ban_l)

#: loss_info of a model trained from labels alone
CROSS_ENTROPY_INFO = {"method": "cross_entropy", "reduction": "mean", "t2_scaling": False, "teacher": None}


@dataclass
class Batch:
    x: torch.Tensor    # inputs (B, ...)
    y: torch.Tensor    # labels (B,)
    idx: torch.Tensor  # positions in the train split (B,)


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


def mix(terms: dict, weights: dict) -> torch.Tensor:
    """loss = sum over named terms of weight * term; terms of weight 0 are left out (logged only). A weight
    may be a (K,) tensor: one per model of K stacked models' (K,) terms (distill.methods.stacked)."""
    parts = [w * terms[name] if torch.is_tensor(w) else terms[name] if w == 1 else w * terms[name]
             for name, w in weights.items() if torch.is_tensor(w) or w != 0]
    return sum(parts[1:], parts[0])


def mix_weights(how: str, alpha: float, smoothing: float = 0.0, *, epoch: int = 1, **weights) -> dict:
    """The weights of a method's terms by its `mix` kind (see distill.methods.losses). The options that go
    to the mixer come by keyword (`Method.values(cfg, "weights")`): smoothing (eps); dkd: tckd, nckd
    and warmup_epochs (the teacher terms' weight grows as min(epoch / warmup_epochs, 1), epoch = 1,
    2, ...); dist: inter, intra; wttm: teacher. The task term weighs 1 in those."""
    if how == "teacher_only":
        return {"teacher": 1.0, "task": 0.0}
    if how == "sum":
        return {"teacher": 1.0, "task": 1.0}
    if how == "smoothing":
        return {"teacher": smoothing, "task": 1.0 - smoothing}
    if how == "labels":
        return {"task": 1.0}
    if how == "dkd":
        warmup = weights.pop("warmup_epochs")
        warm = min(epoch / warmup, 1.0) if warmup > 0 else 1.0
        return {"task": 1.0, **{term: warm * weight for term, weight in weights.items()}}
    if how in ("dist", "wttm"):
        return {"task": 1.0, **weights}
    return {"teacher": alpha, "task": 1.0 - alpha}


class Objective(nn.Module, metaclass=abc.ABCMeta):
    """The interface (see the module docstring); subclasses implement terms and weights (an
    objective without them cannot be built)."""

    student_layers: tuple = ()
    #: terms() also takes K models' stacked batches, (K, B, ...), and returns one value per model:
    #: K stacked models with such objectives make one call per step instead of K
    stackable: bool = False
    #: terms() needs all K models' logits of one batch at once (mutual learning: each model's loss
    #: reads the others'): the one objective of a fit of K >= 2 models sharing a data seed, always
    #: called once per step with (K, B, ...) (implies `stackable`)
    joint: bool = False
    #: terms() runs the model it trains itself (on-policy generation, a head fused with the loss): the
    #: loop hands it that model (`bind`) before the first step; it trains alone (replicas.can_stack refuses)
    runs_student: bool = False

    def bind(self, model: nn.Module) -> None:
        """Called by the loop with the model this objective trains, before the first step."""

    @abc.abstractmethod
    def terms(self, batch: Batch, logits: torch.Tensor, features: list, progress: float) -> dict:
        """Named loss terms of one model's batch (or, when `stackable`, of K models' stacked batches)."""

    @abc.abstractmethod
    def weights(self, progress: float) -> dict:
        """The weight of each term at this point of training, for `mix`."""

    def teachers(self) -> tuple[list, Optional[str]]:
        """(the teacher models in memory, how they are combined): what fidelity is measured against."""
        return [], None

    def record(self) -> dict:
        """Figures of the objective itself, copied into each epoch's history rows (e.g. a learned temperature)."""
        return {}


class CrossEntropy(Objective):
    """Training from labels alone: loss = CE(y, s)."""

    stackable = True

    def terms(self, batch, logits, features, progress):
        return {"task": losses.cross_entropy(logits.float(), batch.y)}

    def weights(self, progress):
        return {"task": 1.0}


# ---------------------------------------------------------------- CTKD's learned temperature (Li et al. 2023)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def grad_reverse(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The identity forward; the gradient times -strength backward (Ganin & Lempitsky 2015)."""
    return _GradientReversal.apply(x, strength)


#: CTKD's global temperature: T = T_MIN + T_RANGE * sigmoid(theta), theta starting at 1 (the paper's code)
CTKD_T_MIN, CTKD_T_RANGE, CTKD_THETA0 = 1.0, 20.0, 1.0


def ctkd_temperature(theta: torch.Tensor, reversal: float) -> torch.Tensor:
    """CTKD's learned temperature: T = 1 + 20 sigmoid(GRL(theta, lambda)), GRL = grad_reverse."""
    return CTKD_T_MIN + CTKD_T_RANGE * torch.sigmoid(grad_reverse(theta, reversal))


def ctkd_reversal(epoch: int, loops: float, lambda_max: float, lambda_min: float = 0.0) -> float:
    """CTKD's curriculum (Li et al. 2023): lambda_n = lambda_min + (lambda_max - lambda_min) *
    (1 + cos((1 + min(n, E) / E) pi)) / 2 at epoch n = 1, 2, ...: from lambda_min up to lambda_max over E epochs."""
    if loops <= 0:
        return lambda_max
    n = min(epoch, loops)
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1.0 + math.cos((1.0 + n / loops) * math.pi))



class Distill(Objective):
    """A method of `losses` with its teacher signal: the terms of `losses.METHODS[method]`, weighed by its record.

    Every option reaches the formula, the mixer or the learned temperature from the method's
    record (`Method.values`), never by the method's name. Teachers are kept out of the module's
    parameters (the signal is a plain attribute) and never trained. With `distill.standardize`,
    the student's and each teacher's logits are standardised (`losses.standardize`) before the
    formula; the task term stays CE on the raw student logits. `epochs` (train.epochs) turns the
    per-epoch schedules (DKD's warm-up, CTKD's curriculum) into training progress; a learned
    temperature is the parameter `theta` (trained, checkpointed).
    """

    def __init__(self, cfg: DistillConfig, signal, combine: str, seed: int = 0,
                 projections: Optional[nn.ModuleList] = None, teacher_layers: Optional[list[str]] = None,
                 epochs: Optional[int] = None):
        super().__init__()
        self.epochs = epochs
        self.method = losses.METHODS[cfg.method]
        if self.method.temperature == "learned":
            self.theta = nn.Parameter(torch.tensor(CTKD_THETA0))
        self.cfg = cfg
        self.signal = signal
        self.combine = combine
        self.seed = seed
        self.projections = projections
        white_box = self.method.signal == "features"
        self.student_layers = tuple(cfg.layers) if white_box else ()
        self.teacher_layers = list(teacher_layers or cfg.teacher_layers or cfg.layers)

    def teachers(self) -> tuple[list, Optional[str]]:
        return list(self.signal.models), self.combine

    def epoch(self, progress: float) -> int:
        """The epoch (1, 2, ...) that training `progress` falls in."""
        return int(math.floor(progress * self.epochs + 1e-9)) + 1

    def temperature(self, progress: float):
        c = self.cfg
        if self.method.temperature == "learned":  # a tensor: T through the gradient reversal of this epoch
            reversal = ctkd_reversal(self.epoch(progress), **self.method.values(c, "temperature"))
            return ctkd_temperature(self.theta, reversal)
        return value_at(c.temperature_schedule, c.temperature, c.temperature_end, progress)

    def weights(self, progress: float) -> dict:
        c = self.cfg
        alpha = value_at(c.alpha_schedule, c.alpha, c.alpha_end, progress)
        epoch = self.epoch(progress) if self.epochs is not None else 1
        return mix_weights(self.method.mix, alpha, epoch=epoch, **self.method.values(c, "weights"))

    def record(self) -> dict:
        if self.method.temperature != "learned":
            return {}
        with torch.no_grad():
            return {"temperature": float(ctkd_temperature(self.theta, 0.0))}

    def _options(self, progress: float, student: torch.Tensor) -> dict:
        """The formula's keywords: its options, and a generator for a method that draws (DKPP's
        permutations: deterministic per step and seed, whatever ran before, so resumable)."""
        options = self.method.values(self.cfg, "loss")
        if self.method.draws:
            options["generator"] = torch.Generator(device=student.device).manual_seed(self.step_seed(progress))
        return options

    def step_seed(self, progress: float) -> int:
        """A seed of this step alone: from the objective's seed and the training progress (resumable)."""
        return (self.seed * 1_000_003 + int(round(progress * 1e9))) % 2**63

    def terms(self, batch, logits, features, progress):
        student = logits.float()
        if self.method.mix == "labels":  # from labels: the teacher is there for the fidelity figures only
            return self.method(student, None, batch.y)
        self.signal.prepare()
        temperature = self.temperature(progress)
        options = self._options(progress, student)
        kind = self.method.signal
        if kind == "none":
            return self.method(student, None, batch.y, temperature=temperature, **options)
        if kind == "features":
            with torch.no_grad():
                _, teacher_feats = capture(self.signal.models[0], self.teacher_layers, batch.x,
                                           "distill.teacher_layers", "teacher")
            if self.projections is not None:
                features = [p(f) for p, f in zip(self.projections, features)]
            return self.method(student, None, batch.y, temperature=temperature, student_features=features,
                               teacher_features=[f.float() for f in teacher_feats], **options)
        return self.logit_terms(student, self.signal.logits(batch.x, batch.idx), batch.y, temperature, options)

    def logit_terms(self, student, teacher, targets, temperature, options: dict) -> dict:
        """The terms of a method that reads teacher logits: from the student's (B, C) and the teachers'
        (n, B, C) logits (`distill.methods.stacked` runs this under vmap for K models at once)."""
        raw = student
        if self.cfg.standardize:
            student, teacher = losses.standardize(student), losses.standardize(teacher)
        views = teacher_views(teacher, 1.0 if self.method.combine_at_t1 else temperature, self.combine)
        if self.method.formula in FUSED_KD and len(views) == 1 and not views[0].requires_grad and not (
                torch.is_tensor(temperature) and temperature.requires_grad):  # kd's terms in one autograd node
            terms = dict(zip(("teacher", "task"), kd_terms(student, views[0], targets, temperature)))
        else:
            terms = self.method(student, views[0], targets, temperature=temperature, **options)
        for z in views[1:]:  # per_teacher_kl: one set of teacher terms per teacher, summed
            more = self.method(student, z, targets, temperature=temperature, **options)
            terms.update({name: terms[name] + value for name, value in more.items() if name != "task"})
        if self.cfg.standardize:
            terms["task"] = losses.cross_entropy(raw, targets)
        return terms


def loss_info(cfg: DistillConfig, combine: Optional[str], teacher: Optional[str], teachers: int,
              cache: Optional[str]) -> dict:
    """What a student was taught with, as recorded in summary.json and records.csv."""
    method = losses.METHODS[cfg.method]
    info = method.info()
    info.update(temperature=cfg.temperature, temperature_end=cfg.temperature_end,
                temperature_schedule=cfg.temperature_schedule if cfg.temperature_end is not None else "constant",
                alpha=cfg.alpha, alpha_end=cfg.alpha_end,
                alpha_schedule=cfg.alpha_schedule if cfg.alpha_end is not None else "constant",
                combine=combine if teachers > 1 else None, teacher=teacher, teachers=teachers, cache=cache)
    if "alpha" not in method.keys:  # mixed without alpha (gkd, ban, dkd, ...): nothing of it was used
        info.update(alpha=None, alpha_end=None, alpha_schedule=None)
    info.update({option.key: getattr(cfg, option.key) for option in method.options})  # e.g. dkd_beta, smoothing
    if cfg.standardize:
        info["standardize"] = True
    if cfg.lm_chunk:
        info["lm_chunk"] = cfg.lm_chunk
    if method.signal == "features":
        info.update(layers=list(cfg.layers), teacher_layers=list(cfg.teacher_layers or cfg.layers))
    return info


def loss_tags(info: dict) -> dict:
    """The loss columns of records.csv: method, reduction, T^2 scaling."""
    return {"method": info.get("method"), "reduction": info.get("reduction"), "t2_scaling": info.get("t2_scaling")}


def make_objective(cfg: DistillConfig, teachers: list[nn.Module], data, device, combine: Optional[str] = None, *,
                   file_logits: Optional[torch.Tensor] = None, cache: str = "auto", seed: int = 0,
                   student: Optional[nn.Module] = None, description: Optional[str] = None,
                   epochs: Optional[int] = None):
    """(objective, loss_info) for `cfg.method` taught by `teachers` (models in memory, combined by
    `combine`, default cfg.combine) or by `file_logits` (a predictions file's train-split logits).

    `cache`: auto, cached or online (see distill.teachers.signals). `seed` fixes DKPP's permutations and
    FitNet's projections; `student` (any model of the student's architecture) is needed by the
    white-box methods to check layer names and shapes. `description` names the teacher.
    `epochs` (the student's train.epochs) is needed by the per-epoch schedules of dkd and ctkd.
    """
    from distill.errors import UserError
    from distill.teachers.features import white_box_parts
    from distill.teachers.signals import FileSignal, ModelSignal, cache_decision

    combine = combine or cfg.combine
    method = losses.METHODS[cfg.method]
    kind = method.signal
    if cfg.standardize and kind != "logits":
        raise UserError(f"distill.standardize: logit standardisation applies to methods that read teacher logits; "
                        f"{cfg.method} reads {'features' if kind == 'features' else 'no teacher'}; "
                        f"set distill.standardize=false")
    if method.needs_epochs and epochs is None:
        raise ValueError(f"make_objective: {cfg.method}'s per-epoch schedule needs `epochs=` (train.epochs)")
    if kind == "none":
        return Distill(cfg, ModelSignal([], data, device, cached=False), combine, seed, epochs=epochs), \
            loss_info(cfg, combine, description, 0, None)
    if file_logits is None and not teachers:
        raise ValueError(f"make_objective: method {cfg.method} needs a teacher")
    signal_kind = "file" if file_logits is not None else "models"
    cached, note = cache_decision(kind, signal_kind, data, cache)
    if method.objective:
        cached, note = False, "online (the method's objective runs the teachers on the sequences it makes)"
    if method.mix == "labels":
        note = "not read in training: the teacher gives the fidelity figures only"
    top_k = (cfg.top_k, cfg.top_k_rest) if getattr(data, "text", None) is not None else None  # LMs: distill/training/lm.py
    if top_k and cached:
        note += (f"; the top {cfg.top_k} next tokens per position, the rest "
                 f"{'dropped (renormalised)' if cfg.top_k_rest == 'drop' else 'spread evenly'}")
    signal = FileSignal(file_logits) if file_logits is not None else ModelSignal(teachers, data, device, cached,
                                                                                 top_k)
    projections, teacher_layers = None, None
    if kind == "features":
        if signal_kind != "models" or len(teachers) != 1:
            raise UserError(f"distill.method: {cfg.method} needs one teacher model in memory (its layers are "
                            f"hooked); use kd for ensembles and predictions files")
        if student is None:
            raise ValueError(f"make_objective: method {cfg.method} needs `student=` to check layer names and shapes")
        teacher_layers = list(cfg.teacher_layers or cfg.layers)
        projections = white_box_parts(cfg.method, list(cfg.layers), teacher_layers, teachers[0], student, data, seed)
    count = 1 if signal_kind == "file" else len(teachers)
    if description is None:
        description = f"{count} teacher model{'s' if count != 1 else ''} in memory"
    path = method.objective or ("distill.training.lm_objectives:TokenLevel" if cfg.lm_chunk else None)
    cls = Distill if path is None else getattr(importlib.import_module(path.split(":")[0]), path.split(":")[1])
    objective = cls(cfg, signal, combine, seed, projections, teacher_layers, epochs)  # (named by a string: that
    objective.info = info = loss_info(cfg, combine, description, count, note)      # module imports this one)
    return objective, info  # (the objective may add to its info: TokenLevel says whether its chunks are fused)
