"""distill.cost: parameters, bytes, FLOPs by hand, timings that are short, ensembles as sums."""

import time

import pytest
import torch
from torch import nn

from distill.config import ModelConfig
from distill.cost import COST_KEYS, count_flops, ensemble_cost, model_cost, state_dict_bytes
from distill.models import create_model


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(nn.Flatten(), *layers)


def test_flops_of_linear_layers_by_hand():
    assert count_flops(nn.Linear(40, 100), (40,)) == 2 * 40 * 100
    assert count_flops(mlp([40, 100, 100, 10]), (1, 40)) == 2 * (40 * 100 + 100 * 100 + 100 * 10)
    no_bias = nn.Linear(7, 3, bias=False)
    assert count_flops(no_bias, (7,)) == 2 * 7 * 3


def test_flops_of_the_registered_mlp():
    model = create_model(ModelConfig(name="mlp", width=100, depth=2), (1, 40), 10)
    assert model_cost(model, (1, 40))["flops"] == 2 * (40 * 100 + 100 * 100 + 100 * 10)


def test_flops_of_a_convolution_by_hand():
    conv = nn.Conv1d(1, 8, kernel_size=3, padding=1)  # 40 outputs per channel, 3 multiply-adds each
    assert count_flops(conv, (1, 40)) == 2 * 8 * 40 * 3


def test_every_figure_present_and_plausible():
    model = mlp([40, 100, 100, 10])
    start = time.perf_counter()
    cost = model_cost(model, (1, 40))
    assert time.perf_counter() - start < 1.0
    assert set(COST_KEYS) <= set(cost)
    assert cost["params"] == sum(p.numel() for p in model.parameters()) == 40 * 100 + 100 + 100 * 100 + 100 + 1010
    assert cost["params"] * 4 <= cost["size_bytes"] == state_dict_bytes(model) < cost["params"] * 4 + 5000
    assert 0 < cost["latency_ms"] < 100 and cost["throughput"] > 1000
    assert cost["batch_size"] == 256 and cost["threads"] == torch.get_num_threads()
    if not torch.cuda.is_available():
        assert "latency_ms_gpu" not in cost


def test_the_callers_model_is_left_as_it_was():
    model = mlp([4, 8, 2]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_cost(model, (4,))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_timings_are_capped_by_time():
    slow = mlp([512, 2048, 2048, 10])
    start = time.perf_counter()
    model_cost(slow, (512,), budget_s=0.05)
    assert time.perf_counter() - start < 3.0


def test_ensemble_is_the_sum_of_its_members():
    a = {"params": 10, "size_bytes": 100, "flops": 1000, "latency_ms": 1.0, "throughput": 1000.0,
         "threads": 2, "batch_size": 256}
    b = {"params": 30, "size_bytes": 300, "flops": 3000, "latency_ms": 3.0, "throughput": 3000.0,
         "threads": 2, "batch_size": 256, "latency_ms_gpu": 0.5, "throughput_gpu": 1e5}
    total = ensemble_cost([a, b])
    assert (total["params"], total["size_bytes"], total["flops"], total["members"]) == (40, 400, 4000, 2)
    assert total["latency_ms"] == pytest.approx(4.0)
    # one example passes through both: 1/1000 + 1/3000 seconds
    assert total["throughput"] == pytest.approx(1 / (1 / 1000 + 1 / 3000))
    assert "latency_ms_gpu" not in total and "throughput_gpu" not in total  # a has no GPU figures
    assert ensemble_cost([b])["throughput_gpu"] == pytest.approx(1e5)
    with pytest.raises(ValueError):
        ensemble_cost([])


def test_ensemble_of_measured_members():
    members = [mlp([40, 16, 10]), mlp([40, 32, 10])]
    costs = [model_cost(m, (1, 40)) for m in members]
    assert ensemble_cost(costs)["flops"] == 2 * (40 * 16 + 16 * 10) + 2 * (40 * 32 + 32 * 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_figures():
    cost = model_cost(mlp([40, 100, 10]), (1, 40), device="cuda")
    assert cost["latency_ms_gpu"] > 0 and cost["throughput_gpu"] > 0 and cost["gpu"]
