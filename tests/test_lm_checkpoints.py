"""Language-model checkpoints in and out: Hugging Face causal LMs and a real BPE tokenizer from local
folders (built here: no download) through distill train, bornagain and ensemble; `distill export` of
an LM student (a .pt2 for 1 to context tokens, the tokenizer in its card, loaded by plain torch in a
fresh process); `distill generate`, and the card's plain-torch snippet writing the same tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.config import load_config
from distill.data.text import pydoc_documents
from distill.models.gpt import GPT
from distill.training.generate import generate

os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: every Hugging Face read here is a local folder
ROOT = Path(__file__).resolve().parent.parent
TINY = ["dataset.name=pydoc", "dataset.text.documents=10", "dataset.text.block=16", "dataset.val_fraction=0.2",
        "dataset.text.test_fraction=0.2", "model.name=gpt", "model.width=16", "model.depth=1",
        "model.kwargs={heads: 2}", "train.epochs=1", "train.batch_size=32", "train.lr=0.003", "train.device=cpu",
        "train.threads=1", "seeds=[0]", "train.checkpoint_seconds=0", "train.select=nll", "train.cost_budget=0"]
PROMPT = "The if statement"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A byte-level BPE tokenizer trained on 10 pydoc sections and saved as a transformers tokenizer
    folder; a 2-layer GPT-2 and a 1-layer Llama config folder of its vocabulary (configs only)."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("hf")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    bpe.train_from_iterator(pydoc_documents()[:10], tokenizers.trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(str(root / "tok"))
    vocab = bpe.get_vocab_size()
    transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=vocab, bos_token_id=0,
                            eos_token_id=0).save_pretrained(root / "gpt2")
    transformers.LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=24, vocab_size=vocab, bos_token_id=0,
                             eos_token_id=0).save_pretrained(root / "llama")
    return root


def hf_model(folder: Path) -> str:
    return f"{{name: hf_causal_lm, kwargs: {{path: {folder}}}}}"


RUNS = {  # name -> (overrides, the student's context, its --model)
    "gpt-byte": (["teacher.model={name: gpt, width: 16, depth: 1, kwargs: {heads: 2}}"], 16, "student:0"),
    "gpt-char": (["dataset.text.tokenizer=char"], 16, "model:0"),  # no teacher: the model from labels
    "hf-bpe": (None, 24, "student:0"),  # with the hf folders: GPT-2 teacher -> Llama student, BPE tokens
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny finished `distill train` runs, made when a test first asks for one."""
    made, root = {}, tmp_path_factory.mktemp("runs")

    def get(name: str, request) -> Path:
        if name not in made:
            from distill.training.runner import train

            extra = RUNS[name][0]
            if extra is None:
                folders = request.getfixturevalue("hf")
                extra = [f"dataset.text.tokenizer={folders / 'tok'}", f"model={hf_model(folders / 'llama')}",
                         f"teacher.model={hf_model(folders / 'gpt2')}", "distill.top_k=8"]
            made[name] = train(load_config(None, TINY + extra), root, progress=False)
        return made[name]
    return get


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Each run's student exported once by `distill export`: (run, .pt2 path, card)."""
    made = {}

    def get(name: str, request) -> tuple[Path, Path, dict]:
        if name not in made:
            run, out = runs(name, request), tmp_path_factory.mktemp("export") / "out" / "student.pt2"
            assert main(["export", str(run), "--model", RUNS[name][2], "--out", str(out)]) == 0
            made[name] = run, out, json.loads(out.with_suffix(".json").read_text())
        return made[name]
    return get


def student_model(run: Path, spec: str = "student"):
    """The run's student as distill generate rebuilds it (eager), with its tokenizer and block."""
    from types import SimpleNamespace

    from distill.data.text import run_tokenizer
    from distill.export.runs import load_model, read_run, select_row

    cfg, summary = read_run(run)
    tokenizer = run_tokenizer(cfg.dataset)
    block = cfg.dataset.text.block
    model = load_model(run, cfg, select_row(summary["models"], spec),
                       SimpleNamespace(input_shape=(block,), num_classes=tokenizer.vocab))
    return model, tokenizer


# ---------------------------------------------------------------- the generation loop


