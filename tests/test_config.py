"""Config: defaults, overrides, and every bad input named with its key."""

import pytest

from distill.config import Config, iter_keys, load_config
from distill.schema import parse_override, to_dict
from distill.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 7}\nmodel: {name: mlp}\n")
    cfg = load_config(path, ["train.lr=0.5", "seeds=[0,1,2]", "distill.alpha=0.25", "model.kwargs={a: 1}"])
    assert isinstance(cfg, Config)
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.5 and cfg.seed_list() == [0, 1, 2]
    assert cfg.distill.alpha == 0.25 and cfg.model.kwargs == {"a": 1}
    assert cfg.dataset.name == "mnist1d"  # default
    assert load_config(None, ["train.seed=4"]).seed_list() == [4]
    assert isinstance(load_config(None, ["train.lr=1"]).train.lr, float)  # int accepted for float


def test_teacher_ensemble_as_a_list_or_commas():
    listed = load_config(None, ["distill.teacher=[runs/a, runs/b]"])
    assert listed.distill.teacher == "runs/a,runs/b"
    assert load_config(None, ["distill.teacher=runs/a,runs/b"]) == listed
    with pytest.raises(ConfigError, match="distill.teacher"):
        load_config(None, ["distill.teacher=[1, 2]"])


def test_round_trip():
    cfg = load_config(None, ["train.epochs=3"])
    from distill.config import build_config
    assert build_config(to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, words", [
    (["train.epochz=3"], ["train.epochz", "unknown key", "epochs"]),
    (["bogus=1"], ["bogus", "unknown key"]),
    (["train.epochs=three"], ["train.epochs", "integer"]),
    (["train.epochs=0"], ["train.epochs", ">= 1"]),
    (["distill.temperature=0"], ["distill.temperature", "> 0"]),
    (["distill.temperature=-2"], ["distill.temperature", "> 0"]),
    (["distill.alpha=1.5"], ["distill.alpha", "<= 1"]),
    (["distill.alpha=-0.1"], ["distill.alpha", ">= 0"]),
    (["model.name=resnet9000x"], ["model.name", "unknown model", "mlp"]),
    (["dataset.name=imagenet"], ["dataset.name", "unknown dataset", "mnist1d", "cifar10"]),
    (["distill.method=magic"], ["distill.method", "unknown method", "kd"]),
    (["train.optimizer=lbfgs"], ["train.optimizer", "sgd", "adamw"]),
    (["train.device=tpu"], ["train.device"]),
    (["seeds=[]"], ["seeds", "empty"]),
    (["seeds=[1,1]"], ["seeds", "repeats"]),
    (["dataset.val_fraction=1.0"], ["dataset.val_fraction", "< 1"]),
    (["train=3"], ["train", "mapping"]),
    (["train.epochs"], ["key=value"]),
    (["train.epochs=[1"], ["train.epochs", "YAML"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\nmodel: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_every_key_documented():
    for key, default, help in iter_keys():
        assert help, key


def test_parse_override():
    assert parse_override("search.distill.alpha={grid: [0.1, 0.9]}") == (
        ["search", "distill", "alpha"], {"grid": [0.1, 0.9]})


def test_a_value_assigned_in_python_is_checked_like_the_same_value_in_yaml():
    cfg = load_config("mnist1d-mlp")
    with pytest.raises(ConfigError, match=r"^distill.temperature: -3.0 is out of range; it must be > 0.0$"):
        cfg.distill.temperature = -3
    with pytest.raises(ConfigError, match=r"^train.optimizer: 'lbfgs' is not allowed"):
        cfg.train.optimizer = "lbfgs"
    with pytest.raises(ConfigError, match=r"^bornagain.generations: expected an integer"):
        cfg.bornagain.generations = 1.5
    with pytest.raises(ConfigError, match=r"^model: expected a mapping"):
        cfg.model = cfg.train
    cfg.train.epochs = 7  # a good value is taken, converted as YAML's would be
    cfg.distill.alpha = 1
    assert cfg.train.epochs == 7 and cfg.distill.alpha == 1.0 and isinstance(cfg.distill.alpha, float)


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 9\); save it as UTF-8"):
        load_config(path)


def test_a_word_stands_for_its_value():
    assert load_config(None, ["train.threads=auto"]).train.threads is None  # auto: the thread policy
    assert load_config(None, ["train.threads=2"]).train.threads == 2
