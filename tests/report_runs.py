"""Tiny run directories of every kind, written by hand (nothing trains), for the report tests."""

import json
from pathlib import Path

import yaml

TRAIN = {"epochs": 2, "lr": 0.01, "checkpoint_seconds": 5.0, "device": "auto"}


def summary_row(role, seed, test_acc, val_acc=None, name="mlp", **extra):
    row = {"role": role, "name": name, "seed": seed, "generation": None, "member": None, "size": None,
           "combine": None, "parent": None, "selected_epoch": 2,
           "val_acc": val_acc if val_acc is not None else test_acc - 0.005, "val_nll": 0.5,
           "test_acc": test_acc, "test_nll": 0.4, "test_ece": 0.02, "test_acc_last": test_acc - 0.01,
           "params": 1000, "train_seconds": 1.0}
    row.update(extra)
    return row


def write_run(path: Path, name: str, kind: str, models: list, model="mlp", teacher=None, distill=None,
              records=True, loss=None, **config_extra) -> Path:
    """OUT/<name>/<run-id>/ with config.yaml, meta.json, records.csv and summary.json."""
    path.mkdir(parents=True)
    config = {"name": name, "run_id": None, "seeds": sorted({m["seed"] for m in models}),
              "dataset": {"name": "mnist1d", "root": "/data", "num_samples": 400},
              "model": {"name": model, "width": None}, "train": dict(TRAIN),
              "distill": distill or {"method": "kd", "temperature": 4.0, "alpha": 0.9, "teacher": None},
              "teacher": {"model": {"name": teacher} if teacher else None, "train": {}}, **config_extra}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / "meta.json").write_text(json.dumps({"kind": kind, "status": "done", "reason": None}))
    summary = {"status": "done", "models": models}
    if loss:
        summary["loss"] = loss
    (path / "summary.json").write_text(json.dumps(summary))
    if records:
        lines = ["role,name,generation,member,seed,epoch,split,loss,acc,nll,ece,lr,seconds,method,reduction,t2_scaling"]
        for m in models:
            if m["role"] == "ensemble":
                continue
            method = "kd,batchmean,True" if m["role"] in ("student",) or (m["generation"] or 0) > 0 else "ce,mean,"
            for epoch in (1, 2):
                for split in ("train", "val"):
                    gen = "" if m["generation"] is None else m["generation"]
                    member = "" if m["member"] is None else m["member"]
                    acc = m["val_acc"] - 0.05 * (2 - epoch)
                    lines.append(f"{m['role']},{m['name']},{gen},{member},{m['seed']},{epoch},{split},0.5,{acc},"
                                 f"0.5,0.02,0.01,0.1,{method}")
        (path / "records.csv").write_text("\n".join(lines) + "\n")
    return path


KD_LOSS = {"method": "kd", "reduction": "batchmean", "t2_scaling": True, "temperature": 4.0, "alpha": 0.9}


def kd_run(root: Path, seeds=(0, 1, 2), student=(0.70, 0.74, 0.75), teacher=(0.95, 0.94, 0.96),
           name="mnist1d-kd", run_id="kd1", temperature=4.0, alpha=0.9, **extra) -> Path:
    models = [summary_row("teacher", s, t, name="cnn1d") for s, t in zip(seeds, teacher)]
    models += [summary_row("student", s, a, parent="teacher") for s, a in zip(seeds, student)]
    distill = {"method": "kd", "temperature": temperature, "alpha": alpha, "teacher": None}
    return write_run(root / name / run_id, name, "train", models, teacher="cnn1d", distill=distill,
                     loss={**KD_LOSS, "temperature": temperature, "alpha": alpha}, **extra)


