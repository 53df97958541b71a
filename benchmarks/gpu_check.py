"""GPU check: the GPU paths against their CPU results, and the GPU's training figures.

    .venv/bin/python benchmarks/gpu_check.py                      # on a GPU: at most ~7 minutes
    .venv/bin/python benchmarks/gpu_check.py --dry --out /tmp/gpu_check.json   # CPU only, tiny, no figures

Checks, each on CIFAR-shaped `dataset.name=fake` data and each compared with the same thing
on the CPU:

- device: `train.device=auto` picks cuda; then the feature checks below, each one training
  step's loss and gradient on one batch (same weights; no update) and a fit_one;
- bf16 (`train.precision=bf16`), channels_last (`train.channels_last=true`), compile
  (`train.compile=true`);
- stacked: engine.fit of K same-architecture seeds at once on the device against K fit_one
  on the CPU (one step's logits and gradients, and the fits);
- tune: a Tune sweep of 4 trials at `tune.gpus_per_trial=0.25` (`tuning.run`); every trial
  ran on the GPU and each trial's validation figures match its config re-run on the CPU;
- pack: the 8-configuration (T, alpha) KD sweep of benchmarks/sweep.py's CIFAR-shaped part
  (`sweep.cifar_compare`; ResNet-20 with BatchNorm on fake 32x32 data) as 8 trials sharing the
  GPU at `tune.gpus_per_trial=0.125` (tune.pack=0) against one trial packing all 8 into one
  stacked fit (tune.pack=8, tune.gpus_per_trial=1): every model ran on the GPU, every
  configuration's best validation accuracy and NLL agree within ACC_TOL and FIT_TOL (on the
  GPU, where TF32 and batched BatchNorm kernels differ from one model's; in --dry, on the CPU,
  within sweep.CIFAR_ACC_TOL and CIFAR_NLL_TOL), and the figures `pack_speedup` (8 trials' wall / the packed one's) and both walls;
- bornagain (`bornagain.run`, generations=1) and ensemble (`ensembles.run`, 2 members):
  every summary row (generations, members, ensembles, students) against the CPU run's.

Every fit trains on the whole training split as one batch per epoch (a few epochs, one step
each): a GPU run shuffles with CUDA generators, whose order differs from the CPU's, and a
full batch makes the order irrelevant, so the device and the CPU take the same steps and only
their floating point differs. Tolerances: one step (loss and the whole gradient vector,
relative) STEP_TOL; a fit (train loss at every epoch, relative with a floor of 0.1, and the
last validation NLL) FIT_TOL; accuracies (a fit's, and every summary row's val_acc and
test_acc) ACC_TOL, absolute. fp32 leaves room for TF32 convolutions on the GPU, bf16 for its
8-bit mantissa (measured on the CPU: one ResNet-20 step's gradient is 8% off in bf16, an
8-step fit's losses 1-2%); a broken path is off by far more. A fit must also learn (its last
train loss below its first).

Figures (GPU only): training images/s (a few hundred timed steps after warm-up, synchronised)
of CIFAR ResNet-20, ResNet-56 and WRN-28-10 at batch 128, fp32 and bf16; model FLOP
utilisation of torchvision ResNet-18 in bf16 on 32x32 inputs (forward FLOPs from
`distill.export.cost.count_flops`, the counter behind `model_cost`'s `flops`, x 3 for a training
step, over the device's dense bf16 peak in PEAK_BF16_TFLOPS); and per GPU preset in
distill/presets/ the images/s of its model at its batch size and settings, the seconds per
epoch (`preset.cost.examples` / images/s) and GPU-hours of the full run (x `preset.cost.epochs`,
as if every model of the run cost as much as the preset's model).

Writes benchmarks/results/gpu_check.json (--dry: the --out path, with "dry": true). Exit
status 0 when every check is ok, 1 when one is not, 2 without CUDA (and without --dry).
`--dry` runs every check on the CPU with tiny sizes (torch.compile with the aot_eager backend:
inductor's C++ compile alone takes about a minute on 2 cores) so that this file cannot rot.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import common
import torch
import torch.nn.functional as F

from distill import engine
from distill.config import ModelConfig, TrainConfig, load_config
from distill.schema import from_dict
from distill.presets_config import preset_names
from distill.export.cost import count_flops
from distill.data import load_data
from distill.training.evaluation import autocast, use_channels_last
from distill.models import create_model
from distill.training.replicas import make_replicas

STEP_TOL = {"fp32": 0.05, "bf16": 0.25}  # one step: relative difference of the loss and of the gradient vector
FIT_TOL = {"fp32": 0.05, "bf16": 0.15}   # a fit: |loss - CPU's| / max(CPU's, 0.1), every epoch; val NLL relative
ACC_TOL = 0.10                           # a fit: accuracy (fraction), absolute
CHECKS = ("device", "bf16", "channels_last", "compile", "stacked", "tune", "pack", "bornagain", "ensemble")
PACK_LAYOUTS = {  # the pack check's two layouts: on the GPU sweep.CIFAR_LAYOUTS["gpu"]; --dry on the CPU, one CPU each
    "dry": {"separate": ["tune.pack=0", "tune.cpus_per_trial=1"],
            "packed": ["tune.pack=8", "tune.cpus_per_trial=1", "tune.max_concurrent_trials=1"]},
}

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s, matched in
# this order as substrings of torch.cuda.get_device_name() (so GH200 before H200, A100 before A10).
PEAK_BF16_TFLOPS = (("GH200", 989), ("H200 NVL", 835), ("H200", 989), ("H100 NVL", 835), ("H100 PCIe", 756),
                    ("H100", 989), ("B200", 2250), ("A100", 312), ("L40S", 362), ("L40", 181), ("L4", 121),
                    ("A10G", 70), ("A10", 125), ("A6000", 155), ("4090", 165), ("3090", 71))
DATASET_SHAPES = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "svhn": ((3, 32, 32), 10),
                  "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10)}
SIZES = {  # the checks' data and models: "gpu" on a GPU, "dry" on the CPU in --dry
    "gpu": dict(shape=[3, 32, 32], samples=384, epochs=8, model=["model.name=resnet20"],
                small=["model.name=cnn2d", "model.width=16"], stack=4, trials=4, gpus_per_trial=0.25),
    "dry": dict(shape=[3, 8, 8], samples=100, epochs=3, model=["model.name=resnet8"],
                small=["model.name=cnn2d", "model.width=8", "model.depth=2"], stack=2, trials=2,
                gpus_per_trial=0.0),
}
FEATURES = {  # feature check -> its train overrides (channels_last is on by default on CUDA)
    "device": ["train.channels_last=false"],
    "bf16": ["train.precision=bf16", "train.channels_last=false"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true", "train.channels_last=false"],
}


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


class Context:
    """Sizes, devices, data and the CPU reference runs shared by the checks."""

    def __init__(self, dry: bool, folder: Path):
        self.dry, self.folder, self.size = dry, folder, SIZES["dry" if dry else "gpu"]
        self.device = torch.device("cpu" if dry else "cuda")
        self.cpu = torch.device("cpu")
        self.data = load_data(self.config().dataset)
        self.data_dev = self.data.to(self.device)
        self.x, self.y = self.data.x["train"], self.data.y["train"]  # the one batch of every epoch
        self._reference = None
        self.figures = {}  # figures a check measures besides its comparisons (pack_speedup)

    def config(self, *extra: str, model: str = "model", device: str | None = None):
        s = self.size
        return load_config(None, [
            "name=gpu-check", "dataset.name=fake", f"dataset.fake_shape={s['shape']}",
            f"dataset.num_samples={s['samples']}", f"train.epochs={s['epochs']}", f"train.batch_size={s['samples']}",
            f"train.device={device or self.device.type}", *s[model], *extra])

    def reference(self):
        """The CPU's one step and fit_one of the feature model, in fp32 (computed once)."""
        if self._reference is None:
            cfg = self.config(device="cpu")
            model = engine.new_model(cfg.model, self.data, 0)
            self._reference = (one_step(model, self.x, self.y, self.cpu),
                               engine.fit_one(model, self.data, cfg.train, seed=0, device=self.cpu))
        return self._reference


