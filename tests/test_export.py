"""distill export: a model of a finished run as a .pt2 that plain torch loads, with its card.

Most tests use a run directory built here by hand (config.yaml, summary.json and best.pt of
models trained briefly with plain torch), so they do not depend on the training loop; one
test goes through `distill.train` end to end.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from distill import export as ex
from distill.cli import main
from distill.config import dump_yaml, load_config
from distill.data import load_data
from distill.errors import UserError
from distill.models import create_model

OVERRIDES = ["dataset.name=mnist1d", "dataset.num_samples=600", "model.name=mlp", "model.width=32",
             "teacher.model={name: cnn1d, width: 8, depth: 2}", "distill.method=kd", "distill.temperature=4.0",
             "distill.alpha=0.9", "seeds=[0,1]", "train.device=cpu", "train.threads=1"]
LOSS = {"method": "kd", "reduction": "batchmean", "t2_scaling": True, "temperature": 4.0, "alpha": 0.9,
        "teacher": "teacher-s1", "teachers": 1}


def fit_briefly(model: nn.Module, data, steps: int = 60) -> nn.Module:
    """Full-batch Adam on the train split: a trained model in a fraction of a second."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x["train"]), data.y["train"]).backward()
        opt.step()
    return model.eval()


def acc(model, data, split: str) -> float:
    with torch.no_grad():
        return (model(data.x[split]).argmax(-1) == data.y[split]).float().mean().item()


def build_run(path):
    """A finished `distill train` run of a CNN teacher and an MLP student per seed, written by hand."""
    cfg = load_config(None, OVERRIDES)
    data = load_data(cfg.dataset)
    rows = []
    for seed in cfg.seed_list():
        for role, model_cfg, parent in (("teacher", cfg.teacher.model, None), ("student", cfg.model, f"teacher-s{seed}")):
            torch.manual_seed(seed)
            model = fit_briefly(create_model(model_cfg, data.input_shape, data.num_classes), data)
            folder = path / "checkpoints" / f"{role}-s{seed}"
            folder.mkdir(parents=True)
            torch.save({"epoch": 1, "model": model.state_dict(), "val": {"acc": acc(model, data, "val")}},
                       folder / "best.pt")
            rows.append({"role": role, "name": model_cfg.name, "seed": seed, "generation": None, "member": None,
                         "parent": parent, "selected_epoch": 1, "val_acc": acc(model, data, "val"),
                         "test_acc": acc(model, data, "test")})
    (path / "config.yaml").write_text(dump_yaml(cfg))
    (path / "summary.json").write_text(json.dumps({"status": "done", "loss": LOSS, "models": rows}))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The student of seed 1 as float32 and as int8, with the test inputs the cards were made on."""
    out = tmp_path_factory.mktemp("export")
    fp32 = ex.export(run_dir, "student:1", out / "student.pt2")
    int8 = ex.export(run_dir, "student:1", out / "student-int8.pt2", quantize="int8")
    cfg = load_config(run_dir / "config.yaml")
    data = load_data(cfg.dataset)
    model = create_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "checkpoints/student-s1/best.pt", weights_only=False)["model"])
    return {"fp32": fp32, "int8": int8, "model": model.eval(), "data": data, "out": out}


FRESH = textwrap.dedent("""
    import sys, torch
    x = torch.load(sys.argv[1])
    for path in sys.argv[2:]:
        program = torch.export.load(path).module()
        with torch.no_grad():
            torch.save(program(x), path + ".logits")
        program(x[:1])  # batch size 1 as well: the batch dimension is dynamic
    assert "distill" not in sys.modules, "the exported program imported this package"
    print("ok")
