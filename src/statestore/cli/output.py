"""Tables on stdout, drawn by rich: bold headers on a terminal, plain aligned text
off one (a pipe or a file gets no control characters, no wrapped rows and no
trailing blanks)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

__all__ = ["new_table", "print_table"]


def new_table(*columns: str) -> Table:
    """A table without borders, columns two spaces apart. A column named ``>name`` is
    right-aligned (numbers)."""
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    for column in columns:
        right = column.startswith(">")
        table.add_column(column.lstrip(">"), justify="right" if right else "left")
    return table


def print_table(table: Table) -> None:
    """Print ``table`` on stdout."""
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(table, markup=False)
        return
    # Off a terminal rich would wrap to 80 columns and pad every cell to its
    # column's width: lay it out unbounded, then drop the padding at line ends.
    wide = Console(highlight=False, width=100_000)
    with wide.capture() as captured:
        wide.print(table, markup=False)
    lines = captured.get().splitlines()
    print("\n".join(line.rstrip() for line in lines))
