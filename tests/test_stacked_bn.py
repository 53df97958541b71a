"""Stacked training of models with BatchNorm and dropout (`replicas.Stacked`) against the plain
reference, one model at a time: BatchNorm models to float rounding (per-model running statistics,
updated in train mode, read in eval mode, resumed from checkpoints); dropout models with
independent masks per model, and no dropout in eval mode."""

import pytest
import torch

from distill import engine
from distill.config import load_config
from distill.data import load_data
from distill.training.replicas import Stacked, can_stack
from tests.conftest import tiny_overrides

IMAGES = {"dataset.name": "fake", "dataset.fake_shape": "[3, 12, 12]", "dataset.num_samples": 48,
          "dataset.fake_classes": 3, "dataset.val_fraction": 0.25,
          "train.batch_size": 16, "train.epochs": 2, "train.lr": 0.05, "train.optimizer": "sgd",
          "train.momentum": 0.9}
FAMILIES = {  # one small model of each family that has BatchNorm (tiny widths and depths)
    "cnn1d": {"model.name": "cnn1d", "model.width": 6, "model.depth": 2, "model.kwargs": "{norm: batch}"},
    "cnn2d": {**IMAGES, "model.name": "cnn2d", "model.width": 4, "model.kwargs": "{norm: batch}"},
    "cifar_resnet": {**IMAGES, "model.name": "resnet8", "model.width": 4},
    "wide_resnet": {**IMAGES, "model.name": "wrn_10_1", "model.width": "null"},
    "densenet_bc": {**IMAGES, "model.name": "densenet_bc", "model.depth": 10, "model.growth_rate": 4, "model.width": "null"},
    # 40x40: layer4 keeps 2x2 positions (at 1x1, a channel ReLU zeroed for the whole batch has
    # variance 0, and BatchNorm's 1 / sqrt(eps) blows float rounding up to percents)
    "torchvision_resnet": {**IMAGES, "model.name": "resnet18", "model.width": "null", "train.lr": 0.002,
                           "dataset.fake_shape": "[3, 40, 40]", "train.batch_size": 12},
}


def _setup(**extra):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2, **extra}))
    engine.setup_torch(cfg.train)
    return cfg, load_data(cfg.dataset)


def _models(cfg, data, seeds):
    return [engine.new_model(cfg.model, data, seed) for seed in seeds]


