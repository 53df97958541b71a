"""The token-level objective of a language model when it does more than score the loop's logits:
on-policy batches (gkd) and the loss computed a chunk of positions at a time (`distill.lm_chunk`).

    objective, info = make_objective(cfg.distill, [teacher], data, device)   # TokenLevel for gkd or lm_chunk > 0
    terms = objective.terms(batch, logits, features, progress)              # what Distill.terms gives

`TokenLevel` is a `Distill` (the same method, options, teacher signal and mixer) and keeps the
interface: the loop cannot tell it from the plain objective, except that the loop hands it the model
it trains (`bind`), so the model trains alone (not stacked with other seeds).

**On-policy batches** (gkd, see distill.methods.lm_losses): with probability `gkd_lambda`, drawn
from a generator seeded by the objective's seed and the step, the student samples `gkd_length`
tokens after each training block's first `block + 1 - gkd_length` tokens (`training.lm.generate`, in
eval mode and without gradient, seeded by the step); it is then run on those sequences (with
gradient) and the teachers score them online; the loss is taken at the positions that predict a
generated token. The loop's logits of the data batch are not used on such a step.

**Chunks** (`distill.lm_chunk` = n > 0): the method's terms are means over positions, so the terms of
N positions are sum_c (n_c / N) terms(chunk c). Where the student's head is an `nn.Linear` (the gpt
model's `head`; hf_causal_lm's lm_head, whose first V outputs are the logits: its weight's first V rows
are used, a tied weight's gradient reaching the embeddings), the loss is fused with it (`FusedHead`, after
Liger-Kernel's fused linear JSD): the head's input h (N, W) is read by a forward hook and each chunk's
logits h_c W^T + b are made, scored and differentiated (torch.autograd.grad of the terms' mix by
`weights(progress)`, one pass) in the forward, so the loss's graph holds h and the gradients for h
(N, W) and the head (V, W), never an (N, V) tensor; the backward only scales them. The mix's
gradient is carried by one term (`chunked_terms`): the loop differentiates only the mix. The
teacher's top-k cache is made dense a chunk at a time too. What is still (N, V): the loop's forward
computes the student's logits once (no copy of them is kept for the backward), and an online
teacher's logits. Fused only where the loop's logits are the head's outputs, unchanged (checked every
step, `_fused_head`); else, or with no `nn.Linear` head, the chunks go through `torch.utils.checkpoint`
over the loop's logits (each chunk's loss recomputed in the backward), and the run's loss info says
why (`lm_chunk_fused`, in summary.json). Only methods whose terms are per-position means can be
chunked (batchmean reduction, a configured temperature, no random draws); `tests/test_lm_chunked.py`
and `tests/test_lm_chunked_hf.py` hold values and gradients to the plain formula.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from distill.errors import UserError
from distill.methods.objectives import Distill
from distill.training.lm import TopKCache, dense_logits, generate


def linear_head(model: nn.Module) -> Optional[nn.Linear]:
    """The model's output layer when it is an nn.Linear: get_output_embeddings() (a transformers model's
    lm_head, or the hf_causal_lm wrapper's, whose first `vocab` outputs are its logits), or `head` (gpt)."""
    model = getattr(model, "_orig_mod", model)
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else getattr(model, "head", None)
    return head if isinstance(head, nn.Linear) else None


