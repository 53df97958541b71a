"""README result tables rendered from docs/results/ files, and the check that they agree.

    .venv/bin/python -m pytest tests/test_evidence.py -q
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from results import evidence

ROOT = Path(__file__).resolve().parent.parent
META = {"command": "distill train mnist1d-mlp", "date": "2026-12-01", "machine": "2 CPU cores",
        "versions": {"torch": "2.4.0"},
        "columns": [["model", "{model}"], ["test acc %", "{test_acc:.1f} ± {test_acc_ci:.1f}"], ["n", "{n}"],
                    ["paper", "{paper}"]]}
CSV = "model,test_acc,test_acc_ci,n,paper\nMLP,63.04,1.02,5,68\nCNN,95.8,,3,\n"
README = "# x\n\ntext\n\n<!-- results:mlp -->\nold table\n<!-- /results:mlp -->\n\nmore text\n"


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "mlp.csv").write_text(CSV)
    (folder / "mlp.json").write_text(json.dumps(META))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return readme, folder


def test_render_formats_rows_and_names_the_evidence(files):
    _, folder = files
    assert evidence.render(folder, "mlp").splitlines() == [
        "| model | test acc % | n | paper |", "| --- | --- | --- | --- |",
        "| MLP | 63.0 ± 1.0 | 5 | 68 |", "| CNN |  | 3 |  |", "",
        "From `docs/results/mlp.csv`: `distill train mnist1d-mlp`, 2026-12-01, 2 CPU cores; torch 2.4.0."]


def test_rewrite_then_check(files, capsys):
    readme, folder = files
    argv = ["--readme", str(readme), "--dir", str(folder)]
    assert evidence.main(argv + ["--check"]) == 1
    assert "mlp" in capsys.readouterr().err
    assert evidence.main(argv) == 0
    text = readme.read_text()
    assert "| MLP | 63.0 ± 1.0 | 5 | 68 |" in text and "old table" not in text
    assert text.startswith("# x\n\ntext\n") and text.endswith("<!-- /results:mlp -->\n\nmore text\n")
    assert evidence.main(argv + ["--check"]) == 0
    (folder / "mlp.csv").write_text(CSV.replace("63.04", "64.04"))  # the files moved, the README did not
    assert evidence.main(argv + ["--check"]) == 1


@pytest.mark.parametrize("breakage, words", [
    (lambda f: (f / "mlp.json").unlink(), ["mlp.json", "does not exist"]),
    (lambda f: (f / "mlp.csv").unlink(), ["mlp.csv", "does not exist"]),
    (lambda f: (f / "mlp.json").write_text(json.dumps({**META, "machine": ""})), ["machine", "missing"]),
    (lambda f: (f / "mlp.json").write_text("{"), ["not valid JSON"]),
    (lambda f: (f / "mlp.csv").write_text("model,n\nMLP,5\n"), ["test_acc", "does not have"]),
])
def test_bad_files_are_one_line_errors(files, capsys, breakage, words):
    readme, folder = files
    breakage(folder)
    assert evidence.main(["--readme", str(readme), "--dir", str(folder), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for word in words:
        assert word in err, (word, err)


def test_repository_readme_agrees_with_its_result_files():
    code = "import sys, results.evidence as e; sys.exit(e.main(['--check']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch" not in evidence.__dict__
