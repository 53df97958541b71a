"""The MNIST-1D T x alpha sweep three ways: one trial per (configuration, seed), seeds stacked, packed.

    python benchmarks/sweep.py            # the preset tune-mnist1d-kd: 15 configurations x 5 seeds, 60 epochs
    python benchmarks/sweep.py --quick    # 6 configurations x 3 seeds, 20 epochs, 2000 examples: minutes on 2 cores
    python benchmarks/sweep.py --cifar    # only the CIFAR-shaped part (ResNet-20 with BatchNorm, 8 configurations)

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

The CIFAR-shaped part (`--cifar` alone, or after the sweep in the default run) measures stacking
with BatchNorm: ResNet-20 (model.width=8 on 2 cores) on `dataset.name=fake` 32x32 images, a KD
student of a small CNN teacher (trained before the clock), 8 (T, alpha) configurations, one seed,
run by `tuning.run` twice: `separate`, one trial per configuration (tune.pack=0, two at a time at
one CPU each), and `packed` (tune.pack=8: the packed sweep's own code path, tuning.packrun ->
fit_jobs -> engine.fit). On the CPU convolutions do not stack (replicas.STACK_CONVOLUTIONS_ON_CPU),
so the plan's two packs of 4, one per core, train their models one after another at one thread,
as the separate trials do: the figures must then agree exactly, and the speed-up is what one trial
per pack saves (Ray's per-trial start, one teacher read). On a GPU, gpu_check packs the 8 into one
stacked fit. Figures: `cifar_speedup` = separate wall / packed wall, and `cifar_agree`: every
configuration's best validation accuracy within CIFAR_ACC_TOL and its best validation NLL within
CIFAR_NLL_TOL (relative) of its separate fit's (a stacked fit trains the same models from the same
seeds on the same batches; only floating point and BatchNorm's batched kernels differ).
benchmarks/gpu_check.py runs the same comparison on a GPU (8 trials at tune.gpus_per_trial=0.125).

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


CIFAR_ACC_TOL = 0.02   # best validation accuracy, absolute (fraction)
CIFAR_NLL_TOL = 0.02   # best validation NLL, relative
CIFAR = {  # the CIFAR-shaped part's sizes: "cpu" here (sweep.py), "gpu" and "dry" for gpu_check.py
    "cpu": dict(shape=[3, 32, 32], samples=480, epochs=2, batch=64, model=["model.name=resnet20", "model.width=8"],
                temperatures=[1, 2, 4, 8], alphas=[0.5, 0.9]),
    "gpu": dict(shape=[3, 32, 32], samples=4096, epochs=3, batch=128, model=["model.name=resnet20"],
                temperatures=[1, 2, 4, 8], alphas=[0.5, 0.9]),
    "dry": dict(shape=[3, 8, 8], samples=96, epochs=1, batch=32, model=["model.name=resnet8", "model.width=4"],
                temperatures=[1, 4], alphas=[0.5, 0.9]),
}
# layout -> its tune overrides, per device ("cpu": 2 cores here; "gpu": one GPU shared by 8 trials)
CIFAR_LAYOUTS = {
    "cpu": {"separate": ["tune.pack=0", "tune.cpus_per_trial=1"],
            "packed": ["tune.pack=8", "tune.cpus_per_trial=1"]},  # 2 packs of 4, one per core (the plan's split)
    "gpu": {"separate": ["tune.pack=0", "tune.cpus_per_trial=1", "tune.gpus_per_trial=0.125"],
            "packed": ["tune.pack=8", "tune.cpus_per_trial=1", "tune.gpus_per_trial=1",
                       "tune.max_concurrent_trials=1"]},
}


def cifar_config(size: dict, device: str, *extra: str):
    from distill.config import load_config

    return load_config(None, [
        "name=bench-cifar", "seeds=[0]", "dataset.name=fake", f"dataset.fake_shape={size['shape']}",
        f"dataset.num_samples={size['samples']}", f"train.epochs={size['epochs']}",
        f"train.batch_size={size['batch']}", f"train.device={device}", *extra])


def cifar_compare(size: dict, layouts: dict, device: str, out: Path,
                  tolerances: tuple = (CIFAR_ACC_TOL, CIFAR_NLL_TOL)) -> dict:
    """The same 8-configuration (T, alpha) sweep of a BatchNorm ResNet in each layout (`tuning.run`,
    each in its own folder, Ray started before the clock); returns the figures (prefix `cifar_`):
    `cifar_figures` with `tolerances` (best validation accuracy absolute, NLL relative)."""
    import ray

    import tuning
    from distill.training.runner import train

    small = ["model.name=cnn2d", "model.width=8", "model.depth=2"]
    teacher = str(train(cifar_config(size, device, *small, "name=bench-cifar-teacher", "run_id=teacher"), out,
                        run_dir=out / "cifar-teacher", progress=False))
    search = [f"search.distill.temperature={{grid: {size['temperatures']}}}",
              f"search.distill.alpha={{grid: {size['alphas']}}}"]
    started_ray = not ray.is_initialized()
    if started_ray:
        from distill.export.cost import cpu_count

        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    found = {}
    try:
        for name, overrides in layouts.items():
            cfg = cifar_config(size, "auto" if device != "cpu" else "cpu", *size["model"], "distill.method=kd",
                               f"distill.teacher={teacher}", *search, *overrides)
            started = time.perf_counter()
            path = tuning.run(cfg, out / f"cifar-{name}", progress=False)
            wall = time.perf_counter() - started
            summary = json.loads((path / "sweep.json").read_text())
            found[name] = {"wall": wall, "tune_trials": len(summary.get("packs") or summary["trials"]),
                           "done": summary["counts"]["done"], "packing": [p.get("packing") for p in
                                                                         summary.get("packs") or []],
                           "by_config": {json.dumps(t["params"], sort_keys=True): t for t in summary["trials"]},
                           "off_device": sum(not json.loads((Path(t["run_dir"]) / "meta.json").read_text())
                                             .get("device", "").startswith(device) for t in summary["trials"])}
    finally:
        if started_ray:
            ray.shutdown()
    return cifar_figures(found["separate"], found["packed"], len(size["temperatures"]) * len(size["alphas"]),
                         *tolerances)


def cifar_figures(sep: dict, packed: dict, configs: int, acc_tol: float = CIFAR_ACC_TOL,
                  nll_tol: float = CIFAR_NLL_TOL) -> dict:
    """The CIFAR part's figures from each layout's wall, counts and `by_config` sweep.json entries:
    its speedup, and whether every configuration's figures agree (`cifar_agree`)."""
    acc = [abs(packed["by_config"][k]["best_val_acc"] - t["best_val_acc"])
           for k, t in sep["by_config"].items() if k in packed["by_config"]]
    nll = [abs(packed["by_config"][k]["best_val_nll"] - t["best_val_nll"]) / max(t["best_val_nll"], 1e-6)
           for k, t in sep["by_config"].items() if k in packed["by_config"]]
    missing = len(set(sep["by_config"]) ^ set(packed["by_config"]))
    figures = {"cifar_configs": configs, "cifar_models_done_separate": sep["done"],
               "cifar_models_done_packed": packed["done"], "cifar_configs_missing": missing,
               "cifar_separate_trials": sep["tune_trials"], "cifar_packed_trials": packed["tune_trials"],
               "cifar_packed_how": packed["packing"], "cifar_models_off_device": sep["off_device"] + packed["off_device"],
               "cifar_separate_wall_seconds": round(sep["wall"], 3), "cifar_packed_wall_seconds": round(packed["wall"], 3),
               "cifar_speedup": round(sep["wall"] / packed["wall"], 4),
               "cifar_max_val_acc_diff": round(max(acc, default=float("inf")), 6), "cifar_val_acc_tol": acc_tol,
               "cifar_max_val_nll_diff": round(max(nll, default=float("inf")), 6), "cifar_val_nll_tol": nll_tol}
    figures["cifar_agree"] = (missing == 0 and figures["cifar_models_off_device"] == 0
                              and sep["done"] == packed["done"] == configs
                              and figures["cifar_max_val_acc_diff"] <= acc_tol
                              and figures["cifar_max_val_nll_diff"] <= nll_tol)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 configurations x 3 seeds, 20 epochs")
    parser.add_argument("--cifar", action="store_true", help="only the CIFAR-shaped part (default out "
                        "benchmarks/results/sweep-cifar.json)")
    parser.add_argument("--skip-cifar", action="store_true", help="only the MNIST-1D sweep")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/sweep.json)")
    args = parser.parse_args(argv)
    if args.cifar and args.skip_cifar:
        parser.error("--cifar and --skip-cifar exclude each other; give one")
    out = args.out or str(HERE / "results" / ("sweep-cifar.json" if args.cifar else "sweep.json"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    from distill.export.cost import cpu_count

    load_before = os.getloadavg()
    figures, found = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.cifar:
            teacher = train_teacher(args.quick, Path(tmp))
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        try:
            if not args.cifar:
                found = {name: run_layout(name, args.quick, teacher, Path(tmp)) for name in LAYOUTS}
            if not args.skip_cifar:
                figures.update(cifar_compare(CIFAR["cpu"], CIFAR_LAYOUTS["cpu"], "cpu", Path(tmp)))
        finally:
            ray.shutdown()
    if found:
        figures.update({
            "speedup": found["trials"]["wall_seconds"] / found["packed"]["wall_seconds"],
            "speedup_stacked": found["trials"]["wall_seconds"] / found["stacked"]["wall_seconds"],
            "cpu_ratio": found["trials"]["cpu_seconds"] / found["packed"]["cpu_seconds"],
            "same_best": all(f["best"] == found["trials"]["best"] for f in found.values()),
            "same_best_value": all(f["best_mean_val_acc"] == found["trials"]["best_mean_val_acc"]
                                   for f in found.values())})
    figures.update({"cpus": cpu_count(), "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()], "quick": args.quick})
    for name, f in found.items():
        figures.update({f"{name}_{k}": round(v, 4) if isinstance(v, float) else v for k, v in f.items()})
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    common.write_result(__file__, figures, out)
    if found:
        print(common.table([(name, f["tune_trials"], f["models"], f["wall_seconds"], f["wall_per_model"],
                             f["cpu_per_model"], json.dumps(f["best"])) for name, f in found.items()],
                           ("layout", "trials", "models", "wall s", "wall s/model", "CPU s/model", "best")))
        print(f"speedup (trials wall / packed wall) {figures['speedup']:.2f}, same best: {figures['same_best']}")
    if not args.skip_cifar:
        print(f"CIFAR-shaped (ResNet-20, BatchNorm, {figures['cifar_configs']} configurations): separate "
              f"{figures['cifar_separate_wall_seconds']:.1f} s, packed {figures['cifar_packed_wall_seconds']:.1f} s, "
              f"cifar_speedup {figures['cifar_speedup']:.2f}, agree: {figures['cifar_agree']} (val acc diff "
              f"{figures['cifar_max_val_acc_diff']} <= {CIFAR_ACC_TOL}, val NLL diff "
              f"{figures['cifar_max_val_nll_diff']} <= {CIFAR_NLL_TOL})")
    print(f"load {figures['load_before']} -> {figures['load_after']}; wrote {out}")
    return figures


if __name__ == "__main__":
    main()
