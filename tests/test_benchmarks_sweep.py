"""benchmarks/sweep.py's CIFAR-shaped part (its agreement verdict) and benchmarks/run_all.py's summary."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all
    import sweep
    return sweep, run_all


def layout(wall: float, accs: dict, nll: float = 1.0, trials: int = 8, off: int = 0) -> dict:
    by = {json.dumps({"distill.temperature": t, "distill.alpha": a}, sort_keys=True):
          {"best_val_acc": acc, "best_val_nll": nll} for (t, a), acc in accs.items()}
    return {"wall": wall, "tune_trials": trials, "done": len(by), "packing": [], "by_config": by, "off_device": off}


CONFIGS = {(t, a): 0.1 + 0.01 * t for t in (1, 2, 4, 8) for a in (0.5, 0.9)}


def test_cifar_figures_agree_and_speedup(bench):
    sweep, _ = bench
    found = sweep.cifar_figures(layout(40.0, CONFIGS), layout(10.0, CONFIGS, trials=1), 8)
    assert found["cifar_agree"] is True and found["cifar_speedup"] == 4.0
    assert found["cifar_max_val_acc_diff"] == 0 and found["cifar_configs_missing"] == 0


@pytest.mark.parametrize("packed, why", [
    (layout(10.0, {**CONFIGS, (4, 0.9): CONFIGS[(4, 0.9)] + 0.05}, trials=1), "one configuration's accuracy"),
    (layout(10.0, CONFIGS, nll=1.05, trials=1), "NLL 5% off"),
    (layout(10.0, {k: v for k, v in CONFIGS.items() if k != (8, 0.5)}, trials=1), "a configuration missing"),
    (layout(10.0, CONFIGS, trials=1, off=1), "a model off the device"),
])
def test_cifar_figures_disagree(bench, packed, why):
    sweep, _ = bench
    assert sweep.cifar_figures(layout(40.0, CONFIGS), packed, 8)["cifar_agree"] is False, why


def write(folder: Path, name: str, **figures) -> None:
    (folder / f"{name}.json").write_text(json.dumps({**figures, "date": "2026-12-06", "machine": "m",
                                                     "command": f"python {name}"}))


def test_summary_only_runs_nothing_and_lists_every_target(bench, tmp_path, monkeypatch):
    _, run_all = bench
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(run_all.subprocess, "run", lambda *a, **k: pytest.fail("--summary-only ran a benchmark"))
    write(tmp_path, "sweep", speedup=1.5, same_best=True, cifar_speedup=2.0, cifar_agree=False)
    write(tmp_path, "sweep-full", speedup=5.09, same_best=True)
    write(tmp_path, "lm_memory", peak_ratio=0.21, time_ratio=0.66)
    assert run_all.main(["--summary-only"]) == 0
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[1:-1]]
            for line in (tmp_path / "summary.md").read_text().splitlines()[2:]}
    assert rows[("sweep", "speedup")][2:5] == ["1.5", ">= 5 (full sweep)", "no"]
    assert rows[("sweep", "same_best")][2:5] == ["true", "true", "yes"]
    assert rows[("sweep", "cifar_speedup")][4] == "-" and rows[("sweep", "cifar_agree")][4] == "no"
    assert rows[("sweep-full", "speedup")][4] == "yes"
    assert rows[("lm_memory", "peak_ratio")][2:5] == ["0.21", "<= 0.25", "yes"]
    assert rows[("lm_memory", "time_ratio")][4] == "yes"
    assert rows[("lm_memory-quick", "-")][2] == "not run" and rows[("engine_overhead", "-")][2] == "not run"
    assert set(run_all.TARGETS) == set(run_all.RUNS)


def test_run_all_names_result_files(bench, monkeypatch, tmp_path):
    _, run_all = bench
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    commands = []
    monkeypatch.setattr(run_all.subprocess, "run",
                        lambda command: commands.append(command) or type("Done", (), {"returncode": 0}))
    assert run_all.main(["--only", "sweep", "lm_memory-quick"]) == 0
    assert [c[2:] for c in commands] == [["--quick", "--out", str(tmp_path / "sweep.json")],
                                         ["--quick", "--out", str(tmp_path / "lm_memory-quick.json")]]
    assert run_all.main(["--only", "nonsense"]) == 2
