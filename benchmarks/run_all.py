"""Run every benchmark, each in a fresh process, and write benchmarks/results/summary.md.

    .venv/bin/python benchmarks/run_all.py            # about 15 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --quick    # smoke test of every script

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

# script -> [(figure, target as text, passes(value))]
TARGETS = {
    "engine_overhead": [("engine_over_bare", "<= 1.10", lambda v: v <= 1.10)],
    "kd_overhead": [("cached_over_plain", "<= 1.10", lambda v: v <= 1.10),
                    ("online_over_plain", "<= 1.40", lambda v: v <= 1.40)],
    "pack_seeds": [("speedup", ">= 4", lambda v: v >= 4.0)],
    "pack_members": [("speedup", ">= 3.5", lambda v: v >= 3.5)],
    "tune_efficiency": [("efficiency", ">= 0.80", lambda v: v >= 0.80),
                        ("asha_epoch_fraction", "<= 0.30", lambda v: v <= 0.30),
                        ("asha_best_gap", "<= 0.5 points", lambda v: v <= 0.5)],
    "threads": [("mlp_default_over_best", "<= 1.20", lambda v: v <= 1.20),
                ("cnn1d_default_over_best", "<= 1.20", lambda v: v <= 1.20)],
}


def summary_markdown() -> str:
    lines = ["| benchmark | figure | value | target | met | date | machine | load (1 min, start/end) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for script, figures in TARGETS.items():
        path = RESULTS / f"{script}.json"
        if not path.exists():
            lines.append(f"| {script} | - | not run | | | | | |")
            continue
        data = json.loads(path.read_text())
        for name, target, passes in figures:
            value = data.get(name)
            met = "yes" if value is not None and passes(value) else "no"
            machine = data.get("machine")
            if isinstance(machine, dict):
                machine = ", ".join(str(v) for v in machine.values())
            load = data.get("load_average")
            load = f"{load['start'][0]} / {load['end'][0]}" if load else "-"
            lines.append(f"| {script} | {name} | {value} | {target} | {met} | {data.get('date')} | {machine} | {load} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (results to /tmp)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these scripts")
    args = parser.parse_args(argv)
    failed = []
    for script in args.only or TARGETS:
        command = [sys.executable, str(HERE / f"{script}.py")]
        if args.quick:
            command += ["--quick", "--out", f"/tmp/{script}.json"]
        print(f"=== {script}", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(script)
    if not args.quick:
        text = summary_markdown()
        (RESULTS / "summary.md").write_text(text)
        print(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
