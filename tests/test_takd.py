"""Teacher-assistant chains (TAKD, Mirzadeh et al. 2020): a born-again chain whose generations change
size (`bornagain.models`), with the direct teacher -> student KD as its baseline in the same run.

    .venv/bin/python -m pytest tests/test_takd.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import bornagain
import results
from bornagain.chain import generation_model_config
from distill.cli import main
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from results import experiments as ex
from tests.conftest import Killed, kill_at, tiny_overrides

CHAIN = {"model.name": "cnn1d", "model.width": 16, "model.depth": 1, "bornagain.generations": 2,
         "bornagain.models": "[{name: cnn1d, width: 4, depth: 1}, {name: mlp, width: 16, depth: 1}]",
         "distill.method": "kd", "distill.temperature": 4.0, "distill.alpha": 0.9, "train.epochs": 2,
         "seeds": "[0,1]", "train.cost_budget": 0, "name": "takd"}


def _cfg(**extra):
    return load_config(None, tiny_overrides(**{**CHAIN, **extra}))


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _strip(summary):
    return [{k: v for k, v in row.items() if k not in ("train_seconds", *TIMING_KEYS)} for row in summary["models"]]


def test_each_generation_has_its_own_architecture():
    cfg = _cfg()
    assert [generation_model_config(cfg, g).name for g in (0, 1, 2)] == ["cnn1d", "cnn1d", "mlp"]
    assert generation_model_config(cfg, 1).width == 4
    one = _cfg(**{"bornagain.models": "[{name: mlp, width: 8}]"})  # one section for every generation after 0
    assert [generation_model_config(one, g).name for g in (0, 1, 2)] == ["cnn1d", "mlp", "mlp"]


def test_chain_with_its_direct_baseline_through_the_cli_and_the_report(tmp_path, capsys):
    config = tmp_path / "takd.yaml"
    config.write_text("name: takd\n")
    assert main(["bornagain", str(config), "--out", str(tmp_path / "runs"), "--quiet", *tiny_overrides(**CHAIN)]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    summary = _summary(path)
    rows = summary["models"]
    gens = {(r["seed"], r["generation"]): r for r in rows if r["role"] == "generation"}
    assert [gens[(0, g)]["name"] for g in (0, 1, 2)] == ["cnn1d", "cnn1d", "mlp"]
    assert gens[(0, 0)]["params"] > gens[(0, 1)]["params"]  # the assistant is smaller than the teacher
    direct = [r for r in rows if r["role"] == "direct"]
    assert sorted(r["seed"] for r in direct) == [0, 1]
    assert {(r["name"], r["parent"], r["params"]) for r in direct} == {("mlp", "generation 0", gens[(0, 2)]["params"])}
    assert all(r["test_agreement"] is not None for r in direct)  # its fidelity to generation 0
    assert summary["direct"]["architecture"] == "mlp" and summary["direct"]["compared_with"] == "generation 2"
    assert "direct" in summary["packing"]

    out = tmp_path / "report"
    page = results.report([path], out).read_text()
    assert "Teacher-assistant chain" in page
    (exp,) = ex.split(results.load(path))
    generations = pd.read_csv(out / f"{exp.slug}-generations.csv")
    assert list(generations["architecture"][:3]) == ["cnn1d", "cnn1d", "mlp"]
    gain = pd.read_csv(out / f"{exp.slug}-takd-gain.csv")
    assert gain["comparison"].tolist() == ["BAN-2 (through the assistants) − direct KD mlp from generation 0"]
    assert gain["n"].tolist() == [2]


def test_no_direct_baseline_without_assistants_or_when_turned_off(tmp_path):
    one = _cfg(**{"bornagain.generations": 1, "bornagain.models": "[{name: mlp, width: 16, depth: 1}]",
                  "seeds": "[0]"})
    assert not [r for r in _summary(bornagain.run(one, tmp_path / "a", progress=False))["models"]
                if r["role"] == "direct"]
    off = _cfg(**{"bornagain.direct": "false", "seeds": "[0]"})
    summary = _summary(bornagain.run(off, tmp_path / "b", progress=False))
    assert not [r for r in summary["models"] if r["role"] == "direct"] and summary["direct"] is None


def test_killed_in_the_direct_baseline_resumes_there(tmp_path):
    cfg = _cfg(**{"train.epochs": 3})
    whole = bornagain.run(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        bornagain.run(cfg, tmp_path / "killed", on_epoch=kill_at(role="direct", seed=1, epoch=2), progress=False)
    path = next((tmp_path / "killed" / "takd").iterdir())
    finished = {p: p.stat().st_mtime_ns for p in path.glob("checkpoints/gen*/*.pt")}
    bornagain.run(cfg, tmp_path / "killed", progress=False)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the chain is not trained again
    assert _strip(_summary(whole)) == _strip(_summary(path))


@pytest.mark.parametrize("override, words", [
    ("bornagain.models=[{name: mlp}, {name: mlp}, {name: mlp}]", ["bornagain.models", "3 architectures for 2"]),
    ("bornagain.model=mlp", ["bornagain.model and bornagain.models", "bornagain.model=null"]),
    ("bornagain.models=[{name: mlp, widht: 3}]", ["bornagain.models[0].widht", "unknown key"]),
])
def test_bad_chains_are_one_line_exit_2(tmp_path, capsys, override, words):
    config = tmp_path / "takd.yaml"
    config.write_text("name: takd\n")
    argv = ["bornagain", str(config), "--out", str(tmp_path / "runs"), "--quiet", *tiny_overrides(**CHAIN)]
    assert main(argv + [override]) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
