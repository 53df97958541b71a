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
- `latency_spread`, `throughput_spread`: the spread of the timed calls, (75th - 25th
  percentile) / median of each figure's call times.
- `load_cores`, `cores`: the cores that *other* processes kept busy while the CPU figures were
  timed (`CpuLoad`: the busy time of this process's cores in /proc/stat less this process's own
  CPU time, over the wall time; null where /proc/stat is missing), of the `cores` this process
  may use; `load_avg`: the machine's 1-minute load average (os.getloadavg) after the timings.
- `trusted`: false when the CPU figures are not to be trusted, `untrusted_because` says why:
  other work took cores the timing threads needed (`load_cores` + `threads` > `cores` + 0.5),
  the load average exceeded the cores (`load_avg` > `cores`), or the calls spread more than
  `MAX_SPREAD` around their median. The same model timed on an
  idle machine and on a busy one differs by orders of magnitude; these keys say which it was.
- with `device` a CUDA device, also `latency_ms_gpu` and `throughput_gpu` (and their
  `*_spread_gpu`), timed with `torch.cuda.synchronize()` around every call.

Inputs are random normal examples, or zeros for integer inputs (token ids of a language model:
`dtype=torch.long`). Experiments measure each trained model once, after training, with
`row_cost(model, data, train_cfg, device)` (budget `train.cost_budget`, 0 = not measured): the
figures of ROW_KEYS that go into its summary.json row, how noisy its timings were with them
(NOISE_KEYS: spreads, threads, load, `trusted`); an ensemble row gets `ensemble_row_cost` of its
members' rows (the largest spread and load of its members, trusted only if every member is).

Timings are capped by time (`budget_s` per figure, at least `MIN_REPEATS` timed calls), so a
small MLP is measured in well under a second. The model is copied for the measurement: the
caller's model keeps its device and its train/eval mode. Nothing here trains.

