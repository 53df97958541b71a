"""distill.lm_chunk with Hugging Face students (model.name=hf_causal_lm): the loss is fused with the
model's lm_head, also when the head has more outputs than the data's vocabulary (the wrapper cuts its
logits to the first `vocab`) and when the head's weight is the input embeddings' (GPT-2's tie). Values and
gradients against the plain objective; the loop's logits get no gradient (the fused path); a model that
changes its logits after the head (Granite's logit scaling) is not fused, and the loss info says so.

The models are tiny configs in folders (no download, no weights) over the byte-level pydoc blocks of
tests/conftest.py (256 tokens), as tests/test_lm_checkpoints.py's `hf` fixture makes its folders."""

from __future__ import annotations

import os

import pytest
import torch

from distill.config import ModelConfig, load_config
from distill.data import load_data
from distill.methods.objectives import Batch, make_objective, mix
from distill.models import create_model
from distill.training.lm_objectives import TokenLevel, linear_head
from tests.conftest import TINY_LM as TINY

transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
STUDENTS = {  # name -> config; the data has 256 tokens
    "gpt2-tied": lambda: transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=256,
                                                 **NO_DROPOUT),
    "gpt2-tied-wider": lambda: transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32,
                                                       vocab_size=300, **NO_DROPOUT),
    "llama-untied-wider": lambda: transformers.LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                                           num_attention_heads=2, num_key_value_heads=1,
                                                           max_position_embeddings=32, vocab_size=300),
    "granite-scaled": lambda: transformers.GraniteConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                                         num_attention_heads=2, num_key_value_heads=1,
                                                         max_position_embeddings=32, vocab_size=256,
                                                         logits_scaling=4.0),
}


@pytest.fixture(scope="module")
def data():
    return load_data(load_config(None, TINY).dataset)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-students")
    for name, config in STUDENTS.items():
        config().save_pretrained(root / name)
    return root


def _objectives(data, folder, method, extra, chunk=7):
    """The plain objective and the chunked one (with its loss info), both bound to the HF student in
    `folder` (None: the gpt model of TINY)."""
    base = TINY + [f"distill.method={method}", "distill.temperature=2.0", "distill.top_k=40"] + extra
    torch.manual_seed(0)
    teacher = create_model(load_config(None, base).model, data.input_shape, data.num_classes)
    model = load_config(None, base).model if folder is None else \
        ModelConfig(name="hf_causal_lm", kwargs={"path": str(folder)})  # None: the gpt model
    student = create_model(model, data.input_shape, data.num_classes)
    found = []
    for lm_chunk in (0, chunk):
        cfg = load_config(None, base + [f"distill.lm_chunk={lm_chunk}"])
        objective, info = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), epochs=2)
        objective.bind(student)
        found.append((objective, info))
    return found, student


def _step(objective, student, data, idx, progress=0.3):
    """One training step: its terms, loss, every student parameter's gradient, and whether the loop's
    logits got a gradient (the unfused path differentiates through them)."""
    student.train().zero_grad()
    x, y = data.x["train"][idx], data.y["train"][idx].flatten()
    logits = student(x).flatten(0, 1)
    reached = []
    logits.register_hook(lambda g: reached.append(True))
    terms = objective.terms(Batch(x, y, idx), logits, [[]], progress)
    loss = mix(terms, objective.weights(progress))
    loss.backward()
    return terms, loss, {name: p.grad.clone() for name, p in student.named_parameters()}, bool(reached)


def _same(a, b):
    terms_a, loss_a, grads_a, _ = a
    terms_b, loss_b, grads_b, _ = b
    assert terms_a.keys() == terms_b.keys()
    for name in terms_a:
        assert torch.allclose(terms_a[name], terms_b[name], rtol=1e-5, atol=1e-7), name
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("student_name", ["gpt2-tied", "gpt2-tied-wider", "llama-untied-wider"])
@pytest.mark.parametrize("method, extra", [("kd", ["distill.alpha=0.7"]),
                                           ("jsd", ["distill.alpha=0.4", "distill.jsd_beta=0.3"])])
def test_hf_students_are_fused_with_the_plain_values_and_gradients(data, folders, student_name, method, extra):
    ((plain, _), (chunked, info)), student = _objectives(data, folders / student_name, method, extra)
    assert isinstance(chunked, TokenLevel)
    head = linear_head(student)
    assert head is student.lm.get_output_embeddings() and head.out_features == (256 if student_name == "gpt2-tied"
                                                                                else 300)
    idx = torch.tensor([5, 0, 9])  # 48 positions: six chunks of 7 and one of 6
    fused = _step(chunked, student, data, idx)
    _same(_step(plain, student, data, idx), fused)
    assert not fused[3]                                 # no gradient through the loop's (N, V) logits
    assert info["lm_chunk_fused"].startswith("fused with the student's nn.Linear head")
    assert ("first 256 of 300 outputs" in info["lm_chunk_fused"]) == (head.out_features == 300)
    grads = fused[2]
    if student_name.startswith("gpt2"):  # tied: the head's weight is the token embeddings (one parameter)
        assert head.weight is student.lm.transformer.wte.weight
        embedding = grads["lm.transformer.wte.weight"]
    else:
        assert head.weight is not student.lm.model.embed_tokens.weight
        embedding = grads["lm.lm_head.weight"]
        assert grads["lm.model.embed_tokens.weight"].abs().sum() > 0
    seen = data.x["train"][idx].unique()
    unseen = torch.ones(256, dtype=torch.bool)
    unseen[seen] = False
    assert embedding[:256][unseen].abs().sum(-1).gt(0).all()  # the head's gradient reaches tokens not in the input
    assert embedding[256:].abs().sum() == 0                   # the rows beyond the data's vocabulary get none


def test_an_on_policy_hf_step_in_chunks_is_fused_and_plain(data, folders):
    ((plain, _), (chunked, info)), student = _objectives(
        data, folders / "llama-untied-wider", "gkd", ["distill.gkd_lambda=1", "distill.gkd_length=5"], chunk=4)
    idx = torch.arange(3)
    fused = _step(chunked, student, data, idx)
    _same(_step(plain, student, data, idx), fused)
    assert info["lm_chunk_fused"].startswith("fused")


def test_a_model_that_scales_its_logits_after_the_head_is_not_fused_and_says_so(data, folders):
    ((plain, _), (chunked, info)), student = _objectives(data, folders / "granite-scaled", "kd", ["distill.alpha=0.7"])
    assert linear_head(student) is not None  # a linear head, but the logits are its outputs / 4
    idx = torch.tensor([5, 0, 9])
    unfused = _step(chunked, student, data, idx)
    _same(_step(plain, student, data, idx), unfused)
    assert unfused[3]  # the checkpointed chunks, over the loop's logits
    assert info["lm_chunk_fused"].startswith("not fused: the student's logits are not its nn.Linear head's outputs")
    assert _step(chunked, student, data, idx)[3]  # and it stays so



def test_a_student_without_a_linear_head_is_not_fused_and_says_so(data, folders):
    """The gpt model with its head wrapped in an nn.Sequential: no nn.Linear output layer to fuse with."""
    ((plain, _), (chunked, info)), student = _objectives(data, None, "kd", ["distill.alpha=0.7"])
    student.head = torch.nn.Sequential(student.head)
    chunked.bind(student)
    assert info["lm_chunk_fused"].startswith("not fused: the student (GPT) has no nn.Linear output layer")
    idx = torch.tensor([5, 0, 9])
    unfused = _step(chunked, student, data, idx)
    _same(_step(plain, student, data, idx), unfused)
