"""Peak memory and time of one token-level KD step at a 32k vocabulary: the loss a chunk of positions
at a time, fused with the student's linear head (`distill.lm_chunk`), against the plain formula.

    .venv/bin/python benchmarks/lm_memory.py                 # about 8 minutes on 2 shared cores
    .venv/bin/python benchmarks/lm_memory.py --quick         # under a minute: a smoke test
    .venv/bin/python benchmarks/lm_memory.py --device cuda   # on a GPU (torch.cuda.max_memory_allocated)
    .venv/bin/python benchmarks/lm_memory.py --student hf    # the same student as a transformers GPT-2

One step as `engine.fit` runs it: the student's forward (its (N, V) logits, as the loop needs them),
the objective's terms (kd, T = 1, alpha = 0.5, from the teacher's top-32 cache: `lm-pydoc-kd`'s
loss), `mix`, the backward and the loop's (fused) AdamW step, for a GPT student (width 128, 2 blocks) over
`--batch` blocks of `--block` tokens at a vocabulary of `--vocab` (default 32,768) tokens. `--student hf`:
that student as `hf_causal_lm` over a transformers GPT-2 config of the same size (its lm_head tied to the
token embeddings, 64 outputs more than the vocabulary, cut by the wrapper: the Hugging Face path);
writes benchmarks/results/lm_memory-hf.json.
The top-32 cache is filled with random log-probabilities and distinct token ids (the shapes and
cost of a teacher's; running a 32k-vocabulary teacher over the split would dominate this process's
memory before the step).

Each variant runs in a process of its own (so one's freed memory cannot hide the other's peak):
two warm-up steps (the optimizer's state allocated), then on a CPU the resident set's high-water
mark is reset (/proc/self/clear_refs; glibc's mmap threshold fixed at 128 KiB, MALLOC_MMAP_THRESHOLD_,
so freed tensors leave the resident set; the times come from a second process with glibc's defaults;
where the reset is refused, the first step's rise in ru_maxrss is
used and said so) and the peak of the next step is its high-water mark over the resident set before
it; on a GPU torch.cuda.max_memory_allocated over memory_allocated before the step. Then `--steps`
timed steps (the median; on a CPU the process's CPU time, one thread, as this machine is shared and
wall time counts the waits for a core too; the wall-time ratios are kept beside). Variants alternate
over `--rounds` rounds (plain, chunked, chunked, plain, ...); `peak_ratio` is chunked's median peak
over plain's, `time_ratio` the median of the rounds' paired time ratios. Writes
benchmarks/results/lm_memory.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import common  # noqa: E402  (puts the repository on sys.path)


#: glibc serves allocations from this size up by mmap and gives them back when freed, so the resident set
#: follows what is alive (by default the threshold rises to 32 MiB after the first free, and a chunk's
#: freed tensors would stay in the heap, counted as resident)
MMAP_THRESHOLD = 128 * 1024


def _rss(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(field)


def child(args) -> dict:
    """One variant: its step's peak memory above what it held before the step, and its step times."""
    import torch

    from distill.config import load_config
    from distill.engine import make_optimizer
    from distill.data import Data
    from distill.methods.objectives import Batch, make_objective, mix
    from distill.models.gpt import GPT
    from distill.training.lm import TopKCache

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vocab, block, batch, k = args.vocab, args.block, args.batch, 32
    g = torch.Generator().manual_seed(0)
    blocks = batch * (args.steps + 3)
    tokens = torch.randint(0, vocab, (blocks, block + 1), generator=g)
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    splits = {"train": x, "val": x[:1], "test": x[:1]}
    data = Data(name="synthetic", num_classes=vocab, input_shape=(block,), x=splits,
                y={"train": y, "val": y[:1], "test": y[:1]}, source_index={s: torch.arange(len(v)) for s, v in
                                                                         splits.items()},
                augment="none", shift=0, text=SimpleNamespace(description="random tokens"))
    chunk = args.chunk if args.variant == "chunked" else 0
    cfg = load_config(None, ["distill.method=kd", "distill.temperature=1.0", "distill.alpha=0.5",
                             f"distill.top_k={k}", f"distill.lm_chunk={chunk}"])
    torch.manual_seed(0)
    teacher = GPT(vocab=vocab, context=block, width=8, depth=1, heads=1)  # never run: the cache below stands in
    student = (GPT(vocab=vocab, context=block, width=128, depth=2, heads=4) if args.student == "gpt" else
               hf_student(vocab, block)).to(device)
    objective, info = make_objective(cfg.distill, [teacher], data, device, cache="cached")
    cache = TopKCache.__new__(TopKCache)
    cache.vocab, cache.rest, cache.k = vocab, "drop", k
    cache.values = torch.randn(1, blocks, block, k, generator=g).log_softmax(-1).sort(-1, descending=True)[0].to(device)
    start = torch.randint(0, vocab, (1, blocks, block, 1), generator=g)
    cache.ids = ((start + torch.arange(k) * 97) % vocab).to(torch.int32).to(device)  # k distinct ids per position
    objective.signal.table, objective.signal.ready = cache, True
    objective.to(device).train()
    objective.bind(student)  # as engine.fit does
    optimizer = make_optimizer(student.parameters(), load_config(None, ["train.optimizer=adamw"]).train)  # the loop's

    def step(i: int) -> float:
        idx = torch.arange(i * batch, (i + 1) * batch, device=device)
        logits = student(x[idx]).flatten(0, 1)
        loss = mix(objective.terms(Batch(x[idx], y[idx].flatten(), idx), logits, [[]], 0.1), objective.weights(0.1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # a host sync

    how = "cuda.max_memory_allocated" if device.type == "cuda" else "VmHWM after /proc/self/clear_refs"
    if device.type == "cpu" and not _can_reset_peak():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        loss = step(0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        how = "ru_maxrss rise over the first step (clear_refs refused; includes the optimizer's state)"
    else:
        step(0), step(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            loss = step(2)
            peak = torch.cuda.max_memory_allocated() - before
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            before = _rss("VmRSS")
            loss = step(2)
            peak = _rss("VmHWM") - before
    seconds, cpu = [], []
    for i in range(3, 3 + args.steps):
        started, started_cpu = time.perf_counter(), time.process_time()
        step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"peak_bytes": peak, "seconds": statistics.median(seconds), "cpu_seconds": statistics.median(cpu),
            "loss": loss, "how": how,
            "cache": info["cache"], "threads": torch.get_num_threads(), "fused": info.get("lm_chunk_fused")}


def hf_student(vocab: int, block: int):
    """The gpt student's size as a transformers GPT-2 (no dropout; 64 head outputs beyond the vocabulary)."""
    import tempfile

    import transformers

    from distill.models.hf import HFCausalLM

    folder = tempfile.mkdtemp(prefix="lm_memory-hf-")
    transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=block, vocab_size=vocab + 64,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).save_pretrained(folder)
    return HFCausalLM(folder, vocab)


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _rss("VmHWM") > 0
    except OSError:
        return False


def run_child(args, variant: str) -> dict:
    """The variant's peak from a process with the mmap threshold fixed, its times from one without (every
    allocation mapped and faulted in anew would slow the many chunks' tensors more than plain's few)."""
    memory = _child_process(args, variant, {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})
    timing = _child_process(args, variant, {})
    return {**memory, "seconds": timing["seconds"], "cpu_seconds": timing["cpu_seconds"]}


def _child_process(args, variant: str, extra_env: dict) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_MMAP_THRESHOLD_"}
    env = {**env, **extra_env, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, __file__, "--child", variant, "--vocab", str(args.vocab), "--block", str(args.block),
               "--batch", str(args.batch), "--chunk", str(args.chunk), "--steps", str(args.steps),
               "--threads", str(args.threads), "--device", args.device, "--student", args.student]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--block", type=int, default=128, help="tokens per block")
    parser.add_argument("--batch", type=int, default=16, help="blocks per step (positions: batch x block)")
    parser.add_argument("--chunk", type=int, default=64, help="positions per chunk (distill.lm_chunk)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process (the median)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the two variants, order alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke test")
    parser.add_argument("--student", choices=["gpt", "hf"], default="gpt",
                        help="gpt: distill's model; hf: hf_causal_lm over a transformers GPT-2 of the same size")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/lm_memory[-hf].json")
    parser.add_argument("--child", choices=["plain", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.variant = args.child
        print(json.dumps(child(args)))
        return {}
    if args.quick:
        args.batch, args.block, args.chunk, args.steps, args.rounds = 4, 64, 64, 2, 1
    if args.out is None:
        args.out = str(common.RESULTS / f"lm_memory{'' if args.student == 'gpt' else '-hf'}"
                                        f"{'-quick' if args.quick else ''}.json")
    load = os.getloadavg()
    found: dict[str, list[dict]] = {"plain": [], "chunked": []}
    for round_ in range(args.rounds):
        for variant in (["plain", "chunked"] if round_ % 2 == 0 else ["chunked", "plain"]):
            found[variant].append(run_child(args, variant))
    peak = {v: statistics.median(r["peak_bytes"] for r in rows) for v, rows in found.items()}
    clock = "seconds" if args.device != "cpu" else "cpu_seconds"  # one thread on a shared CPU: its busy time
    seconds = {v: statistics.median(r[clock] for r in rows) for v, rows in found.items()}
    positions = args.batch * args.block

    def ratios(key):
        return [round(c[key] / p[key], 4) for c, p in zip(found["chunked"], found["plain"])]

    result = {
        "peak_ratio": round(peak["chunked"] / peak["plain"], 4),
        "time_ratio": round(statistics.median(ratios(clock)), 4),
        "time_ratio_rounds": ratios(clock), "wall_time_ratio_rounds": ratios("seconds"),
        "clock": ("process CPU time of a step (one thread; the machine is shared, so wall time also counts "
                  "waiting for a core)" if clock == "cpu_seconds" else "wall time of a step, synchronised"),
        "plain_peak_mib": round(peak["plain"] / 2**20, 1), "chunked_peak_mib": round(peak["chunked"] / 2**20, 1),
        "plain_step_seconds": round(seconds["plain"], 4), "chunked_step_seconds": round(seconds["chunked"], 4),
        "logits_mib": round(positions * args.vocab * 4 / 2**20, 1),  # one float32 (positions, vocab) tensor
        "same_loss": all(abs(c["loss"] - p["loss"]) <= 1e-4 * abs(p["loss"])
                         for c, p in zip(found["chunked"], found["plain"])),
        "vocab": args.vocab, "positions": positions, "block": args.block, "batch_blocks": args.batch,
        "chunk": args.chunk, "rounds": args.rounds, "timed_steps_per_process": args.steps,
        "device": args.device, "torch_threads": found["plain"][0]["threads"],
        "memory": found["plain"][0]["how"], "cache": found["plain"][0]["cache"],
        "student": "gpt width 128, 2 blocks, 4 heads, linear head (fused when chunked)" if args.student == "gpt" else
                   "hf_causal_lm: transformers GPT-2, width 128, 2 blocks, 4 heads, lm_head tied to the embeddings, "
                   "vocab + 64 outputs cut to vocab (fused when chunked)",
        "fused": found["chunked"][0]["fused"],
        "loss": "kd, T = 1, alpha = 0.5, teacher's top-32 cache (random values)",
        "loadavg_before": [round(v, 2) for v in load], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(common.table([(v, peak[v] / 2**20, seconds[v]) for v in found], ("variant", "peak MiB", "step s")))
    print(f"peak_ratio {result['peak_ratio']}, time_ratio {result['time_ratio']} (one (N, V) float32 tensor: "
          f"{result['logits_mib']} MiB); load {result['loadavg_before']}")
    print(f"wrote {common.write_result(__file__, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
