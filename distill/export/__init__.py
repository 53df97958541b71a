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
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from distill.errors import UserError

ROLES = ("model", "teacher", "student", "generation", "member")


# ---------------------------------------------------------------- which model


def parse_spec(text: str) -> tuple[str, Optional[int], Optional[str]]:
    """"ROLE[:SEED[:GEN]]" -> (role, seed or None, gen or None)."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UserError(f"--model {text}: give ROLE[:SEED[:GEN]], e.g. student:0 or generation:0:2")
    seed = None
    if len(parts) > 1 and parts[1] != "":
        try:
            seed = int(parts[1])
        except ValueError:
            raise UserError(f"--model {text}: the seed {parts[1]!r} is not a whole number; "
                            f"give ROLE[:SEED[:GEN]], e.g. student:0") from None
    third = parts[2] if len(parts) == 3 and parts[2] != "" else None
    return parts[0], seed, third


def row_label(row: dict) -> Optional[str]:
    """What tells this row apart from its role's other rows of the same seed (the GEN of a spec)."""
    if row.get("generation") is not None:
        return str(row["generation"])
    if row.get("member") is not None:
        return str(row["member"])
    if row.get("combine") is not None and row.get("role") == "student":
        return row["combine"] if not row.get("student") else f"{row['student']}-{row['combine']}"
    return None


def row_spec(row: dict) -> str:
    label = row_label(row)
    return f"{row['role']}:{row['seed']}" + (f":{label}" if label is not None else "")


def select_row(rows: list[dict], spec: str) -> dict:
    """The summary row that `spec` names; UserError listing what exists when none or several do."""
    role, seed, third = parse_spec(spec)
    exportable = [r for r in rows if r.get("role") in ROLES]
    available = ", ".join(dict.fromkeys(row_spec(r) for r in exportable)) or "none"
    if role == "ensemble":
        raise UserError(f"--model {spec}: an ensemble has no single checkpoint; export its models one by one "
                        f"(this run has {available})")
    chosen = [r for r in exportable if r["role"] == role
              and (seed is None or r.get("seed") == seed)
              and (third is None or third in (row_label(r), str(r.get("combine"))))]
    if not chosen:
        raise UserError(f"--model {spec}: this run has no such model; it has {available}")
    labels = sorted({row_label(r) for r in chosen}, key=str)
    if len(labels) > 1:
        raise UserError(f"--model {spec} names {len(chosen)} models; pick one: "
                        f"{', '.join(dict.fromkeys(row_spec(r) for r in chosen))}")
    return min(chosen, key=lambda r: r["seed"])  # the lowest seed when none was given


def same_model(a: dict, b: dict) -> bool:
    """Whether rows a and b are the same model of the run (any seed)."""
    keys = ("role", "name", "generation", "member", "combine", "student")
    return all(a.get(k) == b.get(k) for k in keys)


def checkpoint_key(row: dict) -> str:
    """The folder under checkpoints/ of a summary row (as the runners name them)."""
    role, seed = row["role"], row["seed"]
    if role == "generation":
        return f"gen{row['generation']}-s{seed}"
    if role == "member":
        return f"member{row['member']}-s{seed}"
    if role == "student" and row.get("combine") is not None:
        return f"student{row.get('student') or 0}-{row['combine']}-s{seed}"
    return f"{role}-s{seed}"


def architecture(cfg, row: dict, folder: Path):
    """The ModelConfig a summary row's model was built from: the `model.json` its checkpoint folder
    holds (every runner writes one), else the config's teacher or model section."""
    from distill.config import ModelConfig
    from distill.schema import from_dict

    if (folder / "model.json").is_file():
        return from_dict(ModelConfig, json.loads((folder / "model.json").read_text()), prefix="model.json: ")
    if row["role"] == "teacher" and cfg.teacher.model is not None:
        return cfg.teacher.model
    return cfg.model


# ---------------------------------------------------------------- the run directory


