"""Runtime SQL, built once from the table definitions in ``tables.py``.

Statements are SQLAlchemy Core expressions over those tables, compiled once per
dialect and shape (which optional clauses are present) into the text and the order of
its parameters for the raw driver: ``$n`` for asyncpg, ``?`` for ``sqlite3``. Nothing
is compiled per call after the first of its shape, and no text is rewritten. Where the
engines differ (list parameters, aggregating metadata), the builder asks the dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from . import tables

__all__ = [
    "Compiled",
    "Statements",
    "any_of",
    "bulk_insert",
    "cast_type",
    "dialect_for",
    "metadata_json",
    "prefix_end",
    "statements_for",
]


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
def dialect_for(engine: str) -> Dialect:
    """The dialect statements are compiled with for ``engine`` (``postgresql`` or
    ``sqlite``), in the raw driver's parameter style."""
    if engine == "postgresql":
        # SQLAlchemy's constructor is untyped.
        dialect: Dialect = postgresql.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        # Plain $n, no "::VARCHAR" casts: asyncpg learns each parameter's type from
        # the server when it prepares the statement.
        dialect.bind_typing = BindTyping.NONE
        return dialect
    if engine == "sqlite":
        return sqlite.dialect(paramstyle="qmark")
    raise ValueError(f"no SQL dialect for engine {engine!r}")


def compile_statement(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """``statement``'s text and parameter order for ``dialect``."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    fixed = {
        name: bind.value
        for name, bind in compiled.binds.items()
        if name in names and not bind.required
    }
    return Compiled(str(compiled), names, fixed)


@functools.cache
def statements_for(dialect: Dialect) -> Statements:
    """The one ``Statements`` of ``dialect`` (shared by every store using it)."""
    return Statements(dialect)


class Statements:
    """The compiled statements of one dialect, each built and compiled on first use
    and kept (a shape is a few flags, so there are few)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._cache: dict[Hashable, Compiled] = {}

    def get(self, build: Callable[..., ClauseElement], *shape: Hashable) -> Compiled:
        """``build(dialect, *shape)`` compiled, once per ``(build, shape)``."""
        key = (build, shape)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = compile_statement(build(self.dialect, *shape), self.dialect)
            self._cache[key] = compiled
        return compiled


def any_of(column: sa.ColumnElement[Any], name: str, dialect: Dialect) -> sa.ColumnElement[bool]:
    """``column`` is in the list bound to parameter ``name`` (one parameter whatever
    the list's length, so one statement text serves every length): an array on
    PostgreSQL, a JSON array text on SQLite (the adapter's ``list_param``)."""
    if dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    values: sa.Select[Any] = sa.select(sa.literal_column("value")).select_from(
        sa.func.json_each(sa.bindparam(name)).table_valued("value")
    )
    return column.in_(values.scalar_subquery())


def metadata_json(conversation_id: sa.ColumnElement[Any], dialect: Dialect) -> Any:
    """A scalar subquery: one conversation's metadata as JSON text
    ``[[key, "<value JSON text>"], ...]``, or NULL. Reading one conversation, give it
    the parameter, not the outer row's column: Citus routes a statement to one shard
    only if every table reference names the id. (A listing gives the outer column.)"""
    m = tables.memory_metadata
    rows: sa.ColumnElement[Any]
    if dialect.name == "postgresql":
        rows = sa.cast(
            sa.func.json_agg(sa.func.json_build_array(m.c.key, sa.cast(m.c.value, sa.Text))),
            sa.Text,
        )
    else:
        rows = sa.func.json_group_array(sa.func.json_array(m.c.key, m.c.value))
    return sa.select(rows).where(m.c.conversation_id == conversation_id).scalar_subquery()


def cast_type(column: sa.Column[Any], dialect: Dialect) -> Any:
    """The type to cast a parameter (or array element) to for ``column``: its own,
    but strings as TEXT: a cast to VARCHAR(n) would silently cut a longer value,
    where the column's own assignment refuses it."""
    if isinstance(column.type.dialect_impl(dialect), sa.String) and not isinstance(
        column.type.dialect_impl(dialect), sa.Text
    ):
        return sa.Text()
    return column.type


def bulk_insert(dialect: Dialect, table: str) -> ClauseElement:
    """Many rows of ``table`` in the table's column order, by the engine's bulk path
    (the adapter's ``Tx.copy_rows``): on PostgreSQL one statement with an array per
    column, on SQLite the one-row INSERT, run by ``executemany``.

    On PostgreSQL the unnests are in the select list, not ``FROM unnest(...)``: there
    they stream row by row, in step, where a function in FROM first copies its whole
    result into a tuplestore (which spills to disk past ``work_mem`` for a large
    save)."""
    target = tables.metadata.tables[table]
    if dialect.name != "postgresql":
        return sa.insert(target)
    arrays = [
        sa.func.unnest(
            sa.cast(sa.bindparam(column.name), postgresql.ARRAY(cast_type(column, dialect)))
        )
        for column in target.c
    ]
    return sa.insert(target).from_select([c.name for c in target.c], sa.select(*arrays))


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
