"""`distill train` through `distill.training.jobs.fit_jobs`: seeds trained stacked where the model allows,
with the numbers of one-at-a-time training; stop and resume; teacher sections trained in place."""

import json

import pytest

from distill.runs.checkpoints import load_checkpoint
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from distill.data import load_data
from distill.teachers.fidelity import split_fidelity
from distill.models import create_model
from distill.training.runner import train
from distill.training import replicas
from tests.conftest import tiny_overrides

TEACHER = {"teacher.model": "{name: cnn1d, width: 8, depth: 2}", "teacher.train": "{epochs: 2}",
           "distill.method": "kd", "distill.temperature": 2.0, "distill.alpha": 0.5, "train.epochs": 2}


def _cfg(**extra):
    return load_config(None, tiny_overrides(**{"name": "t", **extra}))


def _summary(path):
    return json.loads((path / "summary.json").read_text())


def _strip(summary):  # without the timings, which differ from one measurement to the next
    return [{k: v for k, v in row.items() if k not in ("train_seconds", *TIMING_KEYS)} for row in summary["models"]]


def _assert_close_rows(packed: list[dict], alone: list[dict], cfg) -> None:
    """Stacked and one-at-a-time training agree up to float rounding (as tests/test_stacked.py):
    losses to 1e-4, accuracies (and agreements) to at most one example of the split."""
    data = load_data(cfg.dataset)
    flip = {split: 1e-6 + 1 / data.size(split) for split in ("val", "test")}
    assert len(packed) == len(alone)
    for a, b in zip(packed, alone):
        assert (a["role"], a["name"], a["seed"], a["parent"]) == (b["role"], b["name"], b["seed"], b["parent"])
        assert a["selected_epoch"] == b["selected_epoch"]
        for key, value in a.items():
            if isinstance(value, float):
                split = key.split("_")[0]
                tolerance = flip[split] if key.endswith(("acc", "acc_last", "agreement")) else 1e-4
                assert abs(value - b[key]) <= tolerance, (key, value, b[key])
            else:
                assert value == b[key], key


def test_seeds_train_packed_with_the_numbers_of_one_at_a_time(tmp_path, capsys):
    cfg = _cfg(seeds="[0,1,2]")
    reports = []
    path = train(cfg, tmp_path / "packed", on_epoch=reports.append, progress=True)
    err = capsys.readouterr().err
    assert "model-s0, model-s1, model-s2: packed (3 models without BatchNorm or dropout)" in err
    summary = _summary(path)
    assert summary["packing"] == {"model": "packed: 3 models without BatchNorm or dropout"}
    assert (path / "checkpoints" / "model-s0-pack3" / "last.pt").is_file()
    for seed in (0, 1, 2):
        assert (path / "checkpoints" / f"model-s{seed}" / "best.pt").is_file()
    # every report says which model it is about (tuning.target reads role, seed, epoch, epochs)
    assert sorted((r["role"], r["seed"], r["epoch"], r["epochs"]) for r in reports) == [
        ("model", s, e, 3) for s in (0, 1, 2) for e in (1, 2, 3)]

    alone = []
    for seed in (0, 1, 2):  # one seed: one model, trained as itself
        single = _summary(train(_cfg(seeds=f"[{seed}]"), tmp_path / "alone", progress=False))
        assert single["packing"] == {"model": "one after another: only one model"}
        alone += _strip(single)
    _assert_close_rows(_strip(summary), alone, cfg)


def test_a_model_that_cannot_stack_trains_in_turn_and_says_why(tmp_path, capsys):
    why = "the distillation objective has trainable parameters"  # ctkd's learned temperature
    path = train(_cfg(seeds="[0,1]", **{**TEACHER, "distill.method": "ctkd", "distill.alpha": 0.5,
                                        "teacher.train": "{epochs: 1}", "train.epochs": 1}), tmp_path, progress=True)
    assert f"student-s0, student-s1: one after another ({why})" in capsys.readouterr().err
    assert _summary(path)["packing"]["student"] == f"one after another: {why}"
    assert not list(path.glob("checkpoints/student-*-pack*"))


