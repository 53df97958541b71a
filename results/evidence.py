"""README result tables from committed result files: render them, or check that they agree.

    python -m results.evidence            # rewrite README.md's marked sections from docs/results/
    python -m results.evidence --check    # exit 1 naming each section that disagrees with its files

A table NAME is two files in docs/results/: `NAME.csv` (one row per table row; numbers as
measured) and `NAME.json`, saying where the numbers come from and how to show them:

    {"command": "distill train mnist1d-mlp", "date": "2026-12-01", "machine": "2-core AMD EPYC, no GPU",
     "versions": {"torch": "2.14.1", "distill-runner": "0.1.0 (git abc1234)"},
     "columns": [["model", "{model}"], ["test acc %", "{test_acc:.1f} ± {test_acc_ci:.1f}"], ["n", "{n}"]]}

Each column is a header and a format string over the CSV's fields; a cell whose fields are
empty stays empty. In README.md the table sits between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`, followed by a line naming its command, date, machine and versions.
Reads files only (no torch, no runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

SECTION = re.compile(r"(<!-- results:([\w.-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
REQUIRED = ("command", "date", "machine", "versions", "columns")


class EvidenceError(ValueError):
    """A result file is missing or malformed; the message is one line."""


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _cell(fmt: str, row: dict, where: str) -> str:
    fields = re.findall(r"{(\w+)", fmt)
    missing = [f for f in fields if f not in row]
    if missing:
        raise EvidenceError(f"{where}: column format {fmt!r} names {missing[0]!r}, which the CSV does not have")
    if any(row[f] == "" for f in fields):
        return ""
    try:
        return fmt.format(**row)
    except (ValueError, TypeError) as err:
        raise EvidenceError(f"{where}: format {fmt!r} does not fit the row ({err})") from None


def read_meta(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise EvidenceError(f"{path} does not exist; every table needs its sidecar (command, date, machine, ...)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvidenceError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    missing = [key for key in REQUIRED if not meta.get(key)]
    if missing:
        raise EvidenceError(f"{path}: {missing[0]} is missing or empty; a table says {', '.join(REQUIRED)}")
    return meta


def render(folder: Path, name: str) -> str:
    """The markdown of table NAME: the table, then where its numbers come from."""
    folder = Path(folder)
    meta = read_meta(folder, name)
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise EvidenceError(f"{path} does not exist; the table's numbers go there")
    with open(path, newline="") as f:
        rows = [{k: _number(v) if v != "" else "" for k, v in row.items()} for row in csv.DictReader(f)]
    headers = [header for header, _ in meta["columns"]]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for i, row in enumerate(rows, start=2):
        lines.append("| " + " | ".join(_cell(fmt, row, f"{path} line {i}") for _, fmt in meta["columns"]) + " |")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines += ["", f"From `docs/results/{name}.csv`: `{meta['command']}`, {meta['date']}, {meta['machine']}; "
                  f"{versions}."]
    return "\n".join(lines) + "\n"


def update(text: str, folder: Path) -> tuple[str, list[str]]:
    """README text with every marked section rendered from its files, and the names that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        body = render(folder, match.group(2))
        if body != match.group(3):
            changed.append(match.group(2))
        return match.group(1) + body + match.group(4)

    return SECTION.sub(replace, text), changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a section disagrees")
    parser.add_argument("--readme", default="README.md", help="the file with marked sections (default README.md)")
    parser.add_argument("--dir", default="docs/results", help="the result files (default docs/results)")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    try:
        text = readme.read_text()
        new, changed = update(text, Path(args.dir))
    except (EvidenceError, OSError) as err:
        print(f"evidence: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print(f"evidence: {readme} disagrees with {args.dir} in: {', '.join(changed)}; run "
                  f"python -m results.evidence", file=sys.stderr)
            return 1
        return 0
    if changed:
        readme.write_text(new)
    print(f"{readme}: {len(changed)} section(s) rewritten" + (f" ({', '.join(changed)})" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
