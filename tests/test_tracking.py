"""The TensorBoard and MLflow mirrors of a run (distill/runs/tracking.py), read back with each tool's
own reader and compared with records.csv and summary.json, the run directory's own files."""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bornagain
import distill
from distill.config import config_hash, load_config
from distill.runs.tracking import FIGURES, ModelKeys, config_params, same_run_config
from tests.conftest import tiny_overrides

ON = {"log.tensorboard": "true", "log.mlflow": "true"}
TEACHER = {"teacher.model": "{name: mlp, width: 16}", "distill.method": "kd", "seeds": "[0]"}


def _records(run) -> dict[str, list[dict]]:
    """records.csv rows per model key (as the mirrors name the models)."""
    keys, found = ModelKeys(), {}
    summary_parent = {(r["role"], r["generation"], r["member"], r["seed"]): r["parent"]
                      for r in json.loads((run / "summary.json").read_text())["models"]}
    with open(run / "records.csv") as f:
        for row in csv.DictReader(f):
            ident = {k: (int(row[k]) if row[k] and k in ("generation", "member", "seed") else row[k] or None)
                     for k in ("role", "name", "generation", "member", "seed")}
            ident["parent"] = summary_parent.get((ident["role"], ident["generation"], ident["member"],
                                                  ident["seed"]))  # not a records.csv column
            found.setdefault(keys(ident), []).append(row)
    return found


def _expected(rows: list[dict], split: str, figure: str) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r[figure])) for r in rows if r["split"] == split and r[figure] != ""]


def _mlflow(run, cfg):
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(cfg.log.mlflow_experiment or cfg.name)
    (found,) = client.search_runs([experiment.experiment_id])  # deleted runs of earlier sessions are left out
    return client, found


def check_mirrors(run, cfg, models: set[str]) -> None:
    """Every figure of records.csv and summary.json, per model and epoch, in both mirrors."""
    records = _records(run)
    assert set(records) == models
    client, found = _mlflow(run, cfg)
    assert found.info.run_name == run.name and found.info.status == "FINISHED"
    assert found.data.tags["distill.status"] == "done"
    params = config_params(cfg)
    assert found.data.params == params
    assert {"train.lr", "model.name", "distill.temperature", "log.mlflow", "seeds"} <= set(params)
    assert found.data.params["model.name"] == cfg.model.name
    assert {a.path for a in client.list_artifacts(found.info.run_id)} >= {"config.yaml", "summary.json", "meta.json"}
    for key, rows in records.items():
        events = EventAccumulator(str(run / "tensorboard" / key))
        events.Reload()
        for split in ("train", "val", "test"):
            for figure in FIGURES:
                expected = _expected(rows, split, figure)
                if not expected:
                    assert f"{split}/{figure}" not in events.Tags()["scalars"]
                    continue
                board = [(e.step, e.value) for e in events.Scalars(f"{split}/{figure}")]
                assert [s for s, _ in board] == [s for s, _ in expected] == list(range(1, cfg.train.epochs + 1))
                assert [v for _, v in board] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32
                history = client.get_metric_history(found.info.run_id, f"{key}/{split}/{figure}")
                assert sorted((m.step, m.value) for m in history) == expected  # exact: doubles both
        assert [e.value for e in events.Scalars("lr")] == pytest.approx(
            [float(r["lr"]) for r in rows if r["split"] == "train"], rel=1e-6)
    summary = json.loads((run / "summary.json").read_text())["models"]
    keys = ModelKeys()
    for row in summary:
        key = keys(row)
        for figure in ("val_acc", "test_acc", "test_nll", "selected_epoch"):
            if row.get(figure) is None:
                continue
            (metric,) = client.get_metric_history(found.info.run_id, f"{key}/summary/{figure}")
            assert metric.value == pytest.approx(row[figure], rel=1e-12)
            events = EventAccumulator(str(run / "tensorboard" / key))
            events.Reload()
            (event,) = events.Scalars(f"summary/{figure}")
            assert event.value == pytest.approx(row[figure], rel=1e-6)


def test_train_is_mirrored_to_tensorboard_and_mlflow(tmp_path):
    cfg = load_config(None, tiny_overrides(name="kd", **TEACHER, **ON))
    run = distill.train(cfg, tmp_path, progress=False)
    assert json.loads((run / "meta.json").read_text())["status"] == "done"
    check_mirrors(run, cfg, {"teacher-mlp-s0", "student-mlp-s0"})
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    (config,) = events.Tensors("config/text_summary")
    assert b"temperature: 4.0" in config.tensor_proto.string_val[0]


