"""Language models out of a finished run: `distill export` of an LM, and `distill generate`.

    distill export runs/lm-pydoc-kd/<id> --model student:0 --out student.pt2
    distill generate runs/lm-pydoc-kd/<id> --model student:0 --prompt "The if statement" --max-new-tokens 80

**Export.** An LM is exported with two dynamic dimensions: the batch and the sequence length,
1 to the model's context (`torch.export.Dim`): a GPT's `model.kwargs.context` (the block by
default), a Hugging Face model's `max_position_embeddings`, else the training block. The card
(`<out>.json`) holds the tokenizer: `byte` (UTF-8 bytes), `char` (its table of characters, in
token order) or a Hugging Face tokenizer, saved beside the .pt2 with `save_pretrained` as
the folder `<out stem>.tokenizer/` (read back by `tokenizers` or `transformers`, no download).
Its figures are the exported program's on the test blocks: token accuracy, NLL per token and
perplexity, computed a chunk of blocks at a time (the logits of a large vocabulary are never
held for the whole split), and its largest difference from the eager model.

**Generate.** `generate_text` rebuilds the run's tokenizer (without tokenising the corpus) and
model, encodes the prompt and continues it with `distill.training.generate.generate`: greedy at
temperature 0, else sampled (top-k, seeded); the model reads at most its last `context` tokens.
`SNIPPET` is the same loop over an exported program in plain torch (the card carries it, and
docs/lm-checkpoints.md shows it): greedy, it writes the tokens `distill generate` writes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import UserError

TEXT_DATASETS = ("pydoc", "text")

# Generation from an exported LM with plain torch (and the `tokenizers` package for a Hugging Face
# tokenizer); docs/lm-checkpoints.md shows this text and a test runs it in a fresh process.
SNIPPET = '''\
import json, sys, torch
from pathlib import Path

def load(pt2):
    """The exported program, its card, and the tokenizer's encode and decode."""
    pt2 = Path(pt2)
    card = json.loads(pt2.with_suffix(".json").read_text())
    tok = card["tokenizer"]
    if tok["kind"] == "byte":
        encode = lambda text: list(text.encode("utf-8"))
        decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")
    elif tok["kind"] == "char":
        index = {c: i for i, c in enumerate(tok["chars"])}
        encode = lambda text: [index[c] for c in text]
        decode = lambda ids: "".join(tok["chars"][i] for i in ids)
    else:  # a Hugging Face tokenizer folder beside the .pt2
        from tokenizers import Tokenizer
        hf = Tokenizer.from_file(str(pt2.parent / tok["folder"] / "tokenizer.json"))
        encode = lambda text: hf.encode(text, add_special_tokens=False).ids
        decode = hf.decode
    return torch.export.load(pt2).module(), card, encode, decode

