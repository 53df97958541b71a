"""Train K models of one architecture at once with `torch.func` (stack_module_state + vmap).

The parameters of the K models are stacked along a new first axis and trained as one set by
one optimizer. The forward is `vmap` over `functional_call`, except for the MLP (a chain of
Linear layers and elementwise activations), which runs as batched matrix products on the
stacked weights (`torch.baddbmm`): the same function, about 1.3x faster on CPU.

    from distill import packed
    ok, why = packed.can_pack(models, objectives)
    results = packed.fit_packed(models, data, cfg.train, seeds=[0, 1, 2], checkpoint_dir=Path("/tmp/p"))

ReLU MLPs in fp32 train without autograd: `_ManualMLP` writes their backward out as the same
batched products and hands each parameter its gradient in place, and the loss enters only as
d loss / d logits (cross-entropy's, or a kd objective's `gradient_step`), its value computed
once per epoch from the kept logits. About 1.5x faster than autograd for 8 packed MLPs on the
2-core CPU (benchmarks/pack_seeds.py writes both); tests compare it with the autograd path.

Used for the seeds of a born-again generation and for the members of an ensemble. Each
model k sees exactly the batches `engine.fit` would give it (its own seed's order and
augmentation), its own objective, and the same schedule; Adam, AdamW and SGD act on each
element, so one optimizer over the stacked parameters is K independent optimizers, and
gradient clipping is done per model. The result equals K calls of `engine.fit` to float
tolerance (tests/test_packed.py), at a fraction of the time for small models.

Packing needs: no BatchNorm (running statistics are per-call state), no active dropout
(its random masks would differ from the sequential run), and objectives that only need
the student's logits (no feature hooks, no trainable parameters). `can_pack` says why not.

Checkpoints: the packed state (stacked parameters, optimizer, histories) goes to
`checkpoint_dir/last.pt`; each model's validation-best weights to `model_dirs[k]/best.pt`,
and when training ends each model gets a `last.pt` of its own, so later steps (teachers,
ensembles, resume) read one model's files the same way whether it was packed or not.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import engine
from .config import TrainConfig
from .data import augment_batch, chunk_rows
from .metrics import split_metrics
from .models import has_batchnorm


def can_pack(models: list[nn.Module], objectives: Optional[list] = None) -> tuple[bool, str]:
    """(True, why) when `fit_packed` can train these models together, else (False, why not)."""
    if len(models) < 2:
        return False, "only one model"
    if any(has_batchnorm(m) for m in models):
        return False, "the model has BatchNorm"
    if any(isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0 for m in models for mod in m.modules()):
        return False, "the model has active dropout"
    kinds = {type(m) for m in models}
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(kinds) > 1 or len(shapes) > 1:
        return False, "the models differ in architecture"
    for objective in objectives or []:
        if objective is None:
            continue
        if isinstance(objective, nn.Module) and any(True for _ in objective.parameters()):
            return False, "the distillation objective has trainable parameters"
        if getattr(objective, "white_box", False) or getattr(objective, "info", {}).get("signal") == "features":
            return False, "the distillation objective reads intermediate features"
    return True, f"{len(models)} models without BatchNorm or dropout"


def _stacked_linear_forward(model: nn.Module) -> Optional[Callable]:
    """For a model that is a chain of Linear layers and parameter-free elementwise modules
    (the MLP), a forward on stacked parameters with batched matrix products: f(params, x) with
    x of shape (K, B, ...) (each model its batch) or (B, ...) (one batch for all), returning
    (K, B, C) logits. None for any other model (vmap over functional_call is used).

    It works feature-major: activations are (K, features, B) and each layer is W @ h + b, so
    the weights are used in their stored (out, in) layout, their gradients come out in it
    (no transposed copies), and the logits arrive as (K, C, B), the layout the loss wants; the
    (K, B, C) result is a transposed view. Measured on the 2-core CPU, a packed step of 8 MLPs
    took 0.74x the time of the row-major product, which was itself 1.3x faster than vmap."""
    from .models import MLP

    if type(model) is not MLP:
        return None
    steps = []
    for name, module in [*model.features.named_children(), ("head", model.head)]:
        prefix = name if name == "head" else f"features.{name}"
        if isinstance(module, nn.Linear):
            steps.append(("linear", prefix))
        elif isinstance(module, nn.Flatten):
            steps.append(("flatten", None))
        elif isinstance(module, (nn.ReLU, nn.GELU, nn.SiLU, nn.Identity, nn.Dropout)) and not any(
                True for _ in module.parameters()):
            steps.append(("apply", module))
        else:
            return None

    def forward(params: dict, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        h = x.flatten(1).t() if shared else x.flatten(2).transpose(1, 2)  # (in, B) or (K, in, B)
        for kind, what in steps:
            if kind == "linear":
                weight, bias = params[f"{what}.weight"], params.get(f"{what}.bias")
                if h.dim() == 2:  # one batch for all models: a single (K*out, in) @ (in, B) product
                    h = torch.matmul(weight, h)
                    h = h if bias is None else h + bias.unsqueeze(2)
                else:
                    h = torch.bmm(weight, h) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, h)
            elif kind == "apply":
                h = what(h)
        if h.dim() == 2:  # no linear layer at all
            h = h.expand(next(iter(params.values())).shape[0], -1, -1)
        return h.transpose(1, 2)
    return forward


#: train ReLU MLPs through _ManualMLP (False: through autograd, e.g. to measure what it saves)
WRITTEN_OUT_BACKWARD = True


class _ManualMLP:
    """Forward and backward of K stacked ReLU MLPs written out as batched matrix products, with
    no autograd: the training step of packed MLPs.

    The same products as autograd's backward of `_stacked_linear_forward` (feature-major, per
    layer: dW = G @ h^T, db = sum_B G, and G <- relu'(h) * (W^T @ G) for the layer below), but
    without its graph, its per-node bookkeeping, the zeroing of gradients and the accumulation
    into them: each gradient is written into `p.grad` in place (`out=`). ReLUs are applied in
    place; their outputs are what the backward needs. Built only for a chain of Linear layers
    with ReLU (or nothing) between them; `build` says None for anything else (GELU, SiLU, active
    dropout), which then trains through autograd. tests/test_packed.py compares the two."""

    def __init__(self, layers: list[str], relu_after: list[bool]):
        self.layers = layers          # parameter prefixes of the Linear layers, input to output
        self.relu_after = relu_after  # whether a ReLU follows each layer
        self.inputs: list[torch.Tensor] = []

    @classmethod
    def build(cls, model: nn.Module) -> Optional["_ManualMLP"]:
        from .models import MLP

        if type(model) is not MLP:
            return None
        layers, relu_after = [], []
        for name, module in [*model.features.named_children(), ("head", model.head)]:
            if isinstance(module, nn.Linear):
                layers.append(name if name == "head" else f"features.{name}")
                relu_after.append(False)
            elif isinstance(module, nn.ReLU) and layers and not relu_after[-1]:
                relu_after[-1] = True
            elif isinstance(module, nn.Flatten) and not layers:
                continue
            elif isinstance(module, (nn.Identity, nn.Dropout)) and getattr(module, "p", 0.0) == 0.0:
                continue
            else:
                return None
        return cls(layers, relu_after) if layers and not relu_after[-1] else None

    def forward(self, params: dict, xs: torch.Tensor) -> torch.Tensor:
        """(K, B, ...) inputs -> (K, C, B) logits; keeps each layer's input for `backward`."""
        h = xs.flatten(2).transpose(1, 2)  # (K, in, B)
        self.inputs = []
        for name, relu in zip(self.layers, self.relu_after):
            self.inputs.append(h)
            weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            h = torch.bmm(weight, h) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, h)
            if relu:
                h = h.relu_()
        return h

    def backward(self, params: dict, grad: torch.Tensor) -> None:
        """Write d loss / d parameter into each parameter's .grad, from `grad` = d loss / d logits (K, C, B)."""
        for i in reversed(range(len(self.layers))):
            name, h_in = self.layers[i], self.inputs[i]
            weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            for p in (weight, bias):
                if p is not None and p.grad is None:
                    p.grad = torch.empty_like(p)
            torch.bmm(grad, h_in.transpose(1, 2), out=weight.grad)
            if bias is not None:
                torch.sum(grad, dim=2, out=bias.grad)
            if i > 0:
                grad = torch.bmm(weight.transpose(1, 2), grad)
                if self.relu_after[i - 1]:
                    grad = torch.ops.aten.threshold_backward(grad, h_in, 0.0)
        self.inputs = []