@pytest.mark.parametrize("extra, where", [
    ({"train.epochs": 3}, {"role": "model", "seed": 2, "epoch": 2}),   # in the stacked models' fit
    (TEACHER, {"role": "student", "seed": 1, "epoch": 1}),             # teachers done, in the students' fit
], ids=["models", "teacher-section"])
def test_stopped_stacked_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, extra, where):
    cfg = _cfg(seeds="[0,1,2]", **extra)
    whole = train(cfg, tmp_path / "whole", progress=False)

    def interrupt(report):  # Ctrl-C at that epoch, after its checkpoint
        if all(report.get(k) == v for k, v in where.items()):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "stopped", on_epoch=interrupt, progress=False)
    (path,) = (tmp_path / "stopped" / "t").iterdir()
    meta = json.loads((path / "meta.json").read_text())
    assert (meta["status"], meta["reason"]) == ("failed", "interrupted")
    role = where["role"]
    assert load_checkpoint(path / "checkpoints" / f"{role}-s0-pack3" / "last.pt")["epoch"] == where["epoch"]
    teachers = {p: p.stat().st_mtime_ns for p in path.glob("checkpoints/teacher-*/*.pt")}

    assert train(cfg, tmp_path / "stopped", progress=False) == path
    meta = json.loads((path / "meta.json").read_text())
    assert (meta["status"], meta["resumed"], meta["sessions"]) == ("done", True, 2)
    assert {p: p.stat().st_mtime_ns for p in teachers} == teachers  # finished teachers not retrained
    a, b = _summary(whole), _summary(path)
    assert _strip(a) == _strip(b) and a["packing"] == b["packing"]
    assert [r["role"] for r in b["models"]] == (["teacher", "student"] * 3 if role == "student" else ["model"] * 3)


def test_convolutional_models_train_one_after_another_on_the_cpu(tmp_path, capsys):
    """Stacked convolutions are grouped convolutions, slower on the CPU: there a CNN's seeds train in
    turn and the run says why; the same models would stack on a GPU."""
    cfg = _cfg(seeds="[0,1]", **{"model.name": "cnn1d", "model.width": 4, "model.depth": 2, "train.epochs": 1})
    why = "convolutions run slower stacked than one after another on the CPU (they stack on a GPU)"
    path = train(cfg, tmp_path, progress=True)
    assert f"model-s0, model-s1: one after another ({why})" in capsys.readouterr().err
    assert _summary(path)["packing"] == {"model": f"one after another: {why}"}
    data = load_data(cfg.dataset)
    models = [create_model(cfg.model, data.input_shape, data.num_classes) for _ in range(2)]
    assert replicas.can_stack(models, device="cpu") == (False, why)
    assert replicas.can_stack(models, device="cuda")[0] and replicas.can_stack(models)[0]


def test_teacher_sections_train_stacked_in_place_then_their_students(tmp_path, monkeypatch):
    monkeypatch.setattr(replicas, "STACK_CONVOLUTIONS_ON_CPU", True)  # the CNN teachers stacked, as on a GPU
    cfg = _cfg(seeds="[0,1]", **TEACHER)
    reports = []
    path = train(cfg, tmp_path / "packed", on_epoch=reports.append, progress=False)
    summary = _summary(path)
    rows = summary["models"]
    assert [(r["role"], r["name"], r["seed"], r["parent"]) for r in rows] == [
        ("teacher", "cnn1d", 0, None), ("student", "mlp", 0, "teacher-s0"),
        ("teacher", "cnn1d", 1, None), ("student", "mlp", 1, "teacher-s1")]
    assert summary["packing"] == {"teacher": "packed: 2 models without BatchNorm or dropout",
                                  "student": "packed: 2 models without BatchNorm or dropout"}
    assert summary["loss"]["method"] == "kd"
    # the teachers' epochs, then the students'
    assert [(r["role"], r["seed"], r["epoch"], r["epochs"]) for r in reports] == [
        (role, s, e, 2) for role in ("teacher", "student") for e in (1, 2) for s in (0, 1)]

    # each student learnt from (and is measured against) its trained teacher: the one in teacher-s<seed>
    data = load_data(cfg.dataset)
    for row in rows[1::2]:
        seed = row["seed"]
        models = []
        for key, arch in ((f"student-s{seed}", cfg.model), (f"teacher-s{seed}", cfg.teacher.model)):
            model = create_model(arch, data.input_shape, data.num_classes)
            model.load_state_dict(load_checkpoint(path / "checkpoints" / key / "best.pt")["model"])
            models.append(model.eval())
        agreement, _ = split_fidelity(models[0], models[1:], "mean_probs", data, "val")
        _, kl = split_fidelity(models[0], models[1:], "mean_probs", data, "test")
        assert agreement == row["val_agreement"]
        assert kl == pytest.approx(row["test_teacher_kl"], abs=1e-6)

    alone = []
    for seed in (0, 1):
        alone += _strip(_summary(train(_cfg(seeds=f"[{seed}]", **TEACHER), tmp_path / "alone", progress=False)))
    _assert_close_rows(_strip(summary), alone, cfg)
