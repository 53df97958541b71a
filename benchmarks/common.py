"""What every benchmark shares: the machine's description and the result file's format.

Each script measures its own baseline in the same process and writes
benchmarks/results/<script name>.json: a flat object of named figures plus `date`,
`machine` and `command`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_START = os.getloadavg()  # the machine's load when this benchmark started (1, 5, 15 minutes)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def machine() -> str:
    """CPU model, cores this process may use, and the GPU if any."""
    import torch

    from distill.export.cost import cpu_count

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {cpu_count()} cores, {gpu}"


def write_result(script: str, figures: dict, out: str | Path | None = None) -> Path:
    """Write the figures with date, machine and command; return the file's path."""
    path = Path(out) if out else RESULTS / f"{Path(script).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**figures, "date": dt.date.today().isoformat(), "machine": machine(),
              "load_average": {"start": [round(v, 2) for v in LOAD_AT_START],
                               "end": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count()},
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def table(rows: list[tuple], header: tuple) -> str:
    """A small fixed-width table for the terminal."""
    cells = [tuple(str(c) for c in header)] + [tuple(f"{c:.3f}" if isinstance(c, float) else str(c) for c in r)
                                               for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells)


def packed_matmul_seconds(model, models: int, batch: int, repeats: int = 200) -> float:
    """Seconds of the batched matrix products alone of one packed training step of `models`
    copies of an MLP (`model`: its Linear layers give the shapes) at `batch` examples each, in
    the packed trainer's feature-major layout: forward W @ h + b (baddbmm) per layer, backward
    the weight gradient G @ h^T per layer and the input gradient W^T @ G for all but the first.
    Median of `repeats` timed calls. A packed step can be no faster than this, so sequential
    time / (steps x this) bounds the speedup from above."""
    import statistics
    import time

    import torch
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    k = models
    acts = [torch.randn(k, lin.in_features, batch) for lin in linears]
    grads = [torch.randn(k, lin.out_features, batch) for lin in linears]
    weights = [torch.randn(k, lin.out_features, lin.in_features) for lin in linears]
    biases = [torch.randn(k, lin.out_features, 1) for lin in linears]

    def step():
        for a, w, b in zip(acts, weights, biases):
            torch.baddbmm(b, w, a)
        for i, (a, g, w) in enumerate(zip(acts, grads, weights)):
            torch.bmm(g, a.transpose(1, 2))
            if i > 0:
                torch.bmm(w.transpose(1, 2), g)

    for _ in range(20):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