def test_bornagain_is_mirrored_model_by_model(tmp_path):
    cfg = load_config(None, tiny_overrides(name="ban", seeds="[0,1]", **{
        "distill.method": "ban", "distill.temperature": 1.0, "bornagain.generations": 2, "train.epochs": 2,
        "log.mlflow_experiment": "chains"}, **ON))
    run = bornagain.run(cfg, tmp_path, progress=False)
    check_mirrors(run, cfg, {f"generation-mlp-g{g}-s{s}" for g in range(3) for s in (0, 1)})
    client, found = _mlflow(run, cfg)  # the experiment named by the config; ensembles have summary figures only
    summary = json.loads((run / "summary.json").read_text())["models"]
    (ens,) = [r for r in summary if r["role"] == "ensemble" and r["seed"] == 1 and r["name"] == "ens_0..2"]
    (metric,) = client.get_metric_history(found.info.run_id, "ensemble-ens_0..2-g2-k3-mean_probs-s1/summary/test_acc")
    assert metric.value == pytest.approx(ens["test_acc"], rel=1e-12)


def test_a_resumed_run_rebuilds_its_mirrors_once(tmp_path):
    """Turned on for a finished run, the mirrors are filled from its checkpoints (the same run
    folder: `log` is not part of the run id); a second session replaces them, without doubles."""
    plain = load_config(None, tiny_overrides(name="kd", **TEACHER))
    run = distill.train(plain, tmp_path, progress=False)
    assert not (run / "tensorboard").exists() and not (run / "mlflow.db").exists()
    cfg = load_config(None, tiny_overrides(name="kd", **TEACHER, **ON))
    assert config_hash(cfg) == config_hash(plain)
    for _ in range(2):
        assert distill.train(cfg, tmp_path, progress=False) == run
        check_mirrors(run, cfg, {"teacher-mlp-s0", "student-mlp-s0"})
    assert len(list((run / "tensorboard" / "student-mlp-s0").glob("events.*"))) == 1


def test_a_broken_mirror_warns_once_and_the_run_finishes(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # tensorboard not installed
    cfg = load_config(None, tiny_overrides(name="kd", **TEACHER, **ON, **{"log.mlflow_uri": "http://127.0.0.1:9"}))
    run = distill.train(cfg, tmp_path, progress=False)
    assert json.loads((run / "meta.json").read_text())["status"] == "done"
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, warnings  # one per mirror, however many rows came after
    board, = [w for w in warnings if w.startswith("warning: tensorboard tracking is off")]
    mlflow, = [w for w in warnings if w.startswith("warning: mlflow tracking is off")]
    assert "torch.utils.tensorboard" in board and "pip install 'distill-runner[track]'" in board  # how to get it
    assert "127.0.0.1:9" in mlflow and mlflow.endswith(f"{run} still holds every figure")
    assert not (run / "tensorboard").exists()
    rows = list(csv.DictReader(open(run / "records.csv")))
    assert len(rows) == 2 * cfg.train.epochs * 3 and all(math.isfinite(float(r["loss"])) for r in rows)


def test_a_mirror_failing_mid_run_is_dropped_after_one_warning(tmp_path, capfd, monkeypatch):
    from distill.runs import tracking

    calls = []

    def broken(self, keyed):
        calls.append(len(keyed))
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoardMirror, "rows", broken)
    cfg = load_config(None, tiny_overrides(name="kd", **TEACHER, **{"log.tensorboard": "true"}))
    run = distill.train(cfg, tmp_path, progress=False)
    assert json.loads((run / "meta.json").read_text())["status"] == "done"
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: tensorboard tracking is off for the rest of this run (OSError: disk full); "
                        f"{run} still holds every figure"]
    assert calls == [3]  # the first epoch's rows only: nothing more was sent to the broken mirror


def test_same_run_config_ignores_the_log_section_only():
    a = "name: x\ntrain:\n  lr: 0.1\nlog:\n  mlflow: false\n"
    assert same_run_config(a, "name: x\ntrain:\n  lr: 0.1\nlog:\n  mlflow: true\n")
    assert same_run_config(a, "name: x\ntrain:\n  lr: 0.1\n")  # a run written before `log` existed
    assert not same_run_config(a, "name: x\ntrain:\n  lr: 0.2\nlog:\n  mlflow: false\n")
    assert not same_run_config("name: [", a)


def test_model_keys_are_distinct_and_stable():
    keys = ModelKeys()
    a = keys({"role": "student", "name": "mlp", "seed": 0, "parent": "ensemble(k=3, combine=mean_probs)"})
    b = keys({"role": "student", "name": "mlp", "seed": 0, "parent": "ensemble(k=3, combine=mean_logits)"})
    assert (a, b) == ("student-mlp-s0", "student-mlp-s0-2")
    assert keys({"role": "student", "name": "mlp", "seed": 0, "parent": "ensemble(k=3, combine=mean_logits)"}) == b
    assert keys({"role": "ensemble", "name": "ens_0..2", "seed": 1, "generation": 2, "size": 3}) == \
        "ensemble-ens_0..2-g2-k3-s1"
    assert keys({"role": "member", "name": "wrn/28", "seed": 0, "member": 4}) == "member-wrn_28-m4-s0"
