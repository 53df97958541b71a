"""Turn the MNIST-1D runs of run_mnist1d.sh into the README's result files (CSV + JSON sidecar).

    bash docs/results/run_mnist1d.sh repro-runs
    .venv/bin/python docs/results/collect.py repro-runs      # writes docs/results/mnist1d-*.csv/.json
    .venv/bin/python docs/results/collect.py repro-runs ensemble   # only mnist1d-ensemble.*
    .venv/bin/python docs/results/collect.py repro-runs kd         # only mnist1d-kd.*
    .venv/bin/python docs/results/collect.py repro-runs sweep      # only mnist1d-sweep.* (and -best.json)
    .venv/bin/python -m results.evidence                     # renders them into README.md
    .venv/bin/python docs/results/collect.py --holm-from-intervals   # mnist1d-methods: Holm columns from
                                                             # the committed intervals (no runs needed)
    bash docs/results/run_lm_study.sh repro-runs/lm-study       # the LM study of docs/lm.md, then:
    .venv/bin/python docs/results/collect.py --lm-study repro-runs/lm-study   # docs/results/lm-pydoc-study.*

Every figure is test (or validation) accuracy in % (the LM study: NLL per token), at the validation-
selected epoch, as mean and 95% t-interval half-width over seeds with n; differences are paired by seed. Reads run
directories only (through `results`), never the engine.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import results  # noqa: E402
from results.ensemble_page import holm_over_students  # noqa: E402
from results.stats import compare, holm, holm_verdict, mean_ci, p_from_interval  # noqa: E402

COMMAND = "bash docs/results/run_mnist1d.sh repro-runs && .venv/bin/python docs/results/collect.py repro-runs"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import os

    return f"{model}, {os.cpu_count()} cores, no GPU"


def stat(values, scale=100.0) -> dict:
    mean, low, high, n = mean_ci([v * scale for v in values])
    return {"mean": round(mean, 2), "ci": round((high - low) / 2, 2) if n > 1 else "", "n": n}


def row(label: str, rows: pd.DataFrame, paper="") -> dict:
    test, val = stat(rows["test_acc"]), stat(rows["val_acc"])
    return {"model": label, "test_acc": test["mean"], "test_ci": test["ci"], "val_acc": val["mean"],
            "val_ci": val["ci"], "n": test["n"], "paper": paper}


def paired(df, a, b) -> dict:
    c = compare(df, a, b)
    fmt = lambda v: round(v, 2) if not math.isnan(v) else ""  # noqa: E731
    return {"diff": fmt(c.diff), "low": fmt(c.low), "high": fmt(c.high), "pairs": c.n,
            "p": round(c.p_value, 6) if not math.isnan(c.p_value) else ""}


def write(name: str, rows: list[dict], columns: list[list[str]], runs: list[Path], note: str) -> None:
    pd.DataFrame(rows).to_csv(HERE / f"{name}.csv", index=False)
    first = runs[0] / "meta.json"
    first = first if first.is_file() else sorted(runs[0].glob("*/meta.json"))[0]  # a sweep: one of its trials
    meta = json.loads(first.read_text())
    (HERE / f"{name}.json").write_text(json.dumps({
        "command": COMMAND, "date": (meta.get("finished") or meta.get("started") or "")[:10],
        "machine": machine(), "versions": {**meta.get("versions", {}), "git": (meta.get("git_commit") or "")[:10]},
        "runs": [str(r) for r in runs], "note": note, "columns": columns}, indent=2) + "\n")
    print(f"wrote {HERE / name}.csv")


ACC = [["test acc %", "{test_acc:.1f} ± {test_ci:.1f}"], ["val acc %", "{val_acc:.1f} ± {val_ci:.1f}"], ["n", "{n}"]]
DIFF = ["vs baseline (test, points)", "{diff:+.1f} (CI {low:+.1f} to {high:+.1f})"]


def run_of(out: Path, name: str) -> Path:
    found = sorted((out / name).glob("*/summary.json"))
    if not found:
        raise SystemExit(f"collect: no finished run of {name} under {out}; run docs/results/run_mnist1d.sh first")
    return found[-1].parent


def kd_table(out: Path) -> None:
    """Models from labels and Hinton KD: the MLP and the CNN from labels, the KD run's teacher and its
    student, the student paired by seed against the MLP from labels."""
    mlp, cnn, kd = run_of(out, "mnist1d-mlp"), run_of(out, "mnist1d-cnn"), run_of(out, "mnist1d-kd")
    both = results.load([mlp, kd])
    labels = both[(both.run == str(mlp)) & (both.role == "model")]
    student = both[(both.role == "student")]
    table = [row("MLP 40-100-100-10 from labels", labels, 68),
             row("1-D CNN (3 conv, 64 ch, GroupNorm) from labels", results.load([cnn]), 94),
             row("CNN teacher of the KD run (trained first)", both[both.role == "teacher"]),
             {**row("MLP student, KD T = 4, alpha = 0.9", student),
              **paired(both, (both.role == "student").to_numpy(), ((both.run == str(mlp)) & (both.role == "model"))
                       .to_numpy())}]
    write("mnist1d-kd", table, [["model", "{model}"], *ACC, DIFF, ["paper (Greydanus 2020)", "{paper}"]],
          [mlp, cnn, kd], "the KD student's difference is paired by seed against the MLP from labels")


def main(out: Path) -> None:
    kd_table(out)

    ban = run_of(out, "ban-mnist1d")
    df = results.load([ban])
    gen0 = (df.role == "generation") & (df.generation == 0)
    rows = []
    for g in sorted(df[df.role == "generation"].generation.unique()):
        mask = (df.role == "generation") & (df.generation == g)
        label = "generation 0 (labels)" if g == 0 else f"generation {int(g)} (BAN-{int(g)})"
        rows.append({**row(label, df[mask]), **(paired(df, mask, gen0) if g else {})})
    for name in sorted(df[df.role == "ensemble"].name.unique(), key=lambda n: (n.split("..")[0], len(n), n)):
        mask = (df.role == "ensemble") & (df.name == name)
        first, last = name.removeprefix("ens_").split("..")
        rows.append({**row(f"Ens of generations {first}-{last}", df[mask]), **paired(df, mask, gen0)})
    write("mnist1d-ban", rows, [["model", "{model}"], *ACC, DIFF], [ban],
          "differences paired by seed against generation 0")

    ensemble(out)
    sweep(out)


def sweep(out: Path) -> None:
    """The T x alpha sweep: one row per cell (mean over its seeds), and sweep.json's choice of the best
    setting with its paired test against the runner-up (mnist1d-sweep-best.json)."""
    folder = max((out / "tune-mnist1d-kd").glob("*/sweep.json"), key=lambda p: p.stat().st_mtime).parent  # newest
    df = results.load([folder])
    df = df[df.role == "student"]
    rows = []
    for (t, a), part in df.groupby(["cfg.distill.temperature", "cfg.distill.alpha"]):
        rows.append({"T": t, "alpha": a, **{k: v for k, v in row("", part).items() if k != "model"}})
    swept = json.loads((folder / "sweep.json").read_text())
    layout = swept.get("layout") or {}
    how = ("each configuration's seeds in one trial, configurations that differ only in T and alpha packed into "
           "one stacked fit" if layout.get("seeds") == "stacked" else "one Ray Tune trial per (T, alpha, seed)")
    write("mnist1d-sweep", rows, [["T", "{T:g}"], ["alpha", "{alpha:g}"], *ACC], [folder],
          f"{how}; the teacher trained once per seed before the trials")
    best = {"from": f"{folder / 'sweep.json'} (the sweep behind mnist1d-sweep.csv)", "target": swept.get("target"),
            "best_config": swept["best_config"]}
    (HERE / "mnist1d-sweep-best.json").write_text(json.dumps(best, indent=2) + "\n")
    print(f"wrote {HERE / 'mnist1d-sweep-best'}.json")


def wall_minutes(run: Path) -> str:
    """The run's wall time from its meta.json (started to finished), in minutes."""
    from datetime import datetime

    meta = json.loads((run / "meta.json").read_text())
    seconds = (datetime.fromisoformat(meta["finished"]) - datetime.fromisoformat(meta["started"])).total_seconds()
    return f"{seconds / 60:.0f}"


