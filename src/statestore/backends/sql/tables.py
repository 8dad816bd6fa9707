"""The schema, defined once. Alembic's env.py compares the migrations with this
metadata, and the backends' SQL is written against these names.

Every table is keyed by ``conversation_id`` first, so it can be distributed and
co-located by it (Citus), and no hot query crosses conversations. JSON columns are
JSONB on PostgreSQL and TEXT on SQLite (TEXT, not JSON: a column of JSON affinity
would turn the text ``123`` into a number). Timestamps are ``timestamptz`` on
PostgreSQL and fixed-width ISO-8601 UTC text on SQLite, which sorts correctly.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "metadata",
    "conversation_states",
    "conversation_messages",
    "memory_context_items",
    "memory_metadata",
    "memory_chunks",
    "shared_state",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

Json = sa.Text().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")
# Ids order by code point on both engines ("C" collation on PostgreSQL, SQLite's
# BINARY), so listing and paging give the same order whatever the database's locale.
Id = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")


def _conversation_fk() -> sa.Column[str]:
    return sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversation_states.conversation_id", ondelete="CASCADE"),
        primary_key=True,
    )


conversation_states = sa.Table(
    "conversation_states",
    metadata,
    sa.Column("conversation_id", Id, primary_key=True),
    sa.Column("user_id", Id, nullable=True),
    sa.Column("user_input", sa.Text, nullable=True),
    sa.Column("focus_areas", Json, nullable=False),
    sa.Column("step_count", sa.BigInteger, nullable=False),
    sa.Column("last_tool_result", Json, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("message_count", sa.BigInteger, nullable=False),
    # Item ids are never reused, even after the newest item is removed.
    sa.Column("next_item_id", sa.BigInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.CheckConstraint("step_count >= 0", name="step_count_not_negative"),
    sa.Index(None, "user_id", "conversation_id"),
)

conversation_messages = sa.Table(
    "conversation_messages",
    metadata,
    _conversation_fk(),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("message_type", sa.Text, nullable=False),
    sa.Column("tool_name", sa.Text, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("metadata", Json, nullable=False),
    # A framework's item kept whole (Message.payload): JSON text, not JSONB, on both
    # engines: returned byte for byte, and a NUL in it is the escape \u0000, which
    # JSONB refuses.
    sa.Column("payload", sa.Text, nullable=True),
)

memory_context_items = sa.Table(
    "memory_context_items",
    metadata,
    _conversation_fk(),
    sa.Column("item_id", sa.BigInteger, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("relevance_score", sa.Float(precision=53), nullable=False),
    sa.Column("context_type", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.CheckConstraint(
        "relevance_score >= 0 AND relevance_score <= 1", name="relevance_score_in_range"
    ),
    sa.Index(None, "conversation_id", "relevance_score"),
)

memory_metadata = sa.Table(
    "memory_metadata",
    metadata,
    _conversation_fk(),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", Json, nullable=False),
)

# The legacy layout: one JSON document (AgentState.to_dict()) per save, newest wins.
# Keyed (conversation_id, id) on PostgreSQL, so Citus can distribute it (migration
# 0003); SQLite keeps the key (id), its rowid, which numbers the snapshots.
memory_chunks = sa.Table(
    "memory_chunks",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("user_id", Id, nullable=True),
    sa.Column("conversation_id", Id, nullable=False, primary_key=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("embedding", sa.Text, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "conversation_id", "id"),
)

# State shared across conversations (per app, per user, ...): keyed by namespace, not
# by conversation, so Citus distributes it by namespace. Values are JSON text, like
# message payloads (NUL allowed).
shared_state = sa.Table(
    "shared_state",
    metadata,
    sa.Column("namespace", Id, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
