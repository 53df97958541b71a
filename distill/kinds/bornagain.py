"""`distill bornagain`: a born-again chain (Furlanello et al. 2018); the run is `bornagain.run`.

    distill bornagain ban-mnist1d seeds=[0,1,2] bornagain.generations=3

Generation 0 learns from labels, generation g from generation g-1 (or from the ensemble of all
earlier ones); the generations and their ensembles (Ens x k) are evaluated side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
    return default_label(row)


def last_generation(rows: list) -> list:
    return rows[rows["generation"] == rows["generation"].max()] if len(rows) else rows


KIND = Kind(
    name="bornagain",
    help="born-again chain: generation 0 from labels, each next from the last",
    run="bornagain:run",
    section=BornAgainConfig,
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
    view=View("born-again chain", layout="bornagain", roles=("generation", "ensemble"),
              headline=lambda rows: last_generation(rows[rows["role"] == "generation"])),
)