def _close_histories(a, b):
    for x, y in zip(a.history, b.history, strict=True):
        assert (x["epoch"], x["split"]) == (y["epoch"], y["split"])
        assert abs(x["loss"] - y["loss"]) < 1e-4 * max(1.0, abs(x["loss"])), (x, y)
        assert x["acc"] == pytest.approx(y["acc"], abs=1e-9 + 1 / 32)  # a tie may flip one example


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_stacked_step_equals_one_step_of_each_model(family):
    """One training step in train mode: logits, gradients and updated running statistics of each model
    to float rounding (vmap's batched convolutions add in another order: about 1e-6 relative)."""
    cfg, data = _setup(**FAMILIES[family])
    stacked, alone = Stacked(_models(cfg, data, [0, 1])), _models(cfg, data, [0, 1])
    stacked.train(True)
    xs = data.x["train"][:32].view(2, 16, *data.input_shape)
    ys = data.y["train"][:32].view(2, 16)
    logits, _ = stacked.forward(xs)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ys.flatten(), reduction="sum").backward()
    for k, model in enumerate(alone):
        model.train(True)
        out = model(xs[k])
        torch.nn.functional.cross_entropy(out, ys[k], reduction="sum").backward()
        torch.testing.assert_close(logits[k], out, atol=1e-5, rtol=1e-5)
        for name, p in model.named_parameters():
            scale = float(p.grad.abs().max()) + 1e-12
            torch.testing.assert_close(stacked.params[name].grad[k] / scale, p.grad / scale, atol=1e-5, rtol=0)
        buffers = dict(model.named_buffers())
        assert any("running_mean" in name for name in buffers)
        for name, b in buffers.items():  # running mean/var moved by this batch, num_batches_tracked = 1
            torch.testing.assert_close(stacked.buffers[name][k], b, atol=1e-6, rtol=1e-6)
    stacked.train(False)
    for k, model in enumerate(alone):  # eval mode: each model's own running statistics
        model.eval()
        torch.testing.assert_close(stacked.eval_logits(xs[0])[k], model(xs[0]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", [f if f != "torchvision_resnet" else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_batchnorm_models_stacked_equal_one_at_a_time(family, tmp_path):
    bigger = {"dataset.fake_shape": "[3, 64, 64]"} if family == "torchvision_resnet" else {}  # 2 epochs: 4x4 at layer4
    cfg, data = _setup(**{**FAMILIES[family], **bigger})
    seeds = [0, 1]
    alone = [(engine.fit_one(m, data, cfg.train, seed=s), m) for s, m in zip(seeds, _models(cfg, data, seeds))]
    models = _models(cfg, data, seeds)
    ok, why = can_stack(models)
    assert ok and "BatchNorm statistics per model" in why, why
    together = engine.fit(models, data, cfg.train, seeds=seeds, model_dirs=[tmp_path / f"m{s}" for s in seeds])
    for (ref, ref_model), res, model in zip(alone, together, models):
        _close_histories(ref, res)  # validation after each epoch: the running statistics in eval mode
        want, got = ref_model.state_dict(), model.state_dict()
        assert want.keys() == got.keys()
        stats = [name for name in want if "running_" in name or "num_batches_tracked" in name]
        assert stats and all(int(got[n]) > 0 for n in stats if "num_batches_tracked" in n)
        for name in want:
            torch.testing.assert_close(got[name].float(), want[name].float(), atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"{name}: {m}")


def test_stacked_batchnorm_and_dropout_resume_to_the_uninterrupted_numbers(tmp_path):
    cfg, data = _setup(**{"model.name": "cnn1d", "model.width": 6, "model.depth": 2, "model.dropout": 0.3,
                          "model.kwargs": "{norm: batch}", "train.epochs": 3})
    seeds = [3, 4]
    full = engine.fit(_models(cfg, data, seeds), data, cfg.train, seeds=seeds,
                      model_dirs=[tmp_path / f"a{s}" for s in seeds])

    class Stop(Exception):
        pass

    def stop(report):
        if report["epoch"] == 2 and report["model"] == 1:
            raise Stop
    with pytest.raises(Stop):
        engine.fit(_models(cfg, data, seeds), data, cfg.train, seeds=seeds,
                   model_dirs=[tmp_path / f"b{s}" for s in seeds], on_epoch=stop)
    models = _models(cfg, data, seeds)
    resumed = engine.fit(models, data, cfg.train, seeds=seeds, model_dirs=[tmp_path / f"b{s}" for s in seeds])
    assert resumed[0].resumed_from == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    for a, b in zip(full, resumed):
        assert strip(a.history) == strip(b.history)
    assert all(int(m.state_dict()["features.1.num_batches_tracked"]) > 0 for m in models)


@torch.no_grad()
@pytest.mark.parametrize("model", [
    {"model.name": "mlp", "model.dropout": 0.5},                                       # batched matrix products
    {"model.name": "cnn1d", "model.width": 6, "model.depth": 2, "model.dropout": 0.5},  # vmap
])
def test_stacked_dropout_masks_are_per_model_and_off_in_eval(model):
    cfg, data = _setup(**model)
    one = engine.new_model(cfg.model, data, 0)
    models = [engine.new_model(cfg.model, data, 0) for _ in range(3)]  # identical weights
    ok, why = can_stack(models)
    assert ok and "dropout masks per model" in why, why
    stacked = Stacked(models)
    x = data.x["train"][:64]
    xs = x.expand(3, *x.shape)
    stacked.train(True)
    torch.manual_seed(0)
    out, _ = stacked.forward(xs)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])  # masks differ by model
    torch.manual_seed(0)
    assert torch.equal(stacked.forward(xs)[0], out)  # drawn from the global generator (checkpointed)
    one.train(True)
    spread = torch.stack([one(x) for _ in range(50)]).std(0).mean()
    assert out.std(0).mean() == pytest.approx(float(spread), rel=0.3)  # as much spread as separate draws
    stacked.train(False)
    one.eval()
    torch.testing.assert_close(stacked.forward(xs)[0], one(x).expand(3, -1, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stacked.eval_logits(x), one(x).expand(3, -1, -1), atol=1e-5, rtol=1e-5)


def test_batchnorm_with_a_cumulative_average_does_not_stack():
    cfg, data = _setup(**{"model.name": "cnn1d", "model.width": 6, "model.kwargs": "{norm: batch}"})
    models = _models(cfg, data, [0, 1])
    for m in models:
        for module in m.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = None
    ok, why = can_stack(models)
    assert not ok and "momentum=None" in why