The same figures choose how many CPU threads train a model (`train.threads=null`, auto; used by
`distill.engine.setup_torch` and `fit`): before a fit, the free cores (`free_cores`: the cores
this process may use less those other processes keep busy, sampled for PROBE_SECONDS); at the
start of each fit, one thread per WORK_PER_THREAD FLOPs of a training step (forward and
backward of a batch, all K models), at least 1 and at most the free cores (`fit_threads`). A
small model gets 1 thread: its ops are too short for threads to pay for their synchronisation,
and on a shared machine a thread that waits for a descheduled sibling costs whole time slices
(an MNIST-1D epoch took 2.4-8.4 s at 2 threads against 0.06-0.14 s at 1, with other work on
2 cores). The command line also sets OMP_WAIT_POLICY=PASSIVE before torch loads
(`distill.cli.dispatch`): idle OpenMP threads sleep instead of spinning. On a busy machine a
large model's count follows the load, so a resumed run may use another count than its first
session: set train.threads=N where bit-identical resumes of large models on the CPU matter.
"""

from __future__ import annotations

import copy
import io
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

MIN_REPEATS = 3    # timed calls per figure, whatever the budget
WORK_PER_THREAD = 2e8  # train.threads=null: FLOPs of one training step per CPU thread
PROBE_SECONDS = 0.1    # train.threads=null: how long the other processes' load is sampled
MAX_SPREAD = 0.5   # timings whose (p75 - p25) / median is larger are not to be trusted
MAX_REPEATS = 50   # timed calls per figure at most
WARMUP = 2         # untimed calls before each figure
COST_KEYS = ("params", "size_bytes", "flops", "latency_ms", "throughput")
GPU_KEYS = ("latency_ms_gpu", "throughput_gpu")
NOISE_KEYS = ("latency_spread", "throughput_spread", "threads", "cores", "load_cores", "load_avg", "trusted",
              "untrusted_because")  # how far the timings can be trusted
# a summary row's (params: already there)
ROW_KEYS = ("size_bytes", "flops", "latency_ms", "throughput", *GPU_KEYS, *NOISE_KEYS)
TIMING_KEYS = ("latency_ms", "throughput", *GPU_KEYS, "latency_spread", "throughput_spread", "load_cores", "load_avg",
               "trusted", "untrusted_because")  # differ from one measurement to the next


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


def cpu_count() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds the cores this process may use have spent busy since boot (/proc/stat), or None."""
    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError):
        return None
    busy = 0
    for line in lines:
        name, *ticks = line.split()
        if name in mine:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(t) for t in ticks[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


class CpuLoad:
    """`with CpuLoad() as load: ...` -> `load.others`: the cores other processes kept busy while
    the block ran (this process's cores' busy time less its own CPU time, over the wall time),
    None where /proc/stat is missing. Resolution: one clock tick (10 ms) per core over the block."""

    def __enter__(self):
        self.started, self.busy, self.own = time.perf_counter(), _busy_seconds(), time.process_time()
        self.others = None
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.started
        busy = _busy_seconds()
        if busy is not None and self.busy is not None and wall > 0:
            own = time.process_time() - self.own
            self.others = round(max(0.0, (busy - self.busy - own) / wall), 2)
        return False


def load_average() -> float | None:
    """The machine's 1-minute load average, None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def spread(times: list[float]) -> float:
    """(75th - 25th percentile) / median of `times`: 0 when every call took as long."""
    if len(times) < 2:
        return 0.0
    low, _, high = statistics.quantiles(times, n=4, method="inclusive")
    return round((high - low) / statistics.median(times), 3)


def median_seconds(call: Callable[[], object], budget_s: float, sync: Callable[[], None] = lambda: None,
                   warmup: int = WARMUP) -> float:
    """Median seconds of one `call()` (see `timed_calls`)."""
    return statistics.median(timed_calls(call, budget_s, sync, warmup))


def timed_calls(call: Callable[[], object], budget_s: float, sync: Callable[[], None] = lambda: None,
                warmup: int = WARMUP) -> list[float]:
    """Seconds of each timed `call()`, after `warmup` untimed calls; repeated while the timed
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
    return times


def time_model(model: nn.Module, input_shape: tuple[int, ...], device, batch_size: int = 256,
               budget_s: float = 0.1, dtype: torch.dtype = torch.float32) -> dict:
    """{"latency_ms": batch 1, "throughput": examples/s at `batch_size`, and each one's spread} of
    `model` on `device`."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    one = example_inputs((1, *input_shape), device, dtype)
    many = example_inputs((batch_size, *input_shape), device, dtype)
    with torch.inference_mode():
        latency = timed_calls(lambda: model(one), budget_s, sync)
        big = timed_calls(lambda: model(many), budget_s, sync, warmup=1)
    return {"latency_ms": statistics.median(latency) * 1e3, "throughput": batch_size / statistics.median(big),
            "latency_spread": spread(latency), "throughput_spread": spread(big)}


def trust(cost: dict) -> dict:
    """`trusted` and `untrusted_because` of CPU figures measured under `load_cores` (see the module docstring)."""
    reasons = []
    if cost.get("load_cores") is not None and cost["load_cores"] + cost["threads"] > cost["cores"] + 0.5:
        reasons.append(f"other processes kept {cost['load_cores']:.1f} of the {cost['cores']} cores busy while "
                       f"{cost['threads']} threads were timed")
    if cost.get("load_avg") is not None and cost["load_avg"] > cost["cores"]:
        reasons.append(f"the load average was {cost['load_avg']:.1f} on {cost['cores']} cores")
    for key in ("latency", "throughput"):
        if cost[f"{key}_spread"] > MAX_SPREAD:
            reasons.append(f"the {key} calls spread {cost[f'{key}_spread']:.0%} around their median")
    return {"trusted": not reasons, "untrusted_because": "; ".join(reasons) or None}


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
    }
    with CpuLoad() as load:
        cost.update(time_model(cpu_model, input_shape, "cpu", batch_size, budget_s, dtype))
    cost.update(threads=torch.get_num_threads(), batch_size=batch_size, load_cores=load.others, cores=cpu_count(),
                load_avg=load_average())
    cost.update(trust(cost))
    del cpu_model
    device = torch.device(device)
    if device.type == "cuda":
        gpu_model = copy.deepcopy(model).to(device).eval()
        gpu = time_model(gpu_model, input_shape, device, batch_size, budget_s, dtype)
        cost.update(latency_ms_gpu=gpu["latency_ms"], throughput_gpu=gpu["throughput"],
                    latency_spread_gpu=gpu["latency_spread"], throughput_spread_gpu=gpu["throughput_spread"],
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
    out = {key: total[key] for key in ("params", *ROW_KEYS) if key in total}
    for key in ("latency_spread", "throughput_spread", "load_cores", "load_avg", "cores"):
        if all(row.get(key) is not None for row in rows):
            out[key] = max(row[key] for row in rows)
    if all("trusted" in row for row in rows):
        out["trusted"] = all(row["trusted"] for row in rows)
        reasons = [reason for r in rows if r.get("untrusted_because") for reason in r["untrusted_because"].split("; ")]
        out["untrusted_because"] = "; ".join(dict.fromkeys(reasons)) or None  # each distinct reason once
    return out


# ---------------------------------------------------------------- threads (train.threads=null)


def free_cores(seconds: float = PROBE_SECONDS) -> int:
    """The cores this process may use less those other processes kept busy over `seconds`."""
    cores = cpu_count()
    with CpuLoad() as load:
        time.sleep(seconds)
    return max(1, min(cores, round(cores - (load.others or 0.0))))


def threads_for_work(step_flops: float, free: int) -> int:
    """Threads for a training step of `step_flops` FLOPs with `free` cores: one per WORK_PER_THREAD."""
    return max(1, min(free, int(step_flops // WORK_PER_THREAD)))


_FORWARD_FLOPS: dict[tuple, int] = {}  # (architecture as printed, input shape, dtype) -> forward FLOPs


def step_flops(models: list[nn.Module], input_shape: tuple[int, ...], batch_size: int,
               dtype: torch.dtype = torch.float32) -> float:
    """FLOPs of one training step of every model: 3 x the forward FLOPs of a batch (backward ~ 2 x
    forward), counted once per architecture on an eval-mode CPU copy of the first model (its
    BatchNorm statistics untouched)."""
    key = (repr(models[0]), tuple(input_shape), dtype)
    if key not in _FORWARD_FLOPS:
        _FORWARD_FLOPS[key] = count_flops(copy.deepcopy(models[0]).to("cpu").eval(), tuple(input_shape), dtype=dtype)
    return 3.0 * _FORWARD_FLOPS[key] * batch_size * len(models)


def fit_threads(train, models: list[nn.Module], data, device) -> None:
    """Set torch's thread count for a CPU fit: train.threads=null by the fit's work per step, N as
    given, 0 all CPUs (each fit sets its own, so one fit's choice never carries over to the next)."""
    if torch.device(device).type != "cpu":
        return
    if train.threads is not None:
        torch.set_num_threads(train.threads or cpu_count())
        return
    try:
        work = step_flops(models, data.input_shape, train.batch_size, data.x["train"].dtype)
    except Exception:  # noqa: BLE001 - a model FlopCounterMode cannot run: as many threads as are free
        work = float("inf")
    torch.set_num_threads(1 if work < 2 * WORK_PER_THREAD else threads_for_work(work, free_cores()))