def _cross_entropy_gradient(logits_cb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d/ds of each model's mean CE(y, s) over its batch, for (K, C, B) logits: (softmax(s) - onehot(y)) / B."""
    batch = targets.shape[1]
    grad = torch.softmax(logits_cb, dim=1)
    grad.scatter_add_(1, targets.unsqueeze(1), _minus_ones(grad, targets.shape))
    return grad.mul_(1.0 / batch)


_MINUS_ONES: dict[tuple, torch.Tensor] = {}


def _minus_ones(like: torch.Tensor, shape: tuple) -> torch.Tensor:
    key = (tuple(shape), like.dtype, like.device)
    if key not in _MINUS_ONES:
        if len(_MINUS_ONES) > 64:
            _MINUS_ONES.clear()
        _MINUS_ONES[key] = torch.full((shape[0], 1, shape[1]), -1.0, dtype=like.dtype, device=like.device)
    return _MINUS_ONES[key]


class _Logits(nn.Module):
    """Stands in for model k inside its objective: returns logits computed by the packed call."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def _clip_per_model(params: list[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ applied to each model's slice of the stacked gradients."""
    squares = sum(p.grad.pow(2).flatten(1).sum(1) for p in params if p.grad is not None)
    coef = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))))


def packed_batches(data, batch_size: int, generators: list[torch.Generator]):
    """(x, y, idx) stacked over models, shapes (K, B, ...): model k gets exactly the batches that
    `data.train_batches(batch_size, generators[k])` would give it, gathered (for all models) one
    chunk of batches at a time."""
    x_all, y_all = data.x["train"], data.y["train"]
    n = x_all.shape[0]
    orders = torch.stack([torch.randperm(n, generator=g, device=g.device) for g in generators]).to(x_all.device)
    chunk = chunk_rows(x_all, batch_size, len(generators))
    for chunk_start in range(0, n, chunk):
        chunk_idx = orders[:, chunk_start:chunk_start + chunk]
        x_chunk, y_chunk = x_all[chunk_idx], y_all[chunk_idx]
        for start in range(0, chunk_idx.shape[1], batch_size):
            xs = x_chunk[:, start:start + batch_size]
            if data.augment != "none":
                xs = torch.stack([augment_batch(x, data.augment, g, data.shift) for x, g in zip(xs, generators)])
            yield xs, y_chunk[:, start:start + batch_size], chunk_idx[:, start:start + batch_size]