class FusedHead(torch.autograd.Function):
    """The terms of the logits h W^T + b, `chunk` rows at a time, and the gradient of their mix
    L = sum_t weights[t] * term_t, made in the forward (see the module docstring). fn(logits (n, V), rows: a
    slice) -> the terms of those rows (means over them). Returns (L, *the terms' values): L differentiable, the
    values constants; `names` (an empty list) is filled with the terms' names, in the values' order."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, fn, chunk, weights, names):
        n = hidden.shape[0]
        values: dict = {}
        inputs = [hidden.detach(), weight.detach()] + ([bias.detach()] if bias is not None else [])
        grads = [torch.zeros_like(t) for t in inputs]
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            share = (rows.stop - rows.start) / n
            with torch.enable_grad():
                h, w, *b = [inputs[0][rows].requires_grad_()] + [t.requires_grad_() for t in inputs[1:]]
                terms = fn(F.linear(h, w, b[0] if b else None), rows)
                for name, value in terms.items():
                    values[name] = values.get(name, 0.0) + value.detach().float() * share
                mixed = [weights[name] * value for name, value in terms.items() if weights.get(name, 0) != 0]
                if mixed and any(part.requires_grad for part in mixed):
                    got = torch.autograd.grad(sum(mixed) * share, [h, w, *b])
                    grads[0][rows] = got[0]
                    for total, part in zip(grads[1:], got[1:]):
                        total += part
        names.extend(values)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(*grads)
        out = tuple(values.values())
        ctx.mark_non_differentiable(*out)
        return (sum(weights.get(name, 0) * value for name, value in values.items()), *out)

    @staticmethod
    def backward(ctx, g, *constants):
        grads = [part * g.to(part.dtype) for part in ctx.saved_tensors]
        return grads[0], grads[1], grads[2] if ctx.has_bias else None, None, None, None, None


def chunked_terms(fn: Callable, logits: torch.Tensor, chunk: int, hidden: Optional[torch.Tensor] = None,
                  head: Optional[tuple] = None, weights: Optional[dict] = None) -> dict:
    """The terms fn(logits, all rows) (means over the N rows), computed `chunk` rows at a time.

    Fused with `head` = (weight (V, W), bias (V,) or None) over `hidden` (N, W) when both are given: the
    gradient is that of mix(terms, `weights`), carried by the first term of nonzero weight as
    (L - L.detach()) / its weight (zero in value); the other terms are constants, so a term alone has no
    gradient of its own (what makes the gradients one pass: the loop only ever differentiates the mix).
    Else over the rows of `logits` (N, V), each chunk recomputed in the backward, every term with its own
    gradient."""
    n = logits.shape[0]
    if hidden is not None and head is not None:
        names: list = []
        loss, *values = FusedHead.apply(hidden, head[0], head[1], fn, chunk, dict(weights or {}), names)
        terms = dict(zip(names, values))
        carrier = next((name for name in names if (weights or {}).get(name, 0) != 0), None)
        if carrier is not None:
            terms[carrier] = terms[carrier] + (loss - loss.detach()) / weights[carrier]
        return terms
    total: dict = {}
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        part = checkpoint(lambda z, rows=rows: fn(z, rows), logits[rows], use_reentrant=False)
        for name, value in part.items():
            scaled = value * ((rows.stop - rows.start) / n)
            total[name] = scaled if name not in total else total[name] + scaled
    return total


class TokenLevel(Distill):
    """A method's terms over a language model's positions: on-policy batches, chunks (module docstring)."""

    runs_student = True

    def __init__(self, cfg, signal, combine, seed=0, projections=None, teacher_layers=None, epochs=None):
        super().__init__(cfg, signal, combine, seed, projections, teacher_layers, epochs)
        m = self.method
        self.policy = m.values(cfg, "policy")  # gkd: on_policy, temperature, length; {} otherwise
        if self.policy.get("on_policy") and not signal.models:
            raise UserError(f"distill.teacher: {cfg.method}'s teacher scores the student's own generations; "
                            f"give a teacher model (a run directory or checkpoint), not a predictions file")
        data = getattr(signal, "data", None)
        if data is None or getattr(data, "text", None) is None:
            what = f"distill.method: {cfg.method} is" if m.objective else "distill.lm_chunk: chunks are"
            raise UserError(f"{what} for language models only (token blocks); use a text dataset, or "
                            f"{'another method' if m.objective else 'distill.lm_chunk=0'}")
        if m.signal != "logits" or m.temperature != "config" or m.draws or m.reduction != "batchmean" \
                or m.mix == "labels":
            raise UserError(f"distill.lm_chunk: {cfg.method}'s terms are not means over positions (or it draws "
                            f"random numbers); set distill.lm_chunk=0, or use kd, jsd, reverse_kl, skew_kl, tvd, "
                            f"dkd or gkd")
        self.chunk = cfg.lm_chunk
        if self.policy.get("on_policy"):
            block = data.input_shape[0]
            if self.policy["length"] > block:
                raise UserError(f"distill.gkd_length: {self.policy['length']} tokens do not fit in blocks of "
                                f"{block} (the prompt needs one); give at most {block}")
        self._student: list = []  # the bound model (a list: not a submodule, its parameters are the loop's)
        self._head: list = [None]  # its nn.Linear head while the chunks are fused with it
        self._kept: Optional[tuple] = None  # the head's (input, output) in this step's training forward
        self._hook = None
        self.info: dict = {}  # the run's loss info (make_objective): lm_chunk_fused says how the chunks ran

    def bind(self, model: nn.Module) -> None:
        self._student = [model]
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        head = linear_head(model)
        self._head = [head]
        if self.chunk and head is None:
            self._unfused(f"the student ({type(getattr(model, '_orig_mod', model)).__name__}) has no nn.Linear "
                          f"output layer (`head` or get_output_embeddings())")
        elif self.chunk:
            self._hook = head.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled():  # a training forward, not evaluation or generation
            self._kept = (inputs[0], output)

    def _unfused(self, why: str) -> None:
        """Chunks over the loop's logits from now on, and the run's loss info says why (summary.json)."""
        self._head = [None]
        self.info["lm_chunk_fused"] = (f"not fused: {why}; each chunk's loss is recomputed from the loop's "
                                       f"logits in the backward (the same values, the (N, V) logits kept)")

    def _fused_head(self, kept, logits: torch.Tensor, first: Optional[int]) -> Optional[tuple]:
        """(the head's input (N, W), (its weight, bias) rows that make the loop's `logits` (N, V)), or None.

        The loss may be fused with the head only where the loop's logits are its outputs, unchanged: the
        first V of them (hf_causal_lm cuts its model's vocabulary to the data's after the head, and a tied
        head's weight is the input embeddings': the gradient reaches them through the slice). A model
        that changes them after the head (a logit scale, a soft cap: Granite, Cohere, Gemma 2 and 3 in
        transformers) is caught by comparing the outputs with the logits at the first and last position,
        exactly, every step (no arithmetic); the chunks then run unfused, and the loss info says so."""
        head = self._head[0]
        if head is None:
            return None
        if kept is None:
            self._unfused("the student's training forward did not run its nn.Linear head")
            return None
        hidden, out = (t if first is None else t[:, first:] for t in kept)
        hidden, out = hidden.flatten(0, -2), out.flatten(0, -2)
        n, vocab = logits.shape
        ends = [0, n - 1]
        if hidden.shape[0] != n or out.shape[0] != n or out.shape[-1] < vocab or \
                not torch.equal(out.detach()[ends, :vocab].to(logits.dtype), logits.detach()[ends]):
            self._unfused("the student's logits are not its nn.Linear head's outputs (its model changes them "
                          "after the head, e.g. a logit scale or soft cap)")
            return None
        rows = slice(None) if vocab == head.out_features else slice(0, vocab)
        self.info["lm_chunk_fused"] = "fused with the student's nn.Linear head" + \
            ("" if vocab == head.out_features else f" (its first {vocab} of {head.out_features} outputs)")
        return hidden, (head.weight[rows], None if head.bias is None else head.bias[rows])

    def terms(self, batch, logits, features, progress):
        self.signal.prepare()
        temperature = self.temperature(progress)
        options = self._options(progress, logits)
        drawn = self._on_policy(batch, progress)
        if drawn is None:  # the data: every position, the teachers from the signal (the cache a chunk at a time)
            y, first = batch.y, None
            teacher = self._teacher_rows(batch)
        else:
            x, y, logits, first = drawn
            scores = self.signal.logits(x, None).unflatten(1, x.shape)[:, :, first:].flatten(1, 2)
            y, logits = y[:, first:].flatten(), logits[:, first:].flatten(0, 1)
            teacher = lambda rows: scores[:, rows]  # noqa: E731
        kept, self._kept = self._kept, None

        def fn(z, rows):
            return self.logit_terms(z.float(), teacher(rows), y[rows], temperature, options)

        if not self.chunk:
            return fn(logits, slice(None))
        fused, kept = self._fused_head(kept, logits, first), None  # (kept: the head's output, free it now)
        if fused is None:
            return chunked_terms(fn, logits, self.chunk)
        return chunked_terms(fn, logits, self.chunk, fused[0], fused[1], self.weights(progress))

    def _teacher_rows(self, batch) -> Callable:
        """rows (a slice of the batch's B * L positions) -> the teachers' logits there (K_t, n, V)."""
        table = getattr(self.signal, "table", None)
        if isinstance(table, TopKCache) and self.chunk:
            values, ids = table.values[:, batch.idx].flatten(1, -2), table.ids[:, batch.idx].flatten(1, -2)
            return lambda rows: dense_logits(values[:, rows], ids[:, rows].long(), table.vocab, table.rest)
        scores = self.signal.logits(batch.x, batch.idx)
        return lambda rows: scores[:, rows]

    def _on_policy(self, batch, progress):
        """None (a data batch), or (x, y, the student's logits on x, the first position predicting a
        generated token) of sequences the student wrote from the batch's prompts (module docstring)."""
        share = self.policy.get("on_policy", 0.0)
        if share == 0:
            return None
        seed = self.step_seed(progress)
        if share < 1 and torch.rand((), generator=torch.Generator().manual_seed(seed)).item() >= share:
            return None
        model = self._student[0]
        block, length = batch.x.shape[-1], self.policy["length"]
        was_training = model.training
        sequences = generate(model, batch.x[:, :block + 1 - length], length, "sample", self.policy["temperature"],
                             seed=seed + 1, context=block)  # eval mode, no gradient
        model.train(was_training)
        x, y = sequences[:, :-1], sequences[:, 1:]
        return x, y, model(x), block - length
