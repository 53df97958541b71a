"""Methods that declare their options: each method's record names the distill.* keys it reads,
the objective passes exactly those, and a key the chosen method does not read is a one-line
config error (exit 2 on the command line).

    .venv/bin/python -m pytest tests/test_method_options.py -q
"""

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.methods import losses
from distill.config import DatasetConfig, ModelConfig, build_config, iter_keys, load_config
from distill.methods import DistillConfig
from distill.schema import to_dict
from distill.data import load_data
from distill.errors import ConfigError
from distill.teachers.features import capture
from distill.methods.losses import METHODS, register
from distill.methods import SHARED_KEYS, Option
from distill.models import create_model
from distill.methods.objectives import Batch, make_objective, mix

ROOT = Path(__file__).resolve().parent.parent
DATASET = {"name": "fake", "fake_shape": [1, 16], "num_samples": 120, "fake_classes": 4, "augment": "none"}
BOUNDS = ("ge", "gt", "le", "lt")


@pytest.fixture(scope="module")
def data():
    return load_data(DatasetConfig(**DATASET))


def model(seed=0, name="mlp", **kw):
    torch.manual_seed(seed)
    return create_model(ModelConfig(name=name, width=8, depth=1, **kw), (1, 16), 4)


def first_batch(data):
    xs, ys, idx = next(iter(data.train_batches(32, [torch.Generator().manual_seed(0)])))
    return Batch(xs[0], ys[0], idx[0])


def footprint(data, method, progress=0.3, **options):
    """The loss of one batch and its gradients (student and the objective's own parameters) under
    `method` with `options` set: what a change of an option it reads must move."""
    kind = METHODS[method].signal
    if kind == "features":  # a conv layer's (B, C, L) output: the attention map of a flat one is constant
        options = {"layers": ["features.0"], **options}
    cfg = DistillConfig(method=method, temperature=2.0, **options)
    arch = "cnn1d" if kind == "features" else "mlp"
    student = model(seed=9, name=arch)
    teachers = [] if kind == "none" else [model(seed=1, name=arch)]
    objective, _ = make_objective(cfg, teachers, data, "cpu", epochs=4, student=student)
    batch = first_batch(data)
    if objective.student_layers:
        logits, features = capture(student, list(objective.student_layers), batch.x, "distill.layers", "student")
    else:
        logits, features = student(batch.x), []
    loss = mix(objective.terms(batch, logits, features, progress), objective.weights(progress))
    inputs = list(student.parameters()) + list(objective.parameters())
    return [loss.detach()] + [g for g in torch.autograd.grad(loss, inputs, allow_unused=True) if g is not None]


def changed(option: Option):
    return not option.default if option.type is bool else option.default / 2


# ---------------------------------------------------------------- the rule


def test_an_undeclared_option_is_a_config_error_naming_the_methods_options():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["distill.dkd_beta=3"])
    message = str(err.value)
    assert message.startswith("distill.dkd_beta: method kd does not read this option; "
                              "kd's options are temperature, alpha;") and "\n" not in message
    with pytest.raises(ConfigError, match="distill.jsd_beta, distill.layers: method dkd does not read these "
                                          "options; dkd's options are temperature, dkd_alpha, dkd_beta"):
        load_config(None, ["distill.method=dkd", "distill.jsd_beta=0.3", "distill.layers=[body]"])
    with pytest.raises(ConfigError, match="distill.dkd_beta: method kd"):  # sweeping it would sweep nothing
        load_config(None, ["search.distill.dkd_beta={grid: [1, 2]}"])


def test_declared_shared_and_default_keys_are_accepted():
    assert load_config(None, ["distill.method=dkd", "distill.dkd_beta=3"]).distill.dkd_beta == 3.0
    shared = ["distill.alpha=0.5", "distill.alpha_end=0.1", "distill.temperature=2", "distill.temperature_end=1",
              "distill.standardize=true", "distill.top_k=8", "distill.combine=mean_logits"]
    load_config(None, ["distill.method=dist"] + shared)  # shared keys, whether dist reads them or not
    load_config(None, ["distill.dkd_beta=8.0"])  # its default: the run is the same, nothing is lost


