"""Nothing silently ignored: a `search:` section given to a command that does not search, a GPU preset
started without a GPU, and cost timings that do not say how far to trust them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import distill.export.cost as cost_module
from distill.cli import main
from distill.export.cost import MAX_SPREAD, model_cost, trust
from tests.conftest import tiny_overrides


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command, extra", [("train", {}), ("bornagain", {"distill.method": "ban"})])
def test_a_search_section_is_an_error_naming_distill_tune(tmp_path, capsys, command, extra):
    out = tmp_path / "runs"
    overrides = tiny_overrides(**{"search.distill.temperature": "{grid: [2, 4]}", **extra})
    assert main([command, "mnist1d-mlp", *overrides, "--out", str(out)]) == 2
    err = one_line(capsys)
    assert "distill tune" in err and "distill.temperature" in err and "search={}" in err
    assert not out.exists()


def test_a_gpu_preset_without_a_gpu_says_so_and_asks_for_train_device_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "runs"
    for argv in (["bornagain", "ban-cifar10-wrn"], ["reproduce", "ban-cifar10-wrn"]):
        assert main([*argv, "--out", str(out)]) == 2
        err = one_line(capsys)
        assert "needs a GPU" in err and "train.device=cpu" in err, err
    assert not out.exists()
    # asked for the CPU, it goes on (to the next check: here, the CIFAR files that are not there)
    assert main(["bornagain", "ban-cifar10-wrn", "train.device=cpu", f"dataset.root={tmp_path / 'none'}",
                 "--out", str(out)]) == 2
    assert "no CIFAR-10 files" in one_line(capsys)
    # the quick version runs anywhere: on the CPU, as its command line says
    monkeypatch.setattr("results.reproduce", lambda path, command, overrides, **kw: overrides[-1])
    assert main(["reproduce", "ban-cifar10-wrn", "--quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "train.device=cpu"


def test_cost_timings_carry_their_spread_and_load():
    cost = model_cost(nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10)), (40,), budget_s=0.01)
    for key in ("latency_spread", "throughput_spread"):
        assert cost[key] >= 0.0
    assert cost["cores"] >= 1 and (cost["load_cores"] is None or cost["load_cores"] >= 0.0)
    assert isinstance(cost["trusted"], bool)
    assert (cost["untrusted_because"] is None) == cost["trusted"]


def test_timings_under_load_are_marked_untrusted(monkeypatch):
    """Other processes keeping every core busy (a fake /proc/stat reading: this process's own CPU time
    plus a core-second per wall second per core, whatever the machine's thread count) make the figures
    untrusted, with the reason. The wall clock is a fake that ticks 10 ms per read, so a busy machine
    pausing this process between two reads cannot change the figure."""
    import itertools
    import time

    ticks = itertools.count()
    monkeypatch.setattr(cost_module.time, "perf_counter", lambda: next(ticks) * 0.01)
    monkeypatch.setattr(cost_module, "cpu_count", lambda: 2)
    monkeypatch.setattr(cost_module, "_busy_seconds", lambda: time.process_time() + 2.0 * time.perf_counter())
    cost = model_cost(nn.Linear(8, 2), (8,), budget_s=0.01)
    assert cost["load_cores"] >= 1.0 and cost["trusted"] is False
    assert "other processes kept" in cost["untrusted_because"]


def test_a_wide_spread_is_untrusted():
    calm = {"load_cores": 0.0, "threads": 1, "cores": 2, "latency_spread": 0.1, "throughput_spread": 0.1}
    assert trust(calm) == {"trusted": True, "untrusted_because": None}
    noisy = {**calm, "throughput_spread": MAX_SPREAD + 0.5}
    verdict = trust(noisy)
    assert verdict["trusted"] is False and "throughput calls spread" in verdict["untrusted_because"]
