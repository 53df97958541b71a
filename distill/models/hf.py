"""Hugging Face pieces, read from local folders only (optional: `pip install distill-runner[lm]`).

    model.name=hf_causal_lm model.kwargs={path: models/tiny-gpt2}     # any AutoModelForCausalLM folder
    dataset.text.tokenizer=models/tiny-gpt2                            # its tokenizer

Nothing is downloaded: both are loaded with `local_files_only=True`. The model's weights
come from the folder when it holds them (a teacher, or a student started from a checkpoint),
else it is built from the folder's config.json with fresh weights. The wrapper returns the
logits tensor, (B, L, vocab), as every model here does, and knows its `context` (the config's
max_position_embeddings): `distill export` exports it for 1 to context tokens, `distill
generate` reads at most the last context tokens. A tokenizer remembers its folder, which
`distill export` saves beside the .pt2 (docs/lm-checkpoints.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from distill.errors import ConfigError, UserError


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("transformers is not installed; pip install 'distill-runner[lm]' (or transformers) "
                          "to use a Hugging Face model or tokenizer") from None
    return transformers


def _folder(path: str, what: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file() and not (folder / "tokenizer.json").is_file() \
            and not (folder / "tokenizer_config.json").is_file():
        raise UserError(f"{what}: {folder} is no Hugging Face folder (no config.json or tokenizer.json); give a "
                        f"local folder saved with save_pretrained")
    return folder


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def pretrained_teacher_problems(folder: Path, data_tokenizer) -> tuple[Optional[str], Optional[str]]:
    """(why `folder` cannot teach this data as it is, or None; a note for the record, or None).

    A teacher used as it is needs its weights (else it would teach from random ones) and must read
    the data's token ids as the tokens it was trained on: the data's tokenizer must be a Hugging Face
    tokenizer with the same vocabulary (token -> id) as the folder's own. A folder without a tokenizer
    cannot be compared: it is used, and the note says the vocabulary was not checked."""
    if not has_weights(folder):
        return (f"{folder} holds a Hugging Face config but no weights (*.safetensors or *.bin), so it would teach "
                f"from random weights; save the trained model there with save_pretrained, or train it first as a "
                f"teacher section (teacher.model={{name: hf_causal_lm, kwargs: {{path: {folder}}}}})"), None
    if not isinstance(data_tokenizer, HFTokenizer):
        name = getattr(data_tokenizer, "name", type(data_tokenizer).__name__)
        return (f"{folder} is a Hugging Face model but the data is tokenised by {name}, so the token ids would mean "
                f"other tokens to the teacher; set dataset.text.tokenizer={folder} (its own tokenizer)"), None
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None, (f"{folder} has no tokenizer files, so its vocabulary could not be checked against "
                      f"{data_tokenizer.folder}")
    theirs = _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True).get_vocab()
    mine = data_tokenizer.tokenizer.get_vocab()
    if theirs != mine:
        differ = sorted(set(theirs.items()) ^ set(mine.items()), key=lambda item: item[1])
        example = f"e.g. {differ[0][0]!r}" if differ else ""
        return (f"{folder}'s tokenizer differs from the data's ({data_tokenizer.folder}): {len(theirs)} against "
                f"{len(mine)} tokens, {len(differ)} token ids differing ({example}); set "
                f"dataset.text.tokenizer={folder} so teacher and student read the same tokens"), None
    return None, None


class HFTokenizer:
    def __init__(self, tokenizer, name: str, folder: Path):
        self.tokenizer = tokenizer
        self.name = name
        self.folder = folder  # where it was read from (distill export saves the tokenizer beside the .pt2)
        self.vocab = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])


def load_tokenizer(path: str) -> HFTokenizer:
    folder = _folder(path, "dataset.text.tokenizer")
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return HFTokenizer(tokenizer, f"Hugging Face tokenizer {folder}", folder)


class HFCausalLM(nn.Module):
    """An AutoModelForCausalLM as a plain module: tokens (B, L) -> logits (B, L, vocab)."""

    #: read by replicas.can_stack: transformers' modules build masks and caches with device and shape
    #: checks that torch.func.vmap's batched tensors fail (the backward meets a meta-device gradient)
    stack_refused = "a Hugging Face model (transformers' code does not run under torch.func.vmap)"

    def __init__(self, path: str, vocab: int):
        super().__init__()
        transformers = _transformers()
        folder = _folder(path, "model.kwargs.path")
        if has_weights(folder):
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        else:
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            self.lm = transformers.AutoModelForCausalLM.from_config(config)
        if self.lm.get_output_embeddings().weight.shape[0] < vocab:
            raise ConfigError(f"model.kwargs.path: {folder} has a vocabulary of "
                              f"{self.lm.get_output_embeddings().weight.shape[0]} tokens but the data has {vocab}; "
                              f"use the model's own tokenizer (dataset.text.tokenizer={folder})")
        self.vocab = vocab
        # the longest sequence its positions cover (None: no limit the config states); distill export
        # exports the model for 1 .. context tokens and distill generate reads the last context tokens
        config = self.lm.config
        self.context = next((int(getattr(config, key)) for key in ("max_position_embeddings", "n_positions", "n_ctx")
                             if isinstance(getattr(config, key, None), int)), None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=tokens, use_cache=False).logits[..., :self.vocab]

    def get_output_embeddings(self) -> nn.Module:
        """The model's output layer (its lm_head: an nn.Linear, its weight tied to the input embeddings where
        the config says so), whose first `vocab` outputs are the logits; distill.lm_chunk fuses the loss with it."""
        return self.lm.get_output_embeddings()