def read_run(run_dir: Path) -> tuple[object, dict]:
    """(resolved Config, summary) of a finished run directory; UserError otherwise."""
    from distill.config import load_config

    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the folder of one run, "
                        f"e.g. runs/<name>/<run-id>")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"status": "not started"}
    if summary.get("status") != "done":
        raise UserError(f"{run_dir} is not finished (status {summary.get('status')}); run its command again "
                        f"to finish it, then export")
    return load_config(run_dir / "config.yaml"), summary


def load_model(run_dir: Path, cfg, row: dict, data) -> nn.Module:
    """The row's model with its validation-selected weights, in eval mode on the CPU."""
    from distill.models import create_model

    folder = run_dir / "checkpoints" / checkpoint_key(row)
    path = folder / "best.pt"
    if not path.is_file():
        raise UserError(f"--model {row_spec(row)}: {path} is missing; the run directory is incomplete")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state) if isinstance(state, dict) else state
    model_cfg = architecture(cfg, row, folder)
    model = create_model(model_cfg, data.input_shape, data.num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"{path} does not fit {model_cfg.name} as config.yaml builds it ({reason})") from None
    return model.eval()


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


def export_program(model: nn.Module, example: torch.Tensor):
    """torch.export of `model` with a dynamic batch size; UserError naming the op if it fails."""
    batch = torch.export.Dim("batch", min=1)
    printed = io.StringIO()
    try:
        with quiet(printed):
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
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
                y: torch.Tensor) -> dict:
    """Write `path` with torch.onnx (batch size dynamic); check it with onnxruntime when installed."""
    import importlib.util

    from distill.export.cost import state_dict_bytes

    batch = torch.export.Dim("batch", min=1)
    one_file = state_dict_bytes(model) < 2**30  # ONNX's protobuf holds up to 2 GiB; larger weights go beside it
    printed = io.StringIO()
    try:
        with quiet(printed):
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
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
    """Export one model of a finished run (see the module docstring); returns the .pt2 path."""
    from distill.schema import to_dict
    from distill.export.cost import model_cost
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
    x, y = data.x["test"], data.y["test"]
    shipped, card_quant = model, None
    if quantize:
        from distill.export.quantize import quantize_int8

        shipped, layers = quantize_int8(model)
        card_quant = {"method": "int8 weight-only: each Linear weight as int8 with one scale per output unit "
                                "(symmetric), dequantised in the forward pass; activations stay float32",
                      "layers": layers, "before": _figures(model, data.input_shape, x, y),
                      "after": _figures(shipped, data.input_shape, x, y)}
    program = export_program(shipped, x[:2])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    reference = predict(shipped, x)
    logits = predict(program.module(), x)
    card = {
        "file": out.name, "format": "torch.export; load with torch.export.load(path).module()",
        "torch": torch.__version__, "file_bytes": out.stat().st_size,
        "run": str(run_dir.resolve()), "model": row_spec(row),
        "checkpoint": f"checkpoints/{checkpoint_key(row)}/best.pt",
        **{k: row.get(k) for k in ("role", "name", "seed", "generation", "member", "selected_epoch")},
        "architecture": to_dict(architecture(cfg, row, run_dir / "checkpoints" / checkpoint_key(row))),
        "dataset": cfg.dataset.name,
        "classes": class_names(data),
        "input": input_card(cfg, data),
        "output": f"logits (batch, {data.num_classes}); softmax gives class probabilities",
        "accuracy": {
            "test_acc": accuracy(logits, y), "test_examples": int(y.numel()),
            "test_acc_summary": row.get("test_acc"), "val_acc": row.get("val_acc"),
            "max_abs_diff_vs_eager": (logits - reference).abs().max().item(),
            "test_acc_over_seeds": mean_interval([r["test_acc"] for r in summary["models"] if same_model(r, row)]),
        },
        "cost": model_cost(shipped, data.input_shape, dtype=x.dtype),
        "trained_with": trained_with(row, summary),
        "quantization": card_quant,
    }
    if onnx:
        card["onnx"] = export_onnx(shipped, x[:2], out.with_suffix(".onnx"), x, reference, y)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return out
