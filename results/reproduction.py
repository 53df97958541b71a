"""Run a reproduction preset through the `distill` command line, then report on it.

    distill reproduce --list
    distill reproduce mnist1d-mlp --quick

The preset itself (a YAML file in `distill/presets/`, with its `preset:` and `paper:`
sections) is read and checked by `distill.cli`, which then calls `reproduce` here with what
it found: the command, the config file, the overrides and the published figures. The run is
`python -m distill.cli COMMAND CONFIG [overrides] --out OUT` as a subprocess (so this package
never imports the engine), and the report goes into `<run dir>/report/` with a `paper`
column of the published figures.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional

from .reporting import report

class ReproduceFailed(RuntimeError):
    """The `distill` subprocess of a preset exited with an error."""


def command_line(config, command: str, overrides=(), out="runs") -> list[str]:
    """The subprocess `reproduce` runs (`distill.cli` checked the command against the kinds)."""
    return [sys.executable, "-m", "distill.cli", command, str(config), *overrides, "--out", str(out)]


def reproduce(config, command: str, overrides=(), out="runs", paper: Optional[Mapping[str, float]] = None,
              paper_source: str = "") -> Path:
    """Run `distill COMMAND CONFIG overrides --out OUT`, then report on its run; returns report.md.

    `paper`: published test accuracy (%) by role, shown as the report's `paper` column, with
    `paper_source` naming the publication. Raises `ReproduceFailed` if the run fails.
    """
    argv = command_line(config, command, overrides, out)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    last = ""
    assert process.stdout is not None
    for line in process.stdout:  # echo the run's output; its last line is the path it wrote
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            last = line.strip()
    if process.wait() != 0:
        raise ReproduceFailed(f"`{shlex.join(argv)}` exited with status {process.returncode}")
    run_dir = Path(last)
    if not run_dir.is_dir():
        raise ReproduceFailed(f"`{shlex.join(argv)}` did not print its run directory (last line: {last!r})")
    return report([run_dir], run_dir / "report", paper=dict(paper) if paper else None, paper_source=paper_source)
