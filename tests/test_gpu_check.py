"""benchmarks/gpu_check.py: the --dry run end to end on the CPU, its bad-input exits, its comparisons."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CHECKS = ("device", "bf16", "channels_last", "compile", "stacked", "tune", "pack", "bornagain", "ensemble")
GPU_PRESETS = {"ban-cifar10-wrn", "ban-cifar100-wrn", "ban-cifar100-densenet", "ensemble-cifar10",
               "ensemble-cifar100", "tfkd-cifar100"}


def gpu_check(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check as module
    return module


@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_dry_run_every_check_ok(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = gpu_check("--dry", "--out", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["dry"] is True and result["device"] == "cpu" and result["all_ok"] is True
    for key in ("date", "machine", "command", "total_seconds"):
        assert key in result
    for name in CHECKS:
        assert result[f"{name}_ok"] is True, name
        compared = [key[:-len("_tol")] for key in result if key.startswith(f"{name}_") and key.endswith("_tol")]
        assert len(compared) >= 3, (name, compared)  # every check compares several figures with the CPU's
        for key in compared:
            assert result[key] <= result[f"{key}_tol"], key
    assert {"tune_trials_not_done", "stacked_step_grad_diff", "bf16_fit_train_loss_diff",
            "bornagain_rows_missing", "ensemble_val_acc_diff", "pack_val_acc_diff", "pack_val_nll_diff",
            "pack_models_off_device", "pack_not_one_packed_trial"} <= set(result)
    assert result["pack_not_one_packed_trial"] == 0 and result["pack_configs_missing"] == 0
    assert GPU_PRESETS <= set(result["gpu_presets"])
    assert not [key for key in result if key.startswith(("images_per_s", "mfu", "epoch_s", "gpu_hours", "pack_speedup"))]
    assert "all checks ok" in done.stdout


@pytest.mark.parametrize("args, message", [
    (("--dry",), "--dry needs --out PATH"),
    pytest.param((), "no CUDA device", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_bad_input_is_one_line_exit_2(args, message):
    done = gpu_check(*args, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_compare_rows_flags_differences(module):
    same = {("generation", "0"): {"val_acc": 0.9, "test_acc": 0.8}}
    found = {name: (value, tol) for name, value, tol in module.compare_rows(same, same)}
    assert all(value <= tol for value, tol in found.values())
    off = {("generation", "0"): {"val_acc": 0.5, "test_acc": 0.8}, ("generation", "1"): {"val_acc": 0.9,
                                                                                         "test_acc": 0.8}}
    found = {name: (value, tol) for name, value, tol in module.compare_rows(off, same)}
    assert found["rows_missing"][0] == 1 and found["val_acc_diff"][0] == pytest.approx(0.4)
    assert found["val_acc_diff"][0] > found["val_acc_diff"][1] and found["test_acc_diff"][0] == 0


def test_peak_table_matches_longest_names_first(module):
    assert module.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert module.peak_tflops("NVIDIA H100 PCIe") == 756
    assert module.peak_tflops("NVIDIA GH200 480GB") == 989
    assert module.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert module.peak_tflops("NVIDIA A10") == 125
    assert module.peak_tflops("NVIDIA L40S") == 362
    assert module.peak_tflops("NVIDIA L4") == 121
    assert module.peak_tflops("Some Future GPU") is None
