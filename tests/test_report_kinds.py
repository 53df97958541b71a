"""The report reads each experiment's kind from the registry (distill.kinds), and gets real runs right.

Every run here is real and tiny, made by the commands a user types (`distill reproduce PRESET
--quick`, `distill train`), shared between tests (module-scoped), on CPU:

- a Tune sweep whose teacher is trained once for all trials: the teacher is the teacher, not a trial;
- the cost table of a sweep: one row per setting, never pooled;
- `--compare` of a KD run and its labels baseline: the teacher differs, T and alpha (which the
  labels-only run does not read) do not;
- the `paper` column of `distill reproduce` runs (presets nest their figures under paper.figures),
  for every preset with figures: each figure maps onto a row of its quick run;
- a language model's KD page: judged on test NLL (lower is better), with perplexity;
- the generic page: a kind without a page of its own, and a kind that is not installed.

    .venv/bin/python -m pytest tests/test_report_kinds.py -q                    # everything, about 4 min
    .venv/bin/python -m pytest tests/test_report_kinds.py -q -m "not slow"      # no Ray, no CIFAR: about 45 s
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

import results
from distill import cli, kinds
from distill.config import load_config
from distill.presets_config import preset_names
from results import experiments as ex

SMALL = ["train.device=cpu", "train.threads=1"]
EXTRA = {"mnist1d-kd": ["distill.temperature=8"]}  # T is not the default 4: a labels-only run's T differs

# language models: the demo's shrunk lm-pydoc-kd, smaller still
LM = ["train.epochs=2", "teacher.train.epochs=2", "dataset.text.documents=10", "dataset.text.block=32",
      "model.width=32", "teacher.model={name: gpt, width: 32, depth: 1, kwargs: {heads: 2}}", "seeds=[0,1]",
      *SMALL]


def with_figures() -> list:
    """Every preset with published figures. Those whose full run needs a GPU run their quick
    versions on CPU with tiny data folders (as tests/test_presets.py does); they and the Ray
    sweeps (about 25 s each) are marked slow."""
    params = []
    for name in preset_names():
        cfg = load_config(name)
        if not (cfg.paper and cfg.paper.figures):
            continue
        slow = cfg.preset.needs.device != "cpu" or cfg.preset.command == "tune"
        params.append(pytest.param(name, marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """name -> the report folder of `distill reproduce NAME --quick` (run once per module)."""
    root = tmp_path_factory.mktemp("reproduce")
    done = {}

    def run(name: str):
        if name not in done:
            cfg = load_config(name)
            extra = SMALL + EXTRA.get(name, [])
            if cfg.preset.command == "tune":
                extra.append("tune.cpus_per_trial=1")
            if cfg.preset.needs.data:
                from tests.test_presets import write_dataset_files

                data = root / "data"
                if not data.exists():
                    write_dataset_files(data)
                extra.append(f"dataset.root={data}")
            assert cli.main(["reproduce", name, "--quick", "--out", str(root / name), *extra]) == 0
            (report,) = (root / name).glob("**/report/report.md")
            done[name] = report.parent
        return done[name]

    return run


def csv(folder, name) -> pd.DataFrame:
    return pd.read_csv(folder / name)


def run_of(report_folder):
    """The run (or sweep) folder a reproduce report is about: the folder above report/."""
    return report_folder.parent


# ---------------------------------------------------------------- a sweep with a shared teacher


@pytest.fixture(scope="module")
def sweep(reproduced):
    return reproduced("tune-mnist1d-kd")  # T in {1, 4} x alpha 0.9, one seed: 2 trials and the teacher


@pytest.mark.slow  # the sweep: Ray and 2 trials, about 25 s
def test_a_sweeps_shared_teacher_is_its_teacher_not_a_trial(sweep, tmp_path, monkeypatch):
    folder = run_of(sweep)
    assert (folder / "teacher-s0" / "summary.json").exists()  # the shared teacher, named by the seeds it serves
    (exp,) = ex.split(results.load(folder))
    assert exp.kind == "sweep" and len(exp.runs) == 3
    assert exp.teachers == [str(folder / "teacher-s0")] and len(exp.trials) == 2
    page = (sweep / "report.md").read_text()
    assert "2 trials (fifo scheduler)" in page and "3 trials" not in page
    slug = exp.slug
    teacher = csv(sweep, f"{slug}-teacher.csv")
    assert list(teacher["model"]) == ["teacher cnn1d"] and teacher["paper"].tolist() == [94.0]
    models = csv(sweep, "models.csv")
    assert set(models.loc[models["run"] == str(folder / "teacher-s0"), "role"]) == {"teacher"}
    assert "T=4.0, alpha=0.9" not in " ".join(teacher["model"])
    loss = csv(sweep, f"{slug}-loss.csv")
    assert set(loss["model"]) == {"teacher cnn1d", "student mlp"}
    # the learning curves: one line per setting of the trials, none for the teacher
    seen = []
    curves = results.plots.learning_curves
    monkeypatch.setattr(results.plots, "learning_curves",
                        lambda rows, out, **kw: seen.append(set(rows["model"])) or curves(rows, out, **kw))
    results.report([folder], tmp_path / "again")
    assert seen == [{"student T=1.0, alpha=0.9", "student T=4.0, alpha=0.9"}]


@pytest.mark.slow  # shares the sweep above
def test_a_sweeps_cost_table_has_one_row_per_setting(sweep):
    (exp,) = ex.split(results.load(run_of(sweep)))
    cost = csv(sweep, f"{exp.slug}-cost.csv").set_index("model")
    assert list(cost.index) == ["teacher cnn1d", "student mlp (T=1.0, alpha=0.9)", "student mlp (T=4.0, alpha=0.9)"]
    assert (cost["test_acc_n"] == 1).all()  # one seed per setting, nothing pooled
    settings = csv(sweep, f"{exp.slug}-settings.csv").set_index("T")
    for t in (1.0, 4.0):
        assert cost.loc[f"student mlp (T={t}, alpha=0.9)", "test_acc_mean"] == \
            pytest.approx(settings.loc[t, "test_acc_mean"])


# ---------------------------------------------------------------- --compare: what differs


def test_compare_shows_the_teacher_not_the_settings_a_labels_run_does_not_read(reproduced, tmp_path):
    kd, labels = run_of(reproduced("mnist1d-kd")), run_of(reproduced("mnist1d-mlp"))
    out = tmp_path / "compare"
    page = results.report([kd, labels], out, compare=True).read_text()
    settings = page.split("Settings that differ between the experiments:")[1].split("Test accuracy")[0]
    header = settings.strip().splitlines()[0]
    assert header == "| experiment | teacher |", settings
    assert "| mnist1d-kd | cnn1d |" in settings and "| mnist1d-mlp | none |" in settings
    # the KD page finds that run as the same student from labels
    models = csv(out, "mnist1d-kd-models.csv")
    assert "student mlp from labels" in set(models["model"])


# ---------------------------------------------------------------- the paper column of reproduce


def test_reproduce_report_shows_the_presets_paper_figure(reproduced):
    report = reproduced("mnist1d-mlp")
    page = (report / "report.md").read_text()
    assert "| paper |" in page and "Greydanus" in page
    models = csv(report, "mnist1d-mlp-models.csv")
    assert models["paper"].tolist() == [68.0]
    # read from config.yaml alone (no figures passed in), as `distill report RUN` does
    (exp,) = ex.split(results.load(run_of(report)))
    assert ex.paper_figures(exp) == ({"model": 68.0}, load_config("mnist1d-mlp").paper.source)


@pytest.mark.parametrize("name", with_figures())
@pytest.mark.slow  # end to end (Ray or every preset): CI runs it, make test does not
def test_every_presets_figures_map_onto_its_rows(reproduced, name):
    report = reproduced(name)
    models = csv(report, "models.csv")
    for role, value in load_config(name).paper.figures.items():
        mapped = models[(models["role"] == role) & np.isclose(models["paper"], value)]
        assert len(mapped), f"{name}: paper.figures.{role} = {value} maps onto no row ({sorted(set(models.role))})"
    page = (report / "report.md").read_text()
    assert "| paper |" in page or "(paper: " in page


# ---------------------------------------------------------------- language models


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    for extra in ([], ["teacher.model=null"]):  # KD, then the same student from labels
        assert cli.main(["train", "lm-pydoc-kd", *LM, *extra, "--out", str(root / "runs"), "--quiet"]) == 0
    out = root / "report"
    results.report([root / "runs"], out)
    return root / "runs", out


def test_a_language_models_kd_page_is_judged_on_nll(lm):
    runs, out = lm
    found = ex.split(results.load(runs))
    (kd,) = [e for e in found if e.kind == "kd"]
    gain = csv(out, f"{kd.slug}-kd-gain.csv")
    assert list(gain["comparison"]) == ["KD student − same student from labels (test NLL)",
                                        "KD student − same student from labels (test perplexity)"]
    rows = results.load(runs)
    student = rows[rows["role"] == "student"].set_index("seed")["test_nll"]
    labels = rows[rows["role"] == "model"].set_index("seed")["test_nll"]
    assert gain["diff"].iloc[0] == pytest.approx((student - labels).mean())  # NLL itself, not points
    page = (out / "report.md").read_text()
    section = page.split(f'<a id="{kd.slug}"></a>')[1].split("### ")[0]
    assert "(test acc)" not in section and "points" not in section.split("Gain of KD")[1]
    assert "per seed on test NLL:" in section and "lower is better" in section
    models = csv(out, f"{kd.slug}-models.csv")
    assert {"test_nll_mean", "test_ppl_mean"} <= set(models.columns)
    teacher, kd_nll, base = (rows.loc[rows["role"] == r].set_index("seed")["test_nll"]
                             for r in ("teacher", "student", "model"))
    closed = ((kd_nll - base) / (teacher - base) * 100).mean()
    assert f"{closed:.1f}" in section


# ---------------------------------------------------------------- the generic page


def copy_with_kind(run, folder, kind: str):
    shutil.copytree(run, folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "kind": kind}))
    return folder


def test_a_kind_not_installed_gets_the_generic_page_and_a_note(reproduced, tmp_path):
    run = copy_with_kind(run_of(reproduced("ban-mnist1d")), tmp_path / "runs" / "chain" / "r1", "notinstalled")
    out = tmp_path / "report"
    page = results.report([run], out).read_text()
    (exp,) = ex.split(results.load(run))
    assert exp.kind == "models" and exp.registered is None
    assert "`notinstalled`, which no installed kind module declares" in page
    models = csv(out, f"{exp.slug}-models.csv").set_index("model")
    assert {"generation 0", "generation 1"} <= set(models.index)  # the default labels of distill.kinds
    assert models.loc["generation 1", "test_acc_n"] == 2 and "params" in models.columns
    assert models.loc["generation 1", "paper"] == 68.0  # paper.figures.generation, mapped by role
    index = csv(out, "experiments.csv")
    assert index["kind"].tolist() == ["models"]
    assert index["test_acc_n"].tolist() == [2]  # the headline is one model over its seeds, nothing pooled


def test_a_kind_without_a_page_of_its_own_is_read_by_its_view(reproduced, tmp_path, monkeypatch):
    pair = kinds.Kind(name="pair", help="the model twice", run="nowhere:run",
                      label=lambda row: f"copy of {row['name']}", view=kinds.View("a pair of models"))
    monkeypatch.setitem(kinds.registered(), "pair", pair)
    run = copy_with_kind(run_of(reproduced("mnist1d-mlp")), tmp_path / "runs" / "pair" / "r1", "pair")
    out = tmp_path / "report"
    page = results.report([run], out).read_text()
    assert "a pair of models" in page and "no installed kind module" not in page
    index = csv(out, "experiments.csv")
    assert index["kind"].tolist() == ["models"]
    models = csv(out, f"{ex.split(results.load(run))[0].slug}-models.csv")
    assert models["model"].tolist() == ["copy of mlp"] and not math.isnan(models["test_acc_mean"].iloc[0])
