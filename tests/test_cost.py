"""distill.export.cost: parameters, bytes, FLOPs by hand, timings that are short, ensembles as sums;
the cost figures of every summary row of train, bornagain and ensemble runs, and in the report."""

import json
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import bornagain
import ensembles
import results
from distill.config import ModelConfig, load_config
from distill.export.cost import (COST_KEYS, ROW_KEYS, count_flops, ensemble_cost, ensemble_row_cost, model_cost, row_cost,
                          state_dict_bytes)
from distill.models import create_model
from distill.training.runner import train
from ensembles.experiment import size_cost
from tests.conftest import tiny_overrides

MEASURED = ("params", "size_bytes", "flops", "latency_ms", "throughput")  # in every row of a finished run


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


# ---------------------------------------------------------------- summary rows


def test_row_cost_from_the_train_section_leaves_the_rng_alone():
    data = SimpleNamespace(input_shape=(1, 40), x={"test": torch.zeros(3, 1, 40)})
    model = mlp([40, 16, 10])
    assert row_cost(model, data, SimpleNamespace(cost_budget=0.0)) == {}  # 0: not measured
    rng = torch.get_rng_state()
    cost = row_cost(model, data, SimpleNamespace(cost_budget=0.01))
    assert torch.equal(torch.get_rng_state(), rng)  # the next model's training draws what it would have drawn
    noise = {"latency_spread", "throughput_spread", "threads", "cores", "load_cores", "load_avg", "trusted",
             "untrusted_because"}  # how far the timings can be trusted: in the row, not only on an export card
    assert set(cost) == {"size_bytes", "flops", "latency_ms", "throughput"} | noise <= set(ROW_KEYS)
    assert cost["threads"] == torch.get_num_threads() and isinstance(cost["trusted"], bool)
    assert (cost["untrusted_because"] is None) == cost["trusted"]
    assert cost["flops"] == 2 * (40 * 16 + 16 * 10) and "params" not in cost  # fit_summary has params


def test_token_inputs_of_a_language_model():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(12 * 8, 5))
    data = SimpleNamespace(input_shape=(12,), x={"test": torch.zeros(3, 12, dtype=torch.long)})
    assert row_cost(model, data, SimpleNamespace(cost_budget=0.01))["flops"] == 2 * 12 * 8 * 5


def test_ensemble_rows_sum_their_members_averaged_over_subsets():
    rows = [{"params": p, "size_bytes": 4 * p, "flops": 10 * p, "latency_ms": 1.0, "throughput": 100.0}
            for p in (1, 2, 3)]
    assert ensemble_row_cost(rows) == {"params": 6, "size_bytes": 24, "flops": 60, "latency_ms": 3.0,
                                       "throughput": pytest.approx(100 / 3)}
    noisy = [{**r, "latency_spread": 0.1 * i, "throughput_spread": 0.05, "threads": 1, "cores": 2,
              "load_cores": 0.5 * i, "load_avg": 1.0 + i, "trusted": i < 2,
              "untrusted_because": None if i < 2 else "the load average was 3.0 on 2 cores"}
             for i, r in enumerate(rows)]
    total = ensemble_row_cost(noisy)  # the worst member's noise; trusted only if every member is
    assert (total["latency_spread"], total["load_cores"], total["load_avg"], total["threads"]) == (0.2, 1.0, 3.0, 1)
    assert total["trusted"] is False and total["untrusted_because"] == "the load average was 3.0 on 2 cores"
    assert ensemble_row_cost(noisy[:2])["trusted"] is True and ensemble_row_cost(noisy[:2])["untrusted_because"] is None
    both = "the load average was 3.0 on 2 cores; the latency calls spread 70% around their median"
    twice = ensemble_row_cost([{**noisy[2], "untrusted_because": both}, noisy[2]])  # each distinct reason once
    assert twice["untrusted_because"] == both
    assert size_cost(noisy, 2)["trusted"] is False and size_cost(noisy, 2)["flops"] == 40
    assert ensemble_row_cost(rows[:2] + [{"params": 3, "flops": None}]) == {}  # a member without figures
    pair = size_cost(rows, 2)  # subsets {0,1}, {0,2}, {1,2}: flops 30, 40, 50
    assert pair["flops"] == 40 and pair["params"] == 4 and isinstance(pair["flops"], int)
    assert pair["latency_ms"] == pytest.approx(2.0) and size_cost(rows, 3)["flops"] == 60


