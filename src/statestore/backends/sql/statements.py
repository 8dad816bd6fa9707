"""Runtime SQL: statements built once from the table definitions in ``tables.py``.

A statement is a builder, a function of the dialect and a shape (which optional
clauses are present) returning a SQLAlchemy Core expression; the builders live beside
their users (``normalized_sql``, ``legacy_sql``, ``maintenance_sql``, and ``compile``
for what they share). ``Statements.get("normalized_sql.state_select", *shape)``
compiles one once per engine and shape into the text and the order of its parameters
for the raw driver: ``$n`` for asyncpg, ``?`` for ``sqlite3``. Nothing is compiled per
call after the first of its shape, and no text is rewritten.

The compiled text of the statements that opening a store, loading, listing and a
turn's write use ships with the package (``precompiled.json``, written by
``python -m statestore.backends.sql.precompile`` and checked against a fresh compile
by the tests): a short-lived process such as ``statestore show`` then never imports
SQLAlchemy. Any other statement is compiled on first use.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Compiled", "Statements", "compile_fresh", "prefix_end", "statements_for"]

PRECOMPILED = Path(__file__).with_name("precompiled.json")


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's text for one dialect and the names of its parameters in the
    order the driver takes them."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]
    """Values the statement itself binds (e.g. SQLite's ``OFFSET 0``)."""

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``values`` (by parameter name)."""
        fixed = self.fixed
        return tuple(values[name] if name in values else fixed[name] for name in self.names)


@functools.cache
def statements_for(engine: str) -> Statements:
    """The one ``Statements`` of ``engine`` (``sqlite`` or ``postgresql``), shared by
    every store using it."""
    return Statements(engine)


class Statements:
    """The compiled statements of one engine, each compiled on first use and kept (a
    shape is a few flags, so there are few)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, tuple[Hashable, ...]], Compiled] = {}

    def get(self, builder: str, *shape: Hashable) -> Compiled:
        """The statement ``builder`` (``"module.function"`` in this package) builds
        for ``shape``, compiled."""
        key = (builder, shape)
        compiled = self._cache.get(key)
        if compiled is None:
            shipped = _SHIPPED.get(self.engine, {}).get(statement_key(builder, shape))
            if shipped is not None:
                sql, names, fixed = shipped
                compiled = Compiled(sql, tuple(names), fixed)
            else:
                compiled = compile_fresh(self.engine, builder, shape)
            self._cache[key] = compiled
        return compiled


def statement_key(builder: str, shape: tuple[Hashable, ...]) -> str:
    """The name of one statement of one shape in ``precompiled.json``."""
    return f"{builder}{shape!r}"


def compile_fresh(engine: str, builder: str, shape: tuple[Hashable, ...]) -> Compiled:
    """Build and compile a statement with SQLAlchemy (imported here)."""
    from . import compile as compiling

    module, _, name = builder.rpartition(".")
    build = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    dialect = compiling.dialect_for(engine)
    return compiling.compile_statement(build(dialect, *shape), dialect)


def _load_shipped() -> dict[str, dict[str, list[Any]]]:
    try:
        shipped: dict[str, dict[str, list[Any]]] = json.loads(PRECOMPILED.read_text("utf-8"))
    except FileNotFoundError:  # a checkout before the first precompile: compile all
        return {}
    return shipped


# Read when the module is imported, like its code: reading it at a store's first
# statement would be a blocking call on the caller's event loop.
_SHIPPED = _load_shipped()


def prefix_end(prefix: str) -> str | None:
    """The least string after every string that starts with ``prefix``, in code-point
    order (how ids sort on both engines), or None if there is none: ids starting with
    ``prefix`` are exactly those in ``[prefix, prefix_end)``, an index range."""
    for i in range(len(prefix) - 1, -1, -1):
        point = ord(prefix[i]) + 1
        if point == 0xD800:  # surrogates are not text
            point = 0xE000
        if point <= 0x10FFFF:
            return prefix[:i] + chr(point)
    return None
