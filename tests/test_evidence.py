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


def test_a_single_seed_shows_its_value_alone_with_n_1(files):
    _, folder = files
    (folder / "mlp.csv").write_text("model,test_acc,test_acc_ci,n,paper\nMLP,63.04,0.0,1,\nCNN,95.8,,1,\n")
    lines = evidence.render(folder, "mlp").splitlines()
    assert lines[2] == "| MLP | 63.0 (n=1) | 1 |  |" and lines[3] == "| CNN | 95.8 (n=1) | 1 |  |"


def test_a_tie_over_seeds_shows_the_value_alone_never_plus_minus_zero(files):
    _, folder = files
    (folder / "mlp.csv").write_text("model,test_acc,test_acc_ci,n,paper\nMLP,63.04,0.0,2,\nCNN,95.8,0.02,3,\n"
                                    "KD,70.0,0.31,3,\n")
    lines = evidence.render(folder, "mlp").splitlines()
    assert lines[2] == "| MLP | 63.0 (all 2 equal) | 2 |  |"  # every seed the same
    assert lines[3] == "| CNN | 95.8 ± <0.1 | 3 |  |"  # a spread that rounds to 0 at one decimal
    assert lines[4] == "| KD | 70.0 ± 0.3 | 3 |  |"


PROSE = ("KD gains <!-- value mlp diff:+.1f model=KD -->+9.9<!-- /value --> points; separable after Holm: "
         "<!-- value mlp list(model) verdict_holm=higher -->x<!-- /value -->; the MLPs score "
         "<!-- value mlp min(test_acc):.1f model=MLP|KD -->0<!-- /value -->-"
         "<!-- value mlp max(test_acc):.1f model!=CNN -->0<!-- /value --> %, "
         "<!-- value mlp count diff>0 -->0<!-- /value --> above labels.\n")


def test_numbers_in_prose_are_rendered_and_checked(files, capsys):
    readme, folder = files
    (folder / "mlp.csv").write_text("model,test_acc,test_acc_ci,n,paper,diff,verdict_holm\n"
                                    "MLP,63.04,1.02,5,68,,\nKD,65.5,1.0,5,,2.54,higher\nCNN,95.8,0.5,5,,32.7,higher\n")
    readme.write_text(README + PROSE)
    argv = ["--readme", str(readme), "--dir", str(folder)]
    assert evidence.main(argv + ["--check"]) == 1
    assert "value mlp diff:+.1f model=KD (README: '+9.9', files: '+2.5')" in capsys.readouterr().err
    assert evidence.main(argv) == 0
    text = readme.read_text()
    assert ("KD gains <!-- value mlp diff:+.1f model=KD -->+2.5<!-- /value --> points; separable after Holm: "
            "<!-- value mlp list(model) verdict_holm=higher -->KD, CNN<!-- /value -->") in text
    assert "-->63.0<!-- /value -->-<!-- value mlp max(test_acc):.1f model!=CNN -->65.5<!-- /value --> %" in text
    assert "<!-- value mlp count diff>0 -->2<!-- /value --> above labels" in text
    assert evidence.main(argv + ["--check"]) == 0
    readme.write_text(text.replace("model=KD -->", "model=K -->"))  # a value that names no row: one line, 2
    assert evidence.main(argv + ["--check"]) == 2
    assert "leave 0 rows" in capsys.readouterr().err


def test_json_sources_prefixes_and_sub_folders(files):
    _, folder = files
    (folder / "demo").mkdir()
    (folder / "demo" / "gain.csv").write_text("comparison,diff\nKD student − labels (test acc),3.18\n")
    (folder / "best.json").write_text(json.dumps({"best": {"params": {"distill.temperature": 16},
                                                           "ci95": [-0.016, 0.021], "p": 0.7265}}))
    assert evidence.value(folder, "demo/gain", 'diff:+.1f comparison^="KD student"') == "+3.2"
    assert evidence.value(folder, "best.json", "best.params.distill.temperature") == "16"
    assert evidence.value(folder, "best.json", "best.ci95.0*100:+.1f") == "-1.6"
    assert evidence.value(folder, "best.json", "best.p:.2f") == "0.73"
    with pytest.raises(evidence.EvidenceError, match="has no"):
        evidence.value(folder, "best.json", "best.q")


def test_the_readmes_results_prose_is_checked_not_typed():
    text = (ROOT / "README.md").read_text()
    for drifted in ("p = 0.78", "1.7-4 points", "DIST, WTTM, DKD, TVD and JSD gain more"):
        assert drifted not in text, drifted  # numbers no file held, or that had drifted from the files
    results_prose = text.split("## Results on MNIST-1D", 1)[1].split("## Sweeps on Ray Tune", 1)[0]
    assert results_prose.count("<!-- value ") >= 30
    assert "<!-- value mnist1d-methods list(model) verdict_holm=higher -->" in results_prose
