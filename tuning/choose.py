"""Choosing the best configuration of a sweep, and saying how sure that choice is.

A configuration is the sampled values without the seed. Only configurations whose trials
all finished (status `done`) can be chosen: a trial stopped by ASHA, interrupted or failed
is partial and never names the best. For each complete configuration: n (its seeds), the
mean of its trials' best target metric and a 95% t-interval. The best mean is compared with
the runner-up by a paired t-test over the seeds they share; when the difference's 95%
interval contains 0 (or fewer than two seeds are shared) sweep.json and the printed summary
say in words that the two are not separable.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from typing import Optional


def _interval(values: list[float]) -> Optional[list[float]]:
    """The 95% t-interval of the mean (None with fewer than two values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    mean, half = statistics.fmean(values), stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return [mean - half, mean + half]


def compare(best: dict, other: dict, metric: str) -> dict:
    """Paired comparison by seed of two configurations' best target metric."""
    from scipy import stats

    a, b = best["by_seed"], other["by_seed"]
    seeds = sorted(set(a) & set(b), key=str)
    diffs = [a[s] - b[s] for s in seeds]
    out = {"seeds": len(seeds), "mean_difference": statistics.fmean(diffs) if diffs else None,
           "ci95": None, "p_value": None, "separable": False}
    if len(diffs) < 2:
        out["words"] = (f"not separable: the best and the runner-up share {len(diffs)} seed(s); a paired test "
                        f"needs two or more (add seeds)")
        return out
    out["ci95"] = _interval(diffs)
    if statistics.stdev(diffs) == 0:
        out["p_value"] = 0.0 if diffs[0] != 0 else 1.0
    else:
        out["p_value"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    low, high = out["ci95"]
    out["separable"] = not low <= 0 <= high
    what = (f"{metric} difference {out['mean_difference']:+.4f} (95% CI {low:+.4f}..{high:+.4f}, paired over "
            f"{len(seeds)} seeds, p={out['p_value']:.3g})")
    out["words"] = (f"separable: {what}" if out["separable"] else
                    f"not separable: {what}; the interval contains 0, so the choice may be the seeds' luck")
    return out


def best_config(trials: list[dict], metric: str, mode: str, *, provisional: Optional[str] = None) -> Optional[dict]:
    """The complete configuration with the best mean over seeds, its interval, the runner-up, and
    a paired test of the two (see the module docstring); None when no configuration is complete."""
    groups: dict[str, list[dict]] = {}
    for trial in trials:
        params = {k: v for k, v in trial["params"].items() if k != "seeds"}
        groups.setdefault(json.dumps(params, sort_keys=True, default=str), []).append(trial)
    key = f"best_{metric}"
    summaries = []
    for params, members in groups.items():
        if any(t["status"] != "done" or t.get(key) is None for t in members):
            continue  # a partial configuration never names the best
        values = [t[key] for t in members]
        summaries.append({"params": json.loads(params), f"mean_best_{metric}": statistics.fmean(values),
                          "ci95": _interval(values), "seeds": len(values), "trials": [t["trial"] for t in members],
                          "by_seed": {t.get("seed", t["trial"]): t[key] for t in members}})
    if not summaries:
        return None
    # a tie is broken by the configuration's values, so every layout of a sweep chooses alike
    summaries.sort(key=lambda s: json.dumps(s["params"], sort_keys=True, default=str))
    summaries.sort(key=lambda s: s[f"mean_best_{metric}"], reverse=mode == "max")
    best = summaries[0]
    chosen = {k: v for k, v in best.items() if k != "by_seed"}
    chosen["left_out"] = len(groups) - len(summaries)  # configurations with a partial trial
    chosen["provisional"] = provisional
    if len(summaries) > 1:
        runner_up = summaries[1]
        chosen["runner_up"] = {k: v for k, v in runner_up.items() if k != "by_seed"}
        chosen["versus_runner_up"] = compare(best, runner_up, metric)
    else:
        chosen["runner_up"], chosen["versus_runner_up"] = None, {"separable": False, "words": "no runner-up"}
    return chosen


def print_table(summary: dict, top: int = 10) -> None:
    """The best trials, one line each (best and last epoch of the target), then the choice and the counts."""
    metric = summary["metric"]
    key = f"best_{metric}"
    ranked = sorted((t for t in summary["trials"] if t[key] is not None),
                    key=lambda t: t[key], reverse=summary["mode"] == "max")
    print(f"target: {summary['target']['description']}", file=sys.stderr)
    print(f"{'trial':<52} {'status':<11} {'epochs':>6} {key:>13} {'last ' + metric:>13}", file=sys.stderr)
    for t in ranked[:top]:
        last = t["last"].get(metric)
        print(f"{t['trial'][:52]:<52} {t['status']:<11} {t['epochs']:>6} {t[key]:>13.4f} "
              f"{'' if last is None else f'{last:.4f}':>13}", file=sys.stderr)
    chosen = summary.get("best_config")
    if chosen:
        values = ", ".join(f"{k}={v}" for k, v in chosen["params"].items())
        interval = chosen["ci95"]
        spread = f" (95% CI {interval[0]:.4f}..{interval[1]:.4f})" if interval else ""
        note = f" [provisional: {chosen['provisional']}]" if chosen.get("provisional") else ""
        print(f"best configuration (mean over {chosen['seeds']} seed(s)): {values or 'the base config'}: "
              f"{key} {chosen['mean_' + key]:.4f}{spread}{note}", file=sys.stderr)
        print(f"versus the runner-up: {chosen['versus_runner_up']['words']}", file=sys.stderr)
    else:
        print("no best configuration: no configuration has all its trials finished", file=sys.stderr)
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    print(f"{len(summary['trials'])} trials ({counts}), {summary['epochs']} target epochs in all; "
          f"sweep.json in {summary['path']}", file=sys.stderr, flush=True)
