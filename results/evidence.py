"""README result tables and the numbers in its prose from committed result files: render them, or check them.

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
A cell whose interval is empty or whose row has n = 1 shows the value alone with "(n=1)";
an interval of exactly 0 over n >= 2 seeds (every seed the same) the value alone with "(all n equal)";
an interval that rounds to 0 "± <0.1" (at the format's decimals): never "± 0.0", as
`results.stats.format_value` shows them.

A number in the prose is a value marker, rendered (and checked) from one table's CSV:

    KD gains <!-- value mnist1d-methods diff:+.1f model=kd -->+2.7<!-- /value --> points
    separable after Holm: <!-- value mnist1d-methods list(model) verdict_holm=higher -->ctkd, dist, wttm<!-- /value -->

`<!-- value NAME EXPR [FILTER ...] -->`: EXPR is `FIELD[:FORMAT]` (the one row the filters
leave), `min(FIELD)[:FORMAT]` or `max(...)` over the rows left, `count`, or `list(FIELD)`
(the rows' values joined by ", "); a FILTER is `field=a|b`, `field!=a`, `field^=prefix`,
`field<x` or `field>x` (quoted where it holds spaces: `model^="MLP student"`). NAME may be a
sub-folder's table (`demo/demo-kd-kd-gain`), or a sidecar or other JSON file (`NAME.json`,
EXPR a dotted path, `best.ci95.0*100:+.1f`; `*100` scales a fraction to %).
The text between the marker and `<!-- /value -->` is what the README shows.
Reads files only (no torch, no runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import sys
from pathlib import Path

SECTION = re.compile(r"(<!-- results:([\w.-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
VALUE = re.compile(r"(<!-- value ([\w./-]+) ([^\n]*?) -->)(.*?)(<!-- /value -->)", re.S)
FILTER = re.compile(r"^(\w+)(!=|\^=|=|<|>)(.+)$")
INTERVAL = re.compile(r"\s*±\s*{(\w+)(?::([^}]*))?}")
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
    alone = INTERVAL.sub("", fmt)
    single = row.get("n") == 1 and alone != fmt  # one seed: the value alone with n = 1, never "± 0.0"
    if single:
        fmt, fields = alone, re.findall(r"{(\w+)", alone)
    if any(row[f] == "" for f in fields):
        return ""
    if single:
        return _format(fmt, row, where) + " (n=1)"
    return _interval_cell(fmt, row, where)


def _interval_cell(fmt: str, row: dict, where: str) -> str:
    """A cell of `fmt` whose intervals are 0 (a tie over n seeds) or round to 0, never shown as "± 0.0"."""
    tie = False

    def interval(match: re.Match) -> str:
        nonlocal tie
        field, spec = match.group(1), match.group(2) or ""
        if row[field] == 0 and isinstance(row.get("n"), int) and row["n"] >= 2:
            tie = True
            return ""
        shown = _format("{" + field + (":" + spec if spec else "") + "}", row, where)
        places = re.search(r"\.(\d+)f", spec)
        if places and float(shown) == 0:
            return match.group(0).split("{")[0] + f"<{10.0 ** -int(places.group(1)):.{places.group(1)}f}"
        return match.group(0)

    text = _format(INTERVAL.sub(interval, fmt), row, where)
    return text + (f" (all {row['n']} equal)" if tie else "")


def _format(fmt: str, row: dict, where: str) -> str:
    try:
        return fmt.format(**row)
    except (ValueError, TypeError) as err:
        raise EvidenceError(f"{where}: format {fmt!r} does not fit the row ({err})") from None


def read_rows(folder: Path, name: str) -> list[dict]:
    path = Path(folder) / f"{name}.csv"
    if not path.is_file():
        raise EvidenceError(f"{path} does not exist; the table's numbers go there")
    with open(path, newline="") as f:
        return [{k: _number(v) if v != "" else "" for k, v in row.items()} for row in csv.DictReader(f)]


def _keep(row: dict, condition: str, where: str) -> bool:
    match = FILTER.match(condition)
    if not match:
        raise EvidenceError(f"{where}: filter {condition!r} is not field=a|b, field!=a, field<x or field>x")
    field, op, wanted = match.groups()
    if field not in row:
        raise EvidenceError(f"{where}: filter names {field!r}, which the CSV does not have")
    value = row[field]
    if op in "<>":
        return value != "" and (value < _number(wanted) if op == "<" else value > _number(wanted))
    if op == "^=":
        return str(value).startswith(wanted)
    hit = any(value == _number(option) or str(value) == option for option in wanted.split("|"))
    return hit if op == "=" else not hit


def _json_value(folder: Path, name: str, expr: str, where: str) -> str:
    path = Path(folder) / name
    if not path.is_file():
        raise EvidenceError(f"{path} does not exist")
    match = re.fullmatch(r"([\w.]+?)(\*100)?(?::(.+))?", expr)
    found = json.loads(path.read_text())
    parts = (match.group(1) if match else "").split(".")
    while parts:  # a key may hold dots itself ("distill.temperature"): the shortest that is there
        for size in range(1, len(parts) + 1):
            key = ".".join(parts[:size])
            if isinstance(found, list) and key.isdigit() and int(key) < len(found):
                found, parts = found[int(key)], parts[size:]
                break
            if isinstance(found, dict) and key in found:
                found, parts = found[key], parts[size:]
                break
        else:
            raise EvidenceError(f"{where}: {path.name} has no {expr.split(':')[0]!r}")
    return format(found * 100 if match.group(2) else found, match.group(3) or "")


def value(folder: Path, name: str, spec: str) -> str:
    """The text of one prose value marker (see the module docstring)."""
    where = f"value {name} {spec}"
    expr, *filters = shlex.split(spec)
    if name.endswith(".json"):
        return _json_value(folder, name, expr, where)
    rows = [r for r in read_rows(folder, name) if all(_keep(r, f, where) for f in filters)]
    if expr == "count":
        return str(len(rows))
    match = re.fullmatch(r"(?:(min|max|list)\((\w+)\)|(\w+))(?::(.+))?", expr)
    if not match:
        raise EvidenceError(f"{where}: {expr!r} is not FIELD[:FORMAT], min(FIELD), max(FIELD), list(FIELD) or count")
    how, field, fmt = match.group(1), match.group(2) or match.group(3), match.group(4) or ""
    if rows and field not in rows[0]:
        raise EvidenceError(f"{where}: {field!r} is no column of {name}.csv")
    values = [r[field] for r in rows if r[field] != ""]
    if how == "list":
        return ", ".join(format(v, fmt) for v in values)
    if how in ("min", "max"):
        if not values:
            raise EvidenceError(f"{where}: no row with a {field} is left by the filters")
        return format(min(values) if how == "min" else max(values), fmt)
    if len(rows) != 1 or not values:
        raise EvidenceError(f"{where}: the filters leave {len(rows)} rows; a single value needs exactly one")
    return format(values[0], fmt)


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
    rows = read_rows(folder, name)
    headers = [header for header, _ in meta["columns"]]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for i, row in enumerate(rows, start=2):
        lines.append("| " + " | ".join(_cell(fmt, row, f"{path} line {i}") for _, fmt in meta["columns"]) + " |")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines += ["", f"From `docs/results/{name}.csv`: `{meta['command']}`, {meta['date']}, {meta['machine']}; "
                  f"{versions}."]
    return "\n".join(lines) + "\n"


def update(text: str, folder: Path) -> tuple[str, list[str]]:
    """README text with every marked section and prose value rendered from its files, and the names
    (a value: `NAME EXPR ...`) that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        body = render(folder, match.group(2))
        if body != match.group(3):
            changed.append(match.group(2))
        return match.group(1) + body + match.group(4)

    def replace_value(match: re.Match) -> str:
        body = value(folder, match.group(2), match.group(3))
        if body != match.group(4):
            changed.append(f"value {match.group(2)} {match.group(3)} (README: {match.group(4)!r}, files: {body!r})")
        return match.group(1) + body + match.group(5)

    return VALUE.sub(replace_value, SECTION.sub(replace, text)), changed


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