def ensemble(out: Path) -> None:
    """The ensemble collapse: members, ensembles, each student paired by seed with the mean member
    and with its baseline (its architecture from labels with the students' budget and seeds)."""
    import yaml

    ens = run_of(out, "ensemble-mnist1d")
    df = results.load([ens])
    member = df.role == "member"
    rows = [row("member (mean of the members, per seed)", df[member].groupby("seed", as_index=False).mean(
        numeric_only=True))]
    for (size, combine), part in df[df.role == "ensemble"].groupby(["size", "combine"]):
        if combine == "geometric":  # recorded by runs before it was dropped: mean_logits exactly, under a second name
            continue
        if size > 1 and (combine == "mean_probs" or size == df[df.role == "ensemble"]["size"].max()):
            mask = (df.role == "ensemble") & (df["size"] == size) & (df["combine"] == combine)
            rows.append({**row(f"ensemble k = {int(size)}, {combine}", part), **paired(df, mask, member)})
    config = yaml.safe_load((ens / "config.yaml").read_text())["ensemble"]
    students, members = config["students"], config["models"][0]

    def arch_label(j) -> str:
        arch = students[int(j)]
        return f"{arch['name']} {arch.get('width')}" + (" (members' architecture)" if arch == members else "")

    baseline_of = {}
    for j, part in df[df.role == "baseline"].groupby("student"):
        mask = ((df.role == "baseline") & (df["student"] == j)).to_numpy()
        baseline_of[students[int(j)]["name"], students[int(j)].get("width")] = mask
        rows.append({**row(f"baseline {arch_label(j)} from labels, the students' budget", part),
                     **paired(df, mask, member)})
    fair = []
    for j, of_arch in df[(df.role == "student")].groupby("student"):
        for combine, part in of_arch.groupby("combine"):
            mask = ((df.role == "student") & (df["student"] == j) & (df["combine"] == combine)).to_numpy()
            gap = stat(part["gap_recovered"], scale=1.0)
            base = baseline_of.get((students[int(j)]["name"], students[int(j)].get("width")))
            against = {f"b{k}": v for k, v in paired(df, mask, base).items()} if base is not None else {}
            rows.append({**row(f"student {arch_label(j)}, {combine}", part), **paired(df, mask, member),
                         "gap": gap["mean"], **against})
            fair += [rows[-1]] if against else []
    ensemble_holm(fair)
    write("mnist1d-ensemble", rows, ENSEMBLE_COLUMNS(len(fair)), [ens], "differences paired by seed against the "
          "mean member of that seed, and each student against its baseline: its own architecture trained from "
          "labels with the students' budget (epochs, schedule, optimizer, weight decay) and seeds; the members "
          "trained 40 epochs with weight decay 0.05, the "
          f"students and baselines 100 epochs with 0.01; {ENSEMBLE_HOLM}; the run took {wall_minutes(ens)} min")


