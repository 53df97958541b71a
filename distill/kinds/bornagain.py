"""`distill bornagain`: a born-again chain (Furlanello et al. 2018); the run is `bornagain.run`.

    distill bornagain ban-mnist1d seeds=[0,1,2] bornagain.generations=3

Generation 0 learns from labels, generation g from generation g-1 (or from the ensemble of all
earlier ones); the generations and their ensembles (Ens x k) are evaluated side by side.
With `bornagain.models` the generations change size: a teacher-assistant chain (TAKD, Mirzadeh
et al. 2020), teacher -> assistant(s) -> student, beside the direct teacher -> student KD
(role `direct`) as its baseline:

    distill bornagain takd-mnist1d seeds=[0,1,2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from distill.errors import ConfigError
from distill.schema import Section, spec
from distill.kinds import Kind, TuneTarget, View, default_label


@dataclass
class BornAgainConfig(Section):
    generations: int = spec(3, "students after generation 0", ge=1)
    teacher: str = spec("previous", "who teaches generation g: previous (g-1) or ensemble (all earlier)",
                        choices=["previous", "ensemble"])
    model: Optional[str] = spec(None, "architecture of generations 1..G (model.name of generation 0 if null)")
    stop: str = spec("never", "stop adding generations: never; delta (newest not better than the one before "
                     "on validation by more than stop_delta); spread (by more than the seeds' spread)",
                     choices=["never", "delta", "spread"])
    stop_delta: float = spec(0.0, "stop=delta: smallest gain in mean validation accuracy that continues", ge=0.0)
    pack: bool = spec(True, "train the seeds of a generation at once with torch.func when the model allows")
    models: list[dict] = spec([], "architectures of generations 1..G as model-section mappings, one for all or one "
                              "per generation: a chain that changes size, teacher -> assistant(s) -> student "
                              "(TAKD, Mirzadeh et al. 2020), e.g. [{name: cnn1d, width: 16}, {name: mlp}]; empty "
                              "= bornagain.model or the model section")
    direct: bool = spec(True, "with bornagain.models and 2+ generations: also distil generation 0 straight into "
                        "the last generation's architecture (role direct, TAKD's baseline), with the same loss, "
                        "initialisation and batches as the last generation")

    def __post_init__(self):
        from distill.config import ModelConfig  # noqa: the config module imports this one
        from distill.schema import from_dict

        if self.models and len(self.models) not in (1, self.generations):
            raise ConfigError(f"bornagain.models: {len(self.models)} architectures for {self.generations} "
                              f"generations after generation 0; give one for all or one per generation (and "
                              f"bornagain.generations={len(self.models)})")
        if self.models and self.model is not None:
            raise ConfigError("bornagain.model and bornagain.models both name the generations' architecture; "
                              "set bornagain.model=null")
        for i, section in enumerate(self.models):
            from_dict(ModelConfig, section, prefix=f"bornagain.models[{i}].")


OWN_KEYS = "bornagain.teacher (previous or ensemble), bornagain.generations, bornagain.model, bornagain.models"


#: what a teacher key a kind does not read is set back to
UNSET = {"teacher.train": "{}", "distill.teacher_same_seed": "false", "distill.teacher_other_split": "false"}


def unread_teacher_keys(cfg) -> None:
    """A teacher key this kind does not read (its generations teach each other): a ConfigError naming
    the keys that do choose its teachers. Called by its run, and by `check` for a sweep of this kind."""
    given = [(key, value) for key, value in (("distill.teacher", cfg.distill.teacher),
                                             ("teacher.model", cfg.teacher.model),
                                             ("teacher.train", cfg.teacher.train or None),
                                             ("distill.teacher_same_seed", cfg.distill.teacher_same_seed or None),
                                             ("distill.teacher_other_split", cfg.distill.teacher_other_split or None))
             if value is not None]
    if given:
        key, _ = given[0]
        raise ConfigError(f"{key}: `distill bornagain` does not read it (generation 0 learns from labels, each "
                          f"next one from the generations before it); its teachers are chosen by {OWN_KEYS}; "
                          f"set {key}={UNSET.get(key, 'null')}")


def check(cfg) -> None:
    if cfg.tune.kind == "bornagain":
        unread_teacher_keys(cfg)


def best(rows: list, metric: str) -> Optional[dict]:
    """The row with the best `metric` (higher accuracy, lower NLL); None when no row has it."""
    scored = [r for r in rows if r.get(metric) is not None]
    if not scored:
        return None
    return (max if metric.endswith("acc") else min)(scored, key=lambda r: r[metric])


def _of(role: str, rows: list) -> list:
    return [r for r in rows if r.get("role") == role]


def label(row: dict) -> str:
    if row.get("role") == "ensemble":
        return str(row.get("name"))  # ens_1..k: the generations it averages
    if row.get("role") == "direct":
        return f"direct KD {row.get('name')}"  # generation 0 distilled straight into the last architecture
    return default_label(row)


def last_generation(rows: list) -> list:
    return rows[rows["generation"] == rows["generation"].max()] if len(rows) else rows


KIND = Kind(
    name="bornagain",
    help="born-again chain: generation 0 from labels, each next from the last",
    run="bornagain:run",
    preflight="bornagain.chain:check",
    section=BornAgainConfig,
    check=check,
    targets=(
        TuneTarget("last", "the last generation ({generation}), each epoch", "generation {generation}",
                   fields=lambda cfg: {"role": "generation", "generation": cfg.bornagain.generations},
                   choose=lambda rows, metric, cfg: max(_of("generation", rows), key=lambda r: r["generation"],
                                                        default=None)),
        TuneTarget("best_generation", "the generation with the best validation metric, its epochs at the end",
                   "best generation", live=False,
                   choose=lambda rows, metric, cfg: best(_of("generation", rows), metric)),
        TuneTarget("best_ensemble", "the born-again ensemble (Ens x k) with the best validation metric, one "
                   "report at the end", "best Ens x k", live=False,
                   choose=lambda rows, metric, cfg: best(_of("ensemble", rows), metric)),
    ),
    label=label,
    order=1,
    view=View("born-again chain", layout="bornagain", roles=("generation", "ensemble", "direct"),
              headline=lambda rows: last_generation(rows[rows["role"] == "generation"])),
)
