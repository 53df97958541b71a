"""K models in one engine.fit (stacked parameters) against the plain reference: K fits of one model."""

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from distill import engine
from distill.training.replicas import can_stack, stacked_mlp_forward
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
        sequential.append((engine.fit_one(model, data, cfg.train, seed=seed), model))
    models = _models(cfg, data, seeds)
    ok, why = can_stack(models)
    assert ok, why
    results = engine.fit(models, data, cfg.train, seeds=seeds, model_dirs=[tmp_path / f"m{s}" for s in seeds])
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
    full = engine.fit(_models(cfg, data, seeds), data, cfg.train, seeds=seeds,
                      model_dirs=[tmp_path / f"a{s}" for s in seeds])
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
        engine.fit(_models(short, data, seeds), data, short.train, seeds=seeds,
                   model_dirs=[tmp_path / f"b{s}" for s in seeds], on_epoch=stop_after_two)
    except Stop:
        pass
    resumed = engine.fit(_models(short, data, seeds), data, short.train, seeds=seeds,
                         model_dirs=[tmp_path / f"b{s}" for s in seeds])
    assert resumed[0].resumed_from == 2
    for a, b in zip(full, resumed):
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
        assert strip(a.history) == strip(b.history)


def test_can_stack_takes_batchnorm_and_dropout_and_refuses_trainable_objectives():
    """BatchNorm and dropout stack (tests/test_stacked_bn.py holds them against one at a time); an objective
    with parameters (a learned temperature) or feature hooks does not."""
    from distill.methods import DistillConfig
    from distill.methods.objectives import make_objective

    cfg = load_config(None, tiny_overrides(**{"model.name": "cnn1d", "model.kwargs": "{norm: batch}"}))
    data = load_data(cfg.dataset)
    ok, why = can_stack(_models(cfg, data, [0, 1]))
    assert ok and "BatchNorm statistics per model" in why
    cfg = load_config(None, tiny_overrides(**{"model.dropout": 0.2}))
    models = _models(cfg, data, [0, 1])
    ok, why = can_stack(models)
    assert ok and "dropout masks per model" in why
    ctkd, _ = make_objective(DistillConfig(method="ctkd"), [models[0]], data, torch.device("cpu"), epochs=2)
    ok, why = can_stack(models, [ctkd, ctkd])
    assert not ok and "trainable parameters" in why


@pytest.mark.parametrize("kwargs", ["{activation: gelu}", "{}"])
@pytest.mark.parametrize("depth", [1, 3])
def test_stacked_mlp_forward_equals_vmap(kwargs, depth):
    cfg = load_config(None, tiny_overrides(**{"model.depth": depth, "model.kwargs": kwargs}))
    data = load_data(cfg.dataset)
    models = _models(cfg, data, [0, 1, 2])
    params, buffers = stack_module_state(models)
    base = models[0]
    forward = stacked_mlp_forward(base)
    assert forward is not None
    xs = data.x["train"][:30].view(3, 10, *data.input_shape)
    want = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))(params, buffers, xs)
    torch.testing.assert_close(forward(params, xs), want, atol=1e-5, rtol=1e-5)
    one = data.x["val"][:7]
    torch.testing.assert_close(forward(params, one, shared=True), torch.stack([m(one) for m in models]),
                               atol=1e-5, rtol=1e-5)
    cnn = engine.new_model(load_config(None, tiny_overrides(**{"model.name": "cnn1d"})).model, data, 0)
    assert stacked_mlp_forward(cnn) is None