def generate(program, ids, new_tokens, context, temperature=0.0, top_k=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = list(ids)
    for _ in range(new_tokens):
        with torch.no_grad():
            logits = program(torch.tensor([ids[-context:]]))[:, -1].float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            logits = logits / temperature
            if 0 < top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        ids.append(int(token))
    return ids

if __name__ == "__main__":  # python generate.py student.pt2 "The if statement" 80
    program, card, encode, decode = load(sys.argv[1])
    prompt = encode(sys.argv[2])
    ids = generate(program, prompt, int(sys.argv[3]), card["input"]["context"])
    print(decode(ids[len(prompt):]))
'''


def is_text(cfg) -> bool:
    return cfg.dataset.name in TEXT_DATASETS


def context_of(model: nn.Module, block: int) -> int:
    """The longest token sequence the model reads: its own `context` where it has one, else the block."""
    return int(getattr(model, "context", None) or block)


# ---------------------------------------------------------------- export


def tokenizer_card(tokenizer, folder: Path, stem: str) -> dict:
    """The tokenizer as the card describes it; a Hugging Face one is saved into folder/<stem>.tokenizer."""
    from distill.data.text import ByteTokenizer, CharTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        return {"kind": "byte", "vocab": tokenizer.vocab, "encode": "list(text.encode('utf-8'))",
                "decode": "bytes(ids).decode('utf-8', errors='replace')"}
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "vocab": tokenizer.vocab, "chars": list(tokenizer.chars),
                "encode": "[chars.index(c) for c in text]", "decode": "''.join(chars[i] for i in ids)"}
    name = f"{stem}.tokenizer"
    tokenizer.tokenizer.save_pretrained(str(folder / name))
    return {"kind": "hugging_face", "folder": name, "source": str(tokenizer.folder), "vocab": tokenizer.vocab,
            "load": f"tokenizers.Tokenizer.from_file('{name}/tokenizer.json'), or "
                    f"transformers.AutoTokenizer.from_pretrained('{name}')"}


def text_card(data, model: nn.Module, tokenizer: dict) -> dict:
    """The card's input, output and tokenizer sections for a language model."""
    context = context_of(model, data.input_shape[0])
    return {"input": {"shape": ["batch", "tokens"], "dtype": "int64", "context": context,
                      "trained_block": data.input_shape[0],
                      "tokens": f"token ids, 1 to {context} of them per sequence (the tokenizer's)"},
            "output": f"logits (batch, tokens, {data.num_classes}); position i predicts token i + 1",
            "tokenizer": tokenizer, "generate": SNIPPET}


def text_figures(model: nn.Module, program: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 64) -> dict:
    """The program's token accuracy, NLL per token and perplexity on (x, y), and its largest
    difference from the eager model's logits; a chunk of blocks at a time."""
    right, nll, diff = 0, 0.0, 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            logits, target = program(x[i:i + chunk]), y[i:i + chunk]
            right += int((logits.argmax(-1) == target).sum())
            nll += F.cross_entropy(logits.flatten(0, -2).float(), target.flatten(), reduction="sum").item()
            diff = max(diff, (logits - model(x[i:i + chunk])).abs().max().item())
    tokens = y.numel()
    return {"test_acc": round(right / tokens, 6), "test_nll": nll / tokens,
            "test_ppl": float(torch.tensor(nll / tokens).exp()), "test_tokens": tokens, "max_abs_diff_vs_eager": diff}


# ---------------------------------------------------------------- generate


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    try:
        ids = tokenizer.encode(prompt)
    except KeyError as err:  # the char tokenizer's table is the corpus's characters
        raise UserError(f"--prompt: the character {err.args[0]!r} is not in the run's character table "
                        f"(dataset.text.tokenizer=char); use characters of its corpus") from None
    if not ids:
        raise UserError("--prompt gives no tokens; give some text to continue")
    return ids


def generate_text(run_dir: str | Path, model_spec: str, prompt: str, max_new_tokens: int = 50,
                  temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> str:
    """The continuation (text) of `prompt` by one language model of a finished run."""
    from distill.data.text import run_tokenizer
    from distill.export.runs import load_model, read_run, row_spec, select_row
    from distill.training.generate import generate

    run_dir = Path(run_dir)
    cfg, summary = read_run(run_dir)
    row = select_row(summary.get("models", []), model_spec)
    if not is_text(cfg):
        raise UserError(f"--model {row_spec(row)}: {run_dir} trained on {cfg.dataset.name}, not text; "
                        f"distill generate needs a language model (dataset.name: pydoc or text)")
    tokenizer = run_tokenizer(cfg.dataset)
    ids = encode_prompt(tokenizer, prompt)
    block = cfg.dataset.text.block
    model = load_model(run_dir, cfg, row, SimpleNamespace(input_shape=(block,), num_classes=tokenizer.vocab))
    out = generate(model, torch.tensor([ids]), max_new_tokens, temperature, top_k,
                   torch.Generator().manual_seed(seed), context=context_of(model, block))
    return tokenizer.decode(out[0, len(ids):].tolist())
