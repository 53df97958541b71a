"""The thread policy (train.threads=null, auto): 1 thread for a small model, more by the work per step up
to the free cores; the free cores under load; OMP_WAIT_POLICY=PASSIVE set by the command line
before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distill.export.cost as cost_module
from distill import engine
from distill.config import load_config
from distill.data import load_data
from distill.export.cost import WORK_PER_THREAD, fit_threads, free_cores, threads_for_work
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_is_auto():
    assert load_config(None).train.threads is None
    assert load_config(None, ["train.threads=3"]).train.threads == 3


def test_threads_by_the_work_per_step_and_the_free_cores():
    assert threads_for_work(1e6, free=8) == 1
    assert threads_for_work(3.5 * WORK_PER_THREAD, free=8) == 3
    assert threads_for_work(100 * WORK_PER_THREAD, free=8) == 8
    assert threads_for_work(100 * WORK_PER_THREAD, free=1) == 1


def test_a_small_model_trains_on_one_thread_by_default(tmp_path):
    overrides = [o for o in tiny_overrides(**{"train.epochs": 1}) if not o.startswith("train.threads")]
    cfg = load_config(None, overrides)
    assert cfg.train.threads is None
    data = load_data(cfg.dataset)
    model = engine.new_model(cfg.model, data, 0)
    torch.set_num_threads(2)
    engine.fit_one(model, data, cfg.train, seed=0)
    assert torch.get_num_threads() == 1
    cfg.train.threads = 2  # a count given is setup_torch's, and kept
    engine.setup_torch(cfg.train)
    engine.fit_one(engine.new_model(cfg.model, data, 0), data, cfg.train, seed=0)
    assert torch.get_num_threads() == 2


def test_a_large_step_gets_the_free_cores(monkeypatch):
    monkeypatch.setattr(cost_module, "step_flops", lambda *a, **k: 1e15)
    monkeypatch.setattr(cost_module, "free_cores", lambda seconds=0.1: 3)
    cfg = load_config(None, ["train.device=cpu"])
    data = type("D", (), {"input_shape": (1, 40), "x": {"train": torch.zeros(1, 1, 40)}})()
    fit_threads(cfg.train, [torch.nn.Linear(40, 10)], data, torch.device("cpu"))
    assert torch.get_num_threads() == 3


def test_free_cores_leave_out_what_other_processes_keep_busy(monkeypatch):
    import time

    monkeypatch.setattr(cost_module, "cpu_count", lambda: 4)
    monkeypatch.setattr(cost_module, "_busy_seconds", lambda: 3.0 * time.perf_counter())  # 3 cores busy
    assert free_cores(0.05) == 1
    monkeypatch.setattr(cost_module, "_busy_seconds", lambda: 0.0)  # idle
    assert free_cores(0.05) == 4
    monkeypatch.setattr(cost_module, "free_cores", lambda seconds=0.1: 2)
    monkeypatch.setattr(engine, "free_cores", lambda seconds=0.1: 2)
    engine.setup_torch(load_config(None).train)  # before a fit knows its model: the free cores
    assert torch.get_num_threads() == 2


def test_the_command_line_sets_a_passive_wait_policy_before_torch_loads():
    code = ("import os, sys\n"
            "from distill.cli import main\n"
            "assert 'torch' not in sys.modules\n"
            "main(['list', 'datasets'])\n"
            "assert 'torch' in sys.modules, 'list datasets loads the registry'\n"
            "print(os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "PASSIVE"
