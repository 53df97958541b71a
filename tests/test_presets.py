"""Presets: package data found by name, their preset:/paper: sections checked, `distill reproduce`.

    .venv/bin/python -m pytest tests/test_presets.py -q
"""

import io
import pickle
import re

import numpy as np
import pytest
import yaml

import results
from distill.cli import main, preset_lines
from distill.config import build_config, load_config
from distill.schema import to_dict
from distill.presets_config import COMMANDS, preset_names, presets_root, resolve_config_path
from distill.errors import ConfigError
from results import reproduction
from tests.test_data import balanced_labels, images, write_idx

PAPER_PRESETS = ["hinton-mnist", "ban-cifar10-wrn", "ban-cifar100-wrn", "ban-cifar100-densenet",
                 "ensemble-cifar10", "ensemble-cifar100", "tfkd-cifar100"]


def test_every_preset_loads_and_describes_itself():
    names = preset_names()
    assert set(PAPER_PRESETS) <= set(names) and "mnist1d-mlp" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.preset is not None and cfg.preset.description and cfg.preset.quick, name
        load_config(name, cfg.preset.quick)  # the quick overrides are valid keys and values
        if cfg.dataset.name not in ("mnist1d", "digits", "fake"):
            assert cfg.preset.needs.data and cfg.dataset.name.split("_")[0] in cfg.preset.needs.data.lower(), name
    for name in PAPER_PRESETS:
        paper = load_config(name).paper
        assert paper.source and paper.figures and paper.table and paper.differences, name


def test_presets_carry_no_result_figures_in_comments():
    for path in presets_root().iterdir():
        for line in path.read_text().splitlines():
            comment = line.split("#", 1)[1] if "#" in line else ""
            assert not re.search(r"\d\s*%|\+-|±", comment), (path.name, line)