def _unstack(stacked: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    return {name: value[k].detach().clone() for name, value in stacked.items()}


def _save_bests(model_dirs, bests, best_states, unsaved) -> None:
    """Write each model's newer validation-best weights to its best.pt."""
    for k, folder in enumerate(model_dirs):
        if unsaved[k] and folder is not None:
            engine.save_atomic({"epoch": bests[k]["epoch"], "model": best_states[k], "val": bests[k]},
                               folder / "best.pt")
            unsaved[k] = False


def fit_packed(models: list[nn.Module], data, train: TrainConfig, *, seeds: list[int],
               objectives: Optional[list] = None, tags: Optional[list[dict]] = None,
               checkpoint_dir: Optional[Path] = None, model_dirs: Optional[list[Path]] = None,
               on_epoch: Optional[Callable[[dict], None]] = None,
               emit: Optional[Callable[[list[dict]], None]] = None,
               device: Optional[torch.device] = None) -> list[engine.FitResult]:
    """Train `models` together; returns one `engine.FitResult` per model, as `engine.fit` would.

    `train_seconds` of each result is the packed wall time divided by K (each model's share).
    """
    device = device or engine.resolve_device(train.device)
    K = len(models)
    objectives = list(objectives or [None] * K)
    objectives = [o or engine.cross_entropy for o in objectives]
    tags = [dict(t) for t in (tags or [{} for _ in range(K)])]
    model_dirs = list(model_dirs) if model_dirs is not None else [None] * K
    if checkpoint_dir is not None and None in model_dirs:
        raise ValueError("fit_packed: a checkpoint_dir needs model_dirs (where each model's best.pt goes)")

    # all models already finished (their own last.pt at the last epoch): nothing to train
    finished = [d is not None and (d / "last.pt").exists() for d in model_dirs]
    if all(finished):
        results = []
        for model, objective, t, seed, d in zip(models, objectives, tags, seeds, model_dirs):
            results.append(engine.fit(model, data, train, seed=seed, objective=objective, tags=t,
                                      checkpoint_dir=d, emit=emit, device=device))
        return results

    for model in models:
        model.to(device)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p, b, x):
        return functional_call(base, (p, b), (x,))

    stacked_forward = _stacked_linear_forward(models[0])
    if stacked_forward is not None:  # an MLP: batched matrix products on the stacked weights
        def batched(p, b, xs):
            return stacked_forward(p, xs)

        def shared(p, b, x):
            return stacked_forward(p, x, shared=True)
    else:
        batched = vmap(call)                           # each model its own batch
        shared = vmap(call, in_dims=(0, 0, None))      # every model the same batch (evaluation)
    param_list = list(params.values())
    optimizer = engine.make_optimizer([{"params": param_list}], train)

    n_train = data.size("train")
    steps_per_epoch = math.ceil(n_train / train.batch_size)
    total_steps = steps_per_epoch * train.epochs
    histories: list[list[dict]] = [[] for _ in range(K)]
    bests: list[Optional[dict]] = [None] * K
    start_epoch, train_seconds = 0, 0.0
    last_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if last_path is not None and last_path.exists():
        state = engine.load_checkpoint(last_path, device)
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        engine.set_rng_state(state["rng"])
        histories, bests = [engine.unpack_rows(h) for h in state["histories"]], state["bests"]
        start_epoch, train_seconds = state["epoch"], state["train_seconds"]
        if emit:
            for history in histories:
                emit(history)
    resumed_from = start_epoch
    best_states: list[Optional[dict]] = [None] * K  # validation-best weights not yet on disk (or kept)
    unsaved, saved_at = [False] * K, time.perf_counter()

    def evaluate() -> tuple[list[dict], list[dict]]:
        """Every model on validation and test: one pass, one host sync."""
        # chunks of eval_batch_size / K examples: K models' activations of a chunk are as large as
        # one model's at eval_batch_size, and stay in cache (whole 1000-example splits were 2x slower)
        rows = max(32, train.eval_batch_size // K)
        with torch.inference_mode():
            logits = [torch.cat([shared(params, buffers, x) for x, _ in data.eval_batches(split, rows)], dim=1)
                      for split in engine.SPLITS_EVALUATED]
        per_model = split_metrics(logits, [data.y[s] for s in engine.SPLITS_EVALUATED])
        return [m[0] for m in per_model], [m[1] for m in per_model]

    plain = all(o is engine.cross_entropy for o in objectives)  # one fused loss for all models
    # ReLU MLPs in fp32 train without autograd (_ManualMLP); their loss is d loss / d logits:
    # cross-entropy's written out, or each objective's gradient_step (kd at constant T and alpha)
    manual = _ManualMLP.build(models[0]) if train.precision == "fp32" and WRITTEN_OUT_BACKWARD else None
    gradient_steps = manual is not None and not plain and all(getattr(o, "gradient_ready", False) for o in objectives)
    for epoch in range(start_epoch, train.epochs):
        started = time.perf_counter()
        generators = [torch.Generator(device=device).manual_seed(engine.epoch_seed(s, epoch)) for s in seeds]
        # as in engine.fit: nothing but list appends per step, one reduction and sync per epoch
        step_losses, sizes, outputs, labels = [], [], [], []
        kept: list[list] = [[] for _ in range(K)]
        step = epoch * steps_per_epoch
        for xs, ys, idxs in packed_batches(data, train.batch_size, generators):
            lr = engine.lr_at(step, total_steps, steps_per_epoch, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            progress = step / total_steps
            if manual is not None:
                with torch.no_grad():
                    logits_cb = manual.forward(params, xs)  # (K, C, B)
                logits = logits_cb.transpose(1, 2)
                if plain:
                    with torch.no_grad():
                        grad_cb = _cross_entropy_gradient(logits_cb, ys)
                elif gradient_steps:
                    outs = [objectives[k].gradient_step(_Logits(logits[k]), xs[k], ys[k], idxs[k], progress)
                            for k in range(K)]
                    grad_cb = torch.stack([o["logits_grad"] for o in outs]).transpose(1, 2)
                    for k, o in enumerate(outs):
                        kept[k].append(o["keep"])
                else:  # any other logit objective: its gradient by autograd, from the logits alone
                    leaf = logits.detach().requires_grad_(True)
                    losses = torch.stack([objectives[k](_Logits(leaf[k]), xs[k], ys[k], idxs[k], progress)["loss"]
                                          for k in range(K)])
                    (grad,) = torch.autograd.grad(losses.sum(), leaf)
                    grad_cb = grad.transpose(1, 2)
                    step_losses.append(losses.detach())
                with torch.no_grad():
                    manual.backward(params, grad_cb)
            else:
                with engine.autocast(device, train.precision):
                    logits = batched(params, buffers, xs)
                    if plain:  # class-major (K, C, B): torch's CPU log_softmax is 2x faster there than over C last
                        losses = F.cross_entropy(logits.transpose(1, 2).float(), ys, reduction="none").mean(1)
                    else:
                        outs = [objectives[k](_Logits(logits[k]), xs[k], ys[k], idxs[k], progress)
                                for k in range(K)]
                        losses = torch.stack([o["loss"] for o in outs])
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                step_losses.append(losses.detach())
            if train.grad_clip is not None:
                _clip_per_model(param_list, train.grad_clip)
            optimizer.step()
            outputs.append(logits.detach())
            labels.append(ys)
            sizes.append(ys.shape[1])
            step += 1
        loss_sum = None  # the epoch's loss per model, where the steps computed gradients only
        if manual is not None and plain:
            loss_sum = F.cross_entropy(torch.cat([o.transpose(1, 2) for o in outputs], dim=2).float(),
                                       torch.cat(labels, dim=1), reduction="none").sum(1)
        elif manual is not None and gradient_steps:
            loss_sum = torch.stack([objectives[k].deferred_loss_sum(kept[k], [o[k] for o in outputs],
                                                                    [y[k] for y in labels]) for k in range(K)])
        epoch_sums, count_sum = engine.epoch_sums(step_losses, sizes, outputs, labels, dim=1, loss_sum=loss_sum)
        seconds = time.perf_counter() - started
        train_seconds += seconds

        val, test = evaluate()
        for k in range(K):
            metrics = {"train": {"loss": epoch_sums[k][0] / count_sum, "acc": epoch_sums[k][1] / count_sum,
                                 "nll": None, "ece": None}, "val": val[k], "test": test[k]}
            rows = [{**tags[k], "epoch": epoch + 1, "split": split, **values, "lr": lr, "seconds": seconds / K}
                    for split, values in metrics.items()]
            histories[k].extend(rows)
            if engine._better(val[k], bests[k]):
                bests[k] = {"epoch": epoch + 1, "acc": val[k]["acc"], "nll": val[k]["nll"]}
                best_states[k] = _unstack({**params, **buffers}, k)
                unsaved[k] = True
            if emit:
                emit(rows)
        # the same checkpoint policy as engine.fit: the last epoch, and every train.checkpoint_seconds
        due = last_path is not None and (
            epoch + 1 == train.epochs or time.perf_counter() - saved_at >= train.checkpoint_seconds)
        if due:
            _save_bests(model_dirs, bests, best_states, unsaved)
            engine.save_atomic({
                "epoch": epoch + 1, "params": {k: v.detach() for k, v in params.items()}, "buffers": buffers,
                "optimizer": optimizer.state_dict(), "rng": engine.rng_state(),
                "histories": [engine.pack_rows(h) for h in histories],
                "bests": bests, "train_seconds": train_seconds, "seeds": list(seeds),
            }, last_path)
            saved_at = time.perf_counter()
        if on_epoch:
            for k in range(K):
                on_epoch({"epoch": epoch + 1, "lr": lr, "seconds": seconds, "model": k, "seed": seeds[k],
                          "checkpointed": due, "checkpoint": str(last_path) if last_path else None,
                          "train_loss": epoch_sums[k][0] / count_sum, "train_acc": epoch_sums[k][1] / count_sum,
                          **{f"val_{name}": v for name, v in val[k].items()}})

    # hand each model its validation-selected weights, and give each one a last.pt of its own
    _save_bests(model_dirs, bests, best_states, unsaved)
    results = []
    for k, model in enumerate(models):
        best_state = best_states[k]
        if model_dirs[k] is not None:
            if best_state is None:  # the best epoch was before this session
                best_state = engine.load_checkpoint(model_dirs[k] / "best.pt", device)["model"]
            engine.save_atomic({"epoch": train.epochs, "model": _unstack({**params, **buffers}, k),
                                "optimizer": None, "objective": None, "rng": engine.rng_state(),
                                "history": engine.pack_rows(histories[k]), "best": bests[k],
                                "train_seconds": train_seconds / K, "packed": True}, model_dirs[k] / "last.pt")
        model.load_state_dict(best_state)
        selected = bests[k]["epoch"]
        results.append(engine.FitResult(
            history=histories[k], selected_epoch=selected, selected=engine._metrics_at(histories[k], selected),
            last=engine._metrics_at(histories[k], train.epochs), train_seconds=train_seconds / K,
            resumed_from=resumed_from, extra={"packed": K}))
    return results
