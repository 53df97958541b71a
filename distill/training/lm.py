"""Distilling language models: the teacher's top-k cache and sequence-level KD.

Token-level KD needs nothing of its own: the engine treats a batch of B blocks of L tokens
as B * L classification rows (logits (B * L, V), labels (B * L,)), so every method of
`distill.methods.losses` (kd's forward KL, reverse_kl, jsd, skew_kl, tvd, ...) matches the teacher's
next-token distribution at every position, mixed with the next-token cross-entropy by alpha.

**Top-k cache** (`TopKCache`): a cached teacher keeps, per training position, its k largest
log-probabilities and their token ids: (N, L, k) values and ids, so memory is bounded by
`distill.top_k`, not the vocabulary. The teacher distribution a loss reads is rebuilt per
batch as logits over the vocabulary: `drop` (default) puts -1e4 outside the top k, so
softmax(z / T) is the top-k distribution renormalised (exp(-1e4 / T) is 0 in float32 for any
T below about 100); `spread` gives the missing mass 1 - sum_top-k p evenly to the other
V - k tokens (exact at T = 1; at other T the temperature acts on that spread distribution).
Reverse KL against a `drop` teacher punishes every student token outside the top k hard
(log p = -1e4 / T there): use `spread` with reverse_kl. The cache is rebuilt from the
teacher's weights whenever a run starts or resumes, so it is the teacher's top k by
construction.

**Sequence-level KD** (Kim & Rush 2016, `dataset.text.seqkd_teacher`): a data transform.
The first `seqkd_prompt` tokens of every training block are a prompt; the teacher writes the
rest of the block (greedy, sampling at `seqkd_temperature` from the `seqkd_top_k` most likely
tokens, or beam search), once, seeded; the generations are saved next to the teacher's
checkpoint (`generations/<hash>.pt`, the hash of the settings and the prompts) and read back
by every later run. The training blocks become prompt + continuation; validation and test
stay the real text. The student trains on them with cross-entropy (word-level KD from the
same teacher on top of it: set `distill.teacher` to that teacher as well, Kim & Rush's
word + sequence level). The first `seqkd_prompt` targets of a block are the prompt's own
text, the rest the teacher's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from distill.runs.checkpoints import load_checkpoint, save_atomic
from distill.training.generate import generate as one_token_at_a_time
from distill.errors import UserError

DROPPED = -1e4  # logit of a token outside the teacher's top k with top_k_rest=drop


class TopKCache:
    """K teachers' top-k log-probabilities and token ids over the train split: values (K, N, L, k)."""

    def __init__(self, models: list[nn.Module], data, k: int, rest: str = "drop", batch_size: int = 256):
        self.vocab, self.rest = data.num_classes, rest
        self.k = min(k, self.vocab)
        values, ids = [], []
        with torch.inference_mode():
            for model in models:
                parts = [model(x).float().log_softmax(-1).topk(self.k, dim=-1)
                         for x, _ in data.eval_batches("train", batch_size)]
                values.append(torch.cat([p.values for p in parts]))
                ids.append(torch.cat([p.indices for p in parts]).to(torch.int32))
        self.values, self.ids = torch.stack(values).clone(), torch.stack(ids).clone()

    def __getitem__(self, key) -> torch.Tensor:
        """cache[:, idx] -> the teachers' logits (K, B * L, V) of the blocks idx (see the module docstring)."""
        return dense_logits(self.values[key], self.ids[key].long(), self.vocab, self.rest).flatten(1, -2)

    def nbytes(self) -> int:
        return self.values.nbytes + self.ids.nbytes


def dense_logits(values: torch.Tensor, ids: torch.Tensor, vocab: int, rest: str) -> torch.Tensor:
    """Top-k log-probabilities (..., k) at token ids (..., k) -> logits (..., vocab)."""
    fill = torch.full((*values.shape[:-1], 1), DROPPED, device=values.device, dtype=values.dtype)
    if rest == "spread" and vocab > values.shape[-1]:
        missing = (1 - values.exp().sum(-1, keepdim=True)).clamp_min(1e-12)
        fill = (missing / (vocab - values.shape[-1])).log()
    return fill.expand(*values.shape[:-1], vocab).scatter(-1, ids, values)


# ---------------------------------------------------------------- generation


@torch.no_grad()
def generate(model: nn.Module, prompts: torch.Tensor, length: int, decode: str = "greedy",
             temperature: float = 1.0, top_k: int = 0, beams: int = 4, seed: int = 0,
             context: int | None = None) -> torch.Tensor:
    """prompts (N, P) -> (N, P + length): greedy, sampled (seeded) or beam-searched continuations.
    The model sees at most its last `context` tokens (default: the prompt's length + length - 1)."""
    context = context or prompts.shape[1] + length - 1
    model.eval()
    if decode == "beam":
        return _beam(model, prompts, length, beams, context)
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    return one_token_at_a_time(model, prompts, length, 0.0 if decode == "greedy" else temperature, top_k,
                               generator, context)


