"""The one seed rule (distill/training/seeds.py): every model of a run gets its own initialisation and
data order, except the pairs the rule declares; a same-architecture teacher section never starts from
its student's weights or sees its batches in its order unless asked.

    .venv/bin/python -m pytest tests/test_seeds.py -q
"""

import json

import pytest
import torch

from distill import engine
from distill.config import DatasetConfig, build_config
from distill.data import load_data
from distill.errors import ConfigError
from distill.teachers.sources import teacher_objective
from distill.training.runner import train
from distill.training.seeds import ROLES, model_seeds

DATASET = {"name": "fake", "fake_shape": [1, 16], "num_samples": 120, "fake_classes": 4, "augment": "none"}
TINY = {"dataset": DATASET, "model": {"name": "mlp", "width": 8, "depth": 1},
        "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "threads": 1}}
RUN_SEEDS = range(50)


def test_every_model_of_a_run_has_seeds_of_its_own():
    """The models of one run (any seeds 0..49 together): members, generations, peers and a teacher
    never share an init seed or a data seed with each other or with the run seeds' students.
    The old member rule (s * 1000 + m) gave member 3 of seed 0 the seed 3: seed 3's student's."""
    for index in range(50):
        models = {}  # (init, data) -> which model
        for s in RUN_SEEDS:
            models.setdefault(model_seeds(s, "student"), []).append(("student", s))
            models.setdefault(model_seeds(s, "teacher"), []).append(("teacher", s))
            models.setdefault(model_seeds(s, "member", index), []).append(("member", s))
            if index:
                models.setdefault(model_seeds(s, "generation", index), []).append(("generation", s))
        inits, datas = {}, {}
        for (init, data), who in models.items():
            assert len(who) == 1, f"index {index}: {who} share seeds {(init, data)}"
            inits.setdefault(init, []).append(who)
            datas.setdefault(data, []).append(who)
        assert all(len(w) == 1 for w in inits.values()), [w for w in inits.values() if len(w) > 1][:3]
        assert all(len(w) == 1 for w in datas.values()), [w for w in datas.values() if len(w) > 1][:3]


def test_declared_pairs_and_unchanged_streams():
    s = 7
    # a student, its baseline and a model from labels of one seed share weights and batches (paired by seed)
    assert model_seeds(s, "student") == model_seeds(s, "baseline") == model_seeds(s, "model") == (s, s)
    assert model_seeds(s, "generation", 0) == (s, s)
    assert model_seeds(s, "generation", 3) == (s * 1009 + 3 * 7919,) * 2  # born-again numbers kept
    assert model_seeds(s, "direct", 3) == model_seeds(s, "generation", 3)  # TAKD's direct: its pair
    assert model_seeds(s, "peer", 2) == (s * 1009 + 2 * 7919, s)  # peers: one data order (the joint loss)
    assert model_seeds(s, "teacher", same_as_run=True) == (s, s)
    assert model_seeds(s, "teacher") != (s, s) and model_seeds(s, "teacher").data != s
    with pytest.raises(ValueError, match="unknown role"):
        model_seeds(s, "nobody")
    assert set(ROLES) >= {"model", "student", "baseline", "teacher", "member", "generation", "peer", "alone"}


def test_same_architecture_teacher_section_starts_from_other_weights():
    """tfkd_self (the teacher section is the model's own architecture): before, teacher and student
    were both built from the run seed, so they started from identical weights."""
    data = load_data(DatasetConfig(**DATASET))
    cfg = build_config({**TINY, "distill": {"method": "tfkd_self"}})
    _, _, section = teacher_objective(cfg, data, 0, "cpu")
    student = engine.new_model(cfg.model, data, model_seeds(0, "student").init)
    assert section.seeds.init != 0 and section.seeds.data != 0
    differs = [not torch.equal(a, b) for a, b in zip(section.model.state_dict().values(), student.state_dict().values())]
    assert any(differs)
    same = build_config({**TINY, "distill": {"method": "tfkd_self", "teacher_same_seed": True}})
    _, _, section = teacher_objective(same, data, 0, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(section.model.state_dict().values(), student.state_dict().values()))


def test_rows_record_seeds_and_teacher_same_seed_is_read(tmp_path):
    cfg = build_config({**TINY, "name": "self", "seeds": [0, 1], "distill": {"method": "tfkd_self"}})
    rows = json.loads((train(cfg, tmp_path, progress=False) / "summary.json").read_text())["models"]
    seeds = {(r["role"], r["seed"]): (r["init_seed"], r["data_seed"]) for r in rows}
    assert seeds[("student", 0)] == (0, 0) and seeds[("student", 1)] == (1, 1)
    assert seeds[("teacher", 0)] == tuple(model_seeds(0, "teacher")) != seeds[("student", 0)]
    assert len(set(seeds.values())) == 4
    with pytest.raises(ConfigError, match="teacher_same_seed"):  # no teacher section: nothing reads it
        teacher_objective(build_config({**TINY, "distill": {"teacher_same_seed": True}}),
                          load_data(DatasetConfig(**DATASET)), 0, "cpu")