def labels_run(root: Path, seeds=(0, 1, 2), accs=(0.66, 0.69, 0.71), model="mlp", name="mnist1d-mlp",
               run_id="lab1", lr=None) -> Path:
    models = [summary_row("model", s, a, name=model) for s, a in zip(seeds, accs)]
    path = write_run(root / name / run_id, name, "train", models, model=model)
    if lr is not None:  # a different training setting: not the same student
        config = yaml.safe_load((path / "config.yaml").read_text())
        config["train"]["lr"] = lr
        (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def bornagain_run(root: Path, paper=None) -> Path:
    accs = {0: (0.64, 0.66, 0.65), 1: (0.66, 0.69, 0.66), 2: (0.67, 0.68, 0.69)}
    models = [summary_row("generation", s, accs[g][s], generation=g) for g in accs for s in (0, 1, 2)]
    for s in (0, 1, 2):
        models.append(summary_row("ensemble", s, 0.70 + 0.01 * s, name="ens_1..2", generation=2, size=2,
                                  combine="mean_probs", parent="generations 1..2"))
        models.append(summary_row("ensemble", s, 0.71 + 0.01 * s, name="ens_0..2", generation=2, size=3,
                                  combine="mean_probs", parent="generations 0..2"))
    extra = {"paper": paper} if paper is not None else {}
    return write_run(root / "ban" / "ban1", "ban", "bornagain", models,
                     loss={"method": "ban", "reduction": "batchmean", "t2_scaling": False}, **extra)


def ensemble_run(root: Path, **rows_extra) -> Path:
    models = []
    for s in (0, 1, 2):
        for m, acc in enumerate((0.90, 0.92, 0.94)):
            models.append(summary_row("member", s, acc + 0.01 * s, name="cnn1d", member=m, **rows_extra))
        for k, (acc, gain) in enumerate(((0.92, 0.0), (0.935, 0.015), (0.945, 0.025)), start=1):
            models.append(summary_row("ensemble", s, acc + 0.01 * s, name=f"k{k}", size=k, combine="mean_probs",
                                      member=None, selected_epoch=None, subsets=3,
                                      disagreement=None if k == 1 else 0.05 + 0.01 * s,
                                      gain_over_mean_member=gain, **rows_extra))
        models.append(summary_row("student", s, 0.93 + 0.01 * s, name="cnn1d", combine="mean_probs",
                                  parent="ensemble(k=3, combine=mean_probs)", gap_recovered=0.4 + 0.1 * s,
                                  **rows_extra))
    return write_run(root / "ens" / "ens1", "ens", "ensemble", models, model="cnn1d", loss=KD_LOSS)


SWEEP_GRID = [(1.0, 0.5), (1.0, 0.9), (4.0, 0.5), (4.0, 0.9)]


def sweep(root: Path, scheduler="fifo") -> Path:
    """A 2 x 2 T x alpha sweep, 2 seeds per setting (8 trials); T = 4, alpha = 0.5 is best."""
    folder = root / "tune" / "sw1"
    folder.mkdir(parents=True)
    trials = []
    for i, (t, a) in enumerate(SWEEP_GRID):
        for seed in (0, 1):
            acc = 0.60 + 0.02 * i - 0.05 * (i == 3) + 0.01 * seed
            trial = f"trial_{i}_{seed}"
            models = [summary_row("teacher", seed, 0.95, name="cnn1d"), summary_row("student", seed, acc, acc)]
            write_run(folder / trial, "tune-kd", "train", models, teacher="cnn1d",
                      distill={"method": "kd", "temperature": t, "alpha": a, "teacher": None},
                      loss={**KD_LOSS, "temperature": t, "alpha": a},
                      search={"distill": {"temperature": {"grid": [1, 4]}, "alpha": {"grid": [0.5, 0.9]}}})
            stopped = scheduler == "asha" and i == 0
            trials.append({"trial": trial, "params": {"distill.temperature": t, "distill.alpha": a, "seeds": seed},
                           "status": "stopped" if stopped else "done", "reason": None,
                           "run_dir": str(folder / trial), "epochs": 1 if stopped else 2, "best_val_acc": acc})
    (folder / "sweep.json").write_text(json.dumps({"name": "tune-kd", "scheduler": scheduler, "metric": "val_acc",
                                                   "kind": "train", "trials": trials}))
    return folder


def grid_sweep(root: Path, name: str, grid: dict, accuracy, seeds=(0, 1, 2, 3, 4)) -> Path:
    """A sweep over the product of `grid` (distill.* key -> values) x `seeds`, one trial per point and seed,
    laid out as `distill tune` writes it; accuracy(params, seed) -> (test_acc, val_acc) of the trial's student."""
    import itertools

    folder = root / name / "sw"
    folder.mkdir(parents=True)
    trials = []
    for i, values in enumerate(itertools.product(*grid.values())):
        params = dict(zip(grid, values))
        for seed in seeds:
            test, val = accuracy(params, seed)
            trial = f"trial_{i}_{seed}"
            distill = {"method": "kd", "temperature": 4.0, "alpha": 0.9, "teacher": None}
            distill.update({k.split(".", 1)[1]: v for k, v in params.items()})
            models = [summary_row("teacher", seed, 0.95, name="cnn1d"), summary_row("student", seed, test, val)]
            write_run(folder / trial, name, "train", models, teacher="cnn1d", distill=distill,
                      loss={**KD_LOSS, **{k: v for k, v in distill.items() if k != "teacher"}},
                      search={"distill": {k.split(".", 1)[1]: {"grid": list(v)} for k, v in grid.items()}})
            trials.append({"trial": trial, "params": {**params, "seeds": seed}, "status": "done", "reason": None,
                           "run_dir": str(folder / trial), "epochs": 2, "best_val_acc": val})
    (folder / "sweep.json").write_text(json.dumps({"name": name, "scheduler": "fifo", "metric": "val_acc",
                                                   "kind": "train", "trials": trials}))
    return folder
