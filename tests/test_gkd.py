"""On-policy distillation (gkd, Agarwal et al. 2024 / TRL's GKDTrainer): the generalised JSD against TRL's
formula, an on-policy step against a plain per-token reference, lambda = 0 against supervised token-level
KD, the seeded on-policy draw, the checks, and a gkd run stopped and resumed."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.data import load_data
from distill.errors import UserError
from distill.export.cost import TIMING_KEYS
from distill.methods import losses
from distill.methods.objectives import Batch, make_objective, mix
from distill.methods.parts import generalized_jsd
from distill.models import create_model
from distill.training.lm import generate
from distill.training.lm_objectives import TokenLevel
from tests.conftest import TINY_LM as TINY


@pytest.fixture(scope="module")
def data():
    return load_data(load_config(None, TINY).dataset)


def trl_generalized_jsd(student_logits, teacher_logits, beta):
    """TRL's GKDTrainer.generalized_jsd_loss (trl/experimental/gkd/gkd_trainer.py), no labels, batchmean."""
    s, t = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    if beta == 0:
        jsd = F.kl_div(s, t, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(t, s, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=s.dtype)
        mixture = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        jsd = b * F.kl_div(mixture, t, reduction="none", log_target=True) + \
            (1 - b) * F.kl_div(mixture, s, reduction="none", log_target=True)
    return jsd.sum() / jsd.shape[0]


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_the_generalised_jsd_is_trls(beta):
    torch.manual_seed(0)
    s, t = torch.randn(12, 30, dtype=torch.float64), 2 * torch.randn(12, 30, dtype=torch.float64)
    got = losses.METHODS["gkd"](s, t, torch.zeros(12, dtype=torch.long), temperature=1.0, beta=beta)["teacher"]
    assert torch.allclose(got, trl_generalized_jsd(s, t, beta), atol=1e-12)
    if 0 < beta < 1:  # the jsd method reads the same formula
        same = losses.METHODS["jsd"](s, t, torch.zeros(12, dtype=torch.long), temperature=1.0, beta=beta)
        assert torch.allclose(same["teacher"], got)
    log_p, log_q = t.log_softmax(-1), s.log_softmax(-1)
    assert torch.allclose(generalized_jsd(log_p, log_q, beta), got)


def _objective(data, extra, seed=0):
    cfg = load_config(None, TINY + ["distill.method=gkd", "distill.temperature=2.0"] + extra)
    torch.manual_seed(0)
    teacher = create_model(cfg.model, data.input_shape, data.num_classes)
    torch.manual_seed(1)
    student = create_model(cfg.model, data.input_shape, data.num_classes)
    objective, info = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), seed=seed)
    objective.bind(student)
    return objective, info, teacher, student


def test_an_on_policy_step_equals_a_per_token_reference(data):
    """lambda = 1: the student samples 6 tokens after 11-token prompts; the loss is the JSD at T = 2 of the
    teacher and the student at each position that predicts a generated token, averaged, the prompt masked."""
    objective, info, teacher, student = _objective(data, ["distill.gkd_lambda=1", "distill.jsd_beta=0.3",
                                                          "distill.gkd_length=6", "distill.gkd_temperature=1.5"])
    assert isinstance(objective, TokenLevel) and info["method"] == "gkd" and "online" in info["cache"]
    idx = torch.arange(5)
    x, y = data.x["train"][idx], data.y["train"][idx]
    progress = 0.25
    terms = objective.terms(Batch(x, y.flatten(), idx), student(x).flatten(0, 1), [[]], progress)
    loss = mix(terms, objective.weights(progress))
    assert objective.weights(progress) == {"teacher": 1.0, "task": 0.0}
    # the reference: the same draw (seed and step), then position by position
    seqs = generate(student, x[:, :11], 6, "sample", 1.5, seed=objective.step_seed(progress) + 1, context=16)
    student.train()
    assert torch.equal(seqs[:, :11], x[:, :11]) and not torch.equal(seqs[:, 11:], data.y["train"][idx, 10:])
    s = student(seqs[:, :-1])
    with torch.no_grad():
        t = teacher.eval()(seqs[:, :-1])
    rows = []
    for b in range(5):
        for i in range(10, 16):  # position i predicts token i + 1: the generated ones are 11..16
            p, q = F.softmax(t[b, i] / 2, -1), F.softmax(s[b, i] / 2, -1)
            m = 0.3 * p + 0.7 * q
            rows.append(4 * (0.3 * (p * (p / m).log()).sum() + 0.7 * (q * (q / m).log()).sum()))
    assert torch.allclose(loss, torch.stack(rows).mean(), atol=1e-6)
    # the prompt's positions are not in the loss: the same rows over all 16 positions differ
    assert not torch.allclose(loss, objective.logit_terms(s.flatten(0, 1), t.flatten(0, 1)[None],
                                                          seqs[:, 1:].flatten(), 2.0, {"beta": 0.3})["teacher"])
    loss.backward()
    assert student.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("beta, same", [(0.0, "kd"), (0.4, "jsd"), (1.0, "reverse_kl")])