def relative(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def one_step(model, x, y, device, *, precision="fp32", channels_last=False, compile=False):
    """(loss, flat gradient) of one training step's forward and backward on (x, y), through the
    engine's replicas and autocast; the model's weights and buffers are left as they were."""
    saved = copy.deepcopy(model.state_dict())
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    replicas = make_replicas([model], compile=compile, channels_last=channels_last)
    model.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits, _ = replicas.forward(x.to(device)[None])
        loss = F.cross_entropy(logits[0].float(), y.to(device))
    loss.backward()
    grad = torch.cat([p.grad.float().flatten().cpu() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return loss.item(), grad


def fit_diffs(fit, reference, precision: str = "fp32") -> list[tuple[str, float, float]]:
    """(name, value, tolerance) comparing a fit with the CPU's: train loss at every epoch, and the
    last epoch's validation NLL and accuracy; and whether it learned (last train loss < first)."""
    losses, cpu_losses = ([r["loss"] for r in f.history if r["split"] == "train"] for f in (fit, reference))
    val, cpu_val = fit.last["val"], reference.last["val"]
    tol = FIT_TOL[precision]
    return [("fit_train_loss_diff", max(abs(a - b) / max(b, 0.1) for a, b in zip(losses, cpu_losses)), tol),
            ("fit_val_nll_diff", abs(val["nll"] - cpu_val["nll"]) / max(cpu_val["nll"], 0.1), tol),
            ("fit_val_acc_diff", abs(val["acc"] - cpu_val["acc"]), ACC_TOL),
            ("fit_not_learning", float(losses[-1] >= losses[0]), 0.0)]


def check_feature(ctx: Context, name: str) -> list[tuple[str, float, float]]:
    cfg = ctx.config(*FEATURES[name])
    t = cfg.train
    (ref_loss, ref_grad), ref_fit = ctx.reference()
    model = engine.new_model(cfg.model, ctx.data, 0)
    channels_last = use_channels_last(t, ctx.device, ctx.data.input_shape)
    loss, grad = one_step(model, ctx.x, ctx.y, ctx.device, precision=t.precision, channels_last=channels_last,
                          compile=t.compile)
    fit = engine.fit_one(model, ctx.data_dev, t, seed=0, device=ctx.device)
    found = []
    if name == "device":
        auto = engine.resolve_device(load_config(None, ["train.device=auto"]).train.device)
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        found.append(("auto_device_wrong", float(auto.type != expected), 0.0))
    tol = STEP_TOL[t.precision]
    return found + [("step_loss_diff", relative(loss, ref_loss), tol), ("step_grad_diff", relative(grad, ref_grad), tol),
                    *fit_diffs(fit, ref_fit, t.precision)]


def check_compile(ctx: Context) -> list[tuple[str, float, float]]:
    if not ctx.dry:
        return check_feature(ctx, "compile")
    torch._dynamo.reset()
    with mock.patch.object(torch, "compile", functools.partial(torch.compile, backend="aot_eager")):
        return check_feature(ctx, "compile")


def check_stacked(ctx: Context) -> list[tuple[str, float, float]]:
    """K seeds stacked in one engine.fit on the device against one fit_one per seed on the CPU."""
    cfg, cpu_cfg = ctx.config(model="small"), ctx.config(model="small", device="cpu")
    seeds = list(range(ctx.size["stack"]))
    models = [engine.new_model(cfg.model, ctx.data, s).to(ctx.device) for s in seeds]
    references = [copy.deepcopy(m).to(ctx.cpu) for m in models]
    stacked = make_replicas(models)
    k = len(seeds)
    logits, _ = stacked.forward(ctx.x.to(ctx.device).expand(k, *ctx.x.shape))
    F.cross_entropy(logits.flatten(0, 1), ctx.y.to(ctx.device).repeat(k), reduction="sum").div(len(ctx.y)).backward()
    grads = [torch.cat([p.grad[i].float().flatten().cpu() for p in stacked.parameters()]) for i in range(k)]
    steps = [one_step(r, ctx.x, ctx.y, ctx.cpu) for r in references]
    with torch.no_grad():
        cpu_logits = torch.stack([r.eval()(ctx.x) for r in references])
    fits = engine.fit(models, ctx.data_dev, cfg.train, seeds=seeds, device=ctx.device)
    cpu_fits = [engine.fit_one(r.train(), ctx.data, cpu_cfg.train, seed=s, device=ctx.cpu)
                for r, s in zip(references, seeds)]
    per_fit = [fit_diffs(f, c) for f, c in zip(fits, cpu_fits)]
    return [("stacked", float(type(stacked).__name__ != "Stacked"), 0.0),
            ("step_logits_diff", relative(logits.detach().float().cpu(), cpu_logits), STEP_TOL["fp32"]),
            ("step_grad_diff", max(relative(g, s[1]) for g, s in zip(grads, steps)), STEP_TOL["fp32"]),
            *[(name, max(d[i][1] for d in per_fit), tol) for i, (name, _, tol) in enumerate(per_fit[0])]]


def rows_of(run_dir: Path) -> dict:
    """summary.json rows keyed by what identifies a model."""
    rows = json.loads((Path(run_dir) / "summary.json").read_text())["models"]
    keys = ("role", "name", "seed", "generation", "member", "size", "combine", "student")
    return {tuple(str(r.get(k)) for k in keys): r for r in rows}


def compare_rows(device_rows: dict, cpu_rows: dict) -> list[tuple[str, float, float]]:
    found = [("rows_missing", float(len(set(cpu_rows) ^ set(device_rows))), 0.0)]
    for figure in ("val_acc", "test_acc"):
        diffs = [abs(device_rows[key][figure] - row[figure]) for key, row in cpu_rows.items()
                 if key in device_rows and row.get(figure) is not None and device_rows[key].get(figure) is not None]
        found.append((f"{figure}_diff", max(diffs, default=float("inf")), ACC_TOL))
    return found


def check_experiment(ctx: Context, kind: str) -> list[tuple[str, float, float]]:
    """bornagain.run (1 generation) or ensembles.run (2 members) on the device and on the CPU."""
    if kind == "bornagain":
        from bornagain import run
        extra, model = ["bornagain.generations=1", "distill.method=ban", "distill.temperature=1.0"], "model"
    else:
        from ensembles import run
        extra, model = ["ensemble.members=2", "ensemble.combine=[mean_probs]"], "small"
    runs = {}
    for device in (ctx.device.type, "cpu"):
        cfg = ctx.config(*extra, "seeds=[0]", model=model, device=device)
        runs[device] = rows_of(run(cfg, ctx.folder / f"{kind}-{device}", progress=False))
    return compare_rows(runs[ctx.device.type], runs["cpu"])


def check_tune(ctx: Context) -> list[tuple[str, float, float]]:
    """A grid of trials over train.lr on Ray Tune; each trial's run re-run on the CPU from its config.yaml."""
    import tuning
    from distill.training.runner import train

    lrs = [0.003, 0.01, 0.03, 0.1][:ctx.size["trials"]]
    cfg = ctx.config("seeds=[0]", "train.device=auto", f"tune.gpus_per_trial={ctx.size['gpus_per_trial']}",
                     "tune.cpus_per_trial=1", f"tune.storage_path={ctx.folder / 'tune'}",
                     f"search.train.lr={{grid: {lrs}}}", model="small")
    sweep = json.loads((tuning.run(cfg, ctx.folder, progress=False) / "sweep.json").read_text())
    wrong_device, diffs = 0, []
    for trial in sweep["trials"]:
        run_dir = Path(trial["run_dir"])
        wrong_device += not json.loads((run_dir / "meta.json").read_text())["device"].startswith(ctx.device.type)
        again = load_config(run_dir / "config.yaml", ["train.device=cpu"])
        cpu_dir = train(again, ctx.folder, run_dir=ctx.folder / "tune-cpu" / run_dir.name, progress=False)
        diffs.append(compare_rows(rows_of(run_dir), rows_of(cpu_dir)))
    return [("trials_not_done", float(len(lrs) - sweep["counts"]["done"]), 0.0),
            ("trials_off_device", float(wrong_device), 0.0),
            *[(name, max(d[i][1] for d in diffs), tol) for i, (name, _, tol) in enumerate(diffs[0])]]


def check_pack(ctx: Context) -> list[tuple[str, float, float]]:
    """8 (T, alpha) configurations of a BatchNorm ResNet: 8 trials sharing the device against one packed trial."""
    import sweep

    size = sweep.CIFAR["dry" if ctx.dry else "gpu"]
    layouts = PACK_LAYOUTS["dry"] if ctx.dry else sweep.CIFAR_LAYOUTS["gpu"]
    tolerances = (sweep.CIFAR_ACC_TOL, sweep.CIFAR_NLL_TOL) if ctx.dry else (ACC_TOL, FIT_TOL["fp32"])
    found = sweep.cifar_compare(size, layouts, ctx.device.type, ctx.folder / "pack", tolerances)
    if not ctx.dry:  # timed figures only on the GPU
        ctx.figures.update({f"pack_{key[len('cifar_'):]}": value for key, value in found.items()
                            if key.endswith(("wall_seconds", "speedup", "_trials", "_how"))})
    configs = found["cifar_configs"]
    return [("configs_missing", float(found["cifar_configs_missing"]), 0.0),
            ("models_not_done", float(2 * configs - found["cifar_models_done_separate"]
                                      - found["cifar_models_done_packed"]), 0.0),
            ("models_off_device", float(found["cifar_models_off_device"]), 0.0),
            ("not_one_packed_trial", float(found["cifar_packed_trials"] != 1), 0.0),
            ("val_acc_diff", found["cifar_max_val_acc_diff"], found["cifar_val_acc_tol"]),
            ("val_nll_diff", found["cifar_max_val_nll_diff"], found["cifar_val_nll_tol"])]


def run_checks(ctx: Context) -> dict:
    figures, runners = {}, {name: functools.partial(check_feature, ctx, name) for name in FEATURES}
    runners.update(compile=functools.partial(check_compile, ctx), stacked=functools.partial(check_stacked, ctx),
                   tune=functools.partial(check_tune, ctx), pack=functools.partial(check_pack, ctx),
                   bornagain=functools.partial(check_experiment, ctx, "bornagain"),
                   ensemble=functools.partial(check_experiment, ctx, "ensemble"))
    for name in CHECKS:
        started = time.perf_counter()
        try:
            found = runners[name]()
            figures[f"{name}_ok"] = all(value <= tol for _, value, tol in found)
            for what, value, tol in found:
                figures[f"{name}_{what}"], figures[f"{name}_{what}_tol"] = round(value, 6), tol
        except Exception as err:  # a broken path is a failed check, reported with the others
            traceback.print_exc()
            figures[f"{name}_ok"], figures[f"{name}_error"] = False, f"{type(err).__name__}: {err}"
        figures[f"{name}_seconds"] = round(time.perf_counter() - started, 2)
        print(f"{name:14s} {'ok' if figures[f'{name}_ok'] else 'FAILED'}  ({figures[f'{name}_seconds']} s)",
              file=sys.stderr)
    figures["all_ok"] = all(figures[f"{name}_ok"] for name in CHECKS)
    return {**figures, **ctx.figures}


# ---------------------------------------------------------------- figures


def images_per_second(model, shape, classes: int, batch: int, device, *, precision: str, channels_last: bool,
                      steps: int, warmup: int = 10, budget_s: float = 10.0) -> float:
    """Training images/s: `steps` SGD steps (fewer once `budget_s` has passed) after `warmup`, synchronised."""
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    replicas = make_replicas([model], channels_last=channels_last)
    optimizer = engine.make_optimizer(replicas.parameters(), TrainConfig(optimizer="sgd", lr=0.01))
    x, y = torch.randn(1, batch, *shape, device=device), torch.randint(classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(replicas.forward(x)[0][0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync()
    started, done = time.perf_counter(), 0
    while done < steps and (done < 3 or time.perf_counter() - started < budget_s):
        step()
        done += 1
    sync()
    return done * batch / (time.perf_counter() - started)


def preset_plans() -> list[dict]:
    """Every preset that needs a GPU: its (main) model, input shape, train section and cost."""
    plans = []
    for name in preset_names():
        cfg = load_config(name)
        if cfg.preset is None or cfg.preset.needs.device != "gpu":
            continue
        model_cfg = cfg.model
        if cfg.preset.command == "ensemble" and cfg.ensemble.models:  # the members dominate the cost
            model_cfg = from_dict(ModelConfig, cfg.ensemble.models[0], prefix="ensemble.models[0].")
        shape, classes = DATASET_SHAPES[cfg.dataset.name]
        plans.append({"name": name, "model": model_cfg, "shape": shape, "classes": classes, "train": cfg.train,
                      "examples": cfg.preset.cost.examples, "epochs": cfg.preset.cost.epochs})
    return plans


def gpu_figures(device) -> dict:
    name = torch.cuda.get_device_name(device)
    figures = {"gpu": name, "timing": "engine defaults (deterministic, cudnn.benchmark off), channels_last, fused SGD"}
    engine.setup_torch(TrainConfig())
    for model in ("resnet20", "resnet56", "wrn_28_10"):
        for precision in ("fp32", "bf16"):
            ips = images_per_second(create_model(ModelConfig(name=model), (3, 32, 32), 10), (3, 32, 32), 10, 128,
                                    device, precision=precision, channels_last=True, steps=300)
            figures[f"images_per_s_{model}_{precision}"] = round(ips, 1)
    resnet18 = create_model(ModelConfig(name="resnet18"), (3, 32, 32), 10)
    flops = count_flops(resnet18, (3, 32, 32))
    ips = images_per_second(resnet18, (3, 32, 32), 10, 256, device, precision="bf16", channels_last=True, steps=300)
    peak = peak_tflops(name)
    achieved = 3 * flops * ips / 1e12
    figures.update(resnet18_forward_flops=flops, images_per_s_resnet18_bf16=round(ips, 1),
                   achieved_tflops_resnet18_bf16=round(achieved, 2), peak_bf16_tflops=peak,
                   mfu_resnet18_bf16=round(achieved / peak, 4) if peak else None)
    for plan in preset_plans():
        engine.setup_torch(plan["train"])
        model = create_model(plan["model"], plan["shape"], plan["classes"])
        ips = images_per_second(model, plan["shape"], plan["classes"], plan["train"].batch_size, device,
                                precision=plan["train"].precision, steps=100, budget_s=5.0,
                                channels_last=use_channels_last(plan["train"], device, plan["shape"]))
        epoch_s = plan["examples"] / ips
        figures.update({f"images_per_s_{plan['name']}": round(ips, 1), f"epoch_s_{plan['name']}": round(epoch_s, 1),
                        f"gpu_hours_{plan['name']}": round(epoch_s * plan["epochs"] / 3600, 2)})
    figures["gpu_presets"] = [plan["name"] for plan in preset_plans()]
    return figures


def dry_figures() -> dict:
    """The figures' code on the CPU at toy sizes (nothing timed is written): every GPU preset's
    model is built, and one tiny model is timed and its FLOPs counted."""
    plans = preset_plans()
    with torch.device("meta"):  # built without memory or initialisation cost
        for plan in plans:
            create_model(plan["model"], plan["shape"], plan["classes"])
    model = create_model(ModelConfig(name="resnet8"), (3, 16, 16), 10)
    assert count_flops(model, (3, 16, 16)) > 0
    assert images_per_second(model, (3, 16, 16), 10, 8, torch.device("cpu"), precision="bf16",
                             channels_last=True, steps=2, warmup=1) > 0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989 and peak_tflops("NVIDIA A10G") == 70
    return {"gpu_presets": [plan["name"] for plan in plans]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU only, tiny sizes, no GPU figures (needs --out)")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/gpu_check.json)")
    args = parser.parse_args(argv)
    if args.dry and args.out is None:
        print("gpu_check: --dry needs --out PATH (a dry run never replaces the GPU result file)", file=sys.stderr)
        return 2
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run on a GPU, or add --dry --out PATH for the CPU-only check",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    engine.setup_torch(TrainConfig())
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(args.dry, Path(folder))
        figures = {"dry": args.dry, "device": str(ctx.device), **run_checks(ctx)}
    figures.update(dry_figures() if args.dry else gpu_figures(ctx.device))
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{'all checks ok' if figures['all_ok'] else 'SOME CHECKS FAILED'}; "
          f"wrote {common.write_result(__file__, figures, args.out)}")
    return 0 if figures["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