def _models(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done"
    for row in summary["models"]:
        assert all(row.get(key) is not None for key in MEASURED), row
    return summary["models"]


def test_every_row_of_train_and_bornagain_runs_has_its_cost(tmp_path):
    rows = _models(train(load_config(None, tiny_overrides(**{"train.epochs": 1, "seeds": "[0]"})), tmp_path,
                         progress=False))
    assert rows[0]["flops"] == 2 * (40 * 32 + 32 * 32 + 32 * 10)  # the tiny MLP, width 32, depth 2
    skipped = train(load_config(None, tiny_overrides(**{"train.epochs": 1, "seeds": "[0]",
                                                      "train.cost_budget": 0})), tmp_path, progress=False)
    assert "flops" not in json.loads((skipped / "summary.json").read_text())["models"][0]
    cfg = load_config(None, tiny_overrides(**{"name": "ban", "seeds": "[0]", "distill.method": "ban",
                                              "bornagain.generations": 2, "train.epochs": 1}))
    rows = _models(bornagain.run(cfg, tmp_path, progress=False))
    generation = {r["generation"]: r for r in rows if r["role"] == "generation"}
    for row in (r for r in rows if r["role"] == "ensemble"):
        gens = range(0 if row["name"].startswith("ens_0") else 1, row["generation"] + 1)
        for key in ("params", "flops", "size_bytes"):
            assert row[key] == sum(generation[g][key] for g in gens), (row["name"], key)
        assert row["latency_ms"] == pytest.approx(sum(generation[g]["latency_ms"] for g in gens))


def test_ensemble_run_rows_and_report_show_the_cost(tmp_path):
    overrides = {"name": "ens", "model.width": 16, "train.epochs": 1, "ensemble.members": 3, "seeds": "[0, 1]",
                 "ensemble.combine": "[mean_probs]",
                 "ensemble.students": "[{name: mlp, width: 8, depth: 1}]"}
    run_dir = ensembles.run(load_config(None, tiny_overrides(**overrides)), tmp_path, progress=False)
    rows = _models(run_dir)
    members = [r for r in rows if r["role"] == "member" and r["seed"] == 0]
    for row in (r for r in rows if r["role"] == "ensemble" and r["seed"] == 0):
        assert row["flops"] == row["size"] * members[0]["flops"] and row["params"] == row["size"] * members[0]["params"]
    student = next(r for r in rows if r["role"] == "student")
    assert student["flops"] == 2 * (40 * 8 + 8 * 10) < members[0]["flops"]
    # members reused from that run (ensemble.from) are measured too
    again = ensembles.run(load_config(None, tiny_overrides(**overrides, **{"ensemble.from": str(run_dir)})),
                          tmp_path / "again", progress=False)
    reused = [r for r in _models(again) if r["role"] == "member" and r["seed"] == 0]
    assert [r["flops"] for r in reused] == [r["flops"] for r in members]
    # the report of the run: the cost table and the accuracy-vs-FLOPs figure
    out = tmp_path / "report"
    results.report([run_dir], out)
    page = (out / "report.html").read_text()
    assert "Cost</h3>" in page and "<th>FLOPs per example</th>" in page and "<th>latency ms (batch 1)</th>" in page
    assert "<th>% of the best accuracy</th>" in page and "<th>% of the largest FLOPs</th>" in page
    assert 'alt="Test accuracy against FLOPs per example' in page  # the figure, inlined
    figures = list((out / "figures").glob("*-flops.png"))
    assert len(figures) == 1 and figures[0].stat().st_size > 0 and figures[0].name in (out / "report.md").read_text()
    table = next(out.glob("*-cost.csv")).read_text()
    assert "ensemble k=3 mean_probs" in table and "student mlp" in table


def test_the_reports_cost_table_shows_how_noisy_the_timings_were(tmp_path):
    from report_runs import labels_run, summary_row, write_run

    calm = {"flops": 1e6, "latency_ms": 0.5, "throughput": 1e5, "latency_spread": 0.1, "throughput_spread": 0.2,
            "threads": 1, "cores": 2, "load_cores": 0.2, "load_avg": 1.1, "trusted": True, "untrusted_because": None}
    busy = {**calm, "latency_ms": 50.0, "latency_spread": 1.7, "load_cores": 1.9, "load_avg": 7.5, "trusted": False,
            "untrusted_because": "the load average was 7.5 on 2 cores"}
    models = [summary_row("model", 0, 0.7, **calm), summary_row("model", 1, 0.71, **busy)]
    models += [summary_row("model", s, 0.9, name="cnn1d", **calm) for s in (0, 1)]
    run = write_run(tmp_path / "runs" / "costs" / "c1", "costs", "train", models)
    out = tmp_path / "report"
    page = results.report([run], out).read_text()
    table = next(out.glob("*-cost.csv"))
    import pandas as pd

    numbers = pd.read_csv(table).set_index("model")
    assert numbers.loc["model mlp", "timing_spread"] == pytest.approx(1.7)  # the worst of its rows
    assert numbers.loc["model mlp", "load_avg"] == pytest.approx(7.5)
    assert not numbers.loc["model mlp", "timings_trusted"] and numbers.loc["model cnn1d", "timings_trusted"]
    assert "| timing spread % |" in page.replace("|---", "") or "timing spread %" in page
    assert ("**Warning:** the latency and throughput of model mlp were timed on a busy or noisy machine and are not "
            "to be trusted: the load average was 7.5 on 2 cores (model mlp).") in page
    assert "1.9 / 7.5 / 2" in page
    # rows written before these figures existed: blank, no warning
    old = labels_run(tmp_path / "old")
    assert "Warning:** the latency" not in results.report([old], tmp_path / "r2").read_text()


def test_the_cost_warning_names_each_reason_once_with_the_rows_it_concerns(tmp_path):
    from report_runs import summary_row, write_run

    load, spread = "the load average was {} on 2 cores", "the latency calls spread 70% around their median"
    busy = {"flops": 1e6, "latency_ms": 50.0, "throughput": 1e5, "latency_spread": 0.7, "throughput_spread": 0.2,
            "threads": 1, "cores": 2, "load_cores": 1.9, "load_avg": 4.2, "trusted": False}
    models = [summary_row("model", 0, 0.7, **busy, untrusted_because=f"{load.format(4.2)}; {spread}"),
              summary_row("model", 1, 0.71, **busy, untrusted_because=load.format(5.1)),
              summary_row("model", 2, 0.72, **busy, untrusted_because=f"{load.format(4.2)}; {spread}")]
    models += [summary_row("model", s, 0.9, name="cnn1d", **busy, untrusted_because=load.format(4.2)) for s in (0, 1)]
    run = write_run(tmp_path / "runs" / "costs" / "c1", "costs", "train", models)
    page = results.report([run], tmp_path / "report").read_text()
    warning = next(line for line in page.splitlines() if "Warning:" in line)
    assert warning.count("the load average was") == 1 and warning.count("calls spread") == 1
    assert ("the latency and throughput of model mlp, model cnn1d were timed on a busy or noisy machine and are not "
            "to be trusted: the load average was 4.2 to 5.1 on 2 cores (all of them); the latency calls spread 70% "
            "around their median (model mlp).") in warning
    from results.costs import untrusted_reasons

    assert untrusted_reasons([{"model": "a", "untrusted_because": None}]) == []


def test_the_member_cost_row_averages_the_members_per_seed_and_counts_seeds(tmp_path):
    """2 members x 2 seeds are 2 figures (one per seed, its members averaged), not 4: members are different
    models, not repeats of one; n counts seeds, as the ensemble page's mean member."""
    from report_runs import summary_row, write_run

    cost = {"flops": 1e6, "latency_ms": 0.5, "throughput": 1e5}
    accs = {(0, 0): 0.90, (0, 1): 0.94, (1, 0): 0.91, (1, 1): 0.95}
    models = [summary_row("member", s, a, name="cnn1d", member=m, **cost) for (s, m), a in accs.items()]
    models += [summary_row("ensemble", s, 0.95, name="k2", size=2, combine="mean_probs", **cost) for s in (0, 1)]
    run = write_run(tmp_path / "runs" / "ens" / "e1", "ens", "ensemble", models, model="cnn1d")
    out = tmp_path / "report"
    page = results.report([run], out).read_text()
    import numpy as np
    import pandas as pd
    from scipy import stats as scipy_stats

    numbers = pd.read_csv(next(out.glob("*-cost.csv"))).set_index("model")
    member = numbers.loc["member cnn1d (mean of the 2 members per seed)"]
    seeds = 100 * np.array([(0.90 + 0.94) / 2, (0.91 + 0.95) / 2])
    assert member["test_acc_n"] == 2 and member["models"] == 4
    assert member["test_acc_mean"] == pytest.approx(seeds.mean())
    assert member["test_acc_ci"] == pytest.approx(scipy_stats.t.ppf(0.975, 1) * seeds.std(ddof=1) / np.sqrt(2))
    assert "| member cnn1d (mean of the 2 members per seed) | 92.5 ± 6.4 (n=2, wide) |" in page
    assert "n = seeds" in page
