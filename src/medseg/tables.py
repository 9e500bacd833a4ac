"""Markdown tables on a terminal of any width, never cutting a name or a number.

The commands write Markdown (``table.md``, ``compare.md``, ``medseg stats --out``); on screen
:func:`print_markdown` draws each table with rich, every cell on one line (``no_wrap``). A table wider than
the terminal (``COLUMNS`` / its size, as rich reads them) is not squeezed: a one-row table is turned into
one row per column; a longer one is split into blocks of columns, each repeating the key column(s) (the
first, and the second when the first repeats, as ``compare``'s Class | Run); where even one column does
not fit next to the keys, each row is stacked as ``column: value`` lines. Text between tables is rich
Markdown (wrapped between words).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_INLINE = re.compile(r"\*\*|`")


def _cells(line: str) -> list[str]:
    inner = line.strip()[1:]
    inner = inner[:-1] if inner.endswith("|") else inner
    return [_INLINE.sub("", c).strip() for c in re.split(r"(?<!\\)\|", inner)]


def split_blocks(text: str) -> Iterator[tuple[str, Any]]:
    """``("table", (header, aligns, rows))`` and ``("text", markdown)`` blocks of ``text``, in order."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            header = _cells(lines[i])
            aligns = ["right" if c.endswith(":") else "left" for c in _cells(lines[i + 1])]
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            width = len(header)
            rows = [(r + [""] * width)[:width] for r in rows]
            yield "table", (header, (aligns + ["left"] * width)[:width], rows)
            continue
        start = i
        while i < len(lines) and not (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                                      and set(lines[i + 1].strip()) <= set("|-: ")):
            i += 1
        chunk = "\n".join(lines[start:i]).strip()
        if chunk:
            yield "text", chunk


def _table(header: list[str], aligns: list[str], rows: list[list[str]], cols: list[int]) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in cols:
        t.add_column(Text(header[c]), justify=aligns[c], no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        t.add_row(*(Text(r[c]) for c in cols))
    return t


def _key_columns(rows: list[list[str]], n: int) -> list[int]:
    if n > 2 and rows and len({r[0] for r in rows}) < len(rows):
        return [0, 1]  # the first column repeats (Class | Run): the second tells the rows apart
    return [0]


def fit_tables(header: list[str], aligns: list[str], rows: list[list[str]], width: int, console: Any) -> list[Any]:
    """Renderables that show every cell whole within ``width`` columns (see the module docstring)."""
    from rich.text import Text

    unbounded = console.options.update(width=10**6, max_width=10**6)  # measure the natural width, not a clamped one

    def fits(table: Any) -> bool:
        return console.measure(table, options=unbounded).maximum <= width

    n = len(header)
    whole = _table(header, aligns, rows, list(range(n)))
    if fits(whole):
        return [whole]
    if len(rows) == 1 and n > 1:  # one row: one line per column
        turned = _table(["", "value"], ["left", "right"], [[h, v] for h, v in zip(header, rows[0])], [0, 1])
        if fits(turned):
            return [turned]
    keys = _key_columns(rows, n)
    rest = [c for c in range(n) if c not in keys]
    blocks: list[list[int]] = [[]]
    for c in rest:
        if blocks[-1] and not fits(_table(header, aligns, rows, keys + blocks[-1] + [c])):
            blocks.append([])
        blocks[-1].append(c)
    tables = [_table(header, aligns, rows, keys + b) for b in blocks]
    if all(fits(t) for t in tables):
        return tables
    out: list[Any] = []  # stacked: a row's key, then one "column: value" line per cell
    for r in rows:
        out.append(Text(" | ".join(r[k] for k in keys), style="bold"))
        out += [Text(f"  {header[c]}: {r[c]}") for c in rest]
    return out


def print_markdown(console: Any, text: str) -> None:
    """Print Markdown ``text`` on ``console``; its tables whole, in blocks or stacked to fit the width."""
    from rich.markdown import Markdown

    for kind, block in split_blocks(text):
        if kind == "text":
            console.print(Markdown(block))
            continue
        header, aligns, rows = block
        parts = fit_tables(header, aligns, rows, console.width, console)
        for i, renderable in enumerate(parts):
            console.print(renderable, soft_wrap=False)
            if i + 1 < len(parts) and hasattr(renderable, "columns"):
                console.print()  # a gap between column blocks
        console.print()
