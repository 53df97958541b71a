"""The training loop: one readable `fit` for every model this project trains.

    from distill import engine
    engine.setup_torch(cfg.train)                       # threads, determinism
    model = engine.new_model(cfg.model, data, seed=0)
    result = engine.fit(model, data, cfg.train, seed=0, checkpoint_dir=Path("/tmp/ckpt"))

What one step minimises is an *objective*: `objective(model, x, y, idx, progress)` returns a
dict of named tensors with at least `loss` and `logits` (`idx` are the batch's positions in
the train split, `progress` is the share of training done, in [0, 1)). The default is
cross-entropy on the labels; distillation plugs in its own objective (teacher signal +
loss) without touching this loop. An objective that is an `nn.Module` has its parameters
trained and checkpointed with the model (e.g. FitNet's projections).

An objective may also offer `gradient_step(model, x, y, idx, progress, rows=...)`, returning
{logits, logits_grad, keep} or None: the loop then calls `logits.backward(logits_grad)`
(no loss node in the graph) and, at the end of the epoch, `objective.deferred_loss_sum(keep
of every step, logits, labels)` for the train loss. kd at constant T and alpha does this
(`teachers.DistillObjective`); `objective.gradient_rows()` names a per-example table the
loop gathers with the batches (the cached teacher's part of the gradient).

Each epoch: the train split is shuffled with a generator seeded by (seed, epoch), batched by
indexing tensors that live on the device, augmented on the device; the host syncs once,
at the end of the epoch. Then validation and test are evaluated (loss, acc, nll, ece), and
a checkpoint is written atomically (`last.pt`: model, optimizer, objective, RNG states,
history; `best.pt`: the weights with the best validation accuracy) at the last epoch and
whenever `train.checkpoint_seconds` have passed since the last one (0 = every epoch); the
best weights are loaded into the model at the end. A `checkpoint_dir` with a `last.pt` resumes: the
result is bit-identical on CPU to a run that never stopped.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .metrics import split_metrics

Objective = Callable[..., dict]
SPLITS_EVALUATED = ("val", "test")


# ---------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .errors import UserError

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: {name} was asked for but CUDA is not available; use train.device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("train.device: mps was asked for but is not available; use train.device=cpu or auto")
    return device


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves blocks over 128 KiB with fresh mmap pages and trims the heap when
    they are freed, so a training step whose tensors are a few hundred KiB (8 packed MLPs,
    a batch of images) pays a page fault per 4 KiB page at every step: elementwise ops on
    such tensors ran 2-10x slower than on warm memory (measured on the 2-core CPU). Blocks up
    to 32 MiB now come from the heap, which keeps its high-water mark (as CUDA's caching
    allocator does). Linux/glibc only; elsewhere, or with DISTILL_MALLOC=default, nothing
    changes. Returns whether the setting was applied."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("DISTILL_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return _MALLOC_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
            libc.mallopt(m_trim_threshold, 512 * 2**20))
    except (OSError, AttributeError):  # not glibc
        _MALLOC_TUNED = False
    return _MALLOC_TUNED


def setup_torch(train: TrainConfig) -> None:
    """Pin the thread count, keep freed memory for reuse (`keep_freed_memory`) and
    (optionally) make every algorithm deterministic."""
    keep_freed_memory()
    torch.set_num_threads(train.threads or cpu_count())
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
    from .models import create_model

    seed_everything(seed)
    return create_model(model_cfg, data.input_shape, data.num_classes)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order and augmentation of one epoch (independent of the model's RNG)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


def rng_state() -> dict:
    # python's and numpy's states as one bytes object each: torch.save visits every element
    # of a 625-int tuple, which costs more than a small model's epoch
    state = {"torch": torch.get_rng_state(), "numpy": pickle.dumps(np.random.get_state()),
             "python": pickle.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(pickle.loads(state["numpy"]))
    random.setstate(pickle.loads(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


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
    """SGD, Adam or AdamW with torch's fused kernels (one kernel for all parameters: 3x faster
    steps for small models on CPU than the per-parameter loop, same update rule)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov and train.momentum > 0,
                               weight_decay=train.weight_decay, fused=True)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, progress: float) -> dict:
    """Training from labels alone: loss = CE(y, model(x))."""
    logits = model(x)
    return {"loss": F.cross_entropy(logits, y), "logits": logits}


# ---------------------------------------------------------------- evaluation


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def use_channels_last(train: TrainConfig, device: torch.device, input_shape) -> bool:
    if len(input_shape) != 3:  # only images (C, H, W)
        return False
    return train.channels_last if train.channels_last is not None else device.type == "cuda"


@torch.inference_mode()
def predict_splits(model: nn.Module, data, splits, batch_size: int = 1024, precision: str = "fp32",
                   channels_last: bool = False) -> list[torch.Tensor]:
    """Logits of whole splits (float32, on the data's device), each in the split's order."""
    was_training = model.training
    model.eval()
    results = []
    for split in splits:
        device = data.x[split].device
        outputs = []
        for x, _ in data.eval_batches(split, batch_size):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                outputs.append(model(x).float())
        results.append(outputs[0] if len(outputs) == 1 else torch.cat(outputs))
    model.train(was_training)
    return results


