"""Means with Student-t confidence intervals over seeds, grouped tables, paired comparisons.

    from results import load, table, format_table, compare
    df = load("runs/")
    print(format_table(table(df, by=["role", "generation"])))     # 91.6 ± 1.2 (n=3)
    c = compare(df, df.role == "student", df.role == "teacher", "test_acc")
    print(c)                                                       # +0.8 (95% CI +0.1 to +1.5, n=3 paired seeds)

Every number carries its n: the count of seeds (rows) that went into it. Where several
comparisons share one family (methods against one baseline, experiments against the first),
`holm` adjusts their p-values (Holm's step-down) and `holm_verdict` words the result. An
interval is clipped to what its quantity can take (`limits`: an accuracy in [0, 100] %, an
NLL >= 0); an interval from 2 seeds is marked as such (its t factor is 12.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from .labels import ROLE_ORDER

# the model-identifying columns a table groups by, in this order, where present
GROUP_COLUMNS = ["experiment", "role", "name", "generation", "member", "size", "combine"]

# figures that are fractions in [0, 1] and are shown in percent
_PERCENT_WORDS = ("acc", "ece", "agreement", "gap_recovered")


LEVEL = 0.05  # the family-wise error rate of Holm-adjusted verdicts (two-sided, as the 95% CIs)
TIE = 1e-9  # values closer than this (relative to their size) are equal: float rounding, not spread
WIDE = 2  # an interval from this many seeds is marked: t_{0.975, 1} = 12.7 standard errors each side


def is_fraction_metric(metric: str) -> bool:
    """Whether `table(..., percent=True)` shows `metric` in percent (accuracies, ECE, agreement)."""
    return any(word in metric for word in _PERCENT_WORDS)


def limits(metric: str, percent: bool = True) -> tuple[float, float]:
    """The range `metric` can take: [0, 100] for a fraction shown in percent ([0, 1] if not), [0, inf) for
    NLL, perplexity, ECE, losses, seconds and costs, (-inf, inf) for anything else (a difference, a gain)."""
    if is_fraction_metric(metric) and not metric.startswith(("diff", "gain")):
        return 0.0, 100.0 if percent else 1.0
    if metric.endswith(("nll", "ppl", "loss", "seconds", "kl", "flops", "params", "latency_ms", "throughput")):
        return 0.0, math.inf
    return -math.inf, math.inf


def clip(low: float, high: float, bounds: Optional[tuple[float, float]]) -> tuple[float, float]:
    """(low, high) cut to `bounds` (NaN stays NaN)."""
    if bounds is None:
        return low, high
    return (max(low, bounds[0]) if math.isfinite(low) else low, min(high, bounds[1]) if math.isfinite(high) else high)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite `values`, with a two-sided Student-t interval.

    half-width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n), s the sample standard
    deviation (ddof=1). With n = 1 there is no spread to estimate: low and high are NaN
    (not the mean), so a single seed never looks certain. With n = 0 all three are NaN.
    Values that are all equal, up to float rounding (TIE), give low = high = mean: a tie, not a
    rounding error's width (100 * (0.93 - 0.92) and 100 * (0.94 - 0.93) differ in the 15th digit).
    NaN values (e.g. a figure a row does not have) are dropped before counting n.
    """
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(array.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    scale = TIE * max(1.0, float(np.abs(array).max()))
    if np.ptp(array) <= scale:  # a tie: no spread (and a mean of 0 where that is all that sets it apart from 0)
        mean = 0.0 if abs(mean) <= scale else mean
        return mean, mean, mean, n
    from scipy import stats as scipy_stats  # imported on first use: it is slow to import

    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def default_groups(df: pd.DataFrame) -> list[str]:
    """The columns of GROUP_COLUMNS that `df` has and that hold at least one value."""
    return [c for c in GROUP_COLUMNS if c in df.columns and df[c].notna().any()]


def table(df: pd.DataFrame, by: Optional[Sequence[str]] = None, metrics: Sequence[str] = ("test_acc",),
          percent: bool = True, confidence: float = 0.95) -> pd.DataFrame:
    """Per group of `by`: n, and for each metric its mean, CI half-width, low and high.

    Columns: the `by` columns, `n` (rows in the group: seeds, or seeds x members), then per
    metric `<m>_mean`, `<m>_ci` (half-width), `<m>_low`, `<m>_high`, `<m>_n` (rows with a
    value). `by=None` groups by the model-identifying columns present (`default_groups`).
    Missing group values (e.g. no generation) form their own group. With `percent`,
    fraction metrics (`is_fraction_metric`) are multiplied by 100; the frame's
    `attrs["percent"]` lists them and `attrs["confidence"]` holds the level.
    """
    by = list(default_groups(df) if by is None else by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ValueError(f"cannot group by {', '.join(missing)}: no such column")
    metrics = [m for m in metrics if m in df.columns]
    scaled = [m for m in metrics if percent and is_fraction_metric(m)]
    rows = []
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(group)
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float)
            if metric in scaled:
                values = values * 100
            mean, low, high, n = mean_ci(values, confidence)
            row.update({f"{metric}_mean": mean, f"{metric}_ci": (high - mean) if n > 1 else math.nan,
                        f"{metric}_low": low, f"{metric}_high": high, f"{metric}_n": n})
        rows.append(row)
    columns = by + ["n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "ci", "low", "high", "n")]
    out = pd.DataFrame(rows, columns=columns)
    if "role" in by and len(out):  # teachers before students, generations in order (ROLE_ORDER)
        rank = out["role"].map(lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER))
        before = by[:by.index("role")]
        out = out.assign(_rank=rank).sort_values(before + ["_rank"], kind="stable").drop(columns="_rank")
        out = out.reset_index(drop=True)
    out.attrs.update({"by": by, "metrics": metrics, "percent": scaled, "confidence": confidence})
    return out


def format_value(mean: float, half: float, n: int, digits: int = 1,
                 bounds: Optional[tuple[float, float]] = None) -> str:
    """'91.6 ± 1.2 (n=3)'; a single seed shows no interval: '91.6 (n=1)'; no value: '-'.

    Two seeds: '(n=2, wide)'. An interval that runs past `bounds` (e.g. (0, 100) for an accuracy
    in %, `limits`) is shown clipped, as its ends: '99.0 (95% CI 93.1 to 100.0, n=2, wide)'.
    Every seed with the same value (half-width 0): '91.6 (all 2 equal)'; a half-width that rounds
    to 0 at `digits`: '91.6 ± <0.1 (n=3)'. Never '± 0.0'.
    """
    if n == 0 or not math.isfinite(mean):
        return "-"
    if n < 2 or not math.isfinite(half):
        return f"{mean:.{digits}f} (n={n})"
    if half == 0:
        return f"{mean:.{digits}f} (all {n} equal)"
    count = f"n={n}, wide" if n <= WIDE else f"n={n}"
    low, high = clip(mean - half, mean + half, bounds)
    if (low, high) != (mean - half, mean + half):
        return f"{mean:.{digits}f} (95% CI {low:.{digits}f} to {high:.{digits}f}, {count})"
    width = f"{half:.{digits}f}" if round(half, digits) > 0 else f"<{10.0 ** -digits:.{digits}f}"
    return f"{mean:.{digits}f} ± {width} ({count})"


def _format_key(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("|", "\\|")


def format_table(tbl: pd.DataFrame, digits: Optional[int] = None) -> str:
    """A markdown table of `table(...)`: group columns, then 'mean ± half-width (n=k)' per metric.

    Percent metrics get 1 decimal, the rest (nll, seconds) 3, unless `digits` is given.
    Extra columns the caller added (e.g. `paper`) are shown as they are after the metrics.
    """
    by = tbl.attrs.get("by", [c for c in GROUP_COLUMNS if c in tbl.columns])
    metrics = tbl.attrs.get("metrics", [c[:-5] for c in tbl.columns if c.endswith("_mean")])
    scaled = set(tbl.attrs.get("percent", []))
    derived = {"n"} | {f"{m}_{s}" for m in metrics for s in ("mean", "ci", "low", "high", "n")}
    extra = [c for c in tbl.columns if c not in derived and c not in by]
    level = round(tbl.attrs.get("confidence", 0.95) * 100)
    headers = list(by) + [f"{m}{' (%)' if m in scaled else ''} mean ± {level}% CI" for m in metrics] + extra
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    for _, row in tbl.iterrows():
        cells = [_format_key(row[c]) for c in by]
        for m in metrics:
            places = digits if digits is not None else (1 if m in scaled else 3)
            cells.append(format_value(row[f"{m}_mean"], row[f"{m}_ci"], int(row[f"{m}_n"]), places,
                                      limits(m, m in scaled)))
        cells += [_format_key(row[c]) for c in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and is not counted).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)),
    as statsmodels' `multipletests(p, method="holm")` gives them.
    """
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, math.nan)
    m = finite.size
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def holm_verdict(diff: float, p_adjusted: float, level: float = LEVEL) -> str:
    """'higher' / 'lower' when the Holm-adjusted p is below `level`, else 'not separable'."""
    if not math.isfinite(p_adjusted):
        return "too few seeds to tell"
    if p_adjusted >= level:
        return "not separable"
    return "higher" if diff > 0 else "lower"


def p_from_interval(diff: float, low: float, high: float, n: int, confidence: float = 0.95) -> float:
    """The two-sided p of the paired t-test behind a Student-t interval (low, high) of a mean
    difference over n pairs: t = diff / (half-width / t_{(1+confidence)/2, n-1}), n - 1 dof."""
    half = (high - low) / 2
    if n < 2 or not (math.isfinite(half) and math.isfinite(diff)):
        return math.nan
    if half == 0:
        return 0.0 if diff != 0 else 1.0
    from scipy import stats as scipy_stats

    se = half / float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1))
    return float(2 * scipy_stats.t.sf(abs(diff) / se, n - 1))


@dataclass
class Comparison:
    """A paired comparison of `metric` between rows A and B, matched on `on` (the seed).

    diff = mean over pairs of (A - B), with its Student-t interval; positive means A is
    higher. `p_value` is the two-sided paired t-test (NaN with fewer than 2 pairs).
    """

    metric: str
    n: int
    a_mean: float
    b_mean: float
    diff: float
    low: float
    high: float
    p_value: float
    confidence: float = 0.95
    percent: bool = False
    a_label: str = "A"
    b_label: str = "B"

    @property
    def verdict(self) -> str:
        """'higher' / 'lower' when the interval excludes 0, otherwise 'no clear difference'."""
        if self.n < 2 or not math.isfinite(self.low):
            return "too few seeds to tell"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no clear difference"

    def __str__(self) -> str:
        unit = " pts" if self.percent else ""
        places = 1 if self.percent else 3
        if self.n > 1 and self.low == self.high == self.diff:  # a tie: no interval to show
            return f"{self.diff:+.{places}f}{unit} (the same on all {self.n} paired seeds)"
        ci = (f"{round(self.confidence * 100)}% CI {self.low:+.{places}f} to {self.high:+.{places}f}"
              if self.n > 1 and math.isfinite(self.low) else "no CI")
        return f"{self.diff:+.{places}f}{unit} ({ci}, n={self.n} paired seeds)"


def compare(df: pd.DataFrame, a_mask, b_mask, metric: str = "test_acc", on: str | Sequence[str] = "seed",
            confidence: float = 0.95, percent: bool = True, a_label: str = "A", b_label: str = "B") -> Comparison:
    """Paired comparison of `metric` between the rows of `a_mask` and of `b_mask`, matched by seed.

    Rows are paired on `on` (default the seed; pass e.g. ["run", "seed"] to pair only
    inside a run). Several rows on one side with the same key (e.g. the members of one
    seed's ensemble) are averaged first. Only keys present on both sides count; n is the
    number of pairs. With `percent`, fraction metrics are in percentage points.
    """
    keys = [on] if isinstance(on, str) else list(on)
    scale = 100.0 if percent and is_fraction_metric(metric) else 1.0

    def side(mask):
        rows = df[np.asarray(mask, dtype=bool)]
        values = pd.to_numeric(rows[metric], errors="coerce") * scale
        return values.groupby([rows[k] for k in keys]).mean().dropna()

    a, b = side(a_mask), side(b_mask)
    a, b = a.align(b, join="inner")
    diffs = (a - b).to_numpy(dtype=float)
    mean, low, high, n = mean_ci(diffs, confidence)
    p_value = math.nan
    if n > 1:
        from scipy import stats as scipy_stats

        p_value = (0.0 if mean != 0 else 1.0) if low == high else \
            float(scipy_stats.ttest_rel(a.to_numpy(float), b.to_numpy(float)).pvalue)  # a tie: as p_from_interval
    return Comparison(metric, n, float(a.mean()) if n else math.nan, float(b.mean()) if n else math.nan,
                      mean, low, high, p_value, confidence, scale != 1.0, a_label, b_label)
