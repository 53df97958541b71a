"""distill.lm_chunk: the token-level loss a chunk of positions at a time, fused with the student's linear
head. Values and gradients against the plain objective, no (positions, vocabulary) tensor in the loss's
graph, the unfused (checkpointed) path, the refusals, and a run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distill.config import load_config
from distill.data import load_data
from distill.errors import UserError
from distill.methods.objectives import Batch, Distill, make_objective, mix
from distill.models import create_model
from distill.training.lm_objectives import TokenLevel, chunked_terms
from tests.conftest import TINY_LM as TINY

METHODS = [("kd", ["distill.alpha=0.7"]), ("jsd", ["distill.alpha=0.4", "distill.jsd_beta=0.3"]),
           ("reverse_kl", ["distill.top_k_rest=spread"]), ("tvd", []), ("skew_kl", ["distill.alpha=1.0"]),
           ("dkd", ["distill.dkd_warmup_epochs=0"]), ("gkd", ["distill.gkd_lambda=0"]),
           ("kd", ["distill.standardize=true", "distill.top_k=5"])]


@pytest.fixture(scope="module")
def data():
    return load_data(load_config(None, TINY).dataset)


def _pair(data, method, extra, chunk=7):
    """The plain objective and the chunked one, both bound to the same student."""
    base = TINY + [f"distill.method={method}", "distill.temperature=2.0", "distill.top_k=40"] + extra
    torch.manual_seed(0)
    teacher = create_model(load_config(None, base).model, data.input_shape, data.num_classes)
    student = create_model(load_config(None, base).model, data.input_shape, data.num_classes)
    found = []
    for lm_chunk in (0, chunk):
        cfg = load_config(None, base + [f"distill.lm_chunk={lm_chunk}"])
        objective, _ = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), epochs=2)
        objective.bind(student)
        found.append(objective)
    return found, student


def _step(objective, student, data, idx, progress=0.3):
    """One training step's loss and the gradient of every student parameter."""
    student.train().zero_grad()
    x, y = data.x["train"][idx], data.y["train"][idx].flatten()
    terms = objective.terms(Batch(x, y, idx), student(x).flatten(0, 1), [[]], progress)
    loss = mix(terms, objective.weights(progress))
    loss.backward()
    return terms, loss, {name: p.grad.clone() for name, p in student.named_parameters()}


@pytest.mark.parametrize("method, extra", METHODS)
def test_chunks_give_the_plain_values_and_gradients(data, method, extra):
    (plain, chunked), student = _pair(data, method, extra)
    assert isinstance(chunked, TokenLevel) and chunked.chunk == 7
    idx = torch.tensor([5, 0, 9])  # 48 positions: six chunks of 7 and one of 6
    terms_a, loss_a, grads_a = _step(plain, student, data, idx)
    terms_b, loss_b, grads_b = _step(chunked, student, data, idx)
    assert terms_a.keys() == terms_b.keys()
    for name in terms_a:
        assert torch.allclose(terms_a[name], terms_b[name], rtol=1e-5, atol=1e-7), name
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], rtol=1e-4, atol=1e-7), name
    assert grads_b["head.weight"].abs().sum() > 0 and grads_b["embed.weight"].abs().sum() > 0


def test_an_on_policy_step_in_chunks_equals_the_plain_one(data):
    (plain, chunked), student = _pair(data, "gkd", ["distill.gkd_lambda=1", "distill.gkd_length=5"], chunk=4)
    idx = torch.arange(3)
    terms_a, loss_a, grads_a = _step(plain, student, data, idx)
    terms_b, loss_b, grads_b = _step(chunked, student, data, idx)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], rtol=1e-4, atol=1e-7), name


def _largest_saved(objective, student, data, idx):
    """The most elements of any tensor the loss's graph saves for the backward (the student's forward
    runs outside: it is the loop's)."""
    x, y = data.x["train"][idx], data.y["train"][idx].flatten()
    logits = student.train()(x).flatten(0, 1)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mix(objective.terms(Batch(x, y, idx), logits, [[]], 0.0), objective.weights(0.0))
    return max(sizes), logits.numel()


def test_the_fused_loss_keeps_no_positions_by_vocabulary_tensor(data):
    (plain, chunked), student = _pair(data, "kd", ["distill.alpha=0.5"], chunk=8)
    idx = torch.arange(4)  # 64 positions x 256 tokens
    largest, full = _largest_saved(plain, student, data, idx)
    assert largest >= full                        # the plain formula keeps (N, V) tensors for its backward
    largest, full = _largest_saved(chunked, student, data, idx)
    assert largest <= max(8 * 256, 256 * 16) < full  # the fused one: a chunk's logits, the head's gradient (V, W)


