"""The `distill` command: exit status 2 with one line for bad input, and nothing written."""

import pytest

from distill.cli import main
from tests.conftest import tiny_overrides


def _fails_cleanly(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\n")
    return str(path)


@pytest.mark.parametrize("override, words", [
    ("train.epochz=3", ["train.epochz", "unknown key"]),
    ("train.epochs=abc", ["train.epochs"]),
    ("distill.temperature=0", ["distill.temperature"]),
    ("distill.alpha=2", ["distill.alpha"]),
    ("model.name=nope", ["model.name"]),
    ("dataset.name=nope", ["dataset.name"]),
])
def test_bad_config_exits_2(capsys, tmp_path, config, override, words):
    out = tmp_path / "runs"
    _fails_cleanly(capsys, ["train", config, override, "--out", str(out)], *words)
    assert not out.exists()


def test_missing_dataset_folder_exits_2(capsys, tmp_path, config):
    out = tmp_path / "runs"
    _fails_cleanly(capsys, ["train", config, "dataset.name=cifar10", f"dataset.root={tmp_path / 'nowhere'}",
                            "model.name=cnn2d", "--out", str(out)], "dataset.root", "download")
    assert not out.exists()


def test_invalid_yaml_and_missing_file_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    _fails_cleanly(capsys, ["train", str(bad)], "not valid YAML")
    _fails_cleanly(capsys, ["train", str(tmp_path / "none.yaml")], "does not exist")


def test_usage_errors_exit_2(capsys):
    _fails_cleanly(capsys, ["frobnicate"], "invalid choice")
    _fails_cleanly(capsys, ["list", "things"], "invalid choice")
    _fails_cleanly(capsys, ["train"], "config")


def test_help_and_list(capsys):
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    assert main(["list", "models"]) == 0
    assert "mlp" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert "mnist1d" in capsys.readouterr().out
    assert main(["list", "keys"]) == 0
    assert "distill.temperature" in capsys.readouterr().out


def test_train_command_runs(capsys, tmp_path, config):
    assert main(["train", config, "--out", str(tmp_path), "--quiet"] + tiny_overrides(**{"train.epochs": 1})) == 0
    out = capsys.readouterr().out.strip()
    assert (tmp_path / "c").is_dir() and out.endswith(next((tmp_path / "c").iterdir()).name)


@pytest.mark.parametrize("argv", [["train", "does-not-exist.yaml"], ["train", "mnist1d-mlp", "train.epochz=3"],
                                  ["bornagain", "ban-mnist1d", "bornagain.generations=zero"],
                                  ["reproduce", "mnist1d-mlp", "train.epochz=3"], ["tune", "nope.yaml"]])
def test_a_typo_answers_in_well_under_a_second_before_torch_loads(argv):
    """The file, its keys, types and ranges are checked before torch (or pandas) is imported."""
    import subprocess
    import sys
    import time

    code = ("import sys, runpy; sys.argv = ['distill'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('distill.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
            "    raise\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    took = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert took < 1.0, took