ENSEMBLE_HOLM = ("Holm: the paired t-test's p against the baseline adjusted over every student of the run (all "
                 "architectures and teacher combinations: one family, results.ensemble_page.holm_over_students, as "
                 "the report's ensemble page)")


def ENSEMBLE_COLUMNS(m: int) -> list:  # noqa: N802 - a table layout, like ACC
    return [["model", "{model}"], *ACC, ["vs mean member (test, points)", "{diff:+.1f} (CI {low:+.1f} to {high:+.1f})"],
            ["vs its baseline (test, points)", "{bdiff:+.1f} (CI {blow:+.1f} to {bhigh:+.1f})"],
            [f"vs its baseline, Holm p (over the {m} students)", "{bp_holm:.2g}"], ["gap recovered", "{gap:.2f}"]]


def ensemble_holm(fair: list[dict]) -> None:
    """bp_holm and bverdict_holm of each student row with a baseline: Holm over all of them (the page's family)."""
    adjusted, verdicts = holm_over_students([r["bdiff"] for r in fair],
                                            [math.nan if r["bp"] == "" else r["bp"] for r in fair])
    for r, p, verdict in zip(fair, adjusted, verdicts):
        r["bp_holm"], r["bverdict_holm"] = round(p, 4) if math.isfinite(p) else "", verdict


def methods(out: Path) -> None:
    """KD and every newer logit method against the same MLP from labels: each method at its best T on
    validation (a T chosen on test would flatter it), test accuracy paired by seed against `labels`."""
    df = results.load([out / "methods-mnist1d"])
    df = df[df.role == "student"]
    method, temp = df["cfg.distill.method"], df["cfg.distill.temperature"]
    labels = (method == "labels") & (temp == temp[method == "labels"].min())
    rows = []
    for name in ["labels"] + sorted(set(method) - {"labels"}):
        by_t = df[method == name].groupby("cfg.distill.temperature")["val_acc"].mean()
        best_t = by_t.idxmax()
        mask = (method == name) & (temp == best_t)
        picked = df[mask]
        agreement = stat(picked["test_agreement"])
        rows.append({**row(name, picked), "T": "" if name in ("labels", "ctkd") else best_t,
                     "agreement": agreement["mean"], "agreement_ci": agreement["ci"],
                     **(paired(df, mask.to_numpy(), labels.to_numpy()) if name != "labels" else {})})
    write("mnist1d-methods", holm_columns(rows), METHODS_COLUMNS(len(rows) - 1), [Path(df.run.iloc[0])], METHODS_NOTE)