def test_lambda_zero_is_supervised_token_level_kd(data, beta, same):
    """gkd_lambda = 0: every batch is the data, and the loss is the token-level KD of the same divergence."""
    objective, _, teacher, student = _objective(data, ["distill.gkd_lambda=0", f"distill.jsd_beta={beta}"])
    beta_key = ["distill.jsd_beta=0.4"] if same == "jsd" else []
    cfg = load_config(None, TINY + [f"distill.method={same}", "distill.temperature=2.0", "distill.alpha=1.0",
                                    *beta_key])
    plain, _ = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), cache="online")
    idx = torch.tensor([3, 1, 4])
    x, y = data.x["train"][idx], data.y["train"][idx].flatten()
    logits = student(x).flatten(0, 1)
    for progress in (0.0, 0.5):
        a = mix(objective.terms(Batch(x, y, idx), logits, [[]], progress), objective.weights(progress))
        b = mix(plain.terms(Batch(x, y, idx), logits, [[]], progress), plain.weights(progress))
        assert a.item() == pytest.approx(b.item(), rel=1e-6, abs=1e-7)


def test_every_gkd_option_reaches_the_loss(data):
    idx = torch.arange(3)
    x, y = data.x["train"][idx], data.y["train"][idx].flatten()

    def loss(**options):
        options = {"gkd_lambda": 1, "gkd_length": 6, "gkd_temperature": 1.0, "jsd_beta": 0.5, **options}
        objective, _, _, student = _objective(data, [f"distill.{k}={v}" for k, v in options.items()])
        return mix(objective.terms(Batch(x, y, idx), student(x).flatten(0, 1), [[]], 0.1), objective.weights(0.1))

    base = loss()
    for option in ({"gkd_lambda": 0}, {"gkd_length": 3}, {"gkd_temperature": 3.0}, {"jsd_beta": 0.1}):
        assert not torch.allclose(loss(**option), base), option


def test_the_on_policy_draw_is_seeded_by_seed_and_step(data):
    objective, _, _, _ = _objective(data, ["distill.gkd_lambda=0.5", "distill.gkd_length=4"])
    batch = Batch(data.x["train"][:2], data.y["train"][:2].flatten(), torch.arange(2))
    draws = [objective._on_policy(batch, step / 100) for step in range(100)]
    share = sum(d is not None for d in draws) / 100
    assert 0.35 < share < 0.65
    again = [objective._on_policy(batch, step / 100) for step in range(100)]
    assert all((a is None) == (b is None) and (a is None or torch.equal(a[0], b[0])) for a, b in zip(draws, again))
    other, _, _, _ = _objective(data, ["distill.gkd_lambda=0.5", "distill.gkd_length=4"], seed=1)
    assert [other._on_policy(batch, step / 100) is None for step in range(100)] != [d is None for d in draws]


def test_gkd_refuses_what_it_cannot_do(data, tmp_path):
    with pytest.raises(UserError, match="gkd_length"):
        _objective(data, ["distill.gkd_length=17", "distill.gkd_lambda=0.1"])
    cfg = load_config(None, TINY + ["distill.method=gkd", "distill.gkd_length=4"])
    with pytest.raises(UserError, match="predictions file"):
        make_objective(cfg.distill, [], data, torch.device("cpu"), file_logits=torch.zeros(data.size("train"), 16, 256))
    with pytest.raises(Exception, match="gkd_lambda"):
        load_config(None, TINY + ["distill.method=gkd", "distill.gkd_lambda=1.5"])
    with pytest.raises(Exception, match="does not read"):
        load_config(None, TINY + ["distill.method=kd", "distill.gkd_lambda=0.3"])


def test_a_stopped_gkd_run_resumes_to_the_same_numbers(tmp_path):
    """Stop after the student's epoch 1, start again: the same numbers as one uninterrupted run."""
    from distill.training.runner import train

    extra = ["teacher.model={name: gpt, width: 16, depth: 1, kwargs: {heads: 2}}", "teacher.train={epochs: 1}",
             "train.epochs=2", "distill.method=gkd", "distill.gkd_lambda=0.5", "distill.gkd_length=6",
             "distill.temperature=1.0"]
    cfg = load_config(None, TINY + extra)
    whole = train(cfg, tmp_path / "a", progress=False)

    def stop(report):
        if report.get("role") == "student" and report["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", on_epoch=stop, progress=False)
    resumed = train(cfg, tmp_path / "b", progress=False)
    key = lambda m: {k: v for k, v in m.items() if k not in ("train_seconds", *TIMING_KEYS)}  # noqa: E731
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((resumed / "summary.json").read_text())
    assert [key(m) for m in a["models"]] == [key(m) for m in b["models"]]
    assert a["loss"]["method"] == "gkd" and a["loss"]["gkd_lambda"] == 0.5


def test_a_model_that_generates_trains_as_itself(data):
    from distill.training.replicas import can_stack

    objective, _, _, student = _objective(data, ["distill.gkd_length=4"])
    ok, why = can_stack([student, student], [objective, objective])
    assert not ok and "runs the student itself" in why
