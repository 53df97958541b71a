"""Mirrors of a run directory in TensorBoard, MLflow and W&B (opt-in: `log.tensorboard`, `log.mlflow`,
`log.wandb`).

    distill train mnist1d-kd log.tensorboard=true log.mlflow=true log.wandb=true
    tensorboard --logdir runs/<name>/<run-id>/tensorboard
    mlflow ui --backend-store-uri sqlite:///runs/<name>/<run-id>/mlflow.db
    wandb sync runs/<name>/<run-id>/wandb/offline-run-*       # upload the offline W&B run later

`distill.runs.store.Run` calls `start` when it opens a run and then `Tracker.rows` for every
records.csv row it writes, `Tracker.summary` for every summary.json and `Tracker.finish`
with the final status, so every experiment (train, bornagain, ensemble, Tune trials) is
mirrored without its runner knowing. What is mirrored:

- TensorBoard: `<run dir>/tensorboard/<model>/` per model (e.g. `student-mlp-s0`,
  `generation-mlp-g2-s1`, `member-cnn1d-m3-s0`), scalars `<split>/<loss|acc|nll|ece>` and
  `lr` at step = epoch, `summary/<figure>` at the selected epoch; the config as text in
  `<run dir>/tensorboard/`.
- MLflow: one run per run directory (named after it, in experiment `log.mlflow_experiment`,
  default the config's name), params = every config key (`train.lr`, ...), metrics
  `<model>/<split>/<figure>` at step = epoch and `<model>/summary/<figure>`, tags
  `distill.kind`, `distill.run_dir`, `distill.status`, artifacts config.yaml, summary.json,
  meta.json. The default store is `sqlite:///<run dir>/mlflow.db`.
- W&B: one run per run directory (named after it, in project `log.wandb_project`, default the
  config's name; tags: the kind), offline by default (`log.wandb_mode`): the files go to
  `<run dir>/wandb/offline-run-*/` and `wandb sync` uploads them later. Config = every config
  key, metrics `<model>/<split>/<figure>` and `<model>/lr` against the step metric
  `<model>/epoch`, summary `<model>/summary/<figure>` and `distill.status`.

The run directory stays the source of truth: a mirror that fails (a missing package, an
unreachable server) prints one warning line and is off for the rest of the run, which goes
on. A resumed run replays every row from its checkpoints, so each session rebuilds the
mirrors: the TensorBoard folder is written afresh and the MLflow run of the previous
session (its id in `<run dir>/tracking.json`) is deleted and logged again in a new one; so is
an offline W&B run's folder (an online W&B run of an earlier session stays on the server).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import yaml

from distill.runs.atomic import write_bytes_atomic
from distill.config import Config
from distill.schema import to_dict

FIGURES = ("loss", "acc", "nll", "ece")  # the records.csv columns mirrored per split
IDENTITY = ("role", "name", "generation", "member", "size", "combine", "seed", "parent")
INSTALL = "pip install 'distill-runner[track]'"
STATE = "tracking.json"  # the mirrors' runs of the last session (MLflow run id, W&B run folder)


def _state(run_dir: Path) -> dict:
    try:
        found = json.loads((run_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _update_state(run_dir: Path, **keys) -> None:
    write_bytes_atomic(run_dir / STATE, json.dumps({**_state(run_dir), **keys}, indent=2).encode() + b"\n")


def _number(value) -> Optional[float]:
    """`value` as a finite float, else None (records hold None for figures a split does not have)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class ModelKeys:
    """One folder-safe name per model: role-name[-gG][-mM][-kK][-combine]-sS, with -2, -3 .. added
    when two models (told apart by their parent) would share one."""

    def __init__(self):
        self.keys: dict[tuple, str] = {}

    def __call__(self, row: dict) -> str:
        identity = tuple(row.get(k) for k in IDENTITY)
        if identity not in self.keys:
            g, m, size = row.get("generation"), row.get("member"), row.get("size")
            parts = [row.get("role") or "model", row.get("name"), g is not None and f"g{g}",
                     m is not None and f"m{m}", size is not None and f"k{size}", row.get("combine"),
                     row.get("seed") is not None and f"s{row.get('seed')}"]
            key = re.sub(r"[^\w.+-]", "_", "-".join(str(p) for p in parts if p not in (None, False, "")))
            taken = set(self.keys.values())
            base, n = key, 2
            while key in taken:
                key, n = f"{base}-{n}", n + 1
            self.keys[identity] = key
        return self.keys[identity]


def same_run_config(old_text: str, new_text: str) -> bool:
    """Whether two config.yaml texts describe the same run: equal but for their `log` sections, so
    that a finished run can be resumed with a mirror turned on (it replays every row into it)."""
    try:
        old, new = yaml.safe_load(old_text), yaml.safe_load(new_text)
    except yaml.YAMLError:
        return False
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old_text == new_text
    return {k: v for k, v in old.items() if k != "log"} == {k: v for k, v in new.items() if k != "log"}


