"""Presets: YAML files shipped inside the package (`distill/presets/`, found with
importlib.resources), and the two config sections a preset describes itself with:
`preset:` (how `distill reproduce` runs it, what it needs, what it costs) and `paper:`
(the published figures it reproduces, with their source).

    distill reproduce --list
    resolve_config_path("mnist1d-mlp")      # a preset name, or the path of any YAML file
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from distill import kinds
from distill.errors import ConfigError
from distill.schema import parse_override, spec


COMMANDS = tuple(kinds.names()) + ("tune",)  # what `distill reproduce` may run


@dataclass
class NeedsConfig:
    device: str = spec("cpu", "what the full run needs: cpu, or gpu (too slow on a CPU)", choices=["cpu", "gpu"])
    data: Optional[str] = spec(None, "the data folder (dataset.root) and its layout; null = generated or bundled")


@dataclass
class CostConfig:
    epochs: int = spec(1, "training epochs of the full run, summed over every model and seed it trains", ge=1)
    examples: int = spec(1, "training examples in one epoch", ge=1)


@dataclass
class PresetConfig:
    """How `distill reproduce` runs this file, and what the run needs."""

    command: str = spec("train", "the command that runs the preset", choices=list(COMMANDS))
    description: str = spec("", "one line: what the preset trains")
    quick: list[str] = spec([], "key=value overrides that shrink the preset to a seconds-long run (--quick)")
    needs: NeedsConfig = field(default_factory=NeedsConfig)
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self):
        for i, text in enumerate(self.quick):
            try:
                parse_override(text)
            except ConfigError as err:
                raise ConfigError(f"preset.quick[{i}]: {err}") from None


@dataclass
class PaperConfig:
    """The published figures a preset reproduces, with their source."""

    source: str = spec("", "the publication: authors, year, title, table")
    figures: dict = spec({}, "published test accuracy in % by summary role (model, teacher, student, "
                         "generation, member, ensemble): the report's paper column")
    table: dict = spec({}, "the paper's table as published: {unit: str, columns: [str], rows: {label: "
                       "[a number or null per column]}}")
    differences: str = spec("", "how this preset's setting differs from the paper's")

    def __post_init__(self):
        if not self.source.strip():
            raise ConfigError("paper.source: empty; name the publication the figures come from")
        for role, value in self.figures.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ConfigError(f"paper.figures.{role}: {value!r} is not a test accuracy in % (0 to 100)")
        if self.table:
            _check_table(self.table)


def _check_table(table: dict) -> None:
    unknown = set(table) - {"unit", "columns", "rows"}
    if unknown:
        raise ConfigError(f"paper.table.{sorted(unknown)[0]}: unknown key; allowed keys are unit, columns, rows")
    columns, rows = table.get("columns"), table.get("rows")
    if not isinstance(table.get("unit"), str):
        raise ConfigError("paper.table.unit: expected a string saying what the numbers are, e.g. test error %")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise ConfigError(f"paper.table.columns: expected a list of column names, got {columns!r}")
    if not isinstance(rows, dict) or not rows:
        raise ConfigError(f"paper.table.rows: expected a mapping of row label -> values, got {rows!r}")
    for label, values in rows.items():
        if not isinstance(values, list) or len(values) != len(columns) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            raise ConfigError(f"paper.table.rows.{label}: expected {len(columns)} numbers (null where the paper "
                              f"has none), one per column, got {values!r}")


def presets_root():
    """The folder of preset YAML files inside the installed package (a Traversable: a Path here)."""
    return importlib.resources.files("distill") / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[:-len(".yaml")] for p in presets_root().iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name_or_path):
    """The YAML file a command line names: the path if that file exists, else the preset of that
    name (`mnist1d-mlp` or `mnist1d-mlp.yaml`); a one-line ConfigError otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[:-len(".yaml")] if path.name.endswith(".yaml") and path.parent == Path(".") else str(path)
    if name in preset_names():
        return presets_root() / f"{name}.yaml"
    raise ConfigError(f"config file {name_or_path} does not exist and is no preset; give the path of a YAML "
                      f"file or a preset name ({', '.join(preset_names())})")
