"""The MNIST-1D T x alpha sweep three ways: one trial per (configuration, seed), seeds stacked, packed.

    python benchmarks/sweep.py            # the preset tune-mnist1d-kd: 15 configurations x 5 seeds, 60 epochs
    python benchmarks/sweep.py --quick    # 6 configurations x 3 seeds, 20 epochs, 2000 examples: minutes on 2 cores

The same sweep (preset tune-mnist1d-kd, seeds [0..4]; its CNN teacher trained once, before the
clock starts, and given to every layout as distill.teacher) is run as

    trials    tune.seeds=trials: one Ray trial per (configuration, seed), the layout before packing
    stacked   tune.seeds=stacked tune.pack=0: one trial per configuration, its seeds stacked
    packed    tune.seeds=stacked tune.pack=16: configurations differing only in T and alpha in one
              trial and one stacked fit (all 15 here)

each in its own folder (nothing reused between them), under one Ray session started before the
clock (Ray's start-up is paid once per command). Figures: wall seconds, CPU seconds of this process
and every process below it (Ray's workers; each process's own time from /proc, sampled every 0.25 s),
both per trained model; `speedup` = the trials layout's wall / the packed wall, and `same_best` whether every layout
chose the trials layout's best configuration (the best mean over seeds of each seed's best
validation accuracy). The machine's load average is recorded before and after.

Writes benchmarks/results/sweep.json (or --out FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)

HERE = Path(__file__).resolve().parent
LAYOUTS = {"trials": {"seeds": "trials"}, "stacked": {"seeds": "stacked", "pack": 0},
           "packed": {"seeds": "stacked", "pack": 16}}


def _tree_times(root: int) -> dict:
    """pid -> own CPU seconds (user + system) of `root` and every process below it, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime stime
    found = {}
    for pid, seconds in times.items():
        p = pid
        while p in parents and p != root and p > 1:
            p = parents[p]
        if p == root:
            found[pid] = seconds
    return found


class CpuMeter:
    """CPU seconds of this process and every process below it (Ray's workers) while it runs: each
    process's own time sampled every `every` s (a process that ends loses at most that much)."""

    def __init__(self, every: float = 0.25):
        self.every, self.root = every, os.getpid()

    def __enter__(self):
        import threading

        self.base = _tree_times(self.root)
        self.last = dict(self.base)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(self.every):
            self.last.update(_tree_times(self.root))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.last.update(_tree_times(self.root))
        self.seconds = sum(t - self.base.get(pid, 0.0) for pid, t in self.last.items())


def sweep_config(quick: bool, teacher: str, layout: dict) -> dict:
    from distill.config import load_config
    from distill.schema import to_dict

    overrides = ["seeds=[0,1,2,3,4]", "tune.cpus_per_trial=1", "name=bench-sweep"]
    if quick:
        overrides += ["seeds=[0,1,2]", "train.epochs=20", "teacher.train.epochs=20", "dataset.num_samples=2000",
                      "search.distill.temperature={grid: [1, 4, 16]}", "search.distill.alpha={grid: [0.1, 0.9]}"]
    data = to_dict(load_config("tune-mnist1d-kd", overrides))
    data["distill"]["teacher"], data["teacher"] = teacher, {"model": None, "train": {}}
    data["tune"].update(layout)
    data["preset"] = None
    return data


def train_teacher(quick: bool, out: Path) -> str:
    from distill.config import build_config, load_config
    from distill.schema import to_dict
    from distill.training.runner import train

    data = sweep_config(quick, "unused", {})
    base = to_dict(load_config("tune-mnist1d-kd"))
    data.update(model=base["teacher"]["model"], teacher={"model": None, "train": {}}, search={}, distill={},
                name="bench-sweep-teacher", run_id="teacher")
    data["train"].update(base["teacher"]["train"])
    if quick:
        data["train"]["epochs"] = 20
    return str(train(build_config(data), out, run_dir=out / "teacher", progress=False))


def run_layout(name: str, quick: bool, teacher: str, out: Path) -> dict:
    import tuning
    from distill.config import build_config

    cfg = build_config(sweep_config(quick, teacher, LAYOUTS[name]))
    with CpuMeter() as meter:
        started = time.perf_counter()
        path = tuning.run(cfg, out / name, progress=False)
        wall = time.perf_counter() - started
    cpu = meter.seconds
    summary = json.loads((path / "sweep.json").read_text())
    models = len(summary["trials"])
    best = summary["best_config"]
    return {"wall_seconds": wall, "cpu_seconds": cpu, "models": models, "tune_trials": len(summary.get("packs")
            or summary["trials"]), "wall_per_model": wall / models, "cpu_per_model": cpu / models,
            "best": best["params"], "best_mean_val_acc": best["mean_best_val_acc"],
            "done": summary["counts"]["done"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 configurations x 3 seeds, 20 epochs")
    parser.add_argument("--out", default=str(HERE / "results" / "sweep.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    from distill.export.cost import cpu_count

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = train_teacher(args.quick, Path(tmp))
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        try:
            found = {name: run_layout(name, args.quick, teacher, Path(tmp)) for name in LAYOUTS}
        finally:
            ray.shutdown()
    figures = {"speedup": found["trials"]["wall_seconds"] / found["packed"]["wall_seconds"],
               "speedup_stacked": found["trials"]["wall_seconds"] / found["stacked"]["wall_seconds"],
               "cpu_ratio": found["trials"]["cpu_seconds"] / found["packed"]["cpu_seconds"],
               "same_best": all(f["best"] == found["trials"]["best"] for f in found.values()),
               "same_best_value": all(f["best_mean_val_acc"] == found["trials"]["best_mean_val_acc"]
                                      for f in found.values()),
               "cpus": cpu_count(), "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()], "quick": args.quick}
    for name, f in found.items():
        figures.update({f"{name}_{k}": round(v, 4) if isinstance(v, float) else v for k, v in f.items()})
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    common.write_result(__file__, figures, args.out)
    print(common.table([(name, f["tune_trials"], f["models"], f["wall_seconds"], f["wall_per_model"],
                         f["cpu_per_model"], json.dumps(f["best"])) for name, f in found.items()],
                       ("layout", "trials", "models", "wall s", "wall s/model", "CPU s/model", "best")))
    print(f"speedup (trials wall / packed wall) {figures['speedup']:.2f}, same best: {figures['same_best']}; "
          f"load {figures['load_before']} -> {figures['load_after']}; wrote {args.out}")
    return figures


if __name__ == "__main__":
    main()