@pytest.mark.parametrize("method", ["kd", "ban", "cwtm"])
def test_stacked_students_with_their_own_teachers_equal_sequential(method):
    """Born-again style: student k taught by teacher k (cached logits), stacked vs one at a time."""
    from distill.methods import DistillConfig
    from distill.methods.objectives import make_objective

    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = [0, 1, 2]
    teachers = _models(cfg, data, [10, 11, 12])
    distill_cfg = DistillConfig(method=method, temperature=2.0, alpha=0.7)

    def objectives():
        return [make_objective(distill_cfg, [t], data, torch.device("cpu"), seed=s)[0] for t, s in zip(teachers, seeds)]

    alone = [engine.fit_one(m, data, cfg.train, seed=s, objective=o)
             for m, s, o in zip(_models(cfg, data, seeds), seeds, objectives())]
    together = engine.fit(_models(cfg, data, seeds), data, cfg.train, seeds=seeds, objectives=objectives())
    for a, b in zip(alone, together):
        for x, y in zip(a.history, b.history):
            assert abs(x["loss"] - y["loss"]) < 1e-4 and abs(x["acc"] - y["acc"]) <= 1 / 100 + 1e-9


@pytest.mark.parametrize("method, shared, extra", [
    ("kd", True, {}),                                           # one teacher signal for all K: read once
    ("kd", False, {"standardize": True}),                       # each model its own teachers
    ("dkd", True, {}),                                          # two teacher terms, weights from options
    ("jsd", False, {"combine": "mean_probs"}),                  # two teachers combined at T
    ("ban", True, {}),
])
def test_stacked_distill_equals_k_separate_calls(method, shared, extra):
    """StackedDistill: K Distill objectives of one method with their own T and alpha, one vmapped call, against
    each objective's own terms and mix: the K losses and their gradients wrt the student logits."""
    from distill.methods import DistillConfig
    from distill.methods.objectives import Batch, make_objective, mix
    from distill.methods.stacked import StackedDistill, stacked_objective

    cfg = load_config(None, tiny_overrides())
    data = load_data(cfg.dataset)
    teachers = _models(cfg, data, [10, 11, 12, 13])
    k, b = 3, 16
    settings = [(1.0, 0.9), (4.0, 0.5), (2.5, 0.0)]  # (T, alpha) per model
    two = extra.get("combine") is not None
    objectives = []
    for i, (t, a) in enumerate(settings):
        distill_cfg = DistillConfig(method=method, temperature=t, alpha=a, dkd_beta=2.0 + i, **extra)
        mine = teachers[:2] if two and shared else teachers[i:i + 2] if two else teachers[:1] if shared else [teachers[i]]
        objectives.append(make_objective(distill_cfg, mine, data, torch.device("cpu"), epochs=4)[0])
    step = stacked_objective(objectives)
    assert isinstance(step, StackedDistill) and step.shared == shared
    idx = torch.stack([torch.randperm(data.size("train"), generator=torch.Generator().manual_seed(i))[:b]
                       for i in range(k)])
    xs, ys = data.x["train"][idx], data.y["train"][idx]
    logits = torch.randn(k, b, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    progress = 0.3
    got = mix(step.terms(Batch(xs, ys, idx), logits, [[]] * k, progress), step.weights(progress))
    (grad,) = torch.autograd.grad(got.sum(), logits)
    for i, o in enumerate(objectives):
        one = logits[i].detach().clone().requires_grad_(True)
        want = mix(o.terms(Batch(xs[i], ys[i], idx[i]), one, [], progress), o.weights(progress))
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad[i], torch.autograd.grad(want, one)[0], atol=1e-6, rtol=1e-5)


def test_objectives_that_differ_in_method_or_draw_are_called_in_turn():
    from distill.methods import DistillConfig
    from distill.methods.objectives import CrossEntropy, make_objective
    from distill.methods.stacked import stacked_objective

    cfg = load_config(None, tiny_overrides())
    data = load_data(cfg.dataset)
    teacher = _models(cfg, data, [10])

    def make(method, **kw):
        return make_objective(DistillConfig(method=method, **kw), teacher, data, torch.device("cpu"))[0]
    assert stacked_objective([make("kd"), make("reverse_kl")]) is None
    assert stacked_objective([make("dkpp"), make("dkpp")]) is None       # draws permutations
    assert stacked_objective([make("jsd", jsd_beta=0.2), make("jsd", jsd_beta=0.7)]) is None  # a formula option
    assert stacked_objective([make("kd"), CrossEntropy()]) is None
    ce = CrossEntropy()
    assert stacked_objective([ce, CrossEntropy()]) is ce


