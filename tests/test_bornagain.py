"""Born-again chains: rows for every generation and Ens x k, packing, stopping, resume."""

import json

import pytest

import bornagain
from distill.cli import main
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from tests.conftest import Killed, kill_at, tiny_overrides


def _cfg(**extra):
    base = {"name": "ban", "seeds": "[0,1]", "distill.method": "ban", "distill.temperature": 1.0,
            "bornagain.generations": 2, "train.epochs": 2}
    base.update(extra)
    return load_config(None, tiny_overrides(**base))


def _strip(summary):  # without the timings, which differ from one measurement to the next
    return [{k: v for k, v in row.items() if k not in ("train_seconds", *TIMING_KEYS)} for row in summary["models"]]


def test_chain_rows_lineage_and_packing(tmp_path):
    path = bornagain.run(_cfg(), tmp_path, progress=False)
    summary = json.loads((path / "summary.json").read_text())
    gens = [r for r in summary["models"] if r["role"] == "generation"]
    assert sorted((r["seed"], r["generation"]) for r in gens) == [(s, g) for s in (0, 1) for g in (0, 1, 2)]
    assert {r["parent"] for r in gens if r["generation"] == 2} == {"generation 1"}
    assert all(r["parent"] is None for r in gens if r["generation"] == 0)
    ens = [r for r in summary["models"] if r["role"] == "ensemble"]
    # per seed: Ens 1..2 (generations 1-2), Ens 0..1, Ens 0..2
    assert sorted(r["name"] for r in ens if r["seed"] == 0) == ["ens_0..1", "ens_0..2", "ens_1..2"]
    assert all(r["size"] == len(range(int(r["name"][4]), int(r["name"][-1]) + 1)) for r in ens)
    assert summary["packing"]["0"].startswith("packed") and summary["packing"]["1"].startswith("packed")
    assert summary["loss"]["method"] == "ban" and "t2_scaling" in summary["loss"]
    assert summary["stopped"]["after_generation"] == 2


def test_ensemble_teacher_and_sequential_fallback(tmp_path):
    cfg = _cfg(**{"bornagain.teacher": "ensemble", "bornagain.pack": "false", "seeds": "[0]",
                  "distill.method": "kd", "distill.temperature": 2.0})
    summary = json.loads((bornagain.run(cfg, tmp_path, progress=False) / "summary.json").read_text())
    assert summary["packing"]["1"] == "one after another: pack=false"
    parents = {r["generation"]: r["parent"] for r in summary["models"] if r["role"] == "generation"}
    assert parents[2] == "ensemble of generations 0..1"


def test_all_paper_variants_run(tmp_path):
    for method in ("ban", "ban_l", "cwtm", "dkpp"):
        cfg = _cfg(**{"distill.method": method, "seeds": "[0]", "bornagain.generations": 1, "train.epochs": 1,
                      "name": f"v-{method}"})
        summary = json.loads((bornagain.run(cfg, tmp_path, progress=False) / "summary.json").read_text())
        assert summary["status"] == "done" and summary["loss"]["method"] == method


def test_stop_rule():
    cfg = _cfg(**{"bornagain.stop": "delta", "bornagain.stop_delta": 0.01})
    assert bornagain.should_stop(cfg, {0: [0.5], 1: [0.505]}, 1) is not None
    assert bornagain.should_stop(cfg, {0: [0.5], 1: [0.52]}, 1) is None
    spread = _cfg(**{"bornagain.stop": "spread"})
    assert bornagain.should_stop(spread, {0: [0.50, 0.60], 1: [0.52, 0.62]}, 1) is not None
    never = _cfg()
    assert bornagain.should_stop(never, {0: [0.9], 1: [0.1]}, 1) is None


def test_stop_ends_the_chain_and_says_why(tmp_path):
    cfg = _cfg(**{"bornagain.stop": "delta", "bornagain.stop_delta": 0.99, "bornagain.generations": 3})
    summary = json.loads((bornagain.run(cfg, tmp_path, progress=False) / "summary.json").read_text())
    assert summary["stopped"]["after_generation"] == 1 and "stop_delta" in summary["stopped"]["reason"]
    assert max(r["generation"] for r in summary["models"] if r["role"] == "generation") == 1


@pytest.mark.parametrize("pack", ["true", "false"])
def test_killed_in_generation_2_resumes_there(tmp_path, pack):
    cfg = _cfg(**{"bornagain.pack": pack, "train.epochs": 3})
    whole = bornagain.run(cfg, tmp_path / "whole", progress=False)

    with pytest.raises(Killed):
        bornagain.run(cfg, tmp_path / "killed", on_epoch=kill_at(generation=2, epoch=2), progress=False)
    path = next((tmp_path / "killed" / "ban").iterdir())
    assert json.loads((path / "meta.json").read_text())["status"] == "failed"
    finished = {p: p.stat().st_mtime_ns for p in path.glob("checkpoints/gen[01]-*/*.pt")}
    assert finished
    bornagain.run(cfg, tmp_path / "killed", progress=False)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # generations 0 and 1 not retrained
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((path / "summary.json").read_text())
    assert _strip(a) == _strip(b)


def test_cli_bornagain(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("name: cli-ban\n")
    argv = ["bornagain", str(config), "--out", str(tmp_path), "--quiet"] + tiny_overrides(
        **{"bornagain.generations": 1, "train.epochs": 1, "distill.method": "ban"})
    assert main(argv) == 0
    assert main(argv[:2] + ["bornagain.teacher=parent"]) == 2
    assert "bornagain.teacher" in capsys.readouterr().err