def _beam(model: nn.Module, prompts: torch.Tensor, length: int, width: int, context: int) -> torch.Tensor:
    """Beam search: the `width` best partial continuations by summed log-probability; the best at the end."""
    n = prompts.shape[0]
    seqs = prompts.repeat_interleave(width, 0)                                   # (N * W, P)
    scores = torch.full((n, width), float("-inf"), device=prompts.device)
    scores[:, 0] = 0.0                                                           # start from one beam
    rows = torch.arange(n, device=prompts.device)[:, None]
    for _ in range(length):
        logp = model(seqs[:, -context:])[:, -1].float().log_softmax(-1)           # (N * W, V)
        vocab = logp.shape[-1]
        candidates = (scores.reshape(-1, 1) + logp).view(n, width * vocab)
        scores, flat = candidates.topk(width, dim=-1)                            # (N, W)
        beam, token = flat // vocab, flat % vocab
        seqs = seqs.view(n, width, -1)[rows, beam].reshape(n * width, -1)
        seqs = torch.cat([seqs, token.reshape(-1, 1)], dim=1)
    return seqs.view(n, width, -1)[:, 0]


# ---------------------------------------------------------------- sequence-level KD


def _teacher_checkpoint(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for pattern in ("teacher-s*", "model-s*", "student-s*"):
            found = sorted(path.glob(f"checkpoints/{pattern}/best.pt"))
            if found:
                return found[0]
    raise UserError(f"dataset.text.seqkd_teacher: no checkpoint at {path}; give a best.pt or a run directory "
                    f"of distill train")


def _model_section(checkpoint: Path) -> dict:
    """The resolved model section of a checkpoint: its model.json, else its run's config.yaml
    (the teacher section for a teacher-* key)."""
    import yaml

    if (checkpoint.parent / "model.json").is_file():
        return json.loads((checkpoint.parent / "model.json").read_text())
    config = checkpoint.parent.parent.parent / "config.yaml"
    if config.is_file():
        data = yaml.safe_load(config.read_text())
        section = data.get("teacher", {}).get("model") if checkpoint.parent.name.startswith("teacher") else None
        if isinstance(section or data.get("model"), dict):
            return section or data["model"]
    raise UserError(f"dataset.text.seqkd_teacher: cannot tell the architecture of {checkpoint} (no model.json "
                    f"and no config.yaml of its run); give a checkpoint inside a run directory")


def load_lm(path_text: str, block: int, vocab: int) -> tuple[nn.Module, Path]:
    """A language model from a checkpoint (or a run directory of `distill train`) and its path."""
    from distill.models import create_model

    checkpoint = _teacher_checkpoint(path_text)
    # a resolved model section has every key; a namespace, as this module may not import config
    model = create_model(SimpleNamespace(**_model_section(checkpoint)), (block,), vocab)
    state = load_checkpoint(checkpoint, "cpu")
    try:
        model.load_state_dict(state["model"] if "model" in state else state["models"][0])
    except (RuntimeError, KeyError) as err:
        raise UserError(f"dataset.text.seqkd_teacher: {checkpoint} does not fit the data's model "
                        f"({str(err).splitlines()[0]}); check the tokenizer and dataset.text.block") from None
    return model, checkpoint


def seqkd_blocks(x: torch.Tensor, y: torch.Tensor, cfg, vocab: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Training blocks rewritten by the teacher (see the module docstring): (x, y, note)."""
    t = cfg.text
    block = x.shape[1]
    if t.seqkd_prompt >= block + 1:
        raise UserError(f"dataset.text.seqkd_prompt: {t.seqkd_prompt} leaves nothing to generate in blocks of "
                        f"{block}; give fewer prompt tokens than dataset.text.block")
    model, checkpoint = load_lm(t.seqkd_teacher, block, vocab)
    prompts = x[:, :t.seqkd_prompt]
    settings = {"decode": t.seqkd_decode, "temperature": t.seqkd_temperature, "top_k": t.seqkd_top_k,
                "beams": t.seqkd_beams, "seed": t.seqkd_seed, "length": block + 1 - t.seqkd_prompt,
                "teacher": hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + prompts.numpy().tobytes()).hexdigest()[:12]
    path = checkpoint.parent / "generations" / f"{key}.pt"
    if path.is_file():
        sequences = load_checkpoint(path, "cpu")["sequences"]
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        parts = [generate(model, chunk.to(device), settings["length"], t.seqkd_decode, t.seqkd_temperature,
                          t.seqkd_top_k, t.seqkd_beams, t.seqkd_seed + i, context=block).cpu()
                 for i, chunk in enumerate(prompts.split(256))]
        sequences = torch.cat(parts)
        path.parent.mkdir(exist_ok=True)
        save_atomic({"settings": settings, "sequences": sequences}, path)
    how = {"greedy": "greedy", "beam": f"beam search (width {t.seqkd_beams})",
           "sample": f"sampled at T={t.seqkd_temperature}" + (f", top-{t.seqkd_top_k}" if t.seqkd_top_k else "")}
    note = (f"{how[t.seqkd_decode]} continuations of {len(prompts)} training prompts of {t.seqkd_prompt} tokens "
            f"by {checkpoint} (seed {t.seqkd_seed}), in {path}")
    return sequences[:, :-1].contiguous(), sequences[:, 1:].contiguous(), note
