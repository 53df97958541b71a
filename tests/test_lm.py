"""Language models: text data split by document, tokenizers, the gpt model, token-level KD, the
top-k cache, sequence-level KD, and `distill train` end to end (with a stop and resume)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from distill import engine

from distill.methods import losses
from distill.config import ModelConfig, load_config
from distill.export.cost import TIMING_KEYS
from distill.data import load_data
from distill.training.evaluation import predict
from distill.models.gpt import GPT
from distill.training.lm import TopKCache, dense_logits, generate
from distill.models import create_model
from distill.methods.objectives import Batch, mix, make_objective
from distill.data.text import ByteTokenizer, CharTokenizer, pydoc_documents, split_documents, to_blocks
from tests.conftest import TINY_LM as TINY


@pytest.fixture(scope="module")
def data():
    return load_data(load_config(None, TINY).dataset)


def test_pydoc_is_split_by_document_into_blocks(data):
    docs = pydoc_documents()[:10]
    info = data.text
    assert sorted(sum(info.documents.values(), [])) == list(range(10))  # every document in exactly one split
    assert not set(info.documents["train"]) & (set(info.documents["val"]) | set(info.documents["test"]))
    assert set(info.documents["val"]).isdisjoint(info.documents["test"])
    for split in ("train", "val", "test"):
        text = "\n\n".join(docs[i] for i in info.documents[split]).encode()
        x, y = data.x[split], data.y[split]
        assert x.shape[1] == 16 and x.shape == y.shape and x.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])                     # y is x shifted by one token
        assert torch.equal(x[1:, 0], y[:-1, -1])                    # blocks follow each other
        assert bytes(x[0].tolist()) == text[:16]                    # the split's own documents, in order
    assert data.num_classes == 256 and data.input_shape == (16,)


def test_split_documents_is_seeded_and_refuses_too_few():
    a, b = split_documents(20, 0.1, 0.2, seed=3), split_documents(20, 0.1, 0.2, seed=3)
    assert a == b and len(a["test"]) == 4 and len(a["val"]) == 2 and len(a["train"]) == 14
    assert split_documents(20, 0.1, 0.2, seed=4) != a
    with pytest.raises(Exception, match="cannot be split"):
        split_documents(2, 0.1, 0.1, seed=0)


def test_blocks_of_a_token_list():
    x, y = to_blocks(list(range(10)), 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_tokenizers_round_trip():
    text = pydoc_documents()[0] + " naïve — ünïcode"
    assert ByteTokenizer().decode(ByteTokenizer().encode(text)) == text
    char = CharTokenizer([text])
    assert char.decode(char.encode(text)) == text and char.vocab == len(set(text) | {"\n"})


def test_text_files_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first document " * 20)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i} " * 30}) for i in range(4)))
    cfg = load_config(None, ["dataset.name=text", f"dataset.text.files=[{tmp_path}]", "dataset.text.json_field=body",
                             "dataset.text.block=8", "dataset.text.tokenizer=char"])
    data = load_data(cfg.dataset)
    assert sum(len(v) for v in data.text.documents.values()) == 5
    docs = ["first document " * 20] + [f"doc {i} " * 30 for i in range(4)]
    joined = "\n\n".join(docs[i] for i in data.text.documents["train"])
    tokens = data.x["train"].flatten()
    assert data.text.tokenizer.decode(tokens) == joined[:len(tokens)]
    bad = load_config(None, ["dataset.name=text", f"dataset.text.files=[{tmp_path}/missing]"])
    with pytest.raises(Exception, match="does not exist"):
        load_data(bad.dataset)


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(vocab=50, context=12, width=16, depth=2, heads=2).eval()
    x = torch.randint(0, 50, (3, 12))
    changed = x.clone()
    changed[:, 7:] = torch.randint(0, 50, (3, 5))
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)           # the future does not change the past
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_gpt_in_the_registry_refuses_images():
    model = create_model(ModelConfig(name="gpt", width=16, depth=1, kwargs={"heads": 2}), (16,), 256)
    assert model(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 256)
    with pytest.raises(Exception, match="token blocks"):
        create_model(ModelConfig(name="gpt"), (1, 40), 10)


def test_token_level_kd_equals_a_per_position_reference(data):
    """The objective on (B * L, V) rows equals the plain formula summed position by position."""
    cfg = load_config(None, TINY + ["distill.temperature=2.0", "distill.alpha=0.7", "distill.top_k=256"])
    torch.manual_seed(0)
    teacher = create_model(cfg.model, data.input_shape, data.num_classes)
    student = create_model(cfg.model, data.input_shape, data.num_classes)
    objective, info = make_objective(cfg.distill, [teacher], data, torch.device("cpu"))
    idx = torch.arange(4)
    x, y = data.x["train"][idx], data.y["train"][idx]
    s = student(x)
    got = mix(objective.terms(Batch(x, y.flatten(), idx), s.flatten(0, 1), [[]], 0.0), objective.weights(0.0))
    with torch.no_grad():
        t = teacher.eval()(x)
    T, rows = 2.0, []
    for b in range(4):
        for i in range(16):
            p = F.softmax(t[b, i] / T, -1)
            kl = (p * (p.log() - F.log_softmax(s[b, i] / T, -1))).sum()
            ce = -F.log_softmax(s[b, i], -1)[y[b, i]]
            rows.append(0.7 * T * T * kl + 0.3 * ce)
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-5)
    assert "top 256" in info["cache"]


def test_top_k_cache_is_the_teachers_top_k(data):
    torch.manual_seed(0)
    teacher = GPT(vocab=256, context=16, width=16, depth=1, heads=2).eval()
    cache = TopKCache([teacher], data, k=5)
    assert cache.values.shape == (1, data.size("train"), 16, 5)      # bounded by k, not the vocabulary
    with torch.no_grad():
        full = teacher(data.x["train"]).log_softmax(-1)
    top = full.topk(5, -1)
    assert torch.allclose(cache.values[0], top.values, atol=1e-5) and torch.equal(cache.ids[0].long(), top.indices)
    dense = cache[:, torch.tensor([2, 0])]                            # (K, B * L, V)
    assert dense.shape == (1, 32, 256)
    renormalised = top.values[[2, 0]].flatten(0, 1).softmax(-1)      # the top k, renormalised
    got = dense[0].softmax(-1)
    assert torch.allclose(got.gather(-1, top.indices[[2, 0]].flatten(0, 1)), renormalised, atol=1e-5)
    assert torch.allclose(got.sum(-1), torch.ones(32)) and (got > 0).sum(-1).max() == 5
    spread = dense_logits(top.values[:1], top.indices[:1], 256, "spread").softmax(-1)
    assert torch.allclose(spread.gather(-1, top.indices[:1]), top.values[:1].exp(), atol=1e-5)
    assert torch.allclose(spread.sum(-1), torch.ones(1, 16), atol=1e-5)


def test_kd_losses_accept_a_top_k_teacher():
    torch.manual_seed(0)
    s, t = torch.randn(6, 20), torch.randn(6, 20).log_softmax(-1)
    top = t.topk(4, -1)
    dense = dense_logits(top.values, top.indices, 20, "drop")
    for name in [m for m in ("kd", "ban", "reverse_kl", "jsd", "skew_kl", "tvd") if m in losses.METHODS]:
        value = losses.METHODS[name](s, dense, torch.zeros(6, dtype=torch.long), temperature=1.0)["teacher"]
        assert torch.isfinite(value), name


def test_generation_is_seeded_and_greedy_is_argmax():
    torch.manual_seed(0)
    model = GPT(vocab=30, context=10, width=16, depth=1, heads=2).eval()
    prompts = torch.randint(0, 30, (4, 3))
    a = generate(model, prompts, 7, "sample", temperature=1.5, top_k=5, seed=1, context=10)
    b = generate(model, prompts, 7, "sample", temperature=1.5, top_k=5, seed=1, context=10)
    c = generate(model, prompts, 7, "sample", temperature=1.5, top_k=5, seed=2, context=10)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a[:, :3], prompts)
    greedy = generate(model, prompts, 7, "greedy", context=10)
    with torch.no_grad():
        assert torch.equal(model(greedy[:, :-1]).argmax(-1)[:, 2:], greedy[:, 3:])
    beam = generate(model, prompts, 7, "beam", beams=1, context=10)
    assert torch.equal(beam, greedy)                                   # a beam of one is greedy
    wide = generate(model, prompts, 7, "beam", beams=4, context=10)
    score = lambda s: model(s[:, :-1]).log_softmax(-1)[:, 2:].gather(-1, s[:, 3:, None]).sum((1, 2))  # noqa: E731
    with torch.no_grad():
        assert (score(wide) >= score(greedy) - 1e-4).all()              # beam search finds no worse sequence


def _train(tmp_path, extra):
    from distill.training.runner import train

    cfg = load_config(None, TINY + extra)
    return train(cfg, tmp_path / "runs", progress=False)


def test_distill_train_with_a_gpt_teacher_section(tmp_path):
    run = _train(tmp_path, ["teacher.model={name: gpt, width: 32, depth: 1, kwargs: {heads: 2}}",
                            "distill.top_k=8", "distill.alpha=0.5", "distill.temperature=2.0"])
    summary = json.loads((run / "summary.json").read_text())
    roles = [m["role"] for m in summary["models"]]
    assert roles == ["teacher", "student"] and summary["status"] == "done"
    for row in summary["models"]:
        assert row["test_ppl"] == pytest.approx(math.exp(row["test_nll"])) and row["test_ppl"] < 256
    assert "top 8 next tokens" in summary["loss"]["cache"]


def test_sequence_level_kd_trains_the_student_on_the_teachers_text(tmp_path):
    teacher_run = _train(tmp_path, ["train.epochs=3"])
    extra = [f"dataset.text.seqkd_teacher={teacher_run}", "dataset.text.seqkd_decode=greedy",
             "dataset.text.seqkd_prompt=4"]
    cfg = load_config(None, TINY + extra)
    seq = load_data(cfg.dataset)
    assert list((teacher_run / "checkpoints" / "model-s0" / "generations").glob("*.pt"))  # written once
    again = load_data(cfg.dataset)
    assert torch.equal(seq.x["train"], again.x["train"])             # read back, the same
    real = load_data(load_config(None, TINY).dataset)
    assert torch.equal(seq.x["train"][:, :4], real.x["train"][:, :4])  # the prompts are the training text
    assert torch.equal(seq.x["val"], real.x["val"])                  # validation stays real text
    assert "sequence-level KD" in seq.text.description
    # the student's outputs move toward the teacher's generations
    student = engine.new_model(cfg.model, seq, 0)
    before = F.cross_entropy(student(seq.x["train"]).flatten(0, 1), seq.y["train"].flatten()).item()
    engine.fit_one(student, seq, cfg.train, seed=0)
    after = F.cross_entropy(student(seq.x["train"]).flatten(0, 1), seq.y["train"].flatten()).item()
    assert after < before - 0.5


def test_a_stopped_text_run_resumes_to_the_same_numbers(tmp_path):
    """Stop after epoch 1 (a KeyboardInterrupt from on_epoch), start again: equal to one uninterrupted run."""
    from distill.training.runner import train

    extra = ["teacher.model={name: gpt, width: 16, depth: 1, kwargs: {heads: 2}}", "distill.top_k=8",
             "train.epochs=3", "teacher.train={epochs: 2}"]
    cfg = load_config(None, TINY + extra)
    whole = train(cfg, tmp_path / "a", progress=False)

    def stop(report):
        if report["epoch"] == 1 and report.get("seed") == 0 and getattr(stop, "armed", True):
            stop.seen = getattr(stop, "seen", 0) + 1
            if stop.seen == 2:  # the student's first epoch (the teacher's came first)
                stop.armed = False
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", on_epoch=stop, progress=False)
    resumed = train(cfg, tmp_path / "b", progress=False)
    key = lambda m: {k: v for k, v in m.items() if k not in ("train_seconds", *TIMING_KEYS)}  # noqa: E731
    a = json.loads((whole / "summary.json").read_text())["models"]
    b = json.loads((resumed / "summary.json").read_text())["models"]
    assert [key(m) for m in a] == [key(m) for m in b]


def test_a_hugging_face_causal_lm_from_a_local_folder(tmp_path, data):
    """Optional extra: a tiny GPT-2 built from a config in a folder (no download), as teacher and student."""
    transformers = pytest.importorskip("transformers")
    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=256, n_positions=16).save_pretrained(tmp_path)
    model = create_model(ModelConfig(name="hf_causal_lm", kwargs={"path": str(tmp_path)}), (16,), 256).eval()
    x = data.x["train"][:3]
    assert model(x).shape == (3, 16, 256)
    cache = TopKCache([model], data, k=4)
    assert cache[:, torch.tensor([0])].shape == (1, 16, 256)
    with pytest.raises(Exception, match="no Hugging Face folder"):
        create_model(ModelConfig(name="hf_causal_lm", kwargs={"path": str(tmp_path / "none")}), (16,), 256)


# ---------------------------------------------------------------- model selection (train.select)

# 16 training blocks, a constant learning rate: validation NLL is lowest early (then the model
# overfits), validation accuracy highest late, so the two rules pick different epochs
OVERFIT = TINY + ["train.epochs=12", "train.lr=0.01", "model.width=64", "train.schedule=constant",
                  "train.weight_decay=0", "dataset.train_subset=16", "train.batch_size=8"]


def test_better_orders_by_the_selection_key():
    low_nll, high_acc = {"acc": 0.2, "nll": 2.0}, {"acc": 0.3, "nll": 2.5}
    assert engine.better(high_acc, low_nll) and not engine.better(low_nll, high_acc)          # default: acc
    assert engine.better(low_nll, high_acc, "nll") and not engine.better(high_acc, low_nll, "nll")
    assert engine.better({"acc": 0.3, "nll": 2.0}, high_acc, "acc")                           # acc ties: nll
    assert engine.better({"acc": 0.3, "nll": 2.0}, {"acc": 0.2, "nll": 2.0}, "nll")          # nll ties: acc
    assert not engine.better(dict(low_nll), low_nll, "nll") and not engine.better(dict(low_nll), low_nll)


def test_model_selection_follows_train_select(tmp_path):
    """Each rule selects its own epoch of the same history; best.pt and the returned weights are that epoch's."""
    picked = {}
    rules = {"acc": lambda r: (-r["acc"], r["nll"]), "nll": lambda r: (r["nll"], -r["acc"])}
    for select, rule in rules.items():
        cfg = load_config(None, OVERFIT + [f"train.select={select}"])
        data = load_data(cfg.dataset)
        model = engine.new_model(cfg.model, data, 0)
        result = engine.fit_one(model, data, cfg.train, seed=0, checkpoint_dir=tmp_path / select)
        val = [row for row in result.history if row["split"] == "val"]
        chosen = min(val, key=rule)                                    # min keeps the earliest of ties
        assert result.selected_epoch == chosen["epoch"]
        assert torch.load(tmp_path / select / "best.pt", weights_only=False)["epoch"] == chosen["epoch"]
        logits = predict(model, data, "val")
        nll = F.cross_entropy(logits.flatten(0, -2), data.y["val"].flatten()).item()
        assert nll == pytest.approx(chosen["nll"], rel=1e-4)          # the weights handed back
        picked[select] = (result.selected_epoch, [(r["acc"], r["nll"]) for r in val])
    assert picked["acc"][1] == picked["nll"][1]                       # the same training either way
    assert picked["acc"][0] != picked["nll"][0]                       # and yet another epoch selected