def test_name_or_path_resolves(tmp_path, monkeypatch):
    assert resolve_config_path("mnist1d-mlp").name == "mnist1d-mlp.yaml"
    assert resolve_config_path("mnist1d-mlp.yaml").name == "mnist1d-mlp.yaml"
    own = tmp_path / "mnist1d-mlp"  # a file of that name wins over the preset
    own.write_text("name: mine\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("mnist1d-mlp").name == "mine"
    with pytest.raises(ConfigError, match="does not exist and is no preset.*mnist1d-cnn"):
        resolve_config_path("no-such-preset")


@pytest.mark.parametrize("section, words", [
    ("preset: {command: fly}", ["preset.command", "train"]),
    ("preset: {quick: [epochs]}", ["preset.quick[0]", "key=value"]),
    ("preset: {needs: {device: tpu}}", ["preset.needs.device", "gpu"]),
    ("preset: {cost: {epochs: 0}}", ["preset.cost.epochs", ">= 1"]),
    ("preset: {colour: red}", ["preset.colour", "unknown key"]),
    ("paper: {figures: {model: 68}}", ["paper.source", "empty"]),
    ("paper: {source: x, figures: {model: 680}}", ["paper.figures.model", "0 to 100"]),
    ("paper: {source: x, table: {unit: '%', columns: [a, b], rows: {r: [1]}}}", ["paper.table.rows.r", "2 numbers"]),
    ("paper: {source: x, table: {unit: '%', columns: [a], rows: {r: [1]}, notes: y}}", ["paper.table.notes"]),
])
def test_bad_preset_sections_are_one_line_errors(tmp_path, section, words):
    path = tmp_path / "p.yaml"
    path.write_text(section + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_preset_sections_go_to_config_yaml_but_not_the_run_id():
    from distill.config import config_hash, dump_yaml

    cfg = load_config("mnist1d-mlp")
    assert "paper:" in dump_yaml(cfg) and "preset:" in dump_yaml(cfg)
    assert config_hash(cfg) == config_hash(load_config("mnist1d-mlp", ["preset.description=other", "paper=null"]))


def test_reproduce_list_names_command_needs_cost_and_source(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == preset_lines()
    for name in preset_names():
        commands = "|".join(COMMANDS)  # the experiment kinds and tune
        assert re.search(rf"^{re.escape(name)}  \(({commands})\) ", out, re.M), name
    assert "needs: gpu; data: dataset.root holding cifar-100-python/" in out
    assert "cost: 540 epochs x 54,000 examples" in out
    assert "source: Hinton, Vinyals and Dean 2015" in out
    assert f"    differences: {load_config('tfkd-cifar100').paper.differences}" in out.splitlines()
    assert main(["list", "presets"]) == 0
    assert capsys.readouterr().out.split() == preset_names()


def test_reproduce_bad_input_exits_2(capsys, tmp_path):
    assert main(["reproduce", "nope"]) == 2
    assert "no preset" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\n")
    assert main(["reproduce", str(plain)]) == 2
    assert "no preset: section" in capsys.readouterr().err
    assert main(["reproduce", "mnist1d-mlp", "train.epochz=1"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_reproduce_runs_the_command_and_reports_with_the_paper_column(tmp_path, monkeypatch):
    from tests.test_results import make_run, row

    run_dir = tmp_path / "runs" / "mnist1d-mlp" / "r1"
    seen = {}

    class FakeProcess:  # stands in for the `distill train` subprocess: writes a run, prints its path
        def __init__(self, argv, stdout, text):
            seen["argv"] = argv
            make_run(run_dir, [row("model", s, 0.66 + 0.01 * s) for s in (0, 1, 2)], name="mnist1d-mlp", loss=False)
            config = yaml.safe_load((run_dir / "config.yaml").read_text())  # the preset's paper: section, as runs keep it
            config["paper"] = to_dict(load_config("mnist1d-mlp").paper)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
            self.stdout = io.StringIO(f"training...\n{run_dir}\n")
            self.returncode = 0

        def wait(self):
            return 0

    monkeypatch.setattr(reproduction.subprocess, "Popen", FakeProcess)
    assert main(["reproduce", "mnist1d-mlp", "--quick", "--out", str(tmp_path / "runs"), "seeds=[0,1,2]"]) == 0
    assert seen["argv"][3:5] == ["train", str(resolve_config_path("mnist1d-mlp"))]
    assert seen["argv"][5:] == load_config("mnist1d-mlp").preset.quick + ["seeds=[0,1,2]", "--out", str(tmp_path / "runs")]
    page = (run_dir / "report" / "report.md").read_text()
    assert "| paper |" in page and "68" in page and "Greydanus" in page
    assert f"Differences from the paper's setting: {load_config('mnist1d-mlp').paper.differences}" in page
    with pytest.raises(ConfigError, match="preset.command"):  # the kinds and tune: checked when the preset loads
        build_config({"preset": {"command": "fly"}})
    assert issubclass(results.ReproduceFailed, RuntimeError)


# ---------------------------------------------------------------- every preset's --quick, for real


def write_dataset_files(root):
    """Tiny MNIST, CIFAR-10 and CIFAR-100 folders in torchvision's on-disk formats."""
    raw = root / "MNIST" / "raw"
    for prefix, n, seed in (("train", 200, 0), ("t10k", 50, 1)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images(n, (28, 28), seed))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", balanced_labels(n, 10, seed).astype(np.uint8))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(5):
        x, y = images(40, (3, 32, 32), i), balanced_labels(40, 10, i)
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps({"data": x.reshape(40, -1), "labels": y.tolist()}))
    x, y = images(50, (3, 32, 32), 9), balanced_labels(50, 10, 9)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": x.reshape(50, -1), "labels": y.tolist()}))
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", 1000, 0), ("test", 100, 1)):
        x, y = images(n, (3, 32, 32), seed), balanced_labels(n, 100, seed)
        (folder / name).write_bytes(pickle.dumps({"data": x.reshape(n, -1), "fine_labels": y.tolist(),
                                                  "coarse_labels": (y // 5).tolist()}))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset_files(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_runs_quick(name, data_root, tmp_path, capsys):
    extra = [f"dataset.root={data_root}", "train.device=cpu", "train.threads=1"]
    if load_config(name).preset.command == "tune":
        extra.append("tune.cpus_per_trial=1")
    code = main(["reproduce", name, "--quick", "--out", str(tmp_path / "runs")] + extra)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    report = tmp_path.glob("runs/**/report/report.md")
    assert next(report, None) is not None, captured.out[-2000:]