METHODS_NOTE = ("one Ray Tune trial per (method, T, seed); T chosen per method on mean validation accuracy of the "
                "same seeds; differences paired by seed against the same MLP trained from labels (method labels); "
                "p: the paired t-test's; Holm: p adjusted by Holm's step-down method over the methods compared with "
                "labels, verdict higher/lower when the adjusted p < 0.05")


def METHODS_COLUMNS(m: int) -> list:  # noqa: N802 - a table layout, like ACC
    return [["method", "{model}"], ["T (chosen on val)", "{T}"], *ACC, DIFF, ["p", "{p:.2g}"],
            [f"Holm p (over {m})", "{p_holm:.2g}"], ["verdict alone", "{verdict}"],
            [f"verdict, Holm over {m}", "{verdict_holm}"],
            ["test agreement with teacher %", "{agreement:.1f} ± {agreement_ci:.1f}"]]


def holm_columns(rows: list[dict]) -> list[dict]:
    """Each method's row with `verdict` (its 95% interval alone), `p_holm` (Holm over every method compared
    with labels) and `verdict_holm`; the labels row gets none."""
    compared = [r for r in rows if r.get("p", "") != ""]
    for r, adjusted in zip(compared, holm([r["p"] for r in compared])):
        r["p_holm"] = round(adjusted, 6)
        r["verdict"] = "higher" if r["low"] > 0 else "lower" if r["high"] < 0 else "not separable"
        r["verdict_holm"] = holm_verdict(r["diff"], adjusted)
    return rows


def holm_from_intervals(folder: Path = HERE) -> None:
    """mnist1d-methods.csv's Holm columns from its committed rows, without the runs: each method's paired
    t-test p follows from its 95% interval and n (`results.stats.p_from_interval`), to the rounding of the
    interval's ends (2 decimals)."""
    frame = pd.read_csv(folder / "mnist1d-methods.csv")
    rows = [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
            for r in frame.to_dict("records")]
    for r in rows:
        if "diff" in r:
            r["p"] = round(p_from_interval(r["diff"], r["low"], r["high"], int(r["pairs"])), 6)
    rows = holm_columns(rows)
    columns = list(dict.fromkeys([*frame.columns, "p", "p_holm", "verdict", "verdict_holm"]))
    pd.DataFrame(rows, columns=columns).to_csv(folder / "mnist1d-methods.csv", index=False)
    meta = json.loads((folder / "mnist1d-methods.json").read_text())
    meta["columns"] = METHODS_COLUMNS(sum("diff" in r for r in rows))
    meta["note"] = METHODS_NOTE + ("; p, p_holm and the verdicts were added by collect.py --holm-from-intervals from "
                                   "the committed intervals (the runs were not kept)")
    (folder / "mnist1d-methods.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {folder / 'mnist1d-methods'}.csv with Holm columns")


LM_STUDY = ("bash docs/results/run_lm_study.sh repro-runs/lm-study && "
            ".venv/bin/python docs/results/collect.py --lm-study repro-runs/lm-study")