""")


def fresh_python_logits(x: torch.Tensor, files: list, folder) -> list:
    """Logits of each .pt2 file on `x`, computed by a new Python process that imports only torch."""
    torch.save(x, folder / "x.pt")
    result = subprocess.run([sys.executable, "-I", "-c", FRESH, str(folder / "x.pt"), *map(str, files)],
                            cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    return [torch.load(f"{f}.logits") for f in files]


def test_pt2_loads_in_plain_torch_with_the_same_predictions(exported):
    x = exported["data"].x["test"]
    logits, quantized = fresh_python_logits(x, [exported["fp32"], exported["int8"]], exported["out"])
    with torch.no_grad():
        expected = exported["model"](x)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    torch.testing.assert_close(logits, expected)
    assert (quantized.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9  # int8 weights: nearly the same


def test_card_describes_the_model(exported, run_dir):
    card = json.loads(exported["fp32"].with_suffix(".json").read_text())
    data = exported["data"]
    summary = json.loads((run_dir / "summary.json").read_text())
    row = next(r for r in summary["models"] if r["role"] == "student" and r["seed"] == 1)
    assert card["model"] == "student:1" and card["checkpoint"] == "checkpoints/student-s1/best.pt"
    assert card["architecture"]["name"] == "mlp" and card["architecture"]["width"] == 32
    assert card["classes"] == [str(i) for i in range(10)]
    assert card["input"]["shape"] == ["batch", *data.input_shape]
    assert card["input"]["mean"] == pytest.approx(list(data.mean)) and card["input"]["scale"] == 1.0
    assert card["accuracy"]["test_acc"] == pytest.approx(row["test_acc"], abs=1e-6)
    over = card["accuracy"]["test_acc_over_seeds"]
    students = [r["test_acc"] for r in summary["models"] if r["role"] == "student"]
    assert over["n"] == 2 and over["mean"] == pytest.approx(sum(students) / 2)
    assert over["low"] <= over["mean"] <= over["high"]
    assert card["cost"]["flops"] == 2 * (40 * 32 + 32 * 32 + 32 * 10)
    assert card["trained_with"]["teacher"] == "teacher-s1"
    assert card["trained_with"]["loss"]["method"] == "kd" and card["trained_with"]["loss"]["temperature"] == 4.0
    assert card["quantization"] is None


def test_int8_card_has_before_and_after(exported):
    card = json.loads(exported["int8"].with_suffix(".json").read_text())
    q = card["quantization"]
    assert q["layers"] == 3  # the MLP's two hidden layers and its head
    for figure in ("test_acc", "latency_ms", "throughput", "size_bytes"):
        assert q["before"][figure] > 0 and q["after"][figure] > 0
    assert q["after"]["size_bytes"] < q["before"]["size_bytes"] / 2
    assert abs(q["after"]["test_acc"] - q["before"]["test_acc"]) < 0.1
    assert card["accuracy"]["test_acc"] == pytest.approx(q["after"]["test_acc"], abs=1e-6)


def test_teacher_of_the_lowest_seed_by_default(run_dir, tmp_path):
    path = ex.export(run_dir, "teacher", tmp_path / "teacher.pt2")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["model"] == "teacher:0" and card["architecture"]["name"] == "cnn1d"
    assert card["trained_with"] == {"teacher": None, "loss": {"method": "cross_entropy", "reduction": "mean",
                                                              "t2_scaling": False}}


def test_onnx_export_matches(run_dir, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    path = ex.export(run_dir, "student:0", tmp_path / "student.pt2", onnx=True)
    card = json.loads(path.with_suffix(".json").read_text())
    assert (tmp_path / "student.onnx").is_file() and not (tmp_path / "student.onnx.data").exists()
    assert card["onnx"]["test_acc"] == pytest.approx(card["accuracy"]["test_acc"], abs=1e-6)
    assert card["onnx"]["max_abs_diff"] < 1e-4


def cli(capfd, *args) -> tuple[int, list[str]]:
    status = main(["export", *map(str, args)])
    return status, capfd.readouterr().err.strip().splitlines()


def test_cli_exports(run_dir, tmp_path, capfd):
    status = main(["export", str(run_dir), "--model", "student:0", "--out", str(tmp_path / "s.pt2")])
    assert status == 0
    assert capfd.readouterr().out.strip() == str(tmp_path / "s.pt2")
    assert (tmp_path / "s.json").is_file()


@pytest.mark.parametrize("spec, words", [
    ("student:7", ["no such model", "student:0", "student:1", "teacher:0"]),
    ("member:0", ["no such model", "student:0"]),
    ("ensemble:0", ["ensemble has no single checkpoint"]),
    ("student:x", ["not a whole number"]),
])
def test_cli_bad_model_spec(run_dir, tmp_path, capfd, spec, words):
    status, err = cli(capfd, run_dir, "--model", spec, "--out", tmp_path / "m.pt2")
    assert status == 2 and len(err) == 1
    assert all(word in err[0] for word in words), err[0]
    assert not (tmp_path / "m.pt2").exists()


def test_cli_unfinished_run(run_dir, tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (run / "summary.json").write_text(json.dumps({"status": "running", "models": []}))
    status, err = cli(capfd, run, "--model", "student", "--out", tmp_path / "m.pt2")
    assert status == 2 and len(err) == 1 and "not finished (status running)" in err[0]


def test_cli_not_a_run_and_bad_out(run_dir, tmp_path, capfd):
    status, err = cli(capfd, tmp_path, "--model", "student", "--out", tmp_path / "m.pt2")
    assert status == 2 and len(err) == 1 and "not a run directory" in err[0]
    status, err = cli(capfd, run_dir, "--model", "student", "--out", tmp_path / "m.onnx")
    assert status == 2 and len(err) == 1 and "ending in .pt2" in err[0]


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_unexportable_model_names_the_op(capfd):
    with pytest.raises(UserError) as caught:
        ex.export_program(DataDependent(), torch.randn(2, 3))
    message = str(caught.value)
    assert "\n" not in message and "aten.item" in message and "test_export.py" in message
    assert capfd.readouterr().err == ""  # torch's own logging of the failed graph is held back


def test_spec_selection_across_run_kinds():
    rows = [{"role": "generation", "seed": s, "generation": g} for s in (0, 1) for g in (0, 1)]
    rows += [{"role": "ensemble", "seed": 0, "generation": 1}]
    rows += [{"role": "member", "seed": 0, "member": m} for m in (0, 1)]
    rows += [{"role": "student", "seed": 0, "combine": c, "student": 0} for c in ("mean_probs", "mean_logits")]
    chosen = ex.select_row(rows, "generation:1:1")
    assert chosen == {"role": "generation", "seed": 1, "generation": 1}
    assert ex.checkpoint_key(chosen) == "gen1-s1"
    assert ex.checkpoint_key(ex.select_row(rows, "member::1")) == "member1-s0"
    assert ex.checkpoint_key(ex.select_row(rows, "student:0:mean_logits")) == "student0-mean_logits-s0"
    assert ex.checkpoint_key({"role": "model", "seed": 3}) == "model-s3"
    with pytest.raises(UserError, match="names 4 models; pick one: generation:0:0, generation:0:1"):
        ex.select_row(rows, "generation")
    with pytest.raises(UserError, match="student:0:mean_probs, student:0:mean_logits"):
        ex.select_row(rows, "student:0")


def test_export_of_a_run_trained_by_distill_train(tmp_path):
    import distill

    cfg = distill.load_config(None, OVERRIDES + ["seeds=[0]", "train.epochs=2", "teacher.train.epochs=1",
                                                 "dataset.num_samples=300"])
    run = distill.train(cfg, out=tmp_path, progress=False)
    path = ex.export(run, "student:0", tmp_path / "student.pt2")
    card = json.loads(path.with_suffix(".json").read_text())
    row = next(r for r in json.loads((run / "summary.json").read_text())["models"] if r["role"] == "student")
    assert card["accuracy"]["test_acc"] == pytest.approx(row["test_acc"], abs=1e-6)
    data = load_data(cfg.dataset)
    model = create_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(run / "checkpoints/student-s0/best.pt", weights_only=False)["model"])
    (logits,) = fresh_python_logits(data.x["test"], [path], tmp_path)
    with torch.no_grad():
        expected = model.eval()(data.x["test"])
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    torch.testing.assert_close(logits, expected)


def test_onnx_without_its_packages_is_bad_input(run_dir, tmp_path, capfd):
    import importlib.util

    if importlib.util.find_spec("onnxscript") is not None and importlib.util.find_spec("onnx") is not None:
        pytest.skip("the export extra is installed")
    status, err = cli(capfd, run_dir, "--model", "student", "--out", tmp_path / "m.pt2", "--onnx")
    assert status == 2 and len(err) == 1 and "pip install -e '.[export]'" in err[0]


def test_int8_linear_is_close_and_needs_linear_layers():
    from distill.export.quantize import Int8Linear, quantize_int8

    torch.manual_seed(0)
    linear = nn.Linear(20, 5)
    x = torch.randn(8, 20)
    torch.testing.assert_close(Int8Linear(linear)(x), linear(x), atol=0.02, rtol=0.02)
    assert Int8Linear(linear).weight.dtype == torch.int8
    with pytest.raises(UserError, match="no Linear layers"):
        quantize_int8(nn.Sequential(nn.ReLU()))


def test_a_failed_export_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
    """The card fails after the .pt2 is written: no .pt2 without a card, no folder made for it; an
    earlier export at the same path is left as it was."""
    import distill.export.cost

    before = ex.export(run_dir, "student:0", tmp_path / "kept" / "s.pt2")
    files = {p.name: p.read_bytes() for p in before.parent.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("no cost today")

    monkeypatch.setattr(distill.export.cost, "model_cost", broken)
    for out in (tmp_path / "new" / "deeper" / "s.pt2", before):
        with pytest.raises(RuntimeError, match="no cost today"):
            ex.export(run_dir, "student:1", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert {p.name: p.read_bytes() for p in before.parent.iterdir()} == files
