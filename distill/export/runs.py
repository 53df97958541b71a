"""Which model of a run directory: the `--model ROLE[:SEED[:GEN]]` spec, the summary row it names,
its checkpoint folder and architecture, and the model with its validation-selected weights.
Shared by `distill export` (distill/export/__init__.py) and `distill generate` (distill/export/lm.py).
"""

from __future__ import annotations

import json
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