LM_CELLS = [  # (run folder under OUT, label, the cell it is compared with: labels of the same width)
    ("teacher-weak", "teacher (4 blocks, width 128), 4 epochs", None),
    ("teacher-strong", "teacher (4 blocks, width 128), 15 epochs", None),
    ("teacher-data", "teacher (4 blocks, width 128), 6 epochs on all 2,053 training blocks", None),
    ("labels-w32", "student width 32 from labels", None),
    ("kd-weak-w32", "student width 32, kd from the 4-epoch teacher", "labels-w32"),
    ("kd-strong-w32", "student width 32, kd from the 15-epoch teacher", "labels-w32"),
    ("gkd0-strong-w32", "student width 32, gkd lambda = 0 (supervised JSD) from the 15-epoch teacher", "labels-w32"),
    ("gkd-strong-w32", "student width 32, gkd lambda = 0.5 (on-policy) from the 15-epoch teacher", "labels-w32"),
    ("kd-data-w32", "student width 32, kd from the all-data teacher", "labels-w32"),
    ("labels-w64", "student width 64 from labels", None),
    ("kd-weak-w64", "student width 64, kd from the 4-epoch teacher", "labels-w64"),
    ("kd-strong-w64", "student width 64, kd from the 15-epoch teacher", "labels-w64"),
    ("kd-data-w64", "student width 64, kd from the all-data teacher", "labels-w64"),
]
LM_CONTRASTS = [  # (label, (a, b), (c, d)): the per-seed difference (a - b) - (c - d), None = 0
    ("teacher strength at width 32: NLL change (vs labels) with the 15-epoch teacher minus with the 4-epoch one",
     ("kd-strong-w32", None), ("kd-weak-w32", None)),
    ("teacher strength at width 64: NLL change (vs labels) with the 15-epoch teacher minus with the 4-epoch one",
     ("kd-strong-w64", None), ("kd-weak-w64", None)),
    ("student size, 15-epoch teacher: NLL change at width 32 minus at width 64",
     ("kd-strong-w32", "labels-w32"), ("kd-strong-w64", "labels-w64")),
    ("teacher data at width 32: NLL change with the all-data teacher minus with the 15-epoch one",
     ("kd-data-w32", None), ("kd-strong-w32", None)),
    ("teacher data at width 64: NLL change with the all-data teacher minus with the 15-epoch one",
     ("kd-data-w64", None), ("kd-strong-w64", None)),
    ("student size, all-data teacher: NLL change at width 32 minus at width 64",
     ("kd-data-w32", "labels-w32"), ("kd-data-w64", "labels-w64")),
    ("on-policy: gkd lambda = 0.5 minus gkd lambda = 0 (width 32, 15-epoch teacher)",
     ("gkd-strong-w32", None), ("gkd0-strong-w32", None)),
    ("gkd lambda = 0.5 minus kd (width 32, 15-epoch teacher)", ("gkd-strong-w32", None), ("kd-strong-w32", None)),
]
LM_NOTE = ("test NLL per token (nats) and perplexity (exp of the mean NLL) at the epoch of the lowest validation "
           "NLL; mean and 95% t-interval half-width over seeds; diff: the student minus the same-width student "
           "from labels, or a contrast of two such differences, per seed (negative = KD lowered the NLL), 95% "
           "t-interval; p: paired t-test; p_holm: Holm within its family (the students against labels; the "
           "contrasts); verdict (alone, from the "
           "interval) and verdict_holm (adjusted p < 0.05) say lower/higher/not separable")


