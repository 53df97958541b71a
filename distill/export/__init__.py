"""`distill export`: one trained model of a finished run, as a file that plain torch loads.

    distill export runs/mnist1d-kd/<id> --model student:0 --out student.pt2
    distill export runs/ban/<id> --model generation:1:2 --out gen2.pt2 --quantize int8 --onnx

    program = torch.export.load("student.pt2").module()   # no import of this package needed
    logits = program(x)                                   # x normalised as student.json says

`--model ROLE[:SEED[:GEN]]` names a row of the run's summary.json: ROLE is `model`, `teacher`,
`student`, `generation` or `member`; SEED defaults to the lowest seed of the run; GEN is the
generation (born-again), the member index (ensemble members) or the teacher combination
(`mean_probs`, ... for ensemble students; `J-COMBINE` for student architecture J > 0).

The architecture is rebuilt from the run's config.yaml, the validation-selected weights are
loaded from `checkpoints/<key>/best.pt`, and the model is saved with `torch.export.export`
(batch size dynamic) and `torch.export.save`. Beside it, `<out>.json` (the card): the
architecture, the classes, the input shape and normalisation, test accuracy (this seed; mean
and 95% t-interval over the run's seeds), the cost (`distill.export.cost.model_cost`: with the
spread of its timings, the load they were measured under and whether to trust them), and the
teacher and loss the model was trained with. The classes are named as the data names them (its
format's metadata, its folders, its file; else the label numbers).

`--quantize int8` stores every Linear layer's weight as int8 with one scale per output unit
(weight-only, symmetric; dequantised in the forward pass): torch's dynamic quantisation
(`torch.ao.quantization.quantize_dynamic`) gives modules that `torch.export` cannot save.
The card then holds accuracy, latency and size before and after. `--onnx` also writes
`<out>.onnx` (needs the `export` extra: onnx, onnxruntime, onnxscript) and checks it with
onnxruntime when that is installed.

A language model (a run on text) is exported for any sequence length up to its context, and
its card holds the tokenizer and per-token figures instead of classes and normalisation
(distill/export/lm.py, docs/lm-checkpoints.md). Everything is written into a hidden folder
beside `--out` and moved into place when done: a failed export leaves no file behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from distill.errors import UserError

from distill.export.runs import (ROLES, architecture, checkpoint_key, load_model, parse_spec,  # noqa: F401
                                 read_run, row_label, row_spec, same_model, select_row)


# ---------------------------------------------------------------- saving


def _op_named(err: Exception, printed: str = "") -> str:
    """The op an export failure is about: the last aten op that its message (or the graph torch
    printed while failing) names, the model's line that called it, and the message's first line."""
    text = str(err)
    ops = re.findall(r"aten\.[A-Za-z0-9_]+", text) or re.findall(r"aten\.[A-Za-z0-9_]+", printed)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    where = ""
    tb = err.__traceback__
    torch_dir = str(Path(torch.__file__).parent)
    while tb is not None:  # the last frame outside torch: the model's own line
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(torch_dir) and code.co_name == "forward":
            where = f" in {Path(code.co_filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    op = f"op {ops[-1]}" if ops else "an unsupported op"
    return f"{op}{where} ({type(err).__name__}: {first[:160]})"


@contextlib.contextmanager
def quiet(printed: io.StringIO):
    """Hold back torch's logging and printing (it logs and prints a graph that fails to export):
    the one-line error says what matters."""
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            yield
    finally:
        logging.disable(logging.NOTSET)


def dynamic_dims(context: Optional[int] = None) -> tuple[dict]:
    """The dynamic dimensions of the input: the batch, and for a language model (context given)
    the sequence length, 1 to context tokens."""
    dims = {0: torch.export.Dim("batch", min=1)}
    if context is not None:
        dims[1] = torch.export.Dim("tokens", min=1, max=context)
    return (dims,)


def export_program(model: nn.Module, example: torch.Tensor, context: Optional[int] = None):
    """torch.export of `model` with a dynamic batch size (and sequence length up to `context`);
    UserError naming the op if it fails."""
    printed = io.StringIO()
    try:
        with quiet(printed):
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_dims(context))
    except Exception as err:  # noqa: BLE001 - every export failure is a model that cannot be exported
        raise UserError(f"the model cannot be exported by torch.export: {_op_named(err, printed.getvalue())}") \
            from None


def predict(fn, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return round((logits.argmax(-1) == y).float().mean().item(), 6)


def mean_interval(values: list[float]) -> dict:
    """Mean and two-sided 95% Student-t interval (bounds null with one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


# ---------------------------------------------------------------- onnx


def need_onnx() -> None:
    """UserError unless the ONNX exporter's packages are installed."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--onnx needs {' and '.join(missing)}; install the export extra: "
                        f"pip install -e '.[export]'")


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, x: torch.Tensor, reference: torch.Tensor,
                y: torch.Tensor, context: Optional[int] = None) -> dict:
    """Write `path` with torch.onnx (batch size dynamic, and the sequence length of a language model);
    check it with onnxruntime when installed."""
    import importlib.util

    from distill.export.cost import state_dict_bytes

    one_file = state_dict_bytes(model) < 2**30  # ONNX's protobuf holds up to 2 GiB; larger weights go beside it
    printed = io.StringIO()
    try:
        with quiet(printed):
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=dynamic_dims(context),
                              input_names=["input"], output_names=["logits"], verbose=False,
                              external_data=not one_file)
    except Exception as err:  # noqa: BLE001 - the model has an op ONNX cannot express
        raise UserError(f"--onnx: the model cannot be exported to ONNX: {_op_named(err, printed.getvalue())}") \
            from None
    card = {"file": path.name, "weights": path.name if one_file else f"{path.name}.data", "input": "input",
            "output": "logits"}
    if importlib.util.find_spec("onnxruntime") is None:
        return {**card, "checked": "no: onnxruntime is not installed"}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = torch.cat([torch.from_numpy(session.run(None, {"input": x[i:i + 1024].numpy()})[0])
                        for i in range(0, x.shape[0], 1024)])
    return {**card, "checked": f"onnxruntime {onnxruntime.__version__}", "test_acc": accuracy(logits, y),
            "max_abs_diff": (logits - reference).abs().max().item()}


# ---------------------------------------------------------------- the card


def class_names(data) -> list[str]:
    """The data's own class names (its format's metadata, its folders, its file), else the label numbers."""
    return list(data.class_names) or [str(i) for i in range(data.num_classes)]


def input_card(cfg, data) -> dict:
    return {"shape": ["batch", *data.input_shape], "dtype": str(data.x["test"].dtype).removeprefix("torch."),
            "scale": data.scale,
            "mean": list(data.mean), "std": list(data.std),
            "normalise": "x = (raw / scale - mean[c]) / std[c] for each channel c (dim 1); mean and std are "
                         "of the training split"}


def trained_with(row: dict, summary: dict) -> dict:
    """The teacher and the loss a row's model was trained with."""
    if row.get("parent") is None:
        return {"teacher": None, "loss": {"method": "cross_entropy", "reduction": "mean", "t2_scaling": False}}
    loss = dict(summary.get("loss") or {})  # the run's last student's: its teacher is the row's parent
    loss.pop("teacher", None)
    if row.get("combine") is not None and loss:
        loss["combine"] = row["combine"]
    return {"teacher": row["parent"], "loss": loss}


