"""The modern logit methods as objectives: cached/online teachers, ensembles, schedules, the learned
temperature, logit standardisation, packed training, and fidelity in the summary rows.

    .venv/bin/python -m pytest tests/test_logit_objectives.py -q
"""

import json
import math

import pytest
import torch

from distill import engine

from distill.methods import losses
from distill.config import DatasetConfig, ModelConfig, build_config, load_config
from distill.methods import DistillConfig
from distill.data import load_data
from distill.errors import UserError
from distill.teachers.fidelity import agreement, fidelity, teacher_kl, teacher_log_probs
from distill.models import create_model
from distill.methods.objectives import Batch, make_objective, mix
from distill.training.runner import train

from conftest import tiny_overrides

DATASET = {"name": "fake", "fake_shape": [1, 16], "num_samples": 120, "fake_classes": 4, "augment": "none"}
NEW = ("dkd", "dist", "wttm", "ctkd", "reverse_kl", "jsd", "skew_kl", "tvd")


@pytest.fixture(scope="module")
def data():
    return load_data(DatasetConfig(**DATASET))


def model(name="mlp", seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(ModelConfig(name=name, **kw), (1, 16), 4)


def first_batch(data):
    xs, ys, idx = next(iter(data.train_batches(32, [torch.Generator().manual_seed(0)])))
    return Batch(xs[0], ys[0], idx[0])


def loss_of(objective, student, batch, progress=0.3):
    terms = objective.terms(batch, student(batch.x), [], progress)
    return mix(terms, objective.weights(progress))


@pytest.mark.parametrize("method", NEW)
@pytest.mark.parametrize("combine, teachers", [("mean_probs", 1), ("mean_probs", 2), ("mean_logits", 2),
                                               ("per_teacher_kl", 2)])
def test_cached_and_online_teachers_give_the_same_loss(data, method, combine, teachers):
    cfg = DistillConfig(method=method, temperature=3.0, combine=combine)
    models = [model("cnn1d", seed=k + 1, width=4, depth=1) for k in range(teachers)]
    cached, _ = make_objective(cfg, models, data, "cpu", cache="cached", epochs=4)
    online, _ = make_objective(cfg, models, data, "cpu", cache="online", epochs=4)
    batch, student = first_batch(data), model(seed=9, width=8, depth=1)
    torch.testing.assert_close(loss_of(cached, student, batch), loss_of(online, student, batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["dkd", "dist", "jsd"])
def test_ensemble_combinations_read_the_combined_teacher(data, method):
    cfg = DistillConfig(method=method, temperature=2.0)
    teachers = [model("cnn1d", seed=k + 1, width=4, depth=1) for k in range(2)]
    batch, student = first_batch(data), model(seed=9, width=8, depth=1)
    s = student(batch.x).float()
    with torch.no_grad():
        z = torch.stack([t.eval()(batch.x) for t in teachers])
    for combine in ("mean_probs", "mean_logits", "per_teacher_kl"):
        objective, _ = make_objective(DistillConfig(**{**cfg.__dict__, "combine": combine}), teachers, data, "cpu",
                                      epochs=4)
        terms = objective.terms(batch, s, [], 0.5)
        if combine == "mean_logits":
            expected = losses.METHODS[method](s, z.mean(0), batch.y, temperature=2.0)
        elif combine == "mean_probs":  # logits whose softmax at T is the mean of the teachers' at T
            expected = losses.METHODS[method](s, 2.0 * torch.softmax(z / 2.0, -1).mean(0).log(), batch.y,
                                              temperature=2.0)
        else:
            parts = [losses.METHODS[method](s, zk, batch.y, temperature=2.0) for zk in z]
            expected = {k: sum(p[k] for p in parts) if k != "task" else parts[0][k] for k in parts[0]}
        for name in expected:
            torch.testing.assert_close(terms[name], expected[name], rtol=1e-5, atol=1e-6)


def test_dkd_warmup_and_weights(data):
    cfg = DistillConfig(method="dkd", dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup_epochs=20)
    objective, info = make_objective(cfg, [model("cnn1d", width=4, depth=1)], data, "cpu", epochs=240)
    assert objective.weights(0.0) == {"task": 1.0, "tckd": 1 / 20, "nckd": 8 / 20}  # epoch 1 of 240
    assert objective.weights(19 / 240)["nckd"] == pytest.approx(8.0)  # epoch 20: full weight
    assert objective.weights(0.9)["tckd"] == 1.0
    assert info["dkd_beta"] == 8.0 and info["dkd_warmup_epochs"] == 20
    with pytest.raises(ValueError, match="epochs"):
        make_objective(cfg, [model("cnn1d", width=4, depth=1)], data, "cpu")
    dist, _ = make_objective(DistillConfig(method="dist", dist_beta=2.0, dist_gamma=3.0), [model()], data, "cpu")
    assert dist.weights(0.5) == {"task": 1.0, "inter": 2.0, "intra": 3.0}


def test_standardize_is_applied_to_student_and_teacher(data):
    teacher = model("cnn1d", seed=1, width=4, depth=1)
    objective, info = make_objective(DistillConfig(method="kd", temperature=2.0, standardize=True), [teacher],
                                     data, "cpu")
    assert info["standardize"] is True
    batch, student = first_batch(data), model(seed=9, width=8, depth=1)
    s = student(batch.x)
    terms = objective.terms(batch, s, [], 0.0)
    with torch.no_grad():
        t = teacher.eval()(batch.x)
    expected = losses.kd(losses.standardize(s), losses.standardize(t), batch.y, temperature=2.0)
    torch.testing.assert_close(terms["teacher"], expected["teacher"])
    torch.testing.assert_close(terms["task"], losses.cross_entropy(s, batch.y))  # CE on the raw logits
    with pytest.raises(UserError, match="distill.standardize"):
        make_objective(DistillConfig(method="tfkd_reg", standardize=True), [], data, "cpu")


def test_ctkd_temperature_is_learned_checkpointed_and_recorded(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"distill.method": "ctkd", "distill.ctkd_loops": 1,
                                              "teacher.model.name": "mlp", "teacher.model.width": 16,
                                              "train.lr": 0.05}))
    run_dir = train(cfg, tmp_path, progress=False)
    rows = [r for r in open(run_dir / "records.csv").read().splitlines()[1:] if r.startswith("student")]
    values = [float(r.split(",")[-1]) for r in rows]
    start = 1 + 20 / (1 + math.exp(-1.0))
    assert len(set(values)) > 1 and all(abs(v - start) > 1e-6 for v in values)  # T moved every epoch
    last = torch.load(run_dir / "checkpoints" / "student-s0" / "last.pt", weights_only=False)
    theta = last["objectives"][0]["theta"]
    assert values[-1] == pytest.approx(float(1 + 20 * torch.sigmoid(theta)), rel=1e-6)