def lm_study(out: Path) -> None:
    """docs/results/lm-pydoc-study.{csv,json} from the runs of run_lm_study.sh (one folder per cell)."""
    import numpy as np
    from scipy import stats as scipy_stats

    missing = [cell for cell, _, _ in LM_CELLS if not list((out / cell).glob("lm-pydoc-study/*/summary.json"))]
    if missing:  # the table leaves them out, says so, and keeps the rest
        print(f"collect: no finished run of {', '.join(missing)} under {out}; left out of the table", file=sys.stderr)
    cells = [c for c in LM_CELLS if c[0] not in missing]
    contrasts = [c for c in LM_CONTRASTS if not {c[1][0], c[2][0]} & set(missing)]
    runs = {cell: run_of(out / cell, "lm-pydoc-study") for cell, _, _ in cells}
    df = results.load(list(runs.values()))
    nll = {cell: df[df.run == str(run)].groupby("seed")["test_nll"].mean() for cell, run in runs.items()}

    def per_seed(a, b):
        return nll[a] - (nll[b] if b else 0.0)

    def interval(diffs) -> dict:
        diffs = diffs.dropna()
        mean, low, high, n = mean_ci(diffs.to_numpy(float))
        p = float(scipy_stats.ttest_1samp(diffs.to_numpy(float), 0.0).pvalue) if n > 1 else math.nan
        return {"diff": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "pairs": n, "p": round(p, 6)}

    rows = []
    for cell, label, baseline in cells:
        part = df[df.run == str(runs[cell])]
        test, val = mean_ci(part["test_nll"]), mean_ci(part["val_nll"])
        rows.append({"model": label, "cell": cell, "params": int(part["params"].iloc[0]),
                     "test_nll": round(test[0], 4), "test_nll_ci": round((test[2] - test[1]) / 2, 4),
                     "test_ppl": round(float(np.exp(test[0])), 2), "val_nll": round(val[0], 4), "n": test[3],
                     "agreement": round(float(part["test_agreement"].mean()), 3) if baseline else "",
                     **(interval(per_seed(cell, baseline)) if baseline else {})})
    for label, (a, b), (c, d) in contrasts:
        rows.append({"model": label, "cell": "contrast", **interval(per_seed(a, b) - per_seed(c, d))})
    holm_columns([r for r in rows if r["cell"] != "contrast"])  # family 1: each student against labels
    holm_columns([r for r in rows if r["cell"] == "contrast"])  # family 2: the contrasts
    for r in rows:
        if "diff" in r:
            r["verdict"] = r["verdict"].replace("higher", "higher NLL").replace("lower", "lower NLL")
            r["verdict_holm"] = r["verdict_holm"].replace("higher", "higher NLL").replace("lower", "lower NLL")
    pd.DataFrame(rows).astype({"params": "Int64", "n": "Int64", "pairs": "Int64"}).to_csv(
        HERE / "lm-pydoc-study.csv", index=False)
    meta = json.loads((runs["kd-strong-w32"] / "meta.json").read_text())
    load = pd.to_numeric(df.get("load_avg", pd.Series(dtype=float)), errors="coerce").dropna()
    load = f"load average during the runs {load.min():.1f}-{load.max():.1f}" if len(load) else "load not recorded"
    m = sum("p" in r and r["cell"] != "contrast" for r in rows), sum(r["cell"] == "contrast" for r in rows)
    (HERE / "lm-pydoc-study.json").write_text(json.dumps({
        "command": LM_STUDY, "date": (meta.get("finished") or meta.get("started") or "")[:10],
        "machine": f"{machine()}; {load} (shared), 2 runs at once, 1 torch thread each",
        "versions": {**meta.get("versions", {}), "git": (meta.get("git_commit") or "")[:10]},
        "runs": [str(r) for r in runs.values()],
        "note": LM_NOTE + (f"; not finished when collected: {', '.join(missing)}" if missing else ""),
        "columns": [["model", "{model}"], ["test NLL", "{test_nll:.3f} ± {test_nll_ci:.3f}"],
                    ["test perplexity", "{test_ppl:.2f}"], ["n", "{n}"],
                    ["diff (NLL)", "{diff:+.3f} (CI {low:+.3f} to {high:+.3f})"], ["p", "{p:.2g}"],
                    [f"Holm p (over {m[0]} vs labels or {m[1]} contrasts)", "{p_holm:.2g}"],
                    ["verdict alone", "{verdict}"], ["verdict, Holm", "{verdict_holm}"]]},
        indent=2) + "\n")
    print(f"wrote {HERE / 'lm-pydoc-study'}.csv")


if __name__ == "__main__":
    if sys.argv[1:] == ["--holm-from-intervals"]:
        holm_from_intervals()
    elif sys.argv[1:2] == ["--lm-study"]:
        lm_study(Path(sys.argv[2] if len(sys.argv) > 2 else "repro-runs/lm-study"))
    elif sys.argv[2:] == ["kd"]:  # only the kd table: collect.py OUT kd
        COMMAND = " && ".join(f".venv/bin/python -m distill.cli train {p} --out repro-runs --quiet" for p in
                            ["mnist1d-mlp", "mnist1d-cnn \"seeds=[0,1,2,3,4]\"", "mnist1d-kd"])
        COMMAND += " && .venv/bin/python docs/results/collect.py repro-runs kd"
        kd_table(Path(sys.argv[1]))
    elif sys.argv[2:] == ["sweep"]:  # only the sweep table: collect.py OUT sweep
        COMMAND = (".venv/bin/python -m distill.cli tune tune-mnist1d-kd \"seeds=[0,1,2,3,4]\" --out repro-runs --quiet"
                   " && .venv/bin/python docs/results/collect.py repro-runs sweep")
        sweep(Path(sys.argv[1]))
    elif sys.argv[2:] == ["ensemble"]:  # only the ensemble table: collect.py OUT ensemble
        COMMAND = (".venv/bin/python -m distill.cli ensemble ensemble-mnist1d \"seeds=[0,1,2,3,4]\" --out repro-runs"
                   " && .venv/bin/python docs/results/collect.py repro-runs ensemble")
        ensemble(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "repro-runs"))
        methods(Path(sys.argv[1] if len(sys.argv) > 1 else "repro-runs"))