def _figures(model: nn.Module, input_shape: tuple, x: torch.Tensor, y: torch.Tensor) -> dict:
    from distill.export.cost import model_cost

    cost = model_cost(model, input_shape, dtype=x.dtype)
    return {"test_acc": accuracy(predict(model, x), y), **{k: cost[k] for k in
            ("latency_ms", "throughput", "size_bytes", "flops")}}


# ---------------------------------------------------------------- export


def export(run_dir: str | Path, model_spec: str, out_file: str | Path, *, quantize: Optional[str] = None,
           onnx: bool = False) -> Path:
    """Export one model of a finished run (see the module docstring); returns the .pt2 path.
    Every file is written into a hidden folder beside `out` first and moved into place, the card
    last, when all are written: a failed export leaves nothing behind."""
    from distill.data import load_data

    run_dir, out = Path(run_dir), Path(out_file)
    if out.suffix != ".pt2":
        raise UserError(f"--out {out}: give a file name ending in .pt2 (torch.export's format)")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize {quantize}: only int8 is supported")
    if onnx:
        need_onnx()
    cfg, summary = read_run(run_dir)
    row = select_row(summary.get("models", []), model_spec)
    data = load_data(cfg.dataset)
    model = load_model(run_dir, cfg, row, data)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    moved = []
    try:
        card = _write(staging / out.name, run_dir, cfg, summary, row, data, model, quantize, onnx)
        (staging / out.with_suffix(".json").name).write_text(json.dumps(card, indent=2) + "\n")
        names = sorted(p.name for p in staging.iterdir())
        for name in sorted(names, key=lambda n: (n == out.name, n.endswith(".json"))):  # the card, then the .pt2
            target = out.parent / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # folders made for `out`, left empty by a failure
            with contextlib.suppress(OSError):
                folder.rmdir()
    return out