def test_sweeping_t_or_alpha_of_a_method_that_does_not_read_it_is_refused():
    """ban mixes without alpha, ctkd learns its T: a search over them would train one model many times.
    Set in the base config they are accepted (one config serves a sweep over methods) and recorded as None."""
    for method, key in (("ban", "alpha"), ("gkd", "alpha"), ("dkd", "alpha_end"), ("ctkd", "temperature")):
        with pytest.raises(ConfigError, match=f"search.distill.{key}: method {method} does not read "
                                              f"distill.{key.split('_')[0]}, so every value"):
            load_config(None, [f"distill.method={method}", f"search.distill.{key}={{grid: [0.3, 0.6]}}"])
    load_config(None, ["distill.method=kd", "search.distill.alpha={grid: [0.3, 0.6]}"])  # kd reads it
    load_config(None, ["search.distill.method={grid: [kd, ban]}", "search.distill.alpha={grid: [0.3, 0.6]}"])
    from distill.methods.objectives import loss_info

    assert loss_info(load_config(None, ["distill.method=ban", "distill.alpha=0.3"]).distill, None, "t", 1,
                     None)["alpha"] is None
    assert loss_info(load_config(None, ["distill.alpha=0.3"]).distill, None, "t", 1, None)["alpha"] == 0.3


def test_a_sweep_over_methods_carries_each_methods_options_and_each_trial_keeps_its_own():
    from tuning.space import base_dict, trial_config

    sweep = load_config(None, ["distill.dkd_beta=3", "distill.jsd_beta=0.2",
                               "search.distill.method={grid: [kd, dkd, jsd]}"])
    base = base_dict(sweep)
    kd = trial_config(base, {"distill.method": "kd"})
    dkd = trial_config(base, {"distill.method": "dkd"})
    assert (kd.distill.dkd_beta, kd.distill.jsd_beta) == (8.0, 0.5)  # kd reads neither: back to the defaults
    assert (dkd.distill.dkd_beta, dkd.distill.jsd_beta) == (3.0, 0.5)
    assert trial_config(base, {"distill.method": "jsd"}).distill.jsd_beta == 0.2
    assert build_config(to_dict(dkd)).distill.dkd_beta == 3.0  # a trial's config.yaml loads again
    written = to_dict(kd)
    written["distill"]["dkd_beta"] = 3.0  # but a written-out kd config that sets dkd's option is refused
    with pytest.raises(ConfigError, match="method kd does not read"):
        build_config(written)


def test_the_command_line_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "distill.cli", "train", "mnist1d-mlp", "distill.dkd_beta=3",
                           "--out", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "distill.dkd_beta: method kd does not read this option" in lines[0], lines
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the records


def test_options_live_with_their_methods_not_in_the_config_section():
    """The distill section's fields are the shared keys only; each option is declared once, by the
    methods that read it (one declaration per key: type, default and range agree)."""
    assert {f.name for f in dataclasses.fields(DistillConfig)} == set(SHARED_KEYS)
    seen = {}
    for method in METHODS.values():
        for option in method.options:
            assert seen.setdefault(option.key, option) == option, option  # one meaning per key
    defaults = load_config(None, ["distill.method=dkd"]).distill
    assert all(getattr(defaults, key) == option.default for key, option in seen.items())
    assert "distill.dkd_beta" in {key for key, _, _ in iter_keys()}  # distill list keys names them


def test_an_option_is_checked_like_a_field():
    with pytest.raises(ConfigError, match=r"^distill.dkd_beta: -1.0 is out of range; it must be >= 0.0$"):
        load_config(None, ["distill.method=dkd", "distill.dkd_beta=-1"])
    with pytest.raises(ConfigError, match=r"^distill.dkd_betta: unknown key \(did you mean dkd_beta\?\)"):
        load_config(None, ["distill.method=dkd", "distill.dkd_betta=1"])
    cfg = load_config(None, ["distill.method=dkd"])
    cfg.distill.dkd_beta = 2  # assignment is checked too
    assert cfg.distill.dkd_beta == 2.0 and to_dict(cfg)["distill"]["dkd_beta"] == 2.0
    with pytest.raises(ConfigError, match="out of range"):
        cfg.distill.dkd_beta = -2