def test_a_pack_of_temperatures_and_alphas_trains_as_each_alone(monkeypatch):
    """One student architecture, one teacher, three (T, alpha): one stacked fit, one StackedDistill call
    per step, the numbers of three fits of one."""
    from distill.methods import DistillConfig
    from distill.methods import stacked
    from distill.methods.objectives import make_objective

    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    (teacher,) = _models(cfg, data, [10])
    seeds = [0, 0, 0]
    settings = [(1.0, 0.9), (4.0, 0.5), (8.0, 1.0)]

    def objectives():
        return [make_objective(DistillConfig(method="kd", temperature=t, alpha=a), [teacher], data,
                               torch.device("cpu"))[0] for t, a in settings]
    alone = [engine.fit_one(m, data, cfg.train, seed=s, objective=o)
             for m, s, o in zip(_models(cfg, data, seeds), seeds, objectives())]
    assert stacked.stacked_objective(objectives()).shared  # one teacher: its cache read once for all three
    calls = []
    terms = stacked.StackedDistill.terms
    monkeypatch.setattr(stacked.StackedDistill, "terms", lambda self, *a: calls.append(1) or terms(self, *a))
    together = engine.fit(_models(cfg, data, seeds), data, cfg.train, seeds=seeds, objectives=objectives())
    assert len(calls) == cfg.train.epochs * -(-data.size("train") // cfg.train.batch_size)
    for a, b in zip(alone, together):
        for x, y in zip(a.history, b.history, strict=True):
            assert abs(x["loss"] - y["loss"]) < 1e-4 and abs(x["acc"] - y["acc"]) <= 1 / 100 + 1e-9


@pytest.mark.parametrize("leading", [(), (3,)])
def test_fused_kd_terms_equal_the_plain_formula(leading):
    """parts.kd_terms (kd's terms in one autograd node) against losses.kd through autograd: both terms and the
    gradient of alpha * teacher + (1 - alpha) * task wrt the student, alone, for K models' (K, B, C), and
    under vmap (as StackedDistill calls it); and the written-out gradient of the issue:
    alpha T (softmax(s / T) - p_t) + (1 - alpha) (softmax(s) - onehot(y)), over the batch size."""
    from torch.func import vmap

    from distill.methods import losses
    from distill.methods.parts import kd_terms

    g = torch.Generator().manual_seed(0)
    s = torch.randn(*leading, 16, 7, generator=g) * 3
    t = torch.randn(*leading, 16, 7, generator=g) * 3
    y = torch.randint(0, 7, (*leading, 16), generator=g)
    for temperature, alpha in [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0)]:
        a = s.clone().requires_grad_(True)
        plain = losses.kd(a, t, y, temperature=temperature)
        (alpha * plain["teacher"] + (1 - alpha) * plain["task"]).sum().backward()
        b = s.clone().requires_grad_(True)
        kl, ce = kd_terms(b, t, y, temperature)
        (alpha * kl + (1 - alpha) * ce).sum().backward()
        torch.testing.assert_close(kl, plain["teacher"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ce, plain["task"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(b.grad, a.grad, atol=1e-7, rtol=1e-5)
        onehot = torch.nn.functional.one_hot(y, 7).float()
        written = (alpha * temperature * (torch.softmax(s / temperature, -1) - torch.softmax(t / temperature, -1))
                   + (1 - alpha) * (torch.softmax(s, -1) - onehot)) / 16
        torch.testing.assert_close(b.grad, written, atol=1e-7, rtol=1e-5)
        if leading:
            c = s.clone().requires_grad_(True)
            temps = torch.full(leading, temperature)
            kl, ce = vmap(kd_terms)(c, t, y, temps)
            (alpha * kl + (1 - alpha) * ce).sum().backward()
            torch.testing.assert_close(c.grad, a.grad, atol=1e-7, rtol=1e-5)