def test_train_select_refuses_other_rules():
    with pytest.raises(Exception, match="train.select"):
        load_config(None, ["train.select=loss"])


# ---------------------------------------------------------------- Hugging Face tokenizer folders


def test_a_tokenizer_path_that_is_no_hugging_face_folder_is_refused(tmp_path):
    cfg = load_config(None, TINY + [f"dataset.text.tokenizer={tmp_path}"])
    with pytest.raises(Exception, match="no Hugging Face folder"):
        load_data(cfg.dataset)


def test_a_hugging_face_tokenizer_folder_loads(tmp_path):
    """A byte-level BPE tokenizer trained here on 10 pydoc sections (no download), saved with
    save_pretrained: the data's vocabulary is the tokenizer's and the blocks decode to the text."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    docs = pydoc_documents()[:10]
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    bpe.train_from_iterator(docs, tokenizers.trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path / "tok"
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(str(folder))
    cfg = load_config(None, TINY + [f"dataset.text.tokenizer={folder}"])
    data = load_data(cfg.dataset)
    tokenizer = data.text.tokenizer
    assert data.num_classes == tokenizer.vocab == bpe.get_vocab_size() and 256 < tokenizer.vocab <= 400
    joined = "\n\n".join(docs[i] for i in data.text.documents["train"])
    ids = bpe.encode(joined).ids
    tokens = data.x["train"].flatten().tolist()
    assert tokens == ids[:len(tokens)]                                 # the tokenizer's own ids, in order
    assert tokenizer.decode(data.x["train"][0]) == bpe.decode(ids[:16])
    assert joined.startswith(tokenizer.decode(tokens[:200]))           # a byte-level BPE decodes exactly
    model = create_model(cfg.model, data.input_shape, data.num_classes)
    assert model(data.x["train"][:2]).shape == (2, 16, tokenizer.vocab)


def test_the_seqkd_preset_runs_as_its_two_commands(tmp_path):
    """lm-pydoc-seqkd (quick size): step 1 trains the teacher; step 2 trains the student on its generations."""
    from distill.training.runner import train

    quick = load_config("lm-pydoc-seqkd").preset.quick + ["train.device=cpu", "train.threads=1"]
    first = train(load_config("lm-pydoc-seqkd", quick), tmp_path / "runs", progress=False)
    assert (first / "checkpoints" / "teacher-s0" / "best.pt").is_file()
    step2 = quick + ["teacher.model=null", f"dataset.text.seqkd_teacher={first}"]
    second = train(load_config("lm-pydoc-seqkd", step2), tmp_path / "runs", progress=False)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "done" and [m["role"] for m in summary["models"]] == ["model"]
    assert len(list((first / "checkpoints" / "teacher-s0" / "generations").glob("*.pt"))) == 1