def test_options_for_the_formula_are_its_keywords():
    for method in METHODS.values():
        keywords = inspect.signature(method.formula).parameters
        for option in method.options:
            assert option.to != "loss" or option.kwarg in keywords, (method.name, option)


@pytest.mark.parametrize("name", [name for name, m in METHODS.items() if m.options and m.objective is None])
def test_every_declared_option_reaches_what_it_feeds(data, name):  # gkd (a language model's): tests/test_gkd.py
    base = footprint(data, name)
    for option in METHODS[name].options:
        if option.to == "layers":  # which layers are hooked: tests/test_teachers.py
            continue
        other = footprint(data, name, **{option.key: changed(option)})
        assert len(other) == len(base) and any(not torch.allclose(a, b) for a, b in zip(base, other)), option.key


def test_jsd_beta_reaches_the_loss_of_a_tiny_batch(data):
    batch, student, teacher = first_batch(data), model(seed=9), model(seed=1)

    def loss(overrides):
        cfg = load_config(None, ["distill.method=jsd", "distill.temperature=2"] + overrides).distill
        objective, info = make_objective(cfg, [teacher], data, "cpu")
        return mix(objective.terms(batch, student(batch.x), [], 0.0), objective.weights(0.0)), info

    half, info = loss([])
    low, low_info = loss(["distill.jsd_beta=0.1"])
    assert (info["jsd_beta"], low_info["jsd_beta"]) == (0.5, 0.1)  # and recorded
    with torch.no_grad():
        expected = METHODS["jsd"](student(batch.x), teacher.eval()(batch.x), batch.y, temperature=2.0, beta=0.1)
    torch.testing.assert_close(low, mix(expected, {"teacher": 0.9, "task": 0.1}))
    assert not torch.allclose(low, half)


def test_list_methods_names_each_methods_options(capsys):
    from distill.cli import main

    assert main(["list", "methods"]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.strip().splitlines()}
    assert "options: jsd_beta = 0.5 (>= 0, <= 1)" in lines["jsd"]
    assert "dkd_beta = 8.0 (>= 0): weight of the non-target-class term NCKD" in lines["dkd"]
    assert "skew_reverse = False" in lines["skew_kl"] and lines["kd"].endswith("; options: none")


# ---------------------------------------------------------------- a new method is one record


def test_a_new_logit_method_with_one_option_is_one_record(data, monkeypatch):
    monkeypatch.setattr(losses, "METHODS", dict(METHODS))
    monkeypatch.setattr(losses, "LOSS_INFO", dict(losses.LOSS_INFO))
    seen = []

    def scaled_kd(student_logits, teacher_logits, targets, *, temperature, strength):
        seen.append(strength)
        terms = losses.kd(student_logits, teacher_logits, targets, temperature=temperature)
        return {**terms, "teacher": strength * terms["teacher"]}

    register("scaled_kd", reduction="batchmean", t2_scaling=True, paper="a test", matches="kd, scaled",
             options=(Option("kd_scale", "strength", float, 0.1, {"ge": 0.0, "lt": 1.0}, "scale of the KD term"),))(
        scaled_kd)  # a new key, distill.kd_scale: declared here and nowhere else
    cfg = load_config(None, ["distill.method=scaled_kd", "distill.kd_scale=0.5"])
    objective, info = make_objective(cfg.distill, [model(seed=1)], data, "cpu")
    batch = first_batch(data)
    objective.terms(batch, model(seed=9)(batch.x), [], 0.0)
    assert seen == [0.5] and info["kd_scale"] == 0.5 and info["method"] == "scaled_kd"
    with pytest.raises(ConfigError, match="out of range"):
        load_config(None, ["distill.method=scaled_kd", "distill.kd_scale=2"])
    with pytest.raises(ConfigError, match="scaled_kd's options are temperature, alpha, kd_scale"):
        load_config(None, ["distill.method=scaled_kd", "distill.jsd_beta=0.3"])
    assert any(line.startswith("scaled_kd: a test.") for line in losses.list_methods())
