"""How the K models of one `engine.fit` call run a step: as themselves, or stacked.

    replicas = make_replicas(models)               # Stacked when K >= 2, else Modules (models on their device)
    logits, features = replicas.forward(xs, layers)  # xs (K, B, ...) -> (K, B, C)

The training loop cannot tell the two apart; both give (K, B, C) logits for K batches,
(K, N, C) logits of one shared batch for evaluation, their trainable parameters, each
model's state_dict, and per-model gradient clipping.

- `Modules` (K = 1): the model itself, so anything runs: BatchNorm, dropout, forward hooks
  for white-box methods, `torch.compile`, channels_last.
- `Stacked` (K >= 2, `can_stack` says when): the K models' parameters and buffers stacked along
  a new first axis (`torch.func.stack_module_state`), the parameters trained by one optimizer;
  the forward is `vmap` over `functional_call`. Adam, AdamW and SGD act elementwise, so one
  optimizer over stacked parameters is K independent optimizers. BatchNorm keeps per-model
  statistics: running mean, var and num_batches_tracked are stacked buffers that vmap updates
  in place, each from its own model's batch, in train mode, and reads in eval mode (the meta
  copy of the model that vmap calls follows `train(mode)`), as K separate models would.
  Dropout draws per-model masks (`randomness="different"`, from the global generator, which
  checkpoints save, so a resumed fit draws the same ones). An MLP (Linear layers and
  parameter-free activations, dropout included) runs as batched matrix products on the stacked
  weights instead of vmap: the same function, about 1.3x faster on CPU (feature-major, W @ h + b:
  weights used in their stored layout, no transposed copies). tests/test_stacked.py and
  tests/test_stacked_bn.py hold stacked training against one model at a time.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from distill.teachers.features import capture
from distill.models.parts import has_batchnorm


#: On the CPU, vmap runs a stacked convolution as one grouped convolution, which the CPU kernels run
#: slower than the K convolutions one after another (measured on 2 cores: 0.85-0.94x for 5 MNIST-1D
#: CNNs, 0.34x for 8 CIFAR ResNet-20s, benchmarks/sweep.py); so `can_stack(..., device=cpu)` trains
#: convolutional models one after another there, and stacks them on a GPU. Tests that hold the stacked
#: convolution path against one model at a time on the CPU set this to True.
STACK_CONVOLUTIONS_ON_CPU = False


def has_convolution(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def can_stack(models: list[nn.Module], objectives: Optional[list] = None, device=None) -> tuple[bool, str]:
    """(True, why) when these models can train stacked in one fit, else (False, why not). With `device`,
    also whether stacking pays there (not for convolutions on the CPU, STACK_CONVOLUTIONS_ON_CPU)."""
    if len(models) < 2:
        return False, "only one model"
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len({type(m) for m in models}) > 1 or len(shapes) > 1:
        return False, "the models differ in architecture"
    if getattr(models[0], "stack_refused", None):  # a model class that cannot run under vmap says why
        return False, models[0].stack_refused
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.momentum is None
           for m in models for mod in m.modules()):  # its factor 1 / num_batches_tracked is read on the host
        return False, "the model has BatchNorm with momentum=None (a cumulative average)"
    for objective in objectives or []:
        if objective is not None and any(True for _ in objective.parameters()):
            return False, "the distillation objective has trainable parameters"
        if objective is not None and getattr(objective, "runs_student", False):
            return False, "the distillation objective runs the student itself (on-policy generation, a fused head)"
        if objective is not None and objective.student_layers:
            return False, "the distillation objective reads intermediate features"
    if (device is not None and torch.device(device).type == "cpu" and has_convolution(models[0])
            and not STACK_CONVOLUTIONS_ON_CPU):
        return False, "convolutions run slower stacked than one after another on the CPU (they stack on a GPU)"
    kinds = [what for what, has in (("BatchNorm statistics", has_batchnorm(models[0])),
                                    ("dropout masks", has_dropout(models[0]))) if has]
    if not kinds:
        return True, f"{len(models)} models without BatchNorm or dropout"
    return True, f"{len(models)} models, {' and '.join(kinds)} per model"


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0 for mod in model.modules())


class Modules:
    """One model, run as itself."""

    def __init__(self, model: nn.Module, compile: bool = False, channels_last: bool = False):
        self.models = [model]
        self.forward_model = torch.compile(model) if compile else model
        self.channels_last = channels_last

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.models[0].parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.models[0].train(mode)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, xs: torch.Tensor, layers=()) -> tuple[torch.Tensor, list]:
        x = self._layout(xs[0])
        if layers:
            logits, features = capture(self.forward_model, list(layers), x, "distill.layers", "student")
            return logits.unsqueeze(0), [features]
        return self.forward_model(x).unsqueeze(0), [[]]

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.models[0](self._layout(x))[None]

    def state_dict(self, k: int) -> dict:
        return {name: value.detach().clone() for name, value in self.models[0].state_dict().items()}

    def load_state_dict(self, k: int, state: dict) -> None:
        self.models[0].load_state_dict(state)

    def clip_(self, max_norm: float) -> None:
        nn.utils.clip_grad_norm_(self.parameters(), max_norm)


class Stacked:
    """K models of one architecture with stacked parameters and buffers (see the module docstring)."""

    def __init__(self, models: list[nn.Module]):
        self.models = models
        self.params, self.buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        self.base = base

        def call(p, b, x):
            return functional_call(base, (p, b), (x,))

        # randomness="different": each model its own dropout masks (drawn from the global generator, so a
        # resumed fit draws the same ones); BatchNorm's running statistics are the stacked buffers, each
        # model's updated in place by its own batch in train mode and read in eval mode
        mlp = stacked_mlp_forward(models[0])
        self._batched = (lambda p, b, xs: mlp(p, xs)) if mlp else vmap(call, randomness="different")
        self._shared = (lambda p, b, x: mlp(p, x, shared=True)) if mlp else \
            vmap(call, in_dims=(0, 0, None), randomness="different")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)  # BatchNorm: batch or running statistics; dropout on or off
        self.models[0].train(mode)  # the MLP path runs models[0]'s activation and dropout modules

    def forward(self, xs: torch.Tensor, layers=()) -> tuple[torch.Tensor, list]:
        return self._batched(self.params, self.buffers, xs), [[] for _ in self.models]

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared(self.params, self.buffers, x)

    def state_dict(self, k: int) -> dict:
        return {name: value[k].detach().clone() for name, value in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, k: int, state: dict) -> None:
        with torch.no_grad():
            for name, value in {**self.params, **self.buffers}.items():
                value[k].copy_(state[name])

    def clip_(self, max_norm: float) -> None:
        """torch.nn.utils.clip_grad_norm_ applied to each model's slice of the stacked gradients."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        squares = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        coef = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def make_replicas(models: list[nn.Module], compile: bool = False, channels_last: bool = False):
    return Modules(models[0], compile, channels_last) if len(models) == 1 else Stacked(models)


