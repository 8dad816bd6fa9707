"""How statements are compiled, and what the statement builders share: the dialects
(in the raw drivers' parameter styles), list parameters, metadata and shared state as
JSON text, bulk inserts, and the shared-state statements of every SQL backend.

Imported only to compile a statement (``statements.Statements`` on a miss): SQLAlchemy
is a large import that opening a store and reading need not pay for.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from . import tables
from .statements import Compiled

__all__ = [
    "any_of",
    "bulk_insert",
    "cast_type",
    "compile_statement",
    "dialect_for",
    "metadata_json",
    "shared_json",
    "upsert",
]


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


def upsert(dialect: Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT with ON CONFLICT."""
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return insert(table)


# -- shared state (base.DatabaseBackend) -----------------------------------------------

_shared = tables.shared_state


def shared_json(dialect: Dialect) -> Any:
    """A scalar subquery: the shared state of the namespaces bound to parameter
    ``namespaces`` as JSON text ``[[namespace, key, "<value JSON text>"], ...]``, or
    NULL (to read it in the statement that reads a conversation)."""
    s = _shared.c
    rows: sa.ColumnElement[Any]
    if dialect.name == "postgresql":
        rows = sa.cast(
            sa.func.json_agg(sa.func.json_build_array(s.namespace, s.key, s.value)), sa.Text
        )
    else:
        rows = sa.func.json_group_array(sa.func.json_array(s.namespace, s.key, s.value))
    return sa.select(rows).where(any_of(s.namespace, "namespaces", dialect)).scalar_subquery()


def select_shared(dialect: Dialect) -> sa.Select[Any]:
    """Parameters: the namespaces (``list_param``)."""
    s = _shared.c
    return sa.select(s.namespace, s.key, s.value).where(any_of(s.namespace, "namespaces", dialect))


def delete_shared(dialect: Dialect) -> sa.Delete:
    """Parameters: namespace, the keys (``list_param``)."""
    s = _shared.c
    return sa.delete(_shared).where(
        s.namespace == sa.bindparam("namespace"), any_of(s.key, "keys", dialect)
    )


def upsert_shared(dialect: Dialect) -> Any:
    """Parameters: namespace, key, value, updated_at (the table's order)."""
    statement = upsert(dialect, _shared)
    return statement.on_conflict_do_update(
        index_elements=[_shared.c.namespace, _shared.c.key],
        set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
    )
