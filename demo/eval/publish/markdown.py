"""Markdown tables: the one renderer behind the results tables, the sweep's leaderboard and the benchmark."""
from __future__ import annotations

from typing import Iterable, Sequence

_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def row(cells: Iterable) -> str:
    """One table line; an empty cell stays a single space wide ('| |')."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table(header: Sequence[str], rows: Iterable[Iterable], align: str = "") -> list[str]:
    """The lines of a markdown table. `align` has one letter per column, l(eft), r(ight) or c(entre);
    columns past its end are left-aligned."""
    rule = "|" + "|".join(_RULES[a] for a in align.ljust(len(header), "l")) + "|"
    return [row(header), rule] + [row(r) for r in rows]


def text(header: Sequence[str], rows: Iterable[Iterable], align: str = "") -> str:
    """`table` as one string ending in a newline."""
    return "\n".join(table(header, rows, align)) + "\n"
