"""Text corpora as token blocks: read, tokenise, split by document, cut into blocks.

    distill train lm-pydoc-kd                                   # dataset.name=pydoc: no download
    distill train lm-pydoc-kd dataset.name=text dataset.text.files=[corpus/]   # your .txt/.jsonl files

`dataset.name=pydoc` is the English text that ships with every CPython: the module
`pydoc_data.topics` (what `help("if")` prints), 79 sections of the language reference, about
465,000 characters of prose and code examples. It is on every machine that runs Python, so
the demo and the tests need no download; it is real, varied English, unlike generated text.
The docstrings of stdlib modules were the other candidate: they depend on which optional
modules a Python build has, while `pydoc_data` is one file of the standard library.
(It differs slightly between Python versions; the version is in every run's meta.json.)

`dataset.name=text` reads `dataset.text.files`: `.txt` files (one document each), `.jsonl`
files (one document per line, in `dataset.text.json_field`) or folders of them (sorted).

Documents, not blocks, are split into train, validation and test (shuffled with
`dataset.split_seed`: `val_fraction` and `text.test_fraction` of them held out), so no
document has text on both sides. Each split's documents are joined (a blank line between
them), tokenised and cut into non-overlapping windows of `block + 1` tokens: x = the first
`block` tokens, y = the next token at every position, so a block is `block` next-token
predictions. The engine treats a batch of B blocks as B * block classification rows.

Tokenizers: `byte` (UTF-8 bytes, 256 tokens, exact round trip for any text), `char` (the
corpus's characters, sorted; built from every document so that nothing is unknown: only
the symbol table, no statistics, is shared across splits), or a folder holding a Hugging
Face tokenizer (`tokenizer.json` ...; needs `pip install transformers`, read offline).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distill.errors import UserError

if TYPE_CHECKING:  # annotations only: config imports the data registry, never the reverse
    from distill.config import DatasetConfig


# ---------------------------------------------------------------- tokenizers


class ByteTokenizer:
    name = "byte"
    vocab = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class CharTokenizer:
    name = "char"

    def __init__(self, texts: list[str]):
        self.chars = sorted(set("".join(texts)) | {"\n"})  # "\n": documents are joined by blank lines
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.vocab = len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def make_tokenizer(spec_: str, documents: list[str]):
    if spec_ == "byte":
        return ByteTokenizer()
    if spec_ == "char":
        return CharTokenizer(documents)
    from distill.models.hf import load_tokenizer

    return load_tokenizer(spec_)


# ---------------------------------------------------------------- corpora


def pydoc_documents() -> list[str]:
    """The sections of the Python language reference shipped with CPython, in key order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _files(paths: list[str]) -> list[Path]:
    found = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"dataset.text.files: {path} does not exist; give .txt/.jsonl files or folders of them")
    return found


def file_documents(paths: list[str], field_name: str) -> list[str]:
    """Documents of .txt files (one each) and .jsonl files (one per line, in `field_name`)."""
    if not paths:
        raise UserError("dataset.text.files: empty; give .txt/.jsonl files or folders with dataset.name=text, "
                        "or use dataset.name=pydoc")
    documents = []
    for path in _files(paths):
        if path.suffix != ".jsonl":
            documents.append(path.read_text(encoding="utf-8", errors="replace"))
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)[field_name]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"dataset.text.files: line {number} of {path} is not a JSON object with a "
                                f"{field_name!r} field; fix the line or set dataset.text.json_field") from None
            documents.append(str(value))
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise UserError(f"dataset.text.files: no text found in {', '.join(paths)}; give .txt/.jsonl files")
    return documents


# ---------------------------------------------------------------- split and blocks


def split_documents(count: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Document numbers of each split: shuffled with `seed`, test and validation shares held out
    (at least one document each), each list sorted."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(test_fraction * count))
    n_val = max(1, round(val_fraction * count))
    if count - n_test - n_val < 1:
        raise UserError(f"dataset: {count} documents cannot be split into train, validation ({n_val}) and test "
                        f"({n_test}); give more documents or lower dataset.val_fraction/dataset.text.test_fraction")
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def to_blocks(tokens: list[int], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of block + 1 tokens -> x (N, block) and y (N, block), y = x shifted by one."""
    ids = torch.tensor(tokens, dtype=torch.long)
    n = (len(ids) - 1) // block
    windows = ids[:n * block + 1]
    x = windows[:-1].view(n, block) if n else ids.new_zeros((0, block))
    y = windows[1:].view(n, block) if n else ids.new_zeros((0, block))
    return x, y


@dataclass
class TextInfo:
    """What a text Data carries besides its tensors: the tokenizer and where the blocks came from."""

    tokenizer: object
    documents: dict            # split -> document numbers
    description: str           # corpus, tokenizer, split, seqkd
    tokens: dict               # split -> tokens in its blocks


def read_documents(cfg: "DatasetConfig") -> tuple[list[str], str]:
    """The dataset's documents (the first `dataset.text.documents` of them) and the corpus's name."""
    t = cfg.text
    documents = pydoc_documents() if cfg.name == "pydoc" else file_documents(t.files, t.json_field)
    corpus = "pydoc_data.topics (Python's language reference)" if cfg.name == "pydoc" else "dataset.text.files"
    return (documents[:t.documents] if t.documents is not None else documents), corpus


def run_tokenizer(cfg: "DatasetConfig"):
    """The tokenizer a run's data was tokenised with, without tokenising anything (only `char` reads
    the documents: its table is their characters)."""
    return make_tokenizer(cfg.text.tokenizer, read_documents(cfg)[0] if cfg.text.tokenizer == "char" else [])


def load_text(cfg: "DatasetConfig") -> dict:
    """The keyword arguments of `distill.data.Data` for a text dataset (see the module docstring)."""
    t = cfg.text
    documents, corpus = read_documents(cfg)
    tokenizer = make_tokenizer(t.tokenizer, documents)
    splits = split_documents(len(documents), cfg.val_fraction, t.test_fraction, cfg.split_seed)
    x, y = {}, {}
    for split, numbers in splits.items():
        x[split], y[split] = to_blocks(tokenizer.encode("\n\n".join(documents[i] for i in numbers)), t.block)
        if x[split].shape[0] == 0:
            raise UserError(f"dataset: the {split} documents hold fewer than {t.block + 1} tokens; lower "
                            f"dataset.text.block or give more documents")
    if cfg.train_subset is not None and cfg.train_subset < x["train"].shape[0]:
        keep = torch.randperm(x["train"].shape[0], generator=torch.Generator().manual_seed(cfg.split_seed))
        keep = keep[:cfg.train_subset].sort().values
        x["train"], y["train"] = x["train"][keep], y["train"][keep]
    description = (f"{corpus}: {len(documents)} documents split by document ({len(splits['train'])} train, "
                   f"{len(splits['val'])} val, {len(splits['test'])} test), {tokenizer.name} tokens "
                   f"(vocabulary {tokenizer.vocab}), blocks of {t.block}")
    if t.seqkd_teacher is not None:
        from distill.training.lm import seqkd_blocks

        x["train"], y["train"], note = seqkd_blocks(x["train"], y["train"], cfg, tokenizer.vocab)
        description += f"; sequence-level KD: {note}"
    info = TextInfo(tokenizer, splits, description, {s: int(v.numel()) for s, v in y.items()})
    return dict(name=cfg.name, num_classes=tokenizer.vocab, input_shape=(t.block,), x=x, y=y,
                source_index={s: torch.arange(v.shape[0]) for s, v in x.items()}, augment="none", shift=0,
                text=info)
