"""The data a report section is made of — cells, tables, images, text — and the number format and marks every
table uses; ``render.py`` turns them into markdown and HTML."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NONFINITE_MARK = "†"
RANGE_MARK = "‡"
SIGNIFICANT_MARK = "*"


# -- the data a section is made of --------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    bold: bool = False
    title: str = ""  # a longer explanation (HTML tooltip)
    mark: str = ""  # a footnote mark shown after the (bold) text
    muted: bool = False  # greyed out: shown, not compared (a published figure computed with other settings)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Text:
    text: str
    note: bool = False  # shown as a highlighted caveat


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


def cell(x) -> Cell:
    return x if isinstance(x, Cell) else Cell(str(x))


def table(columns: list[str], rows: Iterable[Iterable]) -> Table:
    return Table(list(columns), [[cell(c) for c in r] for r in rows])


def fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"