def predict(model: nn.Module, data, split: str, batch_size: int = 1024, precision: str = "fp32",
            channels_last: bool = False) -> torch.Tensor:
    """Logits of a whole split (float32, on the data's device), in the split's order."""
    return predict_splits(model, data, [split], batch_size, precision, channels_last)[0]


def evaluate(model: nn.Module, data, splits=SPLITS_EVALUATED, batch_size: int = 1024, precision: str = "fp32",
             channels_last: bool = False) -> dict[str, dict]:
    """split -> {loss, acc, nll, ece} of `model`, all splits in one pass and one host sync."""
    logits = predict_splits(model, data, splits, batch_size, precision, channels_last)
    metrics = split_metrics([x[None] for x in logits], [data.y[s] for s in splits])[0]
    return dict(zip(splits, metrics))


# ---------------------------------------------------------------- checkpoints


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()  # serialised in memory, written in one call: torch.save's many small
    torch.save(obj, buffer)  # writes to a file cost more than the serialising itself
    with open(tmp, "wb") as f:
        f.write(buffer.getbuffer())
    os.replace(tmp, path)


def pack_rows(rows: list[dict]) -> str:
    """History rows as one JSON string: pickling thousands of small dicts every epoch would cost
    more than the epoch of a small model."""
    return json.dumps(rows)


def unpack_rows(packed) -> list[dict]:
    return json.loads(packed) if isinstance(packed, str) else packed


def load_checkpoint(path: Path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)


# ---------------------------------------------------------------- the loop


@dataclass
class FitResult:
    history: list[dict]          # one row per (epoch, split), as written to records.csv
    selected_epoch: int          # best validation accuracy (ties: lower val nll, then earlier)
    selected: dict               # split -> metrics at the selected epoch
    last: dict                   # split -> metrics at the last epoch
    train_seconds: float         # summed epoch times, over all sessions of a resumed run
    resumed_from: int = 0        # epochs already done when this call started
    extra: dict = field(default_factory=dict)


def _better(candidate: dict, best: Optional[dict]) -> bool:
    if best is None:
        return True
    if candidate["acc"] != best["acc"]:
        return candidate["acc"] > best["acc"]
    return candidate["nll"] < best["nll"]


def _metrics_at(history: list[dict], epoch: int) -> dict:
    return {row["split"]: row for row in history if row["epoch"] == epoch}


def epoch_sums(losses, sizes, outputs, labels, dim: int = 0, loss_sum: Optional[torch.Tensor] = None
               ) -> tuple[list, int]:
    """One epoch's train figures from its steps' kept tensors, with one host sync:
    ([summed loss x batch size, correct predictions], examples).

    Per step: `losses` a scalar, `outputs` (B, C) logits, `labels` (B,); or, for K packed
    models (dim=1), (K,), (K, B, C) and (K, B), and then the first item is one pair per model.
    `loss_sum`: the summed loss computed elsewhere (gradient steps keep no loss), else from `losses`."""
    if loss_sum is None or losses:
        if loss_sum is not None or len(losses) != len(sizes):
            raise RuntimeError("epoch_sums: every step of an epoch must keep a loss, or none")
        weights = torch.tensor(sizes, dtype=torch.float32, device=labels[0].device)
        loss_sums = weights @ torch.stack(losses).float()
    else:
        loss_sums = loss_sum.float()
    correct = (torch.cat(outputs, dim).argmax(-1) == torch.cat(labels, dim)).sum(-1)
    return torch.stack([loss_sums, correct.to(loss_sums.dtype)], dim=-1).tolist(), sum(sizes)


