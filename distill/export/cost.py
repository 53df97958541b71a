"""What a model costs to keep and to run: parameters, bytes, FLOPs, latency, throughput.

    from distill.export.cost import model_cost, ensemble_cost
    cost = model_cost(model, data.input_shape)                 # CPU figures
    cost = model_cost(model, data.input_shape, device="cuda")  # CPU figures, and the GPU's
    total = ensemble_cost([cost_a, cost_b])                    # an ensemble: the sum of its members

Figures (one dict, JSON-ready):

- `params`: number of parameters.
- `size_bytes`: bytes of the state_dict as `torch.save` writes it (the checkpoint's weights).
- `flops`: forward FLOPs of one example, counted by torch's own `FlopCounterMode` (a
  multiply-add is 2 FLOPs; matmuls, convolutions and attention are counted, elementwise ops
  such as ReLU and normalisation are not).
- `latency_ms`: milliseconds for one example (batch size 1), the median of repeated timings
  after warm-up calls that are not counted.
- `throughput`: examples per second at batch size `batch_size` (256 by default), from the
  median time of repeated calls after a warm-up call.
- `threads`, `batch_size`: the CPU thread count and large batch the timings were taken with.
- with `device` a CUDA device, also `latency_ms_gpu` and `throughput_gpu`, timed with
  `torch.cuda.synchronize()` around every call.

Inputs are random normal examples, or zeros for integer inputs (token ids of a language model:
`dtype=torch.long`). Experiments measure each trained model once, after training, with
`row_cost(model, data, train_cfg, device)` (budget `train.cost_budget`, 0 = not measured): the
figures of ROW_KEYS that go into its summary.json row; an ensemble row gets `ensemble_row_cost`
of its members' rows.

Timings are capped by time (`budget_s` per figure, at least `MIN_REPEATS` timed calls), so a
small MLP is measured in well under a second. The model is copied for the measurement: the
caller's model keeps its device and its train/eval mode. Nothing here trains.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from typing import Callable

import torch
from torch import nn

MIN_REPEATS = 3    # timed calls per figure, whatever the budget
MAX_REPEATS = 50   # timed calls per figure at most
WARMUP = 2         # untimed calls before each figure
COST_KEYS = ("params", "size_bytes", "flops", "latency_ms", "throughput")
GPU_KEYS = ("latency_ms_gpu", "throughput_gpu")
ROW_KEYS = ("size_bytes", "flops", "latency_ms", "throughput", *GPU_KEYS)  # a summary row's (params: already there)
TIMING_KEYS = ("latency_ms", "throughput", *GPU_KEYS)  # differ from one measurement to the next


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the size of the weights on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def example_inputs(shape: tuple[int, ...], device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random normal inputs of `shape`, or zeros (valid token ids) when `dtype` is not a float type.
    Drawn from a generator of their own: measuring a model leaves torch's global RNG as it was."""
    if dtype.is_floating_point:
        return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    return torch.zeros(shape, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_shape: tuple[int, ...], device="cpu",
                dtype: torch.dtype = torch.float32) -> int:
    """Forward FLOPs of one example (batch size 1), by `torch.utils.flop_counter.FlopCounterMode`."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def median_seconds(call: Callable[[], object], budget_s: float, sync: Callable[[], None] = lambda: None,
                   warmup: int = WARMUP) -> float:
    """Median seconds of one `call()`, after `warmup` untimed calls; repeated while the timed
    calls have taken less than `budget_s`, between MIN_REPEATS and MAX_REPEATS times."""
    for _ in range(warmup):
        call()
    sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < MIN_REPEATS or (spent < budget_s and len(times) < MAX_REPEATS):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times)


def time_model(model: nn.Module, input_shape: tuple[int, ...], device, batch_size: int = 256,
               budget_s: float = 0.1, dtype: torch.dtype = torch.float32) -> dict:
    """{"latency_ms": batch 1, "throughput": examples/s at `batch_size`} of `model` on `device`."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    one = example_inputs((1, *input_shape), device, dtype)
    many = example_inputs((batch_size, *input_shape), device, dtype)
    with torch.inference_mode():
        latency = median_seconds(lambda: model(one), budget_s, sync)
        big = median_seconds(lambda: model(many), budget_s, sync, warmup=1)
    return {"latency_ms": latency * 1e3, "throughput": batch_size / big}


def model_cost(model: nn.Module, input_shape: tuple[int, ...], device="cpu", *, batch_size: int = 256,
               budget_s: float = 0.1, dtype: torch.dtype = torch.float32) -> dict:
    """The cost figures of `model` for examples of shape `input_shape` (see the module docstring).

    Measured on a copy in eval mode: on the CPU always, and on `device` too when it is CUDA
    (keys `latency_ms_gpu`, `throughput_gpu`). `budget_s` caps the timed calls of each figure;
    `dtype` is the inputs' (torch.long for token ids).
    """
    input_shape = tuple(input_shape)
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    cost = {
        "params": count_params(cpu_model),
        "size_bytes": state_dict_bytes(cpu_model),
        "flops": count_flops(cpu_model, input_shape, dtype=dtype),
        **time_model(cpu_model, input_shape, "cpu", batch_size, budget_s, dtype),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
    }
    del cpu_model
    device = torch.device(device)
    if device.type == "cuda":
        gpu_model = copy.deepcopy(model).to(device).eval()
        gpu = time_model(gpu_model, input_shape, device, batch_size, budget_s, dtype)
        cost.update(latency_ms_gpu=gpu["latency_ms"], throughput_gpu=gpu["throughput"],
                    gpu=torch.cuda.get_device_name(device))
    return cost


def ensemble_cost(costs: list[dict]) -> dict:
    """The cost of an ensemble that runs every member on every example: the sum of its members.

    params, size_bytes, flops and latencies add up; throughputs add up as times per example
    (1 / throughput = sum of 1 / member throughput). A figure is left out when a member
    lacks it (e.g. GPU timings of members measured without a GPU).
    """
    if not costs:
        raise ValueError("ensemble_cost needs at least one member's cost")
    total: dict = {"members": len(costs)}
    for key in ("params", "size_bytes", "flops", "latency_ms", "latency_ms_gpu"):
        if all(c.get(key) is not None for c in costs):
            total[key] = sum(c[key] for c in costs)
    for key in ("throughput", "throughput_gpu"):
        if all(c.get(key) for c in costs):
            total[key] = 1.0 / sum(1.0 / c[key] for c in costs)
    for key in ("threads", "batch_size", "gpu"):
        if costs[0].get(key) is not None:
            total[key] = costs[0][key]
    return total


def row_cost(model: nn.Module, data, train, device="cpu") -> dict:
    """The cost figures (ROW_KEYS) of a trained `model` for its summary row, measured once with
    budget `train.cost_budget` for examples like `data`'s; {} when `train.cost_budget` is 0."""
    if not train.cost_budget:
        return {}
    cost = model_cost(model, data.input_shape, device, budget_s=train.cost_budget, dtype=data.x["test"].dtype)
    return {key: cost[key] for key in ROW_KEYS if key in cost}


def ensemble_row_cost(rows: list[dict]) -> dict:
    """The cost figures of an ensemble's summary row from its members' rows (`ensemble_cost`):
    params and ROW_KEYS, or {} when the members carry no cost figures."""
    if not rows or any(row.get("flops") is None for row in rows):
        return {}
    total = ensemble_cost(rows)
    return {key: total[key] for key in ("params", *ROW_KEYS) if key in total}
