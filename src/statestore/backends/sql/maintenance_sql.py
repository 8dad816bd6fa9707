"""The statements of ``maintenance.py`` (the largest conversations of each layout),
compiled once per dialect by ``statements.Statements``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from . import tables


def _bytes(column: sa.Column[Any], dialect: Dialect) -> sa.ColumnElement[Any]:
    """The size of a text column's value in bytes (SQLite's length() of text counts
    characters; of a BLOB, bytes)."""
    if dialect.name == "sqlite":
        return sa.func.length(sa.cast(column, sa.LargeBinary))
    # As text: a memory_chunks adopted from the old system may hold JSONB.
    return sa.func.octet_length(sa.cast(column, sa.Text))


def largest(dialect: Dialect) -> sa.Select[Any]:
    """The ``limit`` largest conversations of the normalized layout, by message
    content bytes: id, message count, context item count, bytes. (A scan of every
    conversation: correlated subqueries are right here.)"""
    s = tables.conversation_states
    i = tables.memory_context_items
    m = tables.conversation_messages
    items = sa.select(sa.func.count()).where(i.c.conversation_id == s.c.conversation_id)
    size = sa.select(
        sa.func.coalesce(sa.func.sum(_bytes(m.c.content, dialect)), sa.literal_column("0"))
    ).where(m.c.conversation_id == s.c.conversation_id)
    by_size = size.scalar_subquery().label("size")
    return (
        sa.select(s.c.conversation_id, s.c.message_count, items.scalar_subquery(), by_size)
        .order_by(by_size.desc(), s.c.conversation_id)
        .limit(sa.bindparam("limit"))
    )


def largest_legacy(dialect: Dialect) -> sa.Select[Any]:
    """The ``limit`` largest conversations of the legacy layout, by the bytes of all
    their snapshots: id, snapshot count, bytes."""
    c = tables.memory_chunks
    size = sa.func.sum(_bytes(c.c.content, dialect)).label("size")
    return (
        sa.select(c.c.conversation_id, sa.func.count(), size)
        .group_by(c.c.conversation_id)
        .order_by(size.desc(), c.c.conversation_id)
        .limit(sa.bindparam("limit"))
    )
