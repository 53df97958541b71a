"""Teacher signals: cache vs online, ensembles, checkpoints, predictions files, the teacher section.

    .venv/bin/python -m pytest tests/test_teachers.py -q
"""

import json

import numpy as np
import pytest
import torch
import yaml

from distill import cli
from distill.config import DatasetConfig, ModelConfig, build_config
from distill.methods import DistillConfig
from distill.export.cost import TIMING_KEYS
from distill.data import load_data
from distill.errors import ConfigError
from distill.models import create_model
from distill.training.runner import train
from distill.teachers.features import capture
from distill.methods.objectives import Batch, make_objective, mix
from distill.teachers.sources import teacher_objective

DATASET = {"name": "fake", "fake_shape": [1, 16], "num_samples": 120, "fake_classes": 4, "augment": "none"}
TINY = {"dataset": DATASET, "model": {"name": "mlp", "width": 8, "depth": 1},
        "train": {"epochs": 2, "batch_size": 32, "device": "cpu", "threads": 1}}


@pytest.fixture(scope="module")
def data():
    return load_data(DatasetConfig(**DATASET))


def model(name="mlp", data=None, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(ModelConfig(name=name, **kw), (1, 16), 4)


def first_batch(data, batch_size=32):
    xs, ys, idx = next(iter(data.train_batches(batch_size, [torch.Generator().manual_seed(0)])))
    return xs[0], ys[0], idx[0]


def step(objective, student, x, y, idx, progress):
    """What the training loop does with one model's batch: forward (capturing the layers the
    objective reads), the objective's terms, the one mixer."""
    if objective.student_layers:
        logits, features = capture(student, list(objective.student_layers), x, "distill.layers", "student")
    else:
        logits, features = student(x), []
    terms = objective.terms(Batch(x, y, idx), logits, features, progress)
    return {**terms, "loss": mix(terms, objective.weights(progress))}


def loss_and_grad(objective, student, batch, progress=0.3):
    x, y, idx = batch
    student.zero_grad()
    out = step(objective, student, x, y, idx, progress)
    out["loss"].backward()
    return out["loss"].detach(), [p.grad.clone() for p in student.parameters()]


@pytest.mark.parametrize("method, combine, teachers, schedule", [
    ("kd", "mean_probs", 1, {}),
    ("kd", "mean_probs", 3, {}),
    ("kd", "mean_logits", 2, {}),
    ("kd", "per_teacher_kl", 2, {"temperature_end": 1.0, "temperature_schedule": "cosine"}),
    ("ban_l", "mean_probs", 1, {"alpha_end": 0.1}),
    ("cwtm", "mean_probs", 2, {}),
    ("dkpp", "per_teacher_kl", 2, {}),
])
def test_cached_and_online_give_the_same_loss(data, method, combine, teachers, schedule):
    cfg = DistillConfig(method=method, temperature=3.0, alpha=0.7, combine=combine, **schedule)
    models = [model("cnn1d", seed=k + 1, width=4, depth=1) for k in range(teachers)]
    cached, info_c = make_objective(cfg, models, data, "cpu", cache="cached")
    online, info_o = make_objective(cfg, models, data, "cpu", cache="online")
    assert info_c["cache"].startswith("cached") and info_o["cache"].startswith("online")
    batch = first_batch(data)
    student = model(seed=9, width=8, depth=1)
    loss_c, grads_c = loss_and_grad(cached, student, batch)
    loss_o, grads_o = loss_and_grad(online, student, batch)
    torch.testing.assert_close(loss_c, loss_o, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_c, grads_o):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_objective_kd_equals_the_plain_loss_on_teacher_logits(data):
    from distill.methods.losses import kd

    cfg = DistillConfig(method="kd", temperature=2.0, alpha=0.4)
    teacher = model("cnn1d", seed=1, width=4, depth=1)
    objective, _ = make_objective(cfg, [teacher], data, "cpu")
    x, y, idx = first_batch(data)
    student = model(seed=2, width=8, depth=1)
    out = step(objective, student, x, y, idx, 0.0)
    with torch.no_grad():
        teacher.eval()
        reference = kd(student(x), teacher(x), y, temperature=2.0)
    torch.testing.assert_close(out["loss"], 0.4 * reference["teacher"] + 0.6 * reference["task"])


def test_cache_is_chosen_by_augmentation():
    cfg = DistillConfig(method="kd")
    teacher = model("cnn1d", width=4, depth=1)
    shifted = load_data(DatasetConfig(**{**DATASET, "augment": "shift"}))
    _, info = make_objective(cfg, [teacher], shifted, "cpu")
    assert info["cache"].startswith("online") and "shift" in info["cache"]
    plain = load_data(DatasetConfig(**DATASET))
    _, info = make_objective(cfg, [teacher], plain, "cpu")
    assert info["cache"].startswith("cached")
    for key in ("method", "reduction", "t2_scaling", "temperature", "alpha", "combine", "teacher", "cache"):
        assert key in info


def test_dkpp_objective_is_deterministic_per_step(data):
    cfg = DistillConfig(method="dkpp", temperature=2.0, alpha=1.0)
    objective, _ = make_objective(cfg, [model("cnn1d", width=4, depth=1)], data, "cpu", seed=3)
    x, y, idx = first_batch(data)
    student = model(seed=2, width=8, depth=1)
    a = step(objective, student, x, y, idx, 0.25)["loss"]
    b = step(objective, student, x, y, idx, 0.25)["loss"]
    c = step(objective, student, x, y, idx, 0.5)["loss"]
    assert a.item() == b.item() and a.item() != c.item()


def test_fitnet_objective_owns_trainable_projections(data):
    cfg = DistillConfig(method="fitnet", layers=["features"], alpha=0.5)
    teacher = model("cnn1d", width=4, depth=1)
    student = model(seed=2, width=8, depth=1)
    objective, info = make_objective(cfg, [teacher], data, "cpu", student=student)
    params = list(objective.parameters())
    assert params and info["cache"].startswith("online")
    x, y, idx = first_batch(data)
    step(objective, student, x, y, idx, 0.0)["loss"].backward()
    assert all(p.grad is not None for p in params)


def test_unknown_layer_is_a_config_error_naming_the_layers(data):
    cfg = DistillConfig(method="attention", layers=["nope"])
    with pytest.raises(ConfigError, match="no layer 'nope'; its layers are features"):
        make_objective(cfg, [model("mlp", width=8, depth=1)], data, "cpu", student=model(width=8, depth=1))


# ---------------------------------------------------------------- through the command line


def write_config(tmp_path, extra=None):
    config = {**TINY, "name": "t", **(extra or {})}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


def test_checkpoint_not_fitting_the_model_exits_2_with_one_line(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    torch.save({"model": model("cnn1d", width=4, depth=1).state_dict()}, checkpoint)
    out = tmp_path / "runs"
    status, err = run_cli(capsys, "train", write_config(tmp_path), f"distill.teacher={checkpoint}",
                          "--out", str(out), "--quiet")
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "does not fit model mlp" in lines[0] and "teacher.model" in lines[0]
    assert not out.exists()  # nothing created


@pytest.mark.parametrize("rows, cols, words", [(50, 4, "50 rows"), (120, 3, "3 columns")])
def test_predictions_file_of_the_wrong_shape_exits_2(tmp_path, capsys, rows, cols, words):
    path = tmp_path / "preds.npy"
    np.save(path, np.zeros((rows, cols), dtype=np.float32))
    status, err = run_cli(capsys, "train", write_config(tmp_path), f"distill.teacher={path}",
                          "--out", str(tmp_path / "runs"), "--quiet")
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "runs").exists()


def test_missing_teacher_path_exits_2(tmp_path, capsys):
    status, err = run_cli(capsys, "train", write_config(tmp_path), f"distill.teacher={tmp_path}/nothing",
                          "--out", str(tmp_path / "runs"), "--quiet")
    assert status == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_predictions_file_probabilities_are_used_as_log_probs(tmp_path, data):
    rng = np.random.default_rng(0)
    n = data.size("train") + data.size("val")
    probs = rng.dirichlet(np.ones(4), size=n)
    path = tmp_path / "preds.csv"
    np.savetxt(path, probs, delimiter=",", header="a,b,c,d", comments="")
    cfg = build_config({**TINY, "distill": {"teacher": str(path)}})
    objective, info, section = teacher_objective(cfg, data, 0, "cpu")
    assert section is None
    assert "probabilities" in info["teacher"] and info["cache"].startswith("cached")
    expected = torch.from_numpy(probs).float().log()[data.source_index["train"]]
    torch.testing.assert_close(objective.signal.table[0], expected)


def test_teacher_section_trains_teacher_then_student_and_resumes(tmp_path):
    cfg = build_config({**TINY, "name": "kd", "seeds": [0],
                        "teacher": {"model": {"name": "cnn1d", "width": 4, "depth": 1}, "train": {"epochs": 1}},
                        "distill": {"method": "kd", "temperature": 2.0, "alpha": 0.5}})
    run_dir = train(cfg, tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    roles = [(m["role"], m["name"], m["parent"]) for m in summary["models"]]
    assert roles == [("teacher", "cnn1d", None), ("student", "mlp", "teacher-s0")]
    assert summary["loss"]["method"] == "kd" and summary["loss"]["t2_scaling"] is True
    assert summary["loss"]["reduction"] == "batchmean"
    records = (run_dir / "records.csv").read_text().splitlines()
    assert "method,reduction,t2_scaling" in records[0] and records[-1].endswith("kd,batchmean,True,")
    assert (run_dir / "checkpoints" / "teacher-s0" / "best.pt").exists()
    # the same command again resumes from the finished checkpoints: the same numbers
    again = json.loads((train(cfg, tmp_path, progress=False) / "summary.json").read_text())
    varies = ("train_seconds", *TIMING_KEYS)  # timings differ from one measurement to the next
    assert [{k: v for k, v in m.items() if k not in varies} for m in again["models"]] == [
        {k: v for k, v in m.items() if k not in varies} for m in summary["models"]]


def test_ensemble_of_run_directories(tmp_path, data):
    runs = []
    for seed in (0, 1):
        cfg = build_config({**TINY, "name": f"m{seed}", "seeds": [seed], "train": {**TINY["train"], "epochs": 1}})
        runs.append(str(train(cfg, tmp_path, progress=False)))
    cfg = build_config({**TINY, "distill": {"teacher": ",".join(runs), "combine": "mean_logits"}})
    objective, info, section = teacher_objective(cfg, data, 0, "cpu")
    assert section is None
    assert info["teachers"] == 2 and info["combine"] == "mean_logits"
    assert "model-s0" in info["teacher"] and "model-s1" in info["teacher"]
    x, y, idx = first_batch(data)
    assert torch.isfinite(step(objective, model(width=8, depth=1), x, y, idx, 0.0)["loss"])


def test_an_objective_must_say_its_terms_and_weights():
    """The interface is abstract: a subclass without terms() or weights() cannot be built."""
    from distill.methods.objectives import CrossEntropy, Objective

    class NoWeights(Objective):
        def terms(self, batch, logits, features, progress):
            return {"task": logits.sum()}

    with pytest.raises(TypeError, match="weights"):
        NoWeights()
    assert CrossEntropy().weights(0.0) == {"task": 1.0}


# ---------------------------------------------------------------- a teacher of another data split


@pytest.mark.parametrize("other", [{"val_fraction": 0.3}, {"split_seed": 1}])
def test_teacher_run_of_another_split_is_refused_then_allowed_and_noted(tmp_path, capsys, other):
    """A teacher run trained on another train/validation split may have trained on the student's
    validation examples: refused (one line, exit 2, nothing written) unless asked, then recorded in
    the student's parent and noted on the report page."""
    teacher = build_config({**TINY, "name": "teacher", "seeds": [0], "dataset": {**DATASET, **other}})
    teacher_dir = train(teacher, tmp_path / "t", progress=False)
    out = tmp_path / "runs"
    status, err = run_cli(capsys, "train", write_config(tmp_path, {"seeds": [0]}), f"distill.teacher={teacher_dir}",
                          "--out", str(out), "--quiet")
    lines = err.strip().splitlines()
    key = next(iter(other))
    assert status == 2 and len(lines) == 1, err
    assert f"dataset.{key}" in lines[0] and "distill.teacher_other_split=true" in lines[0]
    assert not out.exists()
    # the checkpoint file of that run is refused alike
    status, err = run_cli(capsys, "train", write_config(tmp_path, {"seeds": [0]}),
                          f"distill.teacher={teacher_dir}/checkpoints/model-s0/best.pt", "--out", str(out), "--quiet")
    assert status == 2 and "another data split" in err and not out.exists()
    status, err = run_cli(capsys, "train", write_config(tmp_path, {"seeds": [0]}), f"distill.teacher={teacher_dir}",
                          "distill.teacher_other_split=true", "--out", str(out), "--quiet")
    assert status == 0, err
    (student_dir,) = [p for p in (out / "t").iterdir() if p.is_dir()]
    rows = json.loads((student_dir / "summary.json").read_text())["models"]
    assert "trained on another data split" in rows[0]["parent"] and f"dataset.{key}" in rows[0]["parent"]
    from results import report

    page = report([student_dir], tmp_path / "report").read_text()
    assert "distill.teacher_other_split=true" in page and student_dir.name in page


def test_a_checkpoint_outside_its_run_folder_is_used_with_a_warning_and_noted(tmp_path, capsys):
    """A best.pt copied out of its run has no config.yaml to check its split against: used, with a warning
    on stderr, recorded in the student's parent, and noted on the report page."""
    import shutil

    teacher_dir = train(build_config({**TINY, "name": "teacher", "seeds": [0]}), tmp_path / "t", progress=False)
    copied = tmp_path / "elsewhere" / "teacher.pt"
    copied.parent.mkdir()
    shutil.copy(teacher_dir / "checkpoints" / "model-s0" / "best.pt", copied)
    out = tmp_path / "runs"
    status, err = run_cli(capsys, "train", write_config(tmp_path, {"seeds": [0]}), f"distill.teacher={copied}",
                          "--out", str(out), "--quiet")
    assert status == 0 and "its data split cannot be checked" in err, err
    (student_dir,) = [p for p in (out / "t").iterdir() if p.is_dir()]
    parent = json.loads((student_dir / "summary.json").read_text())["models"][0]["parent"]
    assert parent.startswith(str(copied)) and "its training data is not known to this run" in parent
    from results import report

    page = report([student_dir], tmp_path / "report").read_text()
    assert "training data is not known" in page and student_dir.name in page


def test_teacher_run_of_the_same_split_is_used_and_other_split_needs_a_teacher(tmp_path, data):
    teacher_dir = train(build_config({**TINY, "name": "teacher", "seeds": [0],
                                      "dataset": {**DATASET, "augment": "shift"}}), tmp_path, progress=False)
    cfg = build_config({**TINY, "distill": {"teacher": str(teacher_dir)}})  # augmentation is no split key
    _, info, _ = teacher_objective(cfg, data, 0, "cpu")
    assert "another data split" not in info["teacher"]
    with pytest.raises(ConfigError, match="teacher_other_split"):
        teacher_objective(build_config({**TINY, "distill": {"teacher_other_split": True}}), data, 0, "cpu")
