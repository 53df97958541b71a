"""`distill ensemble`: N teachers, their ensemble, distilled into students (Hinton et al. 2015);
the run is `ensembles.run`.

    distill ensemble ensemble-mnist1d seeds=[0,1,2] ensemble.members=5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from distill.errors import ConfigError
from distill.schema import Section, spec
from distill.kinds import Kind, TuneTarget, View, default_label
from distill.kinds.bornagain import UNSET
from distill.methods import GEOMETRIC

COMBINES = ("mean_probs", "mean_logits", "per_teacher_kl")


@dataclass
class EnsembleConfig(Section):
    """Members (teachers) -> ensemble evaluation -> students (the `model` section unless `students`
    says otherwise), distilled with the `distill` section."""

    members: int = spec(5, "number of teachers", ge=1)
    models: list[dict] = spec([], "members' architectures as model-section mappings: one for all members or one "
                              "per member, e.g. [{name: cnn1d, width: 32}]; empty = the model section")
    train: dict = spec({}, "overrides of the train section for the members, e.g. {lr: 0.01, weight_decay: 0.05}")
    pack: bool = spec(True, "train same-architecture members (and students) at once with torch.func when the "
                      "model allows")
    from_: Optional[str] = spec(None, "run directory of an earlier `distill ensemble` run whose members are reused "
                                "(not retrained); null = train the members", key="from")
    combine: list[str] = spec(["mean_probs"], "teacher combinations each student is distilled from: mean_probs, "
                              "mean_logits, per_teacher_kl; empty = no students")
    students: list[dict] = spec([], "student architectures as model-section mappings, e.g. [{name: mlp}, "
                                "{name: cnn1d, width: 16}]; empty = the model section")
    baseline: bool = spec(True, "also train each student architecture from labels with the students' budget and "
                          "seeds (role baseline): what the page judges a student's gain against, paired by seed")


OWN_KEYS = ("ensemble.members, ensemble.models, ensemble.train, ensemble.from (members of an earlier run), "
            "ensemble.combine, ensemble.students, ensemble.baseline")


def unread_teacher_keys(cfg) -> None:
    """A teacher key this kind does not read (its students learn from its own members): a ConfigError
    naming its own keys. Called by its run, and by `check` for a sweep of this kind."""
    given = [(key, value) for key, value in (("distill.teacher", cfg.distill.teacher),
                                             ("teacher.model", cfg.teacher.model),
                                             ("teacher.train", cfg.teacher.train or None),
                                             ("distill.teacher_same_seed", cfg.distill.teacher_same_seed or None),
                                             ("distill.teacher_other_split", cfg.distill.teacher_other_split or None))
             if value is not None]
    if given:
        key, _ = given[0]
        raise ConfigError(f"{key}: `distill ensemble` does not read it (its students learn from its own "
                          f"members); its teachers are set by {OWN_KEYS}; set "
                          f"{key}={UNSET.get(key, 'null')} (reuse earlier members with "
                          f"ensemble.from=RUN_DIR)")


def check(cfg) -> None:
    """The sections nested in `ensemble` are checked as the sections they are."""
    from distill.config import ModelConfig, TrainConfig  # noqa: the config module imports this one
    from distill.schema import from_dict

    e = cfg.ensemble
    if e.models and len(e.models) not in (1, e.members):
        raise ConfigError(f"ensemble.models: {len(e.models)} architectures for {e.members} members; "
                          f"give one for all members or one per member")
    for name, sections in (("models", e.models), ("students", e.students)):
        for i, section in enumerate(sections):
            from_dict(ModelConfig, section, prefix=f"ensemble.{name}[{i}].")
    from_dict(TrainConfig, e.train, prefix="ensemble.train.")  # unknown keys, types, ranges
    for i, how in enumerate(e.combine):
        if how == "geometric":
            raise ConfigError(f"ensemble.combine[{i}]: {GEOMETRIC}")
        if how not in COMBINES:
            raise ConfigError(f"ensemble.combine[{i}]: {how!r} is not allowed; choose one of {', '.join(COMBINES)}")
    if len(set(e.combine)) != len(e.combine):
        raise ConfigError(f"ensemble.combine: {e.combine} repeats a combination; name each once")
    if cfg.tune.kind == "ensemble":
        unread_teacher_keys(cfg)
    if cfg.tune.kind == "ensemble" and cfg.tune.target in ("student", "baseline") and not e.combine:
        raise ConfigError(f"tune.target={cfg.tune.target}: ensemble.combine is empty, so no student is trained (nor "
                          f"its baseline); set tune.target=ensemble or give ensemble.combine=[mean_probs]")
    if cfg.tune.kind == "ensemble" and cfg.tune.target == "baseline" and not e.baseline:
        raise ConfigError("tune.target=baseline: ensemble.baseline is false, so no baseline is trained; set "
                          "ensemble.baseline=true or tune.target=student")


def _combine(cfg) -> str:
    return cfg.ensemble.combine[0] if cfg.ensemble.combine else "mean_probs"


def full_ensemble(rows: list, metric: str, cfg) -> Optional[dict]:
    """The ensemble of every member under the first combination."""
    ensembles = [r for r in rows if r.get("role") == "ensemble" and r.get("combine") == _combine(cfg)]
    return max(ensembles, key=lambda r: r["size"], default=None)


def label(row: dict) -> str:
    if row.get("role") == "ensemble":
        return f"ensemble {row.get('combine')}"
    if row.get("role") == "baseline":  # student architecture j from labels
        return f"baseline {row.get('student')}"
    return default_label(row)


def largest(rows):
    ensembles = rows[rows["role"] == "ensemble"]
    return ensembles[ensembles["size"] == ensembles["size"].max()]


KIND = Kind(
    name="ensemble",
    help="train N teachers, evaluate their ensemble, distill it into a student",
    run="ensembles:run",
    preflight="ensembles.experiment:check",
    section=EnsembleConfig,
    check=check,
    targets=(
        TuneTarget("student", "student 0 distilled with combine={combine}, each epoch", "student 0 {combine}",
                   fields=lambda cfg: {"role": "student", "student": 0, "combine": _combine(cfg)}),
        TuneTarget("baseline", "student architecture 0 from labels with the students' budget, each epoch",
                   "baseline 0", fields=lambda cfg: {"role": "baseline", "student": 0}),
        TuneTarget("ensemble", "the full ensemble (combine={combine}), one report at the end",
                   "ensemble {combine}", fields=lambda cfg: {"combine": _combine(cfg)}, live=False,
                   choose=full_ensemble),
    ),
    auto=lambda cfg: "student" if cfg.ensemble.combine else "ensemble",
    label=label,
    order=2,
    view=View("ensemble collapse", layout="ensemble", roles=("member", "ensemble", "baseline", "student"),
              headline=lambda rows: rows[rows["role"] == "student"] if (rows["role"] == "student").any()
              else largest(rows)),
)