def config_params(cfg: Config) -> dict[str, str]:
    """Every config key (dotted) with its value as text; the preset's description is left out."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value if isinstance(value, str) else json.dumps(value)

    walk("", {k: v for k, v in to_dict(cfg).items() if k not in ("preset", "paper")})
    return {k: v[:500] for k, v in flat.items()}  # 500: the smallest limit of MLflow servers


class TensorBoardMirror:
    """`<run dir>/tensorboard/<model>/` event files, through torch.utils.tensorboard."""

    def __init__(self, run_dir: Path, config_text: str):
        from torch.utils.tensorboard import SummaryWriter

        self.root = run_dir / "tensorboard"
        shutil.rmtree(self.root, ignore_errors=True)  # rebuilt from the rows this session replays
        self.SummaryWriter = SummaryWriter
        self.writers: dict[str, object] = {}
        top = SummaryWriter(str(self.root))
        top.add_text("config", "".join(f"    {line}\n" for line in config_text.splitlines()))  # as code
        top.close()

    def writer(self, key: str):
        if key not in self.writers:
            self.writers[key] = self.SummaryWriter(str(self.root / key))
        return self.writers[key]

    def rows(self, keyed: list[tuple[str, dict]]) -> None:
        for key, row in keyed:
            w, epoch = self.writer(key), int(row["epoch"])
            for figure in FIGURES:
                value = _number(row.get(figure))
                if value is not None:
                    w.add_scalar(f"{row['split']}/{figure}", value, epoch)
            if row["split"] == "train":
                for extra in ("lr", "temperature"):
                    if _number(row.get(extra)) is not None:
                        w.add_scalar(extra, float(row[extra]), epoch)
        for key in {key for key, _ in keyed}:
            self.writers[key].flush()

    def summary(self, keyed: list[tuple[str, dict]]) -> None:
        for key, row in keyed:
            w = self.writer(key)
            for figure, value in row.items():
                if figure not in IDENTITY and _number(value) is not None:
                    w.add_scalar(f"summary/{figure}", float(value), int(row.get("selected_epoch") or 0))
            w.flush()

    def finish(self, status: str, reason: Optional[str]) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


class MlflowMirror:
    """One MLflow run per run directory, through `mlflow.tracking.MlflowClient` (no global state)."""

    def __init__(self, run_dir: Path, cfg: Config, kind: str):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server: fail fast
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables"
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        uri = cfg.log.mlflow_uri or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = cfg.log.mlflow_experiment or cfg.name
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=None if cfg.log.mlflow_uri else str(run_dir.resolve() / "mlartifacts"))
        old = _state(run_dir)
        if old.get("mlflow_uri") == uri and old.get("mlflow_run_id"):
            try:  # the previous session's run: replaced by this one, which logs every row again
                self.client.delete_run(old["mlflow_run_id"])
            except Exception:  # noqa: BLE001 - already gone, or deleted by hand
                pass
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name, tags={
            "distill.kind": kind, "distill.run_dir": str(run_dir.resolve()), "distill.status": "running"}).info.run_id
        _update_state(run_dir, mlflow_uri=uri, mlflow_experiment=name, mlflow_run_id=self.run_id)
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in config_params(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_artifact(self.run_id, str(run_dir / "config.yaml"))

    def _log(self, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value, step in metrics]
        for i in range(0, len(batch), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def rows(self, keyed: list[tuple[str, dict]]) -> None:
        metrics = []
        for key, row in keyed:
            epoch = int(row["epoch"])
            figures = FIGURES + (("lr", "temperature") if row["split"] == "train" else ())
            for figure in figures:
                value = _number(row.get(figure))
                if value is not None:
                    name = figure if figure in ("lr", "temperature") else f"{row['split']}/{figure}"
                    metrics.append((f"{key}/{name}", value, epoch))
        self._log(metrics)

    def summary(self, keyed: list[tuple[str, dict]]) -> None:
        self._log([(f"{key}/summary/{figure}", float(value), 0) for key, row in keyed
                   for figure, value in row.items() if figure not in IDENTITY and _number(value) is not None])

    def finish(self, status: str, reason: Optional[str]) -> None:
        self.client.set_tag(self.run_id, "distill.status", status)
        if reason:
            self.client.set_tag(self.run_id, "distill.reason", reason[:5000])
        for name in ("summary.json", "meta.json"):
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, {"done": "FINISHED", "failed": "FAILED"}.get(status, "KILLED"))


class WandbMirror:
    """One W&B run per run directory, offline by default (`wandb sync` uploads it later)."""

    def __init__(self, run_dir: Path, cfg: Config, kind: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run_dir = run_dir
        old = _state(run_dir).get("wandb_dir")
        if old and Path(old).parent == (run_dir / "wandb").resolve():  # the previous session's offline run
            shutil.rmtree(old, ignore_errors=True)                   # is replaced by this one (every row again)
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_save_requirements=False)
        self.run = wandb.init(project=cfg.log.wandb_project or cfg.name, name=run_dir.name, dir=str(run_dir),
                              mode=cfg.log.wandb_mode, config=config_params(cfg), tags=[kind], job_type=kind,
                              reinit="create_new", settings=settings)
        folder = Path(self.run.dir).parent.resolve()  # <run dir>/wandb/<offline-run-...>/files -> its run folder
        _update_state(run_dir, wandb_dir=str(folder) if cfg.log.wandb_mode == "offline" else None,
                      wandb_run_id=self.run.id, wandb_mode=cfg.log.wandb_mode)
        self.models: set[str] = set()

    def _define(self, key: str) -> None:
        if key not in self.models:  # each model's figures against its own epoch
            self.run.define_metric(f"{key}/epoch", hidden=True)
            self.run.define_metric(f"{key}/*", step_metric=f"{key}/epoch")
            self.models.add(key)

    def rows(self, keyed: list[tuple[str, dict]]) -> None:
        points: dict[tuple[str, int], dict] = {}  # one log call per model and epoch, every split in it
        for key, row in keyed:
            epoch = int(row["epoch"])
            point = points.setdefault((key, epoch), {f"{key}/epoch": epoch})
            for figure in FIGURES + (("lr", "temperature") if row["split"] == "train" else ()):
                value = _number(row.get(figure))
                if value is not None:
                    name = figure if figure in ("lr", "temperature") else f"{row['split']}/{figure}"
                    point[f"{key}/{name}"] = value
        for (key, _), point in points.items():
            self._define(key)
            self.run.log(point)

    def summary(self, keyed: list[tuple[str, dict]]) -> None:
        self.run.summary.update({f"{key}/summary/{figure}": float(value) for key, row in keyed
                                 for figure, value in row.items() if figure not in IDENTITY and _number(value) is not None})

    def finish(self, status: str, reason: Optional[str]) -> None:
        self.run.summary.update({"distill.status": status, **({"distill.reason": reason[:5000]} if reason else {})})
        self.run.finish(exit_code=0 if status == "done" else 1)


class Tracker:
    """The mirrors a run asked for; each one that fails is warned about once and dropped."""

    def __init__(self, run_dir: Path, warn: Callable[[str], None]):
        self.run_dir = run_dir
        self.warn = warn
        self.mirrors: dict[str, object] = {}
        self.keys = ModelKeys()
        self.summarised: set[str] = set()  # models whose summary row is mirrored (summary.json grows)

    def _each(self, action: Callable[[object], None]) -> None:
        for name, mirror in list(self.mirrors.items()):
            self._guard(name, lambda: action(mirror))

    def _guard(self, name: str, body: Callable[[], object]) -> None:
        try:
            body()
        except Exception as err:  # noqa: BLE001 - a mirror never fails the run
            self.mirrors.pop(name, None)
            lines = str(err).strip().splitlines()
            why = f"{type(err).__name__}: {lines[0][:300] if lines else 'no message'}"
            hint = f"; {INSTALL}" if isinstance(err, ImportError) else ""
            self.warn(f"warning: {name} tracking is off for the rest of this run ({why}{hint}); "
                      f"{self.run_dir} still holds every figure")

    def rows(self, rows: list[dict]) -> None:
        if self.mirrors and rows:
            keyed = [(self.keys(row), row) for row in rows]
            self._each(lambda m: m.rows(keyed))

    def summary(self, models: list[dict]) -> None:
        keyed = [(self.keys(row), row) for row in models]
        new = [(key, row) for key, row in keyed if key not in self.summarised]
        if self.mirrors and new:
            self._each(lambda m: m.summary(new))
        self.summarised.update(key for key, _ in new)

    def finish(self, status: str, reason: Optional[str] = None) -> None:
        self._each(lambda m: m.finish(status, reason))
        self.mirrors = {}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def start(run_dir: Path, cfg: Config, kind: str, config_text: str,
          warn: Callable[[str], None] = _stderr) -> Optional[Tracker]:
    """The tracker of a run just opened (None when `log` asks for no mirror); never raises."""
    if not (cfg.log.tensorboard or cfg.log.mlflow or cfg.log.wandb):
        return None
    tracker = Tracker(Path(run_dir), warn)
    if cfg.log.tensorboard:
        tracker._guard("tensorboard", lambda: tracker.mirrors.__setitem__(
            "tensorboard", TensorBoardMirror(tracker.run_dir, config_text)))
    if cfg.log.mlflow:
        tracker._guard("mlflow", lambda: tracker.mirrors.__setitem__(
            "mlflow", MlflowMirror(tracker.run_dir, cfg, kind)))
    if cfg.log.wandb:
        tracker._guard("wandb", lambda: tracker.mirrors.__setitem__(
            "wandb", WandbMirror(tracker.run_dir, cfg, kind)))
    return tracker