def test_generate_against_a_plain_loop():
    torch.manual_seed(0)
    model = GPT(vocab=30, context=6, width=16, depth=1, heads=2).eval()
    prompts = torch.randint(0, 30, (3, 4))
    greedy = generate(model, prompts, 8, temperature=0.0, context=6)
    seqs = prompts
    with torch.no_grad():
        for _ in range(8):  # the plain reference: argmax of the last position over the last 6 tokens
            seqs = torch.cat([seqs, model(seqs[:, -6:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, seqs) and torch.equal(greedy[:, :4], prompts)
    sample = lambda seed, **kw: generate(model, prompts, 8, generator=torch.Generator().manual_seed(seed),  # noqa
                                         context=6, **kw)
    a, b, c = sample(1, temperature=1.5), sample(1, temperature=1.5), sample(2, temperature=1.5)
    assert torch.equal(a, b) and not torch.equal(a, c)                  # seeded
    assert torch.equal(sample(3, temperature=1.0, top_k=1), greedy)     # the top 1 is the argmax
    topk = sample(4, temperature=2.0, top_k=3)
    with torch.no_grad():
        for i in range(4, 12):
            allowed = model(topk[:, max(0, i - 6):i])[:, -1].topk(3, -1).indices
            assert (allowed == topk[:, i:i + 1]).any(-1).all()          # every token among the 3 likeliest
    with pytest.raises(ValueError, match="negative"):
        generate(model, prompts, 1, temperature=-1.0)


# ---------------------------------------------------------------- Hugging Face models and tokenizers in


def test_hf_teacher_and_student_through_distill_train(runs, request, hf):
    run = runs("hf-bpe", request)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and [m["role"] for m in summary["models"]] == ["teacher", "student"]
    assert {m["name"] for m in summary["models"]} == {"hf_causal_lm"}
    vocab = json.loads((hf / "tok" / "tokenizer.json").read_text())["model"]["vocab"]
    for row in summary["models"]:
        assert 1 < row["test_ppl"] < len(vocab)                          # per BPE token, better than uniform
    state = torch.load(run / "checkpoints/student-s0/best.pt", weights_only=True)["model"]
    assert any(k.startswith("lm.model.layers.0.") for k in state)        # the Llama's own weights
    model, tokenizer = student_model(run)
    assert model.context == 24 and tokenizer.vocab == len(vocab)


def test_an_hf_folder_with_weights_is_loaded_with_them(tmp_path, hf):
    import transformers

    from distill.config import ModelConfig
    from distill.models import create_model

    torch.manual_seed(1)
    lm = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(hf / "gpt2"))
    lm.save_pretrained(tmp_path / "pretrained")
    model = create_model(ModelConfig(name="hf_causal_lm", kwargs={"path": str(tmp_path / "pretrained")}), (16,),
                         lm.config.vocab_size).eval()
    x = torch.randint(0, lm.config.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(x), lm.eval()(x).logits)
    assert model.context == 32


@pytest.fixture(scope="module")
def pretrained(hf, tmp_path_factory):
    """A GPT-2 of the fixture's BPE vocabulary with (random, seeded) weights and its tokenizer, saved with
    save_pretrained as a downloaded model would be: (folder, the transformers model)."""
    import transformers

    folder = tmp_path_factory.mktemp("pretrained") / "gpt2"
    torch.manual_seed(3)
    lm = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(hf / "gpt2")).eval()
    lm.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(str(hf / "tok")).save_pretrained(str(folder))
    return folder, lm


def folder_bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_pretrained_hf_folder_teaches_as_it_is(pretrained, hf, tmp_path):
    """distill.teacher = a Hugging Face folder: the objective's teacher is that model, weights unchanged (its
    logits equal transformers' own), the run trains the student only, records where the teacher came from,
    and leaves the folder as it was."""
    from distill.data import load_data
    from distill.teachers.sources import teacher_objective
    from distill.training.runner import train

    folder, lm = pretrained
    before = folder_bytes(folder)
    cfg = load_config(None, TINY + [f"dataset.text.tokenizer={hf / 'tok'}", f"distill.teacher={folder}",
                                    "distill.top_k=8"])
    data = load_data(cfg.dataset)
    objective, info, section = teacher_objective(cfg, data, 0, torch.device("cpu"))
    assert section is None and "used as it is" in info["teacher"]
    (teacher,), _ = objective.teachers()
    x = data.x["test"][:4]
    with torch.no_grad():
        assert torch.equal(teacher(x), lm(x).logits[..., :data.num_classes])
    run = train(cfg, tmp_path, progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and [m["role"] for m in summary["models"]] == ["student"]
    assert summary["models"][0]["parent"].startswith(str(folder)) and "used as it is" in summary["loss"]["teacher"]
    assert folder_bytes(folder) == before


def test_a_pretrained_hf_teacher_that_cannot_teach_is_refused(pretrained, hf, tmp_path, capsys):
    """No weights, data tokenised by bytes, another vocabulary: one line each, exit 2, no run folder."""
    import transformers

    folder, _ = pretrained
    other = tmp_path / "other-tok"
    bpe = transformers.AutoTokenizer.from_pretrained(str(hf / "tok"))
    bpe.add_tokens(["<extra>"])
    bpe.save_pretrained(str(other))
    cases = {  # overrides -> what the line says
        (f"distill.teacher={hf / 'gpt2'}", f"dataset.text.tokenizer={hf / 'tok'}"): "no weights",
        (f"distill.teacher={folder}",): "tokenised by",
        (f"distill.teacher={folder}", f"dataset.text.tokenizer={other}"): "token ids differing",
    }
    for overrides, says in cases.items():
        out = tmp_path / "runs"
        assert main(["train", "lm-pydoc-kd", "teacher.model=null", *TINY, *overrides, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("distill: error: distill.teacher:") and says in err, err
        assert not out.exists()


@pytest.mark.slow
def test_hf_models_through_bornagain_and_ensemble(hf, tmp_path):
    from distill.export.lm import generate_text

    base = TINY + [f"dataset.text.tokenizer={hf / 'tok'}", f"model={hf_model(hf / 'llama')}"]
    import bornagain
    import ensembles

    ban = bornagain.run(load_config(None, base + ["distill.method=ban", "bornagain.generations=1"]), tmp_path,
                        progress=False)
    ens = ensembles.run(load_config(None, base + ["ensemble.members=2", f"ensemble.models=[{hf_model(hf / 'gpt2')}]",
                                                 "ensemble.combine=[mean_probs]"]), tmp_path, progress=False)
    for run, spec in ((ban, "generation:0:1"), (ens, "student:0:mean_probs"), (ens, "member:0:1")):
        assert json.loads((run / "summary.json").read_text())["status"] == "done"
        assert isinstance(generate_text(run, spec, PROMPT, 5), str)


# ---------------------------------------------------------------- export and generate out

FRESH = """
import runpy, sys, torch
pt2, context, x_path, prompt, new_tokens = sys.argv[1:]
program = torch.export.load(pt2).module()
context = int(context)
for length in (1, 7, context):
    torch.save(program(torch.load(x_path)[:, :length]), f"{x_path}.{length}")
try:
    program(torch.zeros(1, context + 1, dtype=torch.long))
    print("longer than the context: ran", file=sys.stderr)
except Exception:
    print("longer than the context: refused", file=sys.stderr)
sys.argv = ["generate.py", pt2, prompt, new_tokens]
runpy.run_path("generate.py", run_name="__main__")  # python generate.py student.pt2 PROMPT 20
assert "distill" not in sys.modules and "transformers" not in sys.modules, sorted(sys.modules)
"""


def fresh(code: str, *args, cwd) -> tuple[str, str]:
    """Run `code` in a Python isolated from this project (-I: no PYTHONPATH, no script folder), in `cwd`."""
    done = subprocess.run([sys.executable, "-I", "-c", code, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=180, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


@pytest.mark.parametrize("name", ["gpt-byte", "hf-bpe", pytest.param("gpt-char", marks=pytest.mark.slow)])
def test_an_exported_lm_runs_in_plain_torch_and_writes_what_distill_generate_writes(name, exported, request,
                                                                                      tmp_path, capfd):
    """The student's .pt2, in a fresh process of plain torch: the eager model's logits for 1, 7 and
    context tokens, a longer input refused; the card's snippet (greedy) prints what distill generate prints."""
    (run, out, card), context, spec = exported(name, request), RUNS[name][1], RUNS[name][2]
    model, tokenizer = student_model(run, spec)
    assert card["input"]["context"] == context and card["input"]["shape"] == ["batch", "tokens"]
    tok = card["tokenizer"]
    assert tok["vocab"] == tokenizer.vocab and "classes" not in card
    if name == "gpt-char":
        assert "".join(tok["chars"]) == "".join(tokenizer.chars)
    if name == "hf-bpe":  # the tokenizer folder beside the .pt2, read without transformers
        from tokenizers import Tokenizer

        hf_tok = Tokenizer.from_file(str(out.parent / tok["folder"] / "tokenizer.json"))
        assert hf_tok.encode(PROMPT, add_special_tokens=False).ids == tokenizer.encode(PROMPT)
    summary = json.loads((run / "summary.json").read_text())
    row = next(r for r in summary["models"] if r["role"] == spec.split(":")[0])
    assert card["accuracy"]["test_acc"] == pytest.approx(row["test_acc"], abs=1e-5)
    assert card["accuracy"]["test_ppl"] == pytest.approx(row["test_ppl"], rel=1e-4)

    capfd.readouterr()
    assert main(["generate", str(run), "--model", spec, "--prompt", PROMPT, "--max-new-tokens", "20"]) == 0
    eager = capfd.readouterr().out
    ids = tokenizer.encode(PROMPT)
    expected = generate(model, torch.tensor([ids]), 20, context=context)[0, len(ids):]
    assert eager == tokenizer.decode(expected.tolist()) + "\n" and len(expected) == 20

    x = torch.randint(0, tokenizer.vocab, (2, context))
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "generate.py").write_text(card["generate"])
    printed, said = fresh(FRESH, out, context, tmp_path / "x.pt", PROMPT, 20, cwd=tmp_path)
    assert "longer than the context: refused" in said
    with torch.no_grad():
        for length in (1, 7, context):
            torch.testing.assert_close(torch.load(tmp_path / f"x.pt.{length}"), model(x[:, :length]))
    assert printed == eager                                                # greedy: the same tokens


def test_the_documented_snippet_is_the_cards():
    from distill.export.lm import SNIPPET

    assert SNIPPET in (ROOT / "docs" / "lm-checkpoints.md").read_text()


def test_sampled_generation_is_seeded(runs, request):
    from distill.export.lm import generate_text

    run = runs("gpt-byte", request)
    text = lambda **kw: generate_text(run, "student", PROMPT, 30, **kw)  # noqa: E731
    assert text(temperature=1.0, seed=1) == text(temperature=1.0, seed=1) != text(temperature=1.0, seed=2)
    assert text(temperature=1.0, top_k=1, seed=5) == text()              # the top 1 is greedy


def test_a_failed_lm_export_leaves_nothing_behind(runs, request, tmp_path, monkeypatch, capfd):
    import distill.export.cost

    def broken(*args, **kwargs):
        raise RuntimeError("no cost today")

    monkeypatch.setattr(distill.export.cost, "model_cost", broken)  # fails after the .pt2 and tokenizer are written
    out = tmp_path / "a" / "s.pt2"
    assert main(["export", str(runs("hf-bpe", request)), "--model", "student", "--out", str(out)]) == 1
    assert "no cost today" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []                                # no .pt2, no tokenizer folder, no folder


# ---------------------------------------------------------------- bad input


def test_generate_argument_errors_are_one_line_before_torch(tmp_path):
    code = f"""
import sys
from distill.cli import main
for args in (["--max-new-tokens", "0"], ["--max-new-tokens", "x"], ["--temperature", "-1"],
             ["--temperature", "nan"], ["--top-k", "-2"], ["--seed", "1.5"], ["--prompt", ""]):
    assert main(["generate", {str(tmp_path)!r}, "--model", "student", "--prompt", "a", *args]) == 2, args
assert "torch" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 7 and all(line.startswith("distill: error: ") for line in lines)
    assert "'0' is not a whole number >= 1" in lines[0] and "--prompt is empty" in lines[6]


def test_generate_refuses_sampling_flags_when_it_decodes_greedily(tmp_path, capsys):
    for flags, named in ((["--top-k", "5"], "--top-k"), (["--seed", "3"], "--seed"),
                         (["--temperature", "0", "--seed", "0"], "--seed")):
        assert main(["generate", str(tmp_path), "--model", "student", "--prompt", "a", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "--temperature > 0" in err[0], err
    assert main(["generate", str(tmp_path), "--model", "student", "--prompt", "a", "--temperature", "0.5",
                 "--top-k", "5", "--seed", "3"]) == 2  # read: it goes on to the run (none here)
    assert "not a run directory" in capsys.readouterr().err


def test_generate_refuses_what_it_cannot_continue(runs, request, tmp_path, capfd):
    from distill.config import dump_yaml

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "config.yaml").write_text(dump_yaml(load_config(None, ["dataset.name=mnist1d"])))
    (classifier / "summary.json").write_text(json.dumps({"status": "done", "models": [{"role": "model", "seed": 0}]}))
    cases = [(runs("gpt-char", request), "model", "snow \u2603", "not in the run's character table"),
             (runs("gpt-byte", request), "student:7", PROMPT, "no such model"),
             (tmp_path, "student", PROMPT, "not a run directory"),
             (classifier, "model", PROMPT, "not text")]
    for run, spec, prompt, words in cases:
        assert main(["generate", str(run), "--model", spec, "--prompt", prompt]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