def fit(model: nn.Module, data, train: TrainConfig, *, seed: int, objective: Optional[Objective] = None,
        tags: Optional[dict] = None, checkpoint_dir: Optional[Path] = None,
        on_epoch: Optional[Callable[[dict], None]] = None, emit: Optional[Callable[[list[dict]], None]] = None,
        device: Optional[torch.device] = None) -> FitResult:
    """Train `model` on `data.x['train']` for `train.epochs` epochs; see the module docstring.

    `tags` (role, name, generation, member, seed) are copied into every history row. `emit`
    receives each epoch's rows (the whole history first when resuming), `on_epoch` a dict of
    train and validation figures (never test) after each epoch, with `checkpointed` (whether
    this epoch wrote `last.pt`: at the last epoch and every `train.checkpoint_seconds`) and
    the checkpoint's path under `checkpoint`.
    """
    device = device or resolve_device(train.device)
    objective = objective or cross_entropy
    tags = dict(tags or {})
    channels_last = use_channels_last(train, device, data.input_shape)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if isinstance(objective, nn.Module):
        objective.to(device)
        extra = [p for p in objective.parameters() if p.requires_grad]
        if extra:
            params.append({"params": extra})
    optimizer = make_optimizer(params, train)
    forward_model = torch.compile(model) if train.compile else model
    # the gradient path is fp32 only: under bf16 autocast the step builds its loss as usual
    gradient_step = getattr(objective, "gradient_step", None) if train.precision == "fp32" else None

    n_train = data.size("train")
    steps_per_epoch = math.ceil(n_train / train.batch_size)
    total_steps = steps_per_epoch * train.epochs

    history: list[dict] = []
    best: Optional[dict] = None
    start_epoch, train_seconds = 0, 0.0
    last_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    best_path = checkpoint_dir / "best.pt" if checkpoint_dir else None
    if last_path is not None and last_path.exists():
        state = load_checkpoint(last_path, device)
        model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:  # None: a finished model saved by packed training
            optimizer.load_state_dict(state["optimizer"])
        if isinstance(objective, nn.Module) and state.get("objective") is not None:
            objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
        history, best = unpack_rows(state["history"]), state["best"]
        start_epoch, train_seconds = state["epoch"], state["train_seconds"]
        if emit and history:
            emit(history)
    resumed_from = start_epoch
    best_state, best_unsaved, saved_at = None, False, time.perf_counter()

    for epoch in range(start_epoch, train.epochs):
        model.train()
        if isinstance(objective, nn.Module):
            objective.train()
        started = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        # no host sync and no extra op per step: each step's loss, logits and labels are kept
        # (detached) and reduced once at the end of the epoch, with one host sync
        losses, sizes, outputs, labels, kept = [], [], [], [], []
        step = epoch * steps_per_epoch
        # an objective may ask for a table of per-example rows, gathered with the batches
        gradient_rows = getattr(objective, "gradient_rows", None) if gradient_step else None
        rows_table = gradient_rows() if gradient_rows else None
        for batch in data.train_batches(train.batch_size, generator, rows=rows_table):
            x, y, idx = batch[:3]
            lr = lr_at(step, total_steps, steps_per_epoch, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, train.precision):
                # an objective with a gradient path gives d loss / d logits and no loss value
                out = gradient_step(forward_model, x, y, idx, step / total_steps,
                                    rows=batch[3] if rows_table is not None else None) if gradient_step else None
                if out is None:
                    out = objective(forward_model, x, y, idx, step / total_steps)
            optimizer.zero_grad(set_to_none=True)
            if "logits_grad" in out:
                out["logits"].backward(out["logits_grad"])
                kept.append(out["keep"])
            else:
                out["loss"].backward()
                losses.append(out["loss"].detach())
            if train.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            outputs.append(out["logits"].detach())
            labels.append(y)
            sizes.append(y.shape[0])
            step += 1
        deferred = objective.deferred_loss_sum(kept, outputs, labels) if kept else None
        (loss_sum, correct_sum), count_sum = epoch_sums(losses, sizes, outputs, labels, loss_sum=deferred)
        seconds = time.perf_counter() - started
        train_seconds += seconds

        metrics = {"train": {"loss": loss_sum / count_sum, "acc": correct_sum / count_sum, "nll": None, "ece": None}}
        metrics.update(evaluate(model, data, SPLITS_EVALUATED, train.eval_batch_size, train.precision, channels_last))
        rows = [{**tags, "epoch": epoch + 1, "split": split, **values, "lr": lr, "seconds": seconds}
                for split, values in metrics.items()]
        history.extend(rows)
        if _better(metrics["val"], best):
            best = {"epoch": epoch + 1, "acc": metrics["val"]["acc"], "nll": metrics["val"]["nll"]}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_unsaved = True
        # checkpoint at the last epoch and whenever train.checkpoint_seconds have passed since the
        # last one: a resumed run replays from there bit-identically, so nothing else is lost
        due = checkpoint_dir is not None and (
            epoch + 1 == train.epochs or time.perf_counter() - saved_at >= train.checkpoint_seconds)
        if due:
            if best_unsaved:
                save_atomic({"epoch": best["epoch"], "model": best_state, "val": best}, best_path)
                best_unsaved = False
            save_atomic({
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "objective": objective.state_dict() if isinstance(objective, nn.Module) else None,
                "rng": rng_state(), "history": pack_rows(history), "best": best, "train_seconds": train_seconds,
            }, last_path)
            saved_at = time.perf_counter()
        if emit:
            emit(rows)
        if on_epoch:
            report = {"epoch": epoch + 1, "lr": lr, "seconds": seconds, "checkpointed": due,
                      "checkpoint": str(last_path) if last_path else None}
            for split in ("train", "val"):
                report.update({f"{split}_{k}": v for k, v in metrics[split].items() if v is not None})
            on_epoch(report)

    # hand back the validation-selected weights
    if best_state is not None:
        model.load_state_dict(best_state)
    elif best_path is not None and best_path.exists():  # the best epoch was before this session
        model.load_state_dict(load_checkpoint(best_path, device)["model"])
    selected_epoch = best["epoch"] if best else train.epochs
    return FitResult(history=history, selected_epoch=selected_epoch, selected=_metrics_at(history, selected_epoch),
                     last=_metrics_at(history, train.epochs), train_seconds=train_seconds, resumed_from=resumed_from)
