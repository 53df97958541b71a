"""Run every benchmark, each in a fresh process, and write benchmarks/results/summary.md.

    .venv/bin/python benchmarks/run_all.py                 # about 20 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --full          # also the full sweep and LM memory runs (+10 min)
    .venv/bin/python benchmarks/run_all.py --quick         # smoke test of every script (results to /tmp)
    .venv/bin/python benchmarks/run_all.py --summary-only  # summary.md from the committed JSON files, nothing run

Each script measures its own baseline in the same process and writes its own JSON file;
this collects the headline figures next to the targets the issues set, with the date and
machine each was measured on. Run it on an otherwise idle machine: the figures are ratios
of times, and other work on the same cores distorts them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# result file (results/<name>.json) -> the script and arguments that write it; FULL ones run only with --full
RUNS = {"engine_overhead": ["engine_overhead"], "kd_overhead": ["kd_overhead"], "pack_seeds": ["pack_seeds"],
        "pack_members": ["pack_members"], "tune_efficiency": ["tune_efficiency"], "threads": ["threads"],
        "sweep": ["sweep", "--quick"], "lm_memory-quick": ["lm_memory", "--quick"],
        "pack_seeds-2threads": ["pack_seeds", "--threads", "2"], "pack_members-2threads": ["pack_members", "--threads", "2"],
        "float_order": ["float_order"], "lm_memory-hf-quick": ["lm_memory", "--student", "hf", "--quick"],
        "sweep-full": ["sweep"], "lm_memory": ["lm_memory"], "lm_memory-hf": ["lm_memory", "--student", "hf"]}
FULL = ("sweep-full", "lm_memory", "lm_memory-hf")
NONE = ("reported", lambda v: None)  # a figure shown without a target


def _true(v) -> bool:
    return v is True


# result file -> [(figure, target as text, passes(value): True, False, or None for no target)]
TARGETS = {
    "engine_overhead": [("engine_over_bare", "<= 1.10", lambda v: v <= 1.10)],
    "kd_overhead": [("cached_over_plain", "<= 1.10", lambda v: v <= 1.10),
                    ("online_over_plain", "<= 1.40", lambda v: v <= 1.40)],
    "pack_seeds": [("speedup", ">= 4", lambda v: v >= 4.0)],
    "pack_members": [("speedup", ">= 3.5", lambda v: v >= 3.5)],
    "pack_seeds-2threads": [("speedup", *NONE), ("matmul_ceiling", *NONE)],
    "pack_members-2threads": [("speedup", *NONE)],
    "float_order": [("alone_2_threads_mean_val_acc_change", *NONE), ("stacked_1_thread_mean_val_acc_change", *NONE),
                    ("stacked_1_thread_max_seed_val_acc_change", *NONE)],
    "tune_efficiency": [("efficiency", ">= 0.80", lambda v: v >= 0.80),
                        ("asha_epoch_fraction", "<= 0.30", lambda v: v <= 0.30),
                        ("asha_best_gap", "<= 0.5 points", lambda v: v <= 0.5)],
    "threads": [("mlp_default_over_best", "<= 1.20", lambda v: v <= 1.20),
                ("cnn1d_default_over_best", "<= 1.20", lambda v: v <= 1.20)],
    "sweep": [("speedup", ">= 5 (full sweep)", lambda v: v >= 5.0), ("same_best", "true", _true),
              ("cifar_speedup", *NONE), ("cifar_agree", "true", _true)],
    "sweep-full": [("speedup", ">= 5", lambda v: v >= 5.0), ("same_best", "true", _true)],
    "lm_memory-quick": [("peak_ratio", "<= 0.25 (full run)", lambda v: v <= 0.25),
                        ("time_ratio", "<= 1.2", lambda v: v <= 1.2)],
    "lm_memory": [("peak_ratio", "<= 0.25", lambda v: v <= 0.25), ("time_ratio", "<= 1.2", lambda v: v <= 1.2)],
    "lm_memory-hf-quick": [("peak_ratio", "<= 0.25 (full run)", lambda v: v <= 0.25),
                           ("time_ratio", "<= 1.2", lambda v: v <= 1.2)],
    "lm_memory-hf": [("peak_ratio", "<= 0.25", lambda v: v <= 0.25), ("time_ratio", "<= 1.2", lambda v: v <= 1.2)],
}
assert set(TARGETS) == set(RUNS), "every result has its targets and its command"


def summary_markdown() -> str:
    lines = ["| result | figure | value | target | met | date | machine | load (1 min, start/end) | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for script, figures in TARGETS.items():
        path = RESULTS / f"{script}.json"
        if not path.exists():
            lines.append(f"| {script} | - | not run | | | | | | |")
            continue
        data = json.loads(path.read_text())
        for name, target, passes in figures:
            value = data.get(name)
            verdict = passes(value) if value is not None else False
            met = "-" if verdict is None else "yes" if verdict else "no"
            machine = data.get("machine")
            if isinstance(machine, dict):
                machine = ", ".join(str(v) for v in machine.values())
            load = data.get("load_average")
            load = f"{load['start'][0]} / {load['end'][0]}" if load else "-"
            shown = str(value).lower() if isinstance(value, bool) else "missing" if value is None else value
            lines.append(f"| {script} | {name} | {shown} | {target} | {met} | {data.get('date')} | {machine} | "
                         f"{load} | `{data.get('command', '-')}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (results to /tmp)")
    parser.add_argument("--full", action="store_true", help="also the full-size runs: " + ", ".join(FULL))
    parser.add_argument("--only", nargs="*", default=None, help="run only these results (names in RUNS)")
    parser.add_argument("--summary-only", action="store_true",
                        help="run nothing; write summary.md from the JSON files in benchmarks/results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(RUNS))
    if unknown:
        print(f"run_all: --only {' '.join(unknown)}: not a result; choose from {', '.join(RUNS)}", file=sys.stderr)
        return 2
    failed = []
    names = [] if args.summary_only else args.only or [n for n in RUNS if args.full or n not in FULL]
    for name in names:
        script, *extra = RUNS[name]
        command = [sys.executable, str(HERE / f"{script}.py"), *extra]
        if args.quick:
            command += [] if "--quick" in extra else ["--quick"]
            command += ["--out", f"/tmp/{name}.json"]
        elif name != script or "--quick" in extra:  # the result file is named by RUNS, not by the script
            command += ["--out", str(RESULTS / f"{name}.json")]
        print(f"=== {name}: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(name)
    if not args.quick:
        text = summary_markdown()
        (RESULTS / "summary.md").write_text(text)
        print(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
