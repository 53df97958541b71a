"""A report as a list of blocks, written out as Markdown and as one self-contained HTML file.

Blocks: `Heading`, `Para`, `Table` (a frame of display strings, and the numbers behind it
written as a CSV) and `Figure` (a PNG). The HTML embeds every image as base64 and has no
scripts, stylesheets or fonts from elsewhere, so it reads the same without a network.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Para:
    text: str  # `code` and [link](#anchor) are rendered in HTML


@dataclass
class Table:
    shown: pd.DataFrame                     # display strings
    numbers: Optional[pd.DataFrame] = None  # what `csv` holds
    csv: str = ""                           # file name in the report folder


@dataclass
class Figure:
    path: Path
    caption: str


Block = Union[Heading, Para, Table, Figure]

STYLE = """
body { font-family: sans-serif; max-width: 68rem; margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f1f3f5; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 0.5rem 0; }
figure { margin: 1rem 0 1.5rem; }
figcaption { font-size: 0.9rem; color: #555; }
code { background: #f1f3f5; padding: 0 0.2rem; }
section { border-top: 2px solid #ddd; margin-top: 2rem; }
"""


def write_csvs(blocks: list[Block], out: Path) -> None:
    for block in blocks:
        if isinstance(block, Table) and block.csv and block.numbers is not None:
            block.numbers.to_csv(out / block.csv, index=False)


def _md_cell(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).replace("|", "\\|")


def markdown(blocks: list[Block], out: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>' if block.anchor else ""
            lines += [f"{'#' * block.level} {block.text}{anchor}", ""]
        elif isinstance(block, Para):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            columns = [str(c) for c in block.shown.columns]
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "|".join(["---"] * len(columns)) + "|")
            for row in block.shown.itertuples(index=False):
                lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            lines += [f"\nNumbers: [{block.csv}]({block.csv})" if block.csv else "", ""]
        elif isinstance(block, Figure):
            relative = Path(block.path).relative_to(out).as_posix()
            lines += [f"![{block.caption}]({relative})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape, then `code` and [text](#anchor) or [text](file) links."""
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        body.append("<tr>" + "".join(f"<td>{_inline(_md_cell(v).replace(chr(92) + '|', '|'))}</td>"
                                     for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def to_html(blocks: list[Block], title: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"]
    in_section = False
    for block in blocks:
        if isinstance(block, Heading):
            if block.level == 2:
                parts.append("</section>" if in_section else "")
                parts.append(f'<section id="{block.anchor}">' if block.anchor else "<section>")
                in_section = True
            anchor = f' id="h-{block.anchor}"' if block.anchor and block.level != 2 else ""
            parts.append(f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_html_table(block.shown))
        elif isinstance(block, Figure):
            caption = html.escape(block.caption, quote=True)
            parts.append(f'<figure><img src="{_image(block.path)}" alt="{caption}">'
                         f"<figcaption>{caption}</figcaption></figure>")
    if in_section:
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
