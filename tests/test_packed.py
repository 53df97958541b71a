"""Packed (vmap) training against the plain reference: K calls of engine.fit."""

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from distill import engine, packed
from distill.config import load_config
from distill.data import load_data
from tests.conftest import tiny_overrides


def _models(cfg, data, seeds):
    return [engine.new_model(cfg.model, data, seed) for seed in seeds]


@pytest.mark.parametrize("model", [
    {},  # the MLP: batched matrix products on the stacked weights
    {"model.name": "cnn1d", "model.width": 8, "model.depth": 2},  # anything else: vmap
])
def test_packed_equals_sequential(tmp_path, model):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 3, "train.grad_clip": 1.0, **model}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = [0, 1, 2]
    sequential = []
    for seed, model in zip(seeds, _models(cfg, data, seeds)):
        sequential.append((engine.fit(model, data, cfg.train, seed=seed), model))
    models = _models(cfg, data, seeds)
    ok, why = packed.can_pack(models)
    assert ok, why
    results = packed.fit_packed(models, data, cfg.train, seeds=seeds, checkpoint_dir=tmp_path / "pack",
                                model_dirs=[tmp_path / f"m{s}" for s in seeds])
    for (ref, ref_model), res, model in zip(sequential, results, models):
        assert res.selected_epoch == ref.selected_epoch
        for a, b in zip(ref.history, res.history):
            assert a["split"] == b["split"] and a["epoch"] == b["epoch"]
            assert abs(a["loss"] - b["loss"]) < 1e-4
            assert abs(a["acc"] - b["acc"]) < 1e-6 + 1 / 100  # at most one example flips
        for p, q in zip(ref_model.state_dict().values(), model.state_dict().values()):
            torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)


def test_packed_resume_matches_uninterrupted(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 4}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = [3, 4]
    full = packed.fit_packed(_models(cfg, data, seeds), data, cfg.train, seeds=seeds,
                             checkpoint_dir=tmp_path / "a", model_dirs=[tmp_path / f"a{s}" for s in seeds])
    # a run stopped after 2 epochs, then started again with the full budget
    short = load_config(None, tiny_overrides(**{"train.epochs": 4}))
    calls = []

    class Stop(Exception):
        pass

    def stop_after_two(report):
        calls.append(report)
        if report["epoch"] == 2 and report["model"] == len(seeds) - 1:
            raise Stop

    try:
        packed.fit_packed(_models(short, data, seeds), data, short.train, seeds=seeds, checkpoint_dir=tmp_path / "b",
                          model_dirs=[tmp_path / f"b{s}" for s in seeds], on_epoch=stop_after_two)
    except Stop:
        pass
    resumed = packed.fit_packed(_models(short, data, seeds), data, short.train, seeds=seeds,
                                checkpoint_dir=tmp_path / "b", model_dirs=[tmp_path / f"b{s}" for s in seeds])
    assert resumed[0].resumed_from == 2
    for a, b in zip(full, resumed):
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
        assert strip(a.history) == strip(b.history)


def test_can_pack_refuses_batchnorm_and_dropout():
    cfg = load_config(None, tiny_overrides(**{"model.name": "cnn1d", "model.kwargs": "{norm: batch}"}))
    data = load_data(cfg.dataset)
    ok, why = packed.can_pack(_models(cfg, data, [0, 1]))
    assert not ok and "BatchNorm" in why
    cfg = load_config(None, tiny_overrides(**{"model.dropout": 0.2}))
    ok, why = packed.can_pack(_models(cfg, data, [0, 1]))
    assert not ok and "dropout" in why


@pytest.mark.parametrize("kwargs", ["{activation: gelu}", "{}"])
@pytest.mark.parametrize("depth", [1, 3])
def test_stacked_mlp_forward_equals_vmap(kwargs, depth):
    cfg = load_config(None, tiny_overrides(**{"model.depth": depth, "model.kwargs": kwargs}))
    data = load_data(cfg.dataset)
    models = _models(cfg, data, [0, 1, 2])
    params, buffers = stack_module_state(models)
    base = models[0]
    forward = packed._stacked_linear_forward(base)
    assert forward is not None
    xs = data.x["train"][:30].view(3, 10, *data.input_shape)
    want = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))(params, buffers, xs)
    torch.testing.assert_close(forward(params, xs), want, atol=1e-5, rtol=1e-5)
    one = data.x["val"][:7]
    torch.testing.assert_close(forward(params, one, shared=True), torch.stack([m(one) for m in models]),
                               atol=1e-5, rtol=1e-5)
    cnn = engine.new_model(load_config(None, tiny_overrides(**{"model.name": "cnn1d"})).model, data, 0)
    assert packed._stacked_linear_forward(cnn) is None
