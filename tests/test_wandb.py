"""The W&B mirror of a run (distill/runs/tracking.py, log.wandb=true), offline: its transaction log
(`<run dir>/wandb/offline-run-*/run-*.wandb`, what `wandb sync` uploads) read back record by record
and compared with records.csv and summary.json."""

from __future__ import annotations

import csv
import json
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

import distill  # noqa: E402
from distill.config import config_hash, load_config  # noqa: E402
from distill.runs.tracking import ModelKeys  # noqa: E402
from tests.conftest import tiny_overrides  # noqa: E402

BLOCK, HEADER = 32768, 7  # the LevelDB-style log W&B writes: 32 KiB blocks, 7-byte record headers


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (a 7-byte file header, then checksum, length, type per record)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:
            pos += BLOCK - pos % BLOCK
            continue
        parts += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def finished_log(run: Path, wait_s: float = 30.0) -> Path:
    """The run's offline .wandb file once it holds its exit record: W&B's service process writes it on
    its own time, after `run.finish()` has returned (`wandb sync`, later, reads the finished file)."""
    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log)):
        assert time.monotonic() < deadline, f"{log} has no exit record after {wait_s} s"
        time.sleep(0.2)
    return log


def name(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B keeps "a/b/c" as a nested key


def read_back(run: Path) -> tuple[dict, list[dict], dict, int]:
    config, history, summary, exit_code = {}, [], {}, None
    for record in wandb_records(finished_log(run)):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):  # the config comes with the run record, or in a record of its own
            items = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key: json.loads(item.value_json) for item in items})
        elif kind == "history":
            history.append({name(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            summary.update({name(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return config, history, summary, exit_code


def test_offline_wandb_mirror_holds_every_figure_and_replaces_an_earlier_sessions(tmp_path):
    overrides = tiny_overrides(**{"log.wandb": "true", "seeds": "[0, 1]", "train.epochs": 2})
    cfg = load_config(None, overrides)
    run = tmp_path / cfg.name / config_hash(cfg)
    earlier = run / "wandb" / "offline-run-20000101_000000-earlier"  # an earlier session's offline run
    earlier.mkdir(parents=True)
    (run / "tracking.json").write_text(json.dumps({"wandb_dir": str(earlier.resolve())}))
    assert distill.train(cfg, tmp_path, progress=False) == run
    assert not earlier.exists() and len(list(run.glob("wandb/offline-run-*"))) == 1
    config, history, summary, exit_code = read_back(run)
    assert config["train.lr"] == "0.01" and config["log.wandb"] == "true" and config["seeds"] == "[0, 1]"
    assert exit_code == 0 and summary["distill.status"] == "done"
    keys = ModelKeys()
    with open(run / "records.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {}
    for point in history:
        for name, value in point.items():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] != "_wandb":
                key = parts[0]
                logged[key, point[f"{key}/epoch"], parts[1], parts[2]] = value
    expected = {}
    for row in rows:
        ident = {"role": row["role"], "name": row["name"], "seed": int(row["seed"])}
        for figure in ("loss", "acc", "nll", "ece"):
            if row[figure] != "":
                expected[keys(ident), int(row["epoch"]), row["split"], figure] = float(row[figure])
    assert len(expected) >= 2 * 2 * 3 * 3 and logged.keys() == expected.keys()
    assert all(logged[k] == pytest.approx(v, rel=1e-6) for k, v in expected.items())
    models = json.loads((run / "summary.json").read_text())["models"]
    for row in models:
        key = keys({k: row.get(k) for k in ("role", "name", "seed")})
        assert summary[f"{key}/summary/test_acc"] == pytest.approx(row["test_acc"])
