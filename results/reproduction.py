"""Reproduction presets: configs/*.yaml files whose header names a command to run.

    distill reproduce --list
    distill reproduce mnist1d-mlp --quick       # = results.reproduce("mnist1d-mlp", quick=True)

A preset is a YAML file in the repository's `configs/` folder whose leading comment block
holds a line

    # reproduce: COMMAND one-line description

with COMMAND one of train, bornagain, ensemble, tune, and optionally

    # quick: key=value key=value ...      (overrides for a small, fast version)

`reproduce` runs `python -m distill.cli COMMAND configs/<preset>.yaml [quick overrides]
--out OUT` as a subprocess (so this package never imports the engine), then writes a
report into `<run dir>/report/` with a `paper` column of published numbers (TARGETS.md)
where the preset maps to one.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .load import NoRuns
from .reporting import report

COMMANDS = ("train", "bornagain", "ensemble", "tune")

# Published test accuracies (%) from TARGETS.md, keyed by (dataset.name, model.name) and
# then by summary role. Only settings a preset can reach with the models here are mapped.
PAPER = {
    ("mnist1d", "mlp"): ({"model": 68.0, "teacher": 68.0}, "Greydanus 2020, MNIST-1D MLP (68%)"),
    ("mnist1d", "cnn1d"): ({"model": 94.0, "teacher": 94.0}, "Greydanus 2020, MNIST-1D CNN (94%)"),
    ("mnist1d", "gru"): ({"model": 91.0, "teacher": 91.0}, "Greydanus 2020, MNIST-1D GRU (91%)"),
    ("mnist1d", "logistic"): ({"model": 32.0}, "Greydanus 2020, MNIST-1D logistic regression (32%)"),
    # Furlanello et al. 2018, CIFAR-10 test error -> accuracy: teacher and born-again student
    ("cifar10", "wrn_28_1"): ({"teacher": 93.31, "generation": 93.36, "student": 93.36},
                              "Furlanello et al. 2018, CIFAR-10 WRN-28-1 (errors 6.69 teacher, 6.64 BAN)"),
    ("cifar10", "wrn_28_10"): ({"teacher": 96.23, "generation": 96.14, "student": 96.14},
                               "Furlanello et al. 2018, CIFAR-10 WRN-28-10 (errors 3.77 teacher, 3.86 BAN)"),
    # Furlanello et al. 2018, CIFAR-100 Wide ResNets: teacher error -> BAN error
    ("cifar100", "wrn_28_1"): ({"teacher": 69.95, "generation": 70.57, "student": 70.57},
                               "Furlanello et al. 2018, CIFAR-100 WRN-28-1 (errors 30.05 teacher, 29.43 BAN)"),
    ("cifar100", "wrn_28_10"): ({"teacher": 80.92, "generation": 81.75, "student": 81.75},
                                "Furlanello et al. 2018, CIFAR-100 WRN-28-10 (errors 19.08 teacher, 18.25 BAN)"),
}
# a preset may name its published figures directly instead: `# paper: model=68 student=70 (source)`

_HEADER = re.compile(r"^#\s*(reproduce|quick|paper)\s*:\s*(.*?)\s*$")


class UnknownPreset(NoRuns):
    """No preset of that name; the message lists the presets there are."""


class ReproduceFailed(RuntimeError):
    """The `distill` subprocess of a preset exited with an error."""


@dataclass
class Preset:
    name: str
    path: Path
    command: str
    description: str
    quick: list[str] = field(default_factory=list)
    paper: Optional[dict] = None
    paper_source: str = ""


def presets_dir() -> Path:
    """The repository's configs/ folder (next to this package)."""
    return Path(__file__).resolve().parent.parent / "configs"


def _parse_paper(text: str) -> tuple[dict, str]:
    source = ""
    match = re.search(r"\((.*)\)\s*$", text)
    if match:
        source, text = match.group(1), text[:match.start()]
    figures = {}
    for item in text.split():
        role, _, value = item.partition("=")
        try:
            figures[role] = float(value)
        except ValueError:
            continue
    return figures, source


def read_preset(path: Path) -> Optional[Preset]:
    """The preset a YAML file declares in its leading comment block, or None if it is no preset."""
    headers: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        match = _HEADER.match(line)
        if match:
            headers.setdefault(match.group(1), match.group(2))
    if "reproduce" not in headers:
        return None
    words = headers["reproduce"].split(None, 1)
    if words and words[0] in COMMANDS:
        command, description = words[0], words[1] if len(words) > 1 else ""
    else:  # no command named: a plain training run
        command, description = "train", headers["reproduce"]
    description = description.lstrip("-—: ").strip()
    preset = Preset(Path(path).stem, Path(path), command, description, shlex.split(headers.get("quick", "")))
    if "paper" in headers:
        preset.paper, preset.paper_source = _parse_paper(headers["paper"])
    else:
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError:
            config = {}
        key = ((config.get("dataset") or {}).get("name"), (config.get("model") or {}).get("name"))
        if key in PAPER:
            preset.paper, preset.paper_source = PAPER[key]
    return preset


def presets(folder: Optional[Path] = None) -> dict[str, Preset]:
    """Name -> Preset for every preset YAML in `folder` (default: the repository's configs/)."""
    folder = Path(folder) if folder is not None else presets_dir()
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        preset = read_preset(path)
        if preset is not None:
            found[preset.name] = preset
    return found


def list_presets(folder: Optional[Path] = None) -> list[str]:
    """One line per preset: 'name  (command) description'."""
    found = presets(folder)
    width = max((len(n) for n in found), default=0)
    return [f"{p.name:<{width}}  ({p.command}) {p.description}".rstrip() for p in found.values()]


def _find(preset: str, folder: Optional[Path]) -> Preset:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        found = read_preset(path)
        if found is not None:
            return found
    known = presets(folder)
    if preset not in known:
        listed = ", ".join(known) if known else "none (no configs/*.yaml starts with '# reproduce:')"
        raise UnknownPreset(f"unknown preset {preset!r}; presets: {listed}")
    return known[preset]


def command_line(preset: Preset, quick: bool = False, out="runs", extra: tuple[str, ...] = ()) -> list[str]:
    """The subprocess `reproduce` runs."""
    overrides = (preset.quick if quick else []) + list(extra)
    return [sys.executable, "-m", "distill.cli", preset.command, str(preset.path), *overrides, "--out", str(out)]


def reproduce(preset: str, quick: bool = False, out="runs", extra: tuple[str, ...] = (),
              folder: Optional[Path] = None) -> Path:
    """Run a preset through the `distill` command line, then report on it; returns report.md.

    The report goes into `<run dir>/report/` and has a `paper` column where the preset maps
    to a published figure. `extra` adds key=value overrides after the quick ones. Raises
    `UnknownPreset` for an unknown name and `ReproduceFailed` if the run fails.
    """
    found = _find(preset, folder)
    argv = command_line(found, quick, out, extra)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    last = ""
    assert process.stdout is not None
    for line in process.stdout:  # echo the run's output; its last line is the path it wrote
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            last = line.strip()
    if process.wait() != 0:
        raise ReproduceFailed(f"preset {found.name}: `{shlex.join(argv)}` exited with status {process.returncode}")
    run_dir = Path(last)
    if not run_dir.is_dir():
        raise ReproduceFailed(f"preset {found.name}: the run did not print its directory (last line: {last!r})")
    return report([run_dir], run_dir / "report", paper=found.paper, paper_source=found.paper_source)