def _write(out: Path, run_dir: Path, cfg, summary: dict, row: dict, data, model: nn.Module,
           quantize: Optional[str], onnx: bool) -> dict:
    """Write the .pt2 (and the tokenizer, the .onnx) at `out`; returns the card."""
    from distill.schema import to_dict
    from distill.export import lm
    from distill.export.cost import model_cost

    x, y = data.x["test"], data.y["test"]
    text = data.text is not None
    shipped, card_quant = model, None
    if quantize:
        from distill.export.quantize import quantize_int8

        shipped, layers = quantize_int8(model)
        card_quant = {"method": "int8 weight-only: each Linear weight as int8 with one scale per output unit "
                                "(symmetric), dequantised in the forward pass; activations stay float32",
                      "layers": layers, "before": _figures(model, data.input_shape, x, y),
                      "after": _figures(shipped, data.input_shape, x, y)}
    context = lm.context_of(model, data.input_shape[0]) if text else None
    program = export_program(shipped, x[:2], context)
    torch.export.save(program, out)
    reference = predict(shipped, x) if onnx or not text else None
    if text:  # a language model: per-token figures, a chunk at a time
        figures = lm.text_figures(shipped, program.module(), x, y)
        sections = lm.text_card(data, model, lm.tokenizer_card(data.text.tokenizer, out.parent, out.stem))
    else:
        logits = predict(program.module(), x)
        figures = {"test_acc": accuracy(logits, y), "test_examples": int(y.numel()),
                   "max_abs_diff_vs_eager": (logits - reference).abs().max().item()}
        sections = {"classes": class_names(data), "input": input_card(cfg, data),
                    "output": f"logits (batch, {data.num_classes}); softmax gives class probabilities"}
    figures.update({"test_acc_summary": row.get("test_acc"), "val_acc": row.get("val_acc"),
                    "test_acc_over_seeds": mean_interval([r["test_acc"] for r in summary["models"]
                                                          if same_model(r, row)])})
    if text:
        figures.update({"test_ppl_summary": row.get("test_ppl"), "val_ppl": row.get("val_ppl")})
    card = {
        "file": out.name, "format": "torch.export; load with torch.export.load(path).module()",
        "torch": torch.__version__, "file_bytes": out.stat().st_size,
        "run": str(run_dir.resolve()), "model": row_spec(row),
        "checkpoint": f"checkpoints/{checkpoint_key(row)}/best.pt",
        **{k: row.get(k) for k in ("role", "name", "seed", "generation", "member", "selected_epoch")},
        "architecture": to_dict(architecture(cfg, row, run_dir / "checkpoints" / checkpoint_key(row))),
        "dataset": cfg.dataset.name,
        **sections,
        "accuracy": figures,
        "cost": model_cost(shipped, data.input_shape, dtype=x.dtype),
        "trained_with": trained_with(row, summary),
        "quantization": card_quant,
    }
    if onnx:
        card["onnx"] = export_onnx(shipped, x[:2], out.with_suffix(".onnx"), x, reference, y, context)
    return card