def test_a_head_that_is_no_linear_gets_checkpointed_chunks(data):
    """chunked_terms without a head: the same values and gradients over the rows of the logits."""
    torch.manual_seed(0)
    logits = torch.randn(23, 11, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(23, 11, dtype=torch.float64)
    y = torch.randint(0, 11, (23,))

    def fn(z, rows):
        p = teacher[rows].log_softmax(-1)
        return {"teacher": (p.exp() * (p - z.log_softmax(-1))).sum(-1).mean(),
                "task": nn.functional.cross_entropy(z, y[rows])}

    whole = fn(logits, slice(None))
    (g_whole,) = torch.autograd.grad(whole["teacher"] * 0.3 + whole["task"], logits)
    parts = chunked_terms(fn, logits, 5)
    (g_parts,) = torch.autograd.grad(parts["teacher"] * 0.3 + parts["task"], logits)
    assert all(torch.allclose(whole[k], parts[k], atol=1e-12) for k in whole)
    assert torch.allclose(g_whole, g_parts, atol=1e-12)


def test_lm_chunk_refuses_what_it_cannot_chunk(data):
    torch.manual_seed(0)
    teacher = create_model(load_config(None, TINY).model, data.input_shape, data.num_classes)
    for method in ("dist", "cwtm", "dkpp"):
        cfg = load_config(None, TINY + [f"distill.method={method}", "distill.lm_chunk=8"])
        with pytest.raises(UserError, match="lm_chunk"):
            make_objective(cfg.distill, [teacher], data, torch.device("cpu"), epochs=2)
    cfg = load_config(None, TINY + ["distill.lm_chunk=8"])
    objective, info = make_objective(cfg.distill, [teacher], data, torch.device("cpu"))
    assert info["lm_chunk"] == 8
    plain, info = make_objective(load_config(None, TINY).distill, [teacher], data, torch.device("cpu"))
    assert type(plain) is Distill and "lm_chunk" not in info


def test_a_run_in_chunks_matches_the_plain_run(tmp_path):
    from distill.training.runner import train

    extra = ["teacher.model={name: gpt, width: 16, depth: 1, kwargs: {heads: 2}}", "teacher.train={epochs: 1}",
             "distill.top_k=8", "train.epochs=1"]
    rows = []
    for chunk in (0, 100):
        run = train(load_config(None, TINY + extra + [f"distill.lm_chunk={chunk}"]), tmp_path / str(chunk),
                    progress=False)
        summary = json.loads((run / "summary.json").read_text())
        rows.append(summary["models"][-1])
    assert summary["loss"]["lm_chunk_fused"] == "fused with the student's nn.Linear head"  # the run says so
    assert rows[0]["role"] == rows[1]["role"] == "student"
    assert rows[0]["val_nll"] == pytest.approx(rows[1]["val_nll"], abs=1e-4)
    assert rows[0]["test_acc"] == pytest.approx(rows[1]["test_acc"], abs=2e-3)


def test_lm_chunk_without_a_teacher_is_refused_not_ignored(data):
    """From labels (no teacher, no teacher section) nothing reads distill.lm_chunk: one line naming it;
    tfkd_self (its teacher is a copy of the model) and a teacher section still reach the objective that
    reads it. (Born-again generation 0 never comes here: bornagain.chain builds its objectives itself.)"""
    from distill.errors import ConfigError
    from distill.teachers.sources import teacher_objective

    with pytest.raises(ConfigError, match="distill.lm_chunk=0"):
        teacher_objective(load_config(None, TINY + ["distill.lm_chunk=8"]), data, 0, torch.device("cpu"))
    with pytest.raises(UserError, match="not means over positions"):  # tfkd_self's own refusal, not "no teacher"
        teacher_objective(load_config(None, TINY + ["distill.lm_chunk=8", "distill.method=tfkd_self"]), data, 0,
                          torch.device("cpu"))
    section_cfg = TINY + ["distill.lm_chunk=8", "teacher.model={name: gpt, width: 16, depth: 1, kwargs: {heads: 2}}"]
    objective, info, section = teacher_objective(load_config(None, section_cfg), data, 0, torch.device("cpu"))
    assert section is not None and info["lm_chunk"] == 8
    objective, info, section = teacher_objective(load_config(None, TINY), data, 0, torch.device("cpu"))
    assert objective is None and section is None