def test_packed_dkd_students_equal_one_after_another():
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2}))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    seeds = [0, 1]

    def models(ss):
        return [engine.new_model(cfg.model, data, s) for s in ss]

    teachers = models([10, 11])
    d = DistillConfig(method="dkd", dkd_warmup_epochs=2, temperature=2.0)

    def objectives():
        return [make_objective(d, [t], data, "cpu", seed=s, epochs=2)[0] for t, s in zip(teachers, seeds)]

    alone = [engine.fit_one(m, data, cfg.train, seed=s, objective=o)
             for m, s, o in zip(models(seeds), seeds, objectives())]
    together = engine.fit(models(seeds), data, cfg.train, seeds=seeds, objectives=objectives())
    for a, b in zip(alone, together):
        for x, y in zip(a.history, b.history):
            assert abs(x["loss"] - y["loss"]) < 1e-4 and abs(x["acc"] - y["acc"]) <= 1 / 100 + 1e-9


def test_fidelity_metrics_match_reference():
    s = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]])
    z = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]],
                      [[3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    log_p = teacher_log_probs(z, "mean_probs")
    p = (torch.softmax(z, -1)).mean(0)
    torch.testing.assert_close(log_p.exp(), p)
    assert agreement(s, log_p) == pytest.approx(2 / 3)  # row 1: student says 1, the ensemble 0
    q = torch.softmax(s, -1)
    reference = sum(sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr)) for pr, qr in zip(p.tolist(), q.tolist()))
    assert teacher_kl(s, log_p) == pytest.approx(reference / 3, rel=1e-5)
    torch.testing.assert_close(teacher_log_probs(z, "mean_logits"), torch.log_softmax(z.mean(0), -1))


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_student_rows_carry_fidelity_equal_to_the_saved_weights(tmp_path, method):
    warmup = {"distill.dkd_warmup_epochs": 1} if method == "dkd" else {}  # kd does not read it
    cfg = load_config(None, tiny_overrides(**{"distill.method": method, "teacher.model.name": "mlp",
                                              "teacher.model.width": 16, **warmup}))
    run_dir = train(cfg, tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    student = next(r for r in summary["models"] if r["role"] == "student")
    data = load_data(cfg.dataset)
    weights = {}
    for key in ("student-s0", "teacher-s0"):
        arch = cfg.model if key.startswith("student") else cfg.teacher.model
        m = create_model(arch, data.input_shape, data.num_classes)
        m.load_state_dict(torch.load(run_dir / "checkpoints" / key / "best.pt", weights_only=False)["model"])
        weights[key] = m

    class Saved:  # the teacher as the objective gives it (Objective.teachers)
        def teachers(self):
            return [weights["teacher-s0"]], "mean_probs"

    again = fidelity(weights["student-s0"], Saved(), data)
    for key in ("val_agreement", "test_agreement", "test_teacher_kl"):
        assert student[key] == pytest.approx(again[key], rel=1e-5, abs=1e-7)
    assert 0 <= student["test_agreement"] <= 1 and student["test_teacher_kl"] >= 0


def test_a_model_from_labels_gets_fidelity_against_the_runs_teacher(tmp_path):
    """distill.method=labels next to a teacher section: the same weights as training from labels
    alone (no teacher in the loss), and the fidelity figures of a student."""
    teacher = {"teacher.model.name": "mlp", "teacher.model.width": 16}
    with_teacher = train(load_config(None, tiny_overrides(**{"distill.method": "labels", **teacher})),
                         tmp_path / "a", progress=False)
    alone = train(load_config(None, tiny_overrides()), tmp_path / "b", progress=False)
    summary = json.loads((with_teacher / "summary.json").read_text())
    model = next(r for r in summary["models"] if r["role"] != "teacher")
    assert summary["loss"]["method"] == "labels" and summary["loss"]["teacher"] == "teacher-s0"
    assert 0 <= model["test_agreement"] <= 1 and model["test_teacher_kl"] > 0
    plain = next(r for r in json.loads((alone / "summary.json").read_text())["models"])
    assert plain["role"] == "model" and "test_agreement" not in plain  # no teacher in the run: no figures
    assert model["test_acc"] == plain["test_acc"] and model["val_nll"] == pytest.approx(plain["val_nll"], rel=1e-6)
    a, b = (torch.load(d / "checkpoints" / k / "best.pt", weights_only=False)["model"]
            for d, k in ((with_teacher, "student-s0"), (alone, "model-s0")))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
