"""The statements of the legacy-blob backend (``legacy_blob.py``), compiled once per
dialect and shape by ``statements.Statements`` (``get("legacy_sql.NAME", *shape)``).

Every reference to memory_chunks compares conversation_id to the parameter (Citus
routes the statement to one shard then); subqueries use aliases of their own, so none
is correlated with the outer statement's table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .tables import memory_chunks


def _of(chunks: sa.FromClause) -> sa.ColumnElement[bool]:
    return chunks.c.conversation_id == sa.bindparam("conversation_id")


def _newest_id() -> Any:
    chunks = memory_chunks.alias("latest")
    return sa.select(sa.func.max(chunks.c.id)).where(_of(chunks)).scalar_subquery()


def newest(dialect: Dialect, owned: bool) -> sa.Select[Any]:
    """The newest document of a conversation (owner, content, saved at), its
    snapshot count and first save time."""
    c = memory_chunks.alias("c")
    counted = memory_chunks.alias("counted")
    first = memory_chunks.alias("first")
    statement = sa.select(
        c.c.user_id,
        c.c.content,
        c.c.created_at,
        sa.select(sa.func.count()).select_from(counted).where(_of(counted)).scalar_subquery(),
        sa.select(first.c.created_at)
        .where(_of(first))
        .order_by(first.c.id)
        .limit(sa.literal_column("1"))
        .scalar_subquery(),
    ).where(_of(c), c.c.id == _newest_id())
    if owned:
        statement = statement.where(
            sa.or_(c.c.user_id.is_(None), c.c.user_id == sa.bindparam("user_id"))
        )
    return statement


def insert(dialect: Dialect) -> sa.Insert:
    # inline: the new row's id is not wanted (no RETURNING).
    return (
        sa.insert(memory_chunks)
        .inline()
        .values(
            user_id=sa.bindparam("owner"),
            conversation_id=sa.bindparam("conversation_id"),
            content=sa.bindparam("content"),
            created_at=sa.bindparam("now"),
        )
    )


def lock_conversation(dialect: Dialect) -> sa.Select[Any]:
    """PostgreSQL: wait for the other writers of the conversation (a transaction
    lock keyed by its id)."""
    key = sa.func.hashtext(sa.bindparam("conversation_id"))
    return sa.select(sa.func.pg_advisory_xact_lock(key))


def delete(dialect: Dialect, owned: bool) -> sa.Delete:
    """Every document of a conversation; when ``owned``, only if the newest is not
    another user's."""
    statement = sa.delete(memory_chunks).where(_of(memory_chunks))
    if not owned:
        return statement
    c = memory_chunks.alias("c")
    others: sa.Select[Any] = (
        sa.select(sa.literal_column("1"))
        .select_from(c)
        .where(
            _of(c),
            c.c.id == _newest_id(),
            c.c.user_id.is_not(None),
            c.c.user_id != sa.bindparam("user_id"),
        )
    )
    return statement.where(~sa.exists(others))


def list(
    dialect: Dialect, by_user: bool, after: bool, by_prefix: bool, bounded: bool, limited: bool
) -> sa.Select[Any]:
    """The newest document of each conversation, ordered by id, with its snapshot
    count and first save time; ids in ``[prefix, prefix_end)`` (no end unless
    ``bounded``); the first ``limit`` if ``limited``."""
    chunks = memory_chunks
    agg = sa.select(
        chunks.c.conversation_id,
        sa.func.max(chunks.c.id).label("last_id"),
        sa.func.count().label("n"),
        sa.func.min(chunks.c.created_at).label("first_at"),
    ).group_by(chunks.c.conversation_id)
    if after:
        agg = agg.where(chunks.c.conversation_id > sa.bindparam("after"))
    if by_prefix:
        agg = agg.where(chunks.c.conversation_id >= sa.bindparam("prefix"))
        if bounded:
            agg = agg.where(chunks.c.conversation_id < sa.bindparam("prefix_end"))
    grouped = agg.subquery("agg")
    c = memory_chunks.alias("c")
    statement = sa.select(
        c.c.conversation_id,
        c.c.user_id,
        c.c.content,
        c.c.created_at,
        grouped.c.n,
        grouped.c.first_at,
    ).select_from(grouped.join(c, c.c.id == grouped.c.last_id))
    if by_user:
        statement = statement.where(c.c.user_id == sa.bindparam("user_id"))
    statement = statement.order_by(c.c.conversation_id)
    return statement.limit(sa.bindparam("limit")) if limited else statement
