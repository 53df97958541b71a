"""`distill ensemble`: evaluation against plain references, packed vs sequential members, resume, reuse."""

import itertools
import json

import pytest
import torch

import ensembles
from distill.config import load_config
from distill.export.cost import TIMING_KEYS
from distill.errors import ConfigError, UserError
from distill.training.metrics import probs_metrics
from distill.training.seeds import model_seeds
from tests.conftest import Killed, kill_at, tiny_overrides


def _cfg(**extra):
    base = {"model.width": 16, "train.epochs": 2, "ensemble.members": 3, "ensemble.combine": "[]", "seeds": "[0]"}
    base.update(extra)
    return load_config(None, tiny_overrides(**base))


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _strip(rows, drop=("train_seconds", *TIMING_KEYS)):  # timings differ from one measurement to the next
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


# ---------------------------------------------------------------- pure functions


def test_combinations_and_disagreement_match_plain_loops():
    torch.manual_seed(0)
    logits = torch.randn(4, 50, 6) * 3
    probs = logits.softmax(-1)
    torch.testing.assert_close(ensembles.combine_probs(logits, "mean_probs"), sum(probs) / 4)
    torch.testing.assert_close(ensembles.combine_probs(logits, "mean_logits"), (sum(logits) / 4).softmax(-1))
    # the normalised geometric mean of the softmaxes is mean_logits exactly: one name for one combination
    geometric = torch.exp(sum(p.log() for p in probs) / 4)
    torch.testing.assert_close(ensembles.combine_probs(logits, "mean_logits"), geometric / geometric.sum(-1, keepdim=True))
    assert ensembles.COMBINES == ("mean_probs", "mean_logits")
    with pytest.raises(ValueError, match="geometric .* is mean_logits exactly: .*; write mean_logits"):
        ensembles.combine_probs(logits, "geometric")
    preds = logits.argmax(-1)
    pairs = [(preds[a] != preds[b]).float().mean().item() for a, b in itertools.combinations(range(4), 2)]
    assert ensembles.disagreement(preds) == pytest.approx(sum(pairs) / len(pairs))
    assert ensembles.disagreement(preds[:1]) is None
    assert ensembles.gap_recovered(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert ensembles.gap_recovered(0.8, 0.7, 0.7) is None


def test_size_curve_averages_every_subset():
    torch.manual_seed(1)
    logits = {split: torch.randn(4, 30, 5) for split in ("val", "test")}
    targets = {split: torch.randint(0, 5, (30,)) for split in ("val", "test")}
    rows = ensembles.size_curve(logits, targets, combines=("mean_probs",), params=[10, 10, 10, 10])
    assert [(r["size"], r["subsets"]) for r in rows] == [(1, 4), (2, 6), (3, 4), (4, 1)]
    full = probs_metrics(logits["test"].softmax(-1).mean(0), targets["test"])
    assert rows[-1]["test_acc"] == pytest.approx(full["acc"]) and rows[-1]["test_nll"] == pytest.approx(full["nll"])
    member_acc = [(logits["test"][k].argmax(-1) == targets["test"]).float().mean().item() for k in range(4)]
    assert rows[0]["test_acc"] == pytest.approx(sum(member_acc) / 4, abs=1e-6)
    assert rows[0]["gain_over_mean_member"] == pytest.approx(0, abs=1e-6)
    pair = [probs_metrics(logits["test"][list(s)].softmax(-1).mean(0), targets["test"])["acc"]
            for s in itertools.combinations(range(4), 2)]
    assert rows[1]["test_acc"] == pytest.approx(sum(pair) / 6, abs=1e-6)
    assert rows[-1]["gain_over_mean_member"] == pytest.approx(full["acc"] - sum(member_acc) / 4, abs=1e-6)
    assert rows[-1]["params"] == 40
    assert len(ensembles.subsets(12, 6, limit=100)) == 100  # capped, no repeats


# ---------------------------------------------------------------- runs


def test_packed_members_and_students_equal_sequential(tmp_path):
    runs = {}
    for pack in (True, False):
        cfg = _cfg(**{"ensemble.pack": pack, "ensemble.combine": "[mean_probs, per_teacher_kl]"})
        runs[pack] = _summary(ensembles.run(cfg, tmp_path / str(pack), progress=False))["models"]
    meta = json.loads(next((tmp_path / "True").glob("*/*/meta.json")).read_text())
    assert [entry["packed"] for entry in meta["training"]] == [True, True]
    packed, sequential = runs[True], runs[False]
    roles = [r["role"] for r in packed]
    assert roles == ["member"] * 3 + ["ensemble"] * 6 + ["student"] * 2 + ["baseline"]  # sizes 1..3 x 2 combinations
    assert roles == [r["role"] for r in sequential]
    for a, b in zip(packed, sequential):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if key in ("train_seconds", *TIMING_KEYS) or key.startswith("gap_recovered"):
                continue  # timings; a ratio of small differences, implied by the accuracies below
            if not isinstance(value, float):
                assert value == b[key], key
            elif key.endswith("acc") or key in ("disagreement", "gain_over_mean_member"):
                assert abs(value - b[key]) <= 1 / 32 + 1e-6, key  # at most one example flips (32 val, 80 test)
            else:
                assert value == pytest.approx(b[key], abs=1e-4), key


def test_mixed_architectures_pack_what_they_can(tmp_path):
    cfg = _cfg(**{"ensemble.models": "[{name: mlp, width: 8}, {name: cnn1d, width: 4}, {name: mlp, width: 8}]",
                  "train.epochs": 1})
    run_dir = ensembles.run(cfg, tmp_path, progress=False)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert [(e["models"], e["packed"]) for e in meta["training"]] == [
        (["member0-s0", "member2-s0"], True), (["member1-s0"], False)]
    rows = _summary(run_dir)["models"]
    assert [r["name"] for r in rows if r["role"] == "member"] == ["mlp", "cnn1d", "mlp"]
    assert {r["name"] for r in rows if r["role"] == "ensemble"} == {"mlp+cnn1d"}


def test_killed_while_training_member_3_resumes_with_member_3(tmp_path):
    cfg = _cfg(**{"ensemble.pack": False, "ensemble.members": 5, "train.epochs": 3})
    full = _summary(ensembles.run(cfg, tmp_path / "full", progress=False))

    with pytest.raises(Killed):
        ensembles.run(cfg, tmp_path / "b", on_epoch=kill_at(member=3, epoch=1), progress=False)
    run_dir = next((tmp_path / "b").glob("*/*"))
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"
    stamps = {m: (run_dir / "checkpoints" / f"member{m}-s0" / "last.pt").stat().st_mtime_ns for m in range(3)}
    reports = []
    again = ensembles.run(cfg, tmp_path / "b", on_epoch=reports.append, progress=False)
    assert again == run_dir
    assert {m: (run_dir / "checkpoints" / f"member{m}-s0" / "last.pt").stat().st_mtime_ns for m in range(3)} == stamps
    assert [(r["member"], r["epoch"]) for r in reports] == [(3, 2), (3, 3), (4, 1), (4, 2), (4, 3)]
    resumed = _summary(run_dir)
    assert resumed["status"] == "done"
    assert _strip(resumed["models"]) == _strip(full["models"])


def test_from_reuses_members_without_training(tmp_path):
    first = ensembles.run(_cfg(), tmp_path, progress=False)
    cfg = _cfg(**{"ensemble.from": str(first), "ensemble.combine": "[mean_logits]"})
    second = ensembles.run(cfg, tmp_path, progress=False)
    assert second != first
    assert not list((second / "checkpoints").glob("member*"))
    old, new = _summary(first)["models"], _summary(second)["models"]
    for role in ("member", "ensemble"):  # the same figures; the cost's timings measured again
        assert _strip([r for r in new if r["role"] == role], TIMING_KEYS) == _strip(
            [r for r in old if r["role"] == role], TIMING_KEYS)
    students = [r for r in new if r["role"] == "student"]
    assert len(students) == 1 and students[0]["parent"] == "ensemble(k=3, combine=mean_logits)"
    assert "gap_recovered" in students[0]


@pytest.mark.parametrize("override, words", [
    ({"model.width": 8}, "member 0"),                           # other architecture
    ({"seeds": "[5]"}, "seed 5"),                                # no members for that seed
    ({"ensemble.members": 4}, "at most 3"),
    ({"dataset.num_samples": 500}, "dataset.num_samples"),
])
def test_from_mismatch_is_one_line_before_any_run_dir(tmp_path, override, words):
    first = ensembles.run(_cfg(), tmp_path / "a", progress=False)
    cfg = _cfg(**{"ensemble.from": str(first), **override})
    with pytest.raises(UserError, match=words) as err:
        ensembles.run(cfg, tmp_path / "b", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()


def test_config_keys_are_checked():
    with pytest.raises(ConfigError, match=r"ensemble.combine\[1\]: geometric .* is mean_logits exactly: .*; write mean_logits"):
        _cfg(**{"ensemble.combine": "[mean_probs, geometric]"})
    with pytest.raises(ConfigError, match="per_teacher_kl"):
        _cfg(**{"ensemble.combine": "[harmonic]"})
    with pytest.raises(ConfigError, match="one per member"):
        _cfg(**{"ensemble.models": "[{name: mlp}, {name: cnn1d}]"})
    cfg = _cfg(**{"ensemble.models": "[{name: mlp, width: 8}, {name: mlp, width: 8}, {name: cnn1d, width: 4}]"})
    assert [a.name for a in ensembles.member_archs(cfg)] == ["mlp", "mlp", "cnn1d"]
    assert ensembles.member_seed(2, 3) == model_seeds(2, "member", 3).init == 2 * 1009 + 3 * 7919 + 1_000_003
    with pytest.raises(ConfigError, match="ensemble.baseline"):
        _cfg(**{"tune.kind": "ensemble", "tune.target": "baseline", "ensemble.baseline": False,
                "ensemble.combine": "[mean_probs]"})
    with pytest.raises(ConfigError, match="teacher_same_seed"):
        ensembles.run(_cfg(**{"distill.teacher_same_seed": True}), "unused", progress=False)


# ---------------------------------------------------------------- the students' fair baseline


def test_baseline_is_the_student_from_labels_with_the_students_budget_and_seeds(tmp_path):
    """The baseline row equals `distill train` of the student's architecture with the train section
    (the students' budget, not the members'), seed for seed; it shares the students' seeds, no
    member shares any model's seeds, and the page judges each student against it."""
    from distill.training.runner import train

    extra = {"ensemble.pack": False, "ensemble.combine": "[mean_probs]", "seeds": "[0,1]",
             "ensemble.train": "{epochs: 1, weight_decay: 0.05}", "ensemble.students": "[{name: mlp, width: 8}]"}
    run_dir = ensembles.run(_cfg(**extra), tmp_path / "e", progress=False)
    rows = _summary(run_dir)["models"]
    baselines = [r for r in rows if r["role"] == "baseline"]
    assert [(r["seed"], r["parent"], r["arch"], r["student"]) for r in baselines] == [
        (0, None, "mlp w8", 0), (1, None, "mlp w8", 0)]
    labels = load_config(None, tiny_overrides(**{"train.epochs": 2, "model.width": 8, "seeds": "[0,1]"}))
    plain = [r for r in _summary(train(labels, tmp_path / "t", progress=False))["models"]]
    for baseline, model in zip(baselines, plain):
        for key in ("selected_epoch", "val_acc", "test_acc", "test_nll", "init_seed", "data_seed"):
            assert baseline[key] == model[key], key
    trained = [r for r in rows if r["role"] != "ensemble"]
    students = {(r["seed"], r["init_seed"], r["data_seed"]) for r in trained if r["role"] == "student"}
    assert students == {(r["seed"], r["init_seed"], r["data_seed"]) for r in baselines}
    members = [(r["init_seed"], r["data_seed"]) for r in trained if r["role"] == "member"]
    assert len(set(members)) == len(members) == 6
    assert not {s for pair in members for s in pair} & {s for _, i, d in students for s in (i, d)}
    from results import report

    page = report([run_dir], tmp_path / "report").read_text()
    assert "vs baseline (points)" in page and "baseline mlp w8" in page and "no fair baseline" in page
    assert "verdict vs baseline, Holm over 1" in page
    off = ensembles.run(_cfg(**{**extra, "ensemble.baseline": False}), tmp_path / "off", progress=False)
    assert not [r for r in _summary(off)["models"] if r["role"] == "baseline"]
    assert "No baseline (ensemble.baseline=false)" in report([off], tmp_path / "report-off").read_text()
