"""Tokens per second of token-level KD from a cached top-k teacher against cross-entropy training
of the same language-model student, and the cache's memory against full-vocabulary logits.

    .venv/bin/python benchmarks/lm_kd.py              # a few minutes on 2 idle cores (more when shared)
    .venv/bin/python benchmarks/lm_kd.py --quick      # under a minute: a smoke test

The student is `lm-pydoc-kd`'s (a GPT of 2 blocks, width 64, 4 heads), on pydoc byte tokens in
blocks of 64, trained by `engine.fit` three ways on the same blocks, in rounds (plain, cached,
online, plain, cached, online, ...; the order rotates) so that this shared machine's drift hits
them alike:
  plain   next-token cross-entropy (the engine's default objective)
  cached  the preset's kd (T = 1, alpha = 0.5) from the teacher's top `--top-k` log-probabilities
          and token ids per position, computed once before training (distill.training.lm.TopKCache;
          the dense teacher logits of a batch are rebuilt from them at every step)
  online  the same kd with the teacher run on every batch (eval mode, no grad): what caching saves
The teacher is `lm-pydoc-kd`'s architecture (4 blocks, width 128), untrained: its top k have
the same shapes and cost as a trained one's. A fit's speed is the training tokens of an epoch
over the median epoch time of its training phase as the engine reports it (evaluation
excluded, the first epoch dropped as warm-up); each figure is the median over rounds of the
round's ratio to plain (paired). The cache's one-off build time is reported on its own.

Memory: the cache holds float32 log-probabilities and int32 token ids, k of each per position:
8k bytes, against 4V bytes for full-vocabulary float32 logits. Both are measured here for the
byte vocabulary (V = 256) and given by the same formula for GPT-2's vocabulary (V = 50257),
where a full-logit cache of even this small corpus would not fit in memory.
Writes benchmarks/results/lm_kd.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import common  # noqa: E402  (puts the repository on sys.path)

from distill import engine  # noqa: E402
from distill.config import load_config  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.training.lm import TopKCache  # noqa: E402
from distill.methods.objectives import make_objective  # noqa: E402

GPT2_VOCAB = 50257


def epoch_seconds(cfg, data, objective, seed) -> list[float]:
    """Seconds of each epoch's training phase but the first (warm-up), as the engine reports them."""
    student = engine.new_model(cfg.model, data, seed)
    seconds: list[float] = []
    engine.fit_one(student, data, cfg.train, seed=seed, objective=objective, device=torch.device("cpu"),
                   on_epoch=lambda report: seconds.append(report["seconds"]))
    return seconds[1:]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds of the three variants")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is dropped)")
    parser.add_argument("--blocks", type=int, default=1024, help="training blocks of 64 tokens")
    parser.add_argument("--top-k", type=int, default=32, help="teacher tokens kept per position (distill.top_k)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on a "
                        "shared machine); 0 = all")
    parser.add_argument("--quick", action="store_true", help="tiny and fast: a smoke test")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "lm_kd.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs, args.blocks = 1, 2, 64

    cfg = load_config("lm-pydoc-kd", [
        "seeds=[0]", f"train.epochs={args.epochs}", "train.device=cpu", f"train.threads={args.threads}",
        f"dataset.train_subset={args.blocks}", f"distill.top_k={args.top_k}"]
        + (["dataset.text.documents=12"] if args.quick else []))
    engine.setup_torch(cfg.train)
    data = load_data(cfg.dataset)
    teacher = engine.new_model(cfg.teacher.model, data, 123)
    started = time.perf_counter()
    cache = TopKCache([teacher.eval()], data, cfg.distill.top_k, cfg.distill.top_k_rest)
    build_seconds = time.perf_counter() - started
    cached, info = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), cache="cached")
    online, _ = make_objective(cfg.distill, [teacher], data, torch.device("cpu"), cache="online")
    variants = {"plain": None, "cached": cached, "online": online}

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.rounds):
        for name in names[round_ % 3:] + names[:round_ % 3]:
            times[name].append(statistics.median(epoch_seconds(cfg, data, variants[name], round_)))

    tokens = data.y["train"].numel()
    positions, vocab, k = tokens, data.num_classes, cache.k
    full_bytes = positions * vocab * 4
    ratio = {name: statistics.median(a / b for a, b in zip(times[name], times["plain"])) for name in variants}
    speed = {name: tokens / statistics.median(values) for name, values in times.items()}
    result = {
        "kd_cached_over_plain": round(ratio["cached"], 4),     # time of a cached-KD epoch / a CE epoch
        "kd_online_over_plain": round(ratio["online"], 4),
        "cached_over_plain_rounds": [round(a / b, 3) for a, b in zip(times["cached"], times["plain"])],
        "plain_tokens_per_s": round(speed["plain"]),
        "cached_tokens_per_s": round(speed["cached"]),
        "online_tokens_per_s": round(speed["online"]),
        "cache_build_seconds": round(build_seconds, 3),
        "cache_bytes": cache.nbytes(),
        "full_logits_bytes": full_bytes,
        "cache_over_full_logits": round(cache.nbytes() / full_bytes, 4),
        "cache_bytes_per_position": 8 * k,
        "full_logits_bytes_per_position_gpt2_vocab": 4 * GPT2_VOCAB,
        "cache_over_full_logits_gpt2_vocab": round(8 * k / (4 * GPT2_VOCAB), 6),
        "top_k": k, "vocab": vocab, "train_tokens": tokens, "block": data.input_shape[0],
        "clock": "wall time of the training phase, as engine.fit reports each epoch's seconds",
        "method": "median over paired rounds of (variant / plain), each the median of a fit's epochs",
        "rounds": args.rounds, "epochs_measured_per_fit": args.epochs - 1,
        "student": "gpt width 64, 2 blocks, 4 heads (lm-pydoc-kd)",
        "teacher": "gpt width 128, 4 blocks, 4 heads (lm-pydoc-kd's), untrained",
        "batch_size": cfg.train.batch_size, "torch_threads": torch.get_num_threads(),
        "loss": {key: info[key] for key in ("method", "reduction", "t2_scaling", "temperature", "alpha", "cache")},
    }
    print(f"{'variant':<8} {'tokens/s':>9} {'time / plain':>13}   median of {args.rounds} paired rounds, "
          f"{args.epochs - 1} epochs each, {tokens} training tokens")
    for name in variants:
        print(f"{name:<8} {speed[name]:>9.0f} {ratio[name]:>13.3f}")
    print(f"cache: top {k} of {vocab}: {cache.nbytes() / 2**20:.2f} MiB against {full_bytes / 2**20:.2f} MiB of "
          f"float32 logits ({result['cache_over_full_logits']:.3f}); at GPT-2's vocabulary "
          f"{result['cache_over_full_logits_gpt2_vocab']:.5f}; built in {build_seconds:.2f} s")
    print(f"wrote {common.write_result(__file__, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
