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


@pytest.mark.parametrize("method", [None, "kd", "ban", "cwtm"])
def test_written_out_backward_equals_autograd(tmp_path, monkeypatch, method):
    """Packed ReLU MLPs through _ManualMLP (cross-entropy's gradient, a kd objective's
    gradient_step, or autograd of any other objective's loss from the logits) against the same
    packed training through autograd: the same histories and weights to float rounding."""
    from distill.config import DistillConfig
    from distill.teachers import make_objective

    cfg = load_config(None, tiny_overrides(**{"train.epochs": 3, "train.grad_clip": 1.0}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = [0, 1, 2]
    assert packed._ManualMLP.build(_models(cfg, data, seeds)[0]) is not None
    results = {}
    for written_out in (True, False):
        monkeypatch.setattr(packed, "WRITTEN_OUT_BACKWARD", written_out)
        objectives = None
        if method is not None:
            teachers = _models(cfg, data, [10, 11, 12])
            objectives = [make_objective(DistillConfig(method=method, temperature=2.0, alpha=0.7), [t], data, "cpu",
                                         cache="cached")[0] for t in teachers]
            if method in ("kd", "ban"):
                assert all(o.gradient_ready for o in objectives)
        models = _models(cfg, data, seeds)
        res = packed.fit_packed(models, data, cfg.train, seeds=seeds, objectives=objectives)
        results[written_out] = (res, models)
    (fast, fast_models), (ref, ref_models) = results[True], results[False]
    for a, b in zip(fast, ref):
        assert a.selected_epoch == b.selected_epoch
        for row_a, row_b in zip(a.history, b.history):
            assert (row_a["epoch"], row_a["split"]) == (row_b["epoch"], row_b["split"])
            assert row_a["loss"] == pytest.approx(row_b["loss"], rel=1e-5, abs=1e-6)
            assert abs(row_a["acc"] - row_b["acc"]) < 1e-6 + 1 / 100  # at most one example flips
    for m_a, m_b in zip(fast_models, ref_models):
        for p, q in zip(m_a.state_dict().values(), m_b.state_dict().values()):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def test_written_out_backward_only_for_relu_mlps():
    from distill.config import ModelConfig
    from distill.models import create_model

    def build(**kw):
        return packed._ManualMLP.build(create_model(ModelConfig(name="mlp", width=8, depth=2, **kw), (1, 16), 4))

    assert build().layers == ["features.1", "features.3", "head"] and build().relu_after == [True, True, False]
    assert build(kwargs={"activation": "gelu"}) is None
    assert build(dropout=0.5) is None
    assert packed._ManualMLP.build(create_model(ModelConfig(name="cnn1d", width=4, depth=1), (1, 16), 4)) is None
