"""The training loop: one `fit` for every model this project trains, one model or K at once.

    from distill import engine
    engine.setup_torch(cfg.train)                                   # threads, determinism
    model = engine.new_model(cfg.model, data, seed=0)
    result = engine.fit_one(model, data, cfg.train, seed=0, checkpoint_dir=Path("/tmp/ckpt"))
    results = engine.fit(models, data, cfg.train, seeds=[0, 1, 2], model_dirs=[...])   # K stacked

What a step minimises is an *objective* (distill/methods/objectives.py): for each model k, its
objective's named terms on model k's batch, mixed by its weights; the K losses are summed
and back-propagated once (each model's parameters get their own gradient). The default is
cross-entropy on the labels. How the K models run the step (as themselves, or with stacked
parameters) is `distill.training.replicas`; this loop cannot tell which.

Each epoch: model k's train split is shuffled with a generator seeded by (seed_k, epoch) and
batched by indexing tensors that live on the device, augmented on the device; the host
syncs once, at the end of the epoch. Then validation and test are evaluated (loss, acc,
nll, ece) for every model in one pass. A checkpoint is written atomically at the last epoch
and whenever `train.checkpoint_seconds` have passed (0 = every epoch): `state_dir/last.pt`
(weights, optimizer, objectives, RNG, histories; the previous one kept as last.prev.pt) and
each model's validation-best weights in `model_dirs[k]/best.pt`. A `last.pt` found at the
start resumes: bit-identical on CPU to a run that never stopped. When K > 1, each model also
gets a `last.pt` of its own at the end, so readers find one model's files the same way
whichever way it trained. The best weights are loaded into each model at the end.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from distill.runs.checkpoints import load_best, load_checkpoint, load_state, pack_rows, rng_state, save_atomic, set_rng_state, unpack_rows
from distill.config import TrainConfig
from distill.export.cost import cpu_count, fit_threads, free_cores
from distill.training.evaluation import autocast, evaluate, use_channels_last
from distill.methods.objectives import Batch, CrossEntropy, mix
from distill.methods.stacked import stacked_objective
from distill.training.replicas import make_replicas

class Diverged(RuntimeError):
    """A model's training loss became NaN or infinite."""


# ---------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from distill.errors import UserError

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: {name} was asked for but CUDA is not available; use train.device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("train.device: mps was asked for but is not available; use train.device=cpu or auto")
    return device


def setup_torch(train: TrainConfig) -> None:
    """Pin the thread count (null, auto: the free cores until each fit sets its own by its work per
    step, distill.export.cost.fit_threads) and (optionally) make every algorithm deterministic."""
    torch.set_num_threads(train.threads or (free_cores() if train.threads is None else cpu_count()))
    if train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_model(model_cfg, data, seed: int) -> nn.Module:
    """A fresh model for `data`, initialised from `seed` (python, numpy and torch seeded first)."""
    from distill.models import create_model

    seed_everything(seed)
    return create_model(model_cfg, data.input_shape, data.num_classes)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order and augmentation of one epoch (independent of the model's RNG)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


# ---------------------------------------------------------------- schedules (pure functions)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, train: TrainConfig) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`."""
    peak = train.lr
    if train.schedule == "onecycle":
        # linear warm-up from peak/25 to peak, then cosine down to peak/1e4 (as torch's OneCycleLR)
        warm = max(1, int(train.pct_start * total_steps))
        if step < warm:
            return peak / 25 + (peak - peak / 25) * step / warm
        t = (step - warm) / max(1, total_steps - warm)
        low = peak / 25 / 1e4
        return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * t))
    warm = int(train.warmup_epochs * steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    if train.schedule == "constant":
        return peak
    if train.schedule == "cosine":
        t = (step - warm) / max(1, total_steps - warm)
        return peak * 0.5 * (1 + math.cos(math.pi * t))
    if train.schedule == "step":
        passed = sum(step >= m * total_steps for m in train.milestones)
        return peak * train.gamma ** passed
    raise ValueError(f"unknown schedule {train.schedule}")


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW with torch's fused kernels (one kernel for all parameters)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov and train.momentum > 0,
                               weight_decay=train.weight_decay, fused=True)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)


# ---------------------------------------------------------------- the loop


@dataclass
class FitResult:
    history: list[dict]          # one row per (epoch, split), as written to records.csv
    selected_epoch: int          # best validation epoch by train.select (see `better`), earliest of ties
    selected: dict               # split -> metrics at the selected epoch
    last: dict                   # split -> metrics at the last epoch
    train_seconds: float         # summed epoch times (a K-model fit: each model's share)
    resumed_from: int = 0        # epochs already done when this call started


