"""Deep mutual learning (`distill mutual`): the peer loss against a plain reference, real tiny runs
through the command line (stacked and side by side), stop-and-resume, and the report's page.

    .venv/bin/python -m pytest tests/test_mutual.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import results
from results import experiments as ex
from distill.cli import main
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from distill.methods.objectives import Batch, mix
from distill.training import mutual
from tests.conftest import Killed, kill_at, tiny_overrides

TINY = {"model.width": 16, "model.depth": 1, "train.epochs": 2, "seeds": "[0,1]", "train.cost_budget": 0,
        "distill.temperature": 2.0, "distill.alpha": 0.5}


def _args(tmp_path, **extra) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "mutual.yaml"
    config.write_text("name: dml\n")
    return ["mutual", str(config), "--out", str(tmp_path / "runs"), "--quiet"] + tiny_overrides(**{**TINY, **extra})


def _run(tmp_path, capsys, **extra) -> Path:
    assert main(_args(tmp_path, **extra)) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _strip(summary):  # without the timings, which differ from one measurement to the next
    return [{k: v for k, v in row.items() if k not in ("train_seconds", *TIMING_KEYS)} for row in summary["models"]]


def reference_losses(logits: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float) -> list:
    """Each peer's loss written out on its own: CE + alpha T^2 mean over the others of KL(p_l || p_k)."""
    out = []
    for k in range(logits.shape[0]):
        kls = [F.kl_div(F.log_softmax(logits[k] / temperature, -1), F.softmax(logits[l].detach() / temperature, -1),
                        reduction="batchmean") for l in range(logits.shape[0]) if l != k]
        out.append(F.cross_entropy(logits[k], y) + alpha * temperature**2 * sum(kls) / len(kls))
    return out


@pytest.mark.parametrize("count", [2, 3])
def test_peer_loss_equals_a_plain_reference_values_and_gradients(count):
    torch.manual_seed(0)
    logits = torch.randn(count, 16, 5, requires_grad=True)
    y = torch.randint(0, 5, (16,))
    batch = Batch(None, y.expand(count, -1), None)  # the peers' batch: the same labels for every peer

    def losses(objective):
        return mix(objective.terms(batch, logits, [], 0.0), objective.weights(0.0))

    got = losses(mutual.Mutual(load_config(None, ["distill.temperature=3", "distill.alpha=0.7"]).distill))
    expected = reference_losses(logits, y, 3.0, 0.7)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    (want,) = torch.autograd.grad(sum(expected), logits)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    alone = losses(mutual.Mutual(load_config(None, ["distill.alpha=0"]).distill))  # alpha = 0: CE alone
    torch.testing.assert_close(alone, torch.stack([F.cross_entropy(z, y) for z in logits]))


def test_a_joint_objective_needs_one_data_seed(tmp_path):
    from distill import engine
    from distill.data import load_data

    cfg = load_config(None, tiny_overrides(**TINY))
    data = load_data(cfg.dataset)
    models = [engine.new_model(cfg.model, data, s) for s in (0, 1)]
    with pytest.raises(ValueError, match="one data seed"):
        engine.fit(models, data, cfg.train, seeds=[0, 1], objectives=[mutual.Mutual(cfg.distill)] * 2)


def test_two_peers_two_seeds_through_the_cli_and_the_report(tmp_path, capsys):
    path = _run(tmp_path, capsys)
    summary = _summary(path)
    rows = summary["models"]
    assert json.loads((path / "meta.json").read_text())["kind"] == "mutual"
    assert sorted((r["seed"], r["member"]) for r in rows if r["role"] == "peer") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(r["seed"] for r in rows if r["role"] == "alone") == [0, 1]
    ens = [r for r in rows if r["role"] == "ensemble"]
    assert [r["size"] for r in ens] == [2, 2] and all(0 <= r["test_acc"] <= 1 for r in ens)
    assert summary["packing"]["peers"].startswith("stacked") and summary["loss"]["method"] == "mutual"
    assert summary["loss"]["update"] == "simultaneous"
    peers = {(r["seed"], r["member"]): r for r in rows if r["role"] == "peer"}
    assert peers[(0, 0)]["val_nll"] != peers[(0, 1)]["val_nll"]  # two initialisations, two models
    records = pd.read_csv(path / "records.csv")
    assert set(records.loc[records["role"] == "peer", "member"]) == {0, 1}

    out = tmp_path / "report"
    page = results.report([path], out).read_text()
    assert "deep mutual learning" in page
    (exp,) = ex.split(results.load(path))
    models = pd.read_csv(out / f"{exp.slug}-models.csv")
    assert list(models["model"]) == ["mlp alone", "peer 0 mlp", "peer 1 mlp", "ensemble of the 2 peers"]
    paired = pd.read_csv(out / f"{exp.slug}-vs-alone.csv")
    assert list(paired["comparison"]) == ["peer 0 mlp − mlp alone", "peer 1 mlp − mlp alone",
                                          "ensemble of the 2 peers − mlp alone"]
    assert set(paired["n"]) == {2}
    assert paired["p_holm"].tolist() == pytest.approx(results.stats.holm(paired["p_value"].tolist()), nan_ok=True)
    assert "verdict, Holm over 3" in page  # three models against one reference: one family
    index = pd.read_csv(out / "experiments.csv")
    assert index["test_acc_n"].tolist() == [2]  # the headline: peer 0 over its seeds, the peers not pooled