def stacked_mlp_forward(model: nn.Module) -> Optional[Callable]:
    """f(params, x) for stacked MLPs: x (K, B, ...) (each model its batch) or (B, ...) with
    shared=True, returning (K, B, C) logits; None for any other model (vmap is used)."""
    from distill.models import MLP

    if type(model) is not MLP:
        return None
    steps = []
    for name, module in [*model.features.named_children(), ("head", model.head)]:
        if isinstance(module, nn.Linear):
            steps.append(("linear", name if name == "head" else f"features.{name}"))
        elif isinstance(module, nn.Flatten):
            continue
        elif isinstance(module, (nn.ReLU, nn.GELU, nn.SiLU, nn.Identity, nn.Dropout)):
            steps.append(("apply", module))
        else:
            return None

    def forward(params: dict, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        h = x.flatten(1).t() if shared else x.flatten(2).transpose(1, 2)  # (in, B) or (K, in, B)
        for kind, what in steps:
            if kind == "apply":
                h = what(h)
                continue
            weight, bias = params[f"{what}.weight"], params.get(f"{what}.bias")
            if h.dim() == 2:  # one batch for all models: a single (K*out, in) @ (in, B) product
                h = torch.matmul(weight, h)
                h = h if bias is None else h + bias.unsqueeze(2)
            else:
                h = torch.bmm(weight, h) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, h)
        return h.transpose(1, 2)
    return forward