def better(candidate: dict, best: Optional[dict], select: str = "acc") -> bool:
    """Is this epoch's validation `candidate` better than `best` (`train.select`): acc = higher
    accuracy, ties by lower NLL; nll = lower NLL, ties by higher accuracy. Full ties keep the earlier."""
    if best is None:
        return True
    if select == "nll":
        if candidate["nll"] != best["nll"]:
            return candidate["nll"] < best["nll"]
        return candidate["acc"] > best["acc"]
    if candidate["acc"] != best["acc"]:
        return candidate["acc"] > best["acc"]
    return candidate["nll"] < best["nll"]


def metrics_at(history: list[dict], epoch: int) -> dict:
    return {row["split"]: row for row in history if row["epoch"] == epoch}


def fit_one(model: nn.Module, data, train: TrainConfig, *, seed: int, objective=None, tags: Optional[dict] = None,
            checkpoint_dir: Optional[Path] = None, **kw) -> FitResult:
    """`fit` of one model: its checkpoints (last.pt, best.pt) in `checkpoint_dir`."""
    return fit([model], data, train, seeds=[seed], objectives=[objective], tags=[tags or {}],
               model_dirs=[checkpoint_dir] if checkpoint_dir else None, **kw)[0]


def fit(models: list[nn.Module], data, train: TrainConfig, *, seeds: list[int], objectives: Optional[list] = None,
        tags: Optional[list[dict]] = None, model_dirs: Optional[list[Path]] = None, state_dir: Optional[Path] = None,
        on_epoch: Optional[Callable[[dict], None]] = None, emit: Optional[Callable[[list[dict]], None]] = None,
        device: Optional[torch.device] = None, replicas_of: Optional[Callable] = None) -> list[FitResult]:
    """Train `models` (K >= 1; K >= 2 must pass `replicas.can_stack`) for `train.epochs` epochs.

    `tags[k]` (role, name, generation, member, seed) are copied into model k's history rows;
    `emit` receives each epoch's rows (the whole history first when resuming); `on_epoch` a
    dict per model and epoch of train and validation figures (never test), with `model`
    (k), `seed`, `checkpointed` and `checkpoint`. `state_dir` (default: the one model's dir,
    or `<first model dir>-pack<K>`) holds the training state. Returns one FitResult per model.
    `replicas_of(models, compile=, channels_last=)` builds how the K models run a step instead of
    `replicas.make_replicas` (mutual learning's peers that cannot stack run side by side). A `joint`
    objective (one for all K, e.g. mutual learning's) reads the K models' logits of one batch: their
    `seeds` (data order and augmentation) must then be one seed.
    """
    K = len(models)
    device = device or resolve_device(train.device)
    fit_threads(train, models, data, device)  # train.threads=null: by this fit's work per step
    objectives = [o if o is not None else CrossEntropy() for o in (objectives or [None] * K)]
    tags = [dict(t) for t in (tags or [{} for _ in range(K)])]
    if state_dir is None and model_dirs is not None:
        state_dir = model_dirs[0] if K == 1 else model_dirs[0].with_name(f"{model_dirs[0].name}-pack{K}")
    last_path = state_dir / "last.pt" if state_dir is not None else None
    channels_last = use_channels_last(train, device, data.input_shape)
    for model in models:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
    replicas = (replicas_of or make_replicas)(models, compile=train.compile, channels_last=channels_last)
    for model, objective in zip(models, objectives):
        objective.to(device).train()
        objective.bind(model)  # one that runs its model itself (on-policy generation) holds it; no-op otherwise
    groups = [{"params": replicas.parameters()}]
    extra = [p for o in objectives for p in o.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra})
    optimizer = make_optimizer(groups, train)

    steps_per_epoch = math.ceil(data.size("train") / train.batch_size)
    total_steps = steps_per_epoch * train.epochs
    histories: list[list[dict]] = [[] for _ in range(K)]
    bests: list[Optional[dict]] = [None] * K
    best_states: list[Optional[dict]] = [None] * K  # validation-best weights not yet on disk (or kept)
    unsaved = [False] * K
    start_epoch, train_seconds = 0, 0.0
    state = _resume_state(last_path, model_dirs, train, device)
    if state is not None:
        try:  # a readable file of the wrong model, optimizer or history: one line naming it
            for k in range(K):
                replicas.load_state_dict(k, state["models"][k])
                if state["objectives"][k] is not None:
                    objectives[k].load_state_dict(state["objectives"][k])
            if state["optimizer"] is not None:
                optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            histories, bests = [unpack_rows(h) for h in state["histories"]], list(state["bests"])
            start_epoch, train_seconds = state["epoch"], float(state["train_seconds"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
            from distill.errors import UserError

            raise UserError(f"checkpoint {last_path} does not fit this fit ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else 'no message'}); "
                            f"delete {last_path.parent} to train these models again from the start") from None
        best_states = _earlier_bests(model_dirs, bests, start_epoch, device)
        if emit:
            for history in histories:
                emit(history)
    resumed_from, saved_at = start_epoch, time.perf_counter()
    layers = objectives[0].student_layers
    step_objective = stacked_objective(objectives)  # one call for all K models, or None: K calls
    if objectives[0].joint and not (step_objective is objectives[0] and len(set(seeds)) == 1):
        raise ValueError("a joint objective reads K >= 2 models' logits of one batch: give every model it, and "
                         "one data seed")

    for epoch in range(start_epoch, train.epochs):
        replicas.train(True)
        started = time.perf_counter()
        generators = [torch.Generator(device=device).manual_seed(epoch_seed(s, epoch)) for s in seeds]
        # nothing but list appends per step: one reduction and one host sync per epoch
        step_losses, outputs, labels, sizes = [], [], [], []
        step = epoch * steps_per_epoch
        for xs, ys, idxs in data.train_batches(train.batch_size, generators):
            lr = lr_at(step, total_steps, steps_per_epoch, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            progress = step / total_steps
            with autocast(device, train.precision):
                logits, features = replicas.forward(xs, layers)
                # a language model's (K, B, L, V) logits and (K, B, L) next tokens become B * L rows
                # of (K, B * L, V) and (K, B * L), as a classifier's (distill/training/lm.py); no-op otherwise
                logits, ys = logits.flatten(1, -2), ys.flatten(1)
                if step_objective is not None:  # one call for all K models: one loss per model
                    losses = mix(step_objective.terms(Batch(xs, ys, idxs), logits, features, progress),
                                 step_objective.weights(progress))
                    total = losses.sum()
                else:  # K calls; the per-model losses are stacked outside the graph (K = 1: no stack, no sum)
                    each = [mix(objectives[k].terms(Batch(xs[k], ys[k], idxs[k]), logits[k], features[k], progress),
                                objectives[k].weights(progress)) for k in range(K)]
                    total = sum(each[1:], each[0])
                    losses = each[0].detach().view(1) if K == 1 else torch.stack([v.detach() for v in each])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if train.grad_clip is not None:
                replicas.clip_(train.grad_clip)
            optimizer.step()
            step_losses.append(losses.detach())
            sizes.append(ys.shape[1])
            # predictions only (an epoch of LM logits is large); max, not argmax: stacked logits are a transposed
            # view, along which argmax is ~20x slower on the CPU (same first-of-ties index)
            outputs.append(logits.detach().max(-1).indices)
            labels.append(ys)
            step += 1
        correct = (torch.cat(outputs, 1) == torch.cat(labels, 1)).sum(-1)
        weights = torch.tensor(sizes, dtype=torch.float32, device=correct.device)
        loss_sums, correct_sums = torch.stack([weights @ torch.stack(step_losses).float(), correct.float()]).tolist()
        seconds = time.perf_counter() - started
        train_seconds += seconds
        count = data.y["train"].numel()  # rows: examples, or tokens of a language model
        evaluated = evaluate(replicas, data, train)
        for k in range(K):
            if not math.isfinite(loss_sums[k]):
                raise Diverged(f"the training loss of {_name(tags[k], k)} became {loss_sums[k]} at epoch "
                               f"{epoch + 1}; lower train.lr (now {train.lr}) or set train.grad_clip")
            metrics = {"train": {"loss": loss_sums[k] / count, "acc": correct_sums[k] / count, "nll": None,
                                 "ece": None}, **evaluated[k]}
            rows = [{**tags[k], "epoch": epoch + 1, "split": split, **values, "lr": lr, "seconds": seconds / K,
                     **objectives[k].record()} for split, values in metrics.items()]
            histories[k].extend(rows)
            if better(metrics["val"], bests[k], train.select):
                bests[k] = {"epoch": epoch + 1, "acc": metrics["val"]["acc"], "nll": metrics["val"]["nll"]}
                best_states[k], unsaved[k] = replicas.state_dict(k), True
            if emit:
                emit(rows)
        # checkpoint at the last epoch and whenever train.checkpoint_seconds have passed since the
        # last one: a resumed run replays from there bit-identically, so nothing else is lost
        due = last_path is not None and (
            epoch + 1 == train.epochs or time.perf_counter() - saved_at >= train.checkpoint_seconds)
        if due:
            _save_bests(model_dirs, bests, best_states, unsaved)
            save_atomic(training_state(epoch + 1, train_seconds, seeds, optimizer.state_dict(),
                                       [replicas.state_dict(k) for k in range(K)],
                                       [o.state_dict() or None for o in objectives], histories, bests),
                        last_path, keep_previous=True)
            saved_at = time.perf_counter()
        if on_epoch:
            for k in range(K):
                on_epoch({"epoch": epoch + 1, "lr": lr, "seconds": seconds, "model": k, "seed": seeds[k],
                          "checkpointed": due, "checkpoint": str(last_path) if last_path else None,
                          "train_loss": loss_sums[k] / count, "train_acc": correct_sums[k] / count,
                          **{f"val_{name}": v for name, v in evaluated[k]["val"].items()}})

    if K > 1 and model_dirs is not None:  # each model a last.pt of its own: part of a finished fit, so a
        for k in range(K):                 # fit stopped while writing them writes the missing ones when resumed
            if start_epoch < train.epochs or not _finished_own(model_dirs[k] / "last.pt", train.epochs):
                save_atomic(training_state(train.epochs, train_seconds / K, [seeds[k]], None,
                                           [replicas.state_dict(k)], [None], [histories[k]], [bests[k]]),
                            model_dirs[k] / "last.pt")
    results = []
    for k, model in enumerate(models):
        model.load_state_dict(best_states[k])  # hand back the validation-selected weights
        selected = bests[k]["epoch"]
        results.append(FitResult(history=histories[k], selected_epoch=selected,
                                 selected=metrics_at(histories[k], selected),
                                 last=metrics_at(histories[k], train.epochs),
                                 train_seconds=train_seconds / K, resumed_from=resumed_from))
    return results


def training_state(epoch: int, train_seconds: float, seeds: list, optimizer: Optional[dict], models: list[dict],
                   objectives: list, histories: list[list[dict]], bests: list) -> dict:
    """A last.pt: the training state of a fit's models (see distill/runs/checkpoints.py); optimizer None = finished."""
    return {"epoch": epoch, "train_seconds": train_seconds, "rng": rng_state(), "seeds": list(seeds),
            "optimizer": optimizer, "models": models, "objectives": objectives,
            "histories": [pack_rows(h) for h in histories], "bests": bests}


def _name(tags: dict, k: int) -> str:
    parts = [str(tags[key]) for key in ("role", "name") if tags.get(key) is not None]
    parts += [f"{key} {tags[key]}" for key in ("generation", "member", "seed") if tags.get(key) is not None]
    return " ".join(parts) or f"model {k}"


def _resume_state(last_path: Optional[Path], model_dirs, train: TrainConfig, device) -> Optional[dict]:
    """The training state to continue from: the fit's own last.pt (or its .prev), else, when every
    model already has a finished last.pt of its own (trained in another grouping), those."""
    if last_path is None:
        return None
    state = load_state(last_path, device, count=len(model_dirs) if model_dirs else None)
    if state is not None or model_dirs is None or len(model_dirs) == 1:
        return state
    own = [load_state(d / "last.pt", device, count=1) for d in model_dirs]
    if any(s is None or s["epoch"] != train.epochs for s in own):
        return None
    return {"epoch": train.epochs, "train_seconds": sum(s["train_seconds"] for s in own), "rng": own[0]["rng"],
            "optimizer": None, "models": [s["models"][0] for s in own], "objectives": [None] * len(own),
            "histories": [s["histories"][0] for s in own], "bests": [s["bests"][0] for s in own]}


def _finished_own(path: Path, epochs: int) -> bool:
    """Whether a stacked model's own last.pt is there, readable and at the last epoch."""
    from distill.errors import UserError

    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("epoch") == epochs
    except UserError:
        return False


def _earlier_bests(model_dirs, bests, start_epoch: int, device) -> list[Optional[dict]]:
    """Each model's best weights from its best.pt, read at the start of a resumed fit (a damaged
    file is reported now, not after the remaining epochs)."""
    if model_dirs is None:
        return [None] * len(bests)
    return [load_best(folder / "best.pt", device)["model"] if best is not None else None
            for folder, best in zip(model_dirs, bests)]


def _save_bests(model_dirs, bests, best_states, unsaved) -> None:
    """Write each model's newer validation-best weights to its best.pt."""
    for k, folder in enumerate(model_dirs or []):
        if unsaved[k] and folder is not None:
            save_atomic({"epoch": bests[k]["epoch"], "model": best_states[k], "val": bests[k]}, folder / "best.pt")
            unsaved[k] = False