def test_at_alpha_zero_peer_zero_is_its_alone_baseline(tmp_path, capsys):
    rows = _summary(_run(tmp_path, capsys, **{"distill.alpha": 0.0}))["models"]
    for seed in (0, 1):
        peer = next(r for r in rows if r["role"] == "peer" and r["member"] == 0 and r["seed"] == seed)
        alone = next(r for r in rows if r["role"] == "alone" and r["seed"] == seed)
        assert peer["selected_epoch"] == alone["selected_epoch"]
        for key in ("val_acc", "test_acc", "val_nll", "test_nll"):  # same weights, batches and loss
            assert peer[key] == pytest.approx(alone[key], abs=1e-6), key


def test_side_by_side_peers_equal_stacked_ones(tmp_path, capsys):
    stacked = _summary(_run(tmp_path / "a", capsys))
    side = _summary(_run(tmp_path / "b", capsys, **{"mutual.pack": "false"}))
    assert side["packing"]["peers"] == "side by side: mutual.pack=false"
    for a, b in zip(stacked["models"], side["models"]):
        assert (a["role"], a["seed"], a["member"]) == (b["role"], b["seed"], b["member"])
        assert a["val_nll"] == pytest.approx(b["val_nll"], abs=1e-4)


def test_peers_of_different_architectures(tmp_path, capsys):
    models = "[{name: mlp, width: 16, depth: 1}, {name: cnn1d, width: 8, depth: 1}]"
    rows = _summary(_run(tmp_path, capsys, **{"mutual.models": models, "seeds": "[0]"}))["models"]
    assert sorted((r["role"], r["name"]) for r in rows) == [
        ("alone", "cnn1d"), ("alone", "mlp"), ("ensemble", "mlp+cnn1d"), ("peer", "cnn1d"), ("peer", "mlp")]


def test_killed_run_resumes_with_the_numbers_of_one_that_never_stopped(tmp_path):
    cfg = load_config(None, tiny_overrides(**{**TINY, "train.epochs": 3}))
    whole = mutual.run(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        mutual.run(cfg, tmp_path / "killed", on_epoch=kill_at(role="peer", member=1, seed=1, epoch=2), progress=False)
    path = next((tmp_path / "killed" / "run").iterdir())
    assert json.loads((path / "meta.json").read_text())["status"] == "failed"
    mutual.run(cfg, tmp_path / "killed", progress=False)
    assert _strip(_summary(whole)) == _strip(_summary(path))
    order = ["role", "seed", "member", "epoch", "split"]  # a resumed fit writes its history first, then epochs
    a, b = (pd.read_csv(p / "records.csv").drop(columns="seconds").sort_values(order, ignore_index=True)
            for p in (whole, path))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("override, words", [
    ("mutual.models=[{name: mlp}, {name: mlp}, {name: mlp}]", ["mutual.models", "3 architectures for 2 peers"]),
    ("mutual.models=[{name: mlp, widht: 3}]", ["mutual.models[0].widht", "unknown key"]),
    ("distill.method=reverse_kl", ["distill.method", "set distill.method=kd"]),
    ("mutual.peers=1", ["mutual.peers", ">= 2"]),
    ("distill.lm_chunk=8", ["distill.lm_chunk", "set distill.lm_chunk=0"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, override, words):
    assert main(_args(tmp_path) + [override]) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.slow  # Ray and two trials, about 30 s
def test_a_sweep_of_mutual_learning_trials_reports_peer_0(tmp_path, capsys):
    argv = _args(tmp_path, seeds="[0]")
    argv[0] = "tune"
    argv += ["tune.kind=mutual", "tune.cpus_per_trial=1", "search.distill.alpha={grid: [0.0, 1.0]}"]
    assert main(argv) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    sweep = json.loads((folder / "sweep.json").read_text())
    assert sweep["kind"] == "mutual" and len(sweep["trials"]) == 2
    assert all(t["status"] == "done" and t["target_model"] == "peer 0" for t in sweep["trials"])
