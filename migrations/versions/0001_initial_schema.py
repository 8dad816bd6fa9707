"""initial schema: normalized tables and the legacy memory_chunks

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.Text().with_variant(JSONB(), "postgresql")
Id = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "conversation_states",
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=True),
        sa.Column("user_input", sa.Text(), nullable=True),
        sa.Column("focus_areas", Json, nullable=False),
        sa.Column("step_count", sa.BigInteger(), nullable=False),
        sa.Column("last_tool_result", Json, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
        sa.Column("next_item_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "step_count >= 0", name=op.f("ck_conversation_states_step_count_not_negative")
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_states")),
    )
    op.create_index(
        op.f("ix_conversation_states_user_id_conversation_id"),
        "conversation_states",
        ["user_id", "conversation_id"],
    )
    op.create_index(
        op.f("ix_conversation_states_updated_at"), "conversation_states", ["updated_at"]
    )

    op.create_table(
        "conversation_messages",
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("tool_name", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation_states.conversation_id"],
            ondelete="CASCADE",
            name=op.f("fk_conversation_messages_conversation_id_conversation_states"),
        ),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name=op.f("pk_conversation_messages")),
    )

    op.create_table(
        "memory_context_items",
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("relevance_score", sa.Float(precision=53), nullable=False),
        sa.Column("context_type", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.CheckConstraint(
            "relevance_score >= 0 AND relevance_score <= 1",
            name=op.f("ck_memory_context_items_relevance_score_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation_states.conversation_id"],
            ondelete="CASCADE",
            name=op.f("fk_memory_context_items_conversation_id_conversation_states"),
        ),
        sa.PrimaryKeyConstraint("conversation_id", "item_id", name=op.f("pk_memory_context_items")),
    )
    op.create_index(
        op.f("ix_memory_context_items_conversation_id_relevance_score"),
        "memory_context_items",
        ["conversation_id", "relevance_score"],
    )

    op.create_table(
        "memory_metadata",
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation_states.conversation_id"],
            ondelete="CASCADE",
            name=op.f("fk_memory_metadata_conversation_id_conversation_states"),
        ),
        sa.PrimaryKeyConstraint("conversation_id", "key", name=op.f("pk_memory_metadata")),
    )

    # A database that adopts statestore usually has the legacy table already, full of
    # the conversations to move: keep it as it is, and only add the index the
    # legacy-blob backend reads by.
    if context.is_offline_mode() or not sa.inspect(op.get_bind()).has_table("memory_chunks"):
        op.create_table(
            "memory_chunks",
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column("user_id", Id, nullable=True),
            sa.Column("conversation_id", Id, nullable=False),
            sa.Column("content", sa.Text(), nullable=False),
            sa.Column("embedding", sa.Text(), nullable=True),
            sa.Column("created_at", Timestamp, nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_chunks")),
        )

    existing_indexes = (
        set()
        if context.is_offline_mode()
        else {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("memory_chunks")}
    )
    if "ix_memory_chunks_conversation_id_id" not in existing_indexes:
        op.create_index(
            op.f("ix_memory_chunks_conversation_id_id"), "memory_chunks", ["conversation_id", "id"]
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_memory_chunks_conversation_id_id"), table_name="memory_chunks")
    # Never delete legacy conversations: the table goes only when it is empty.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM memory_chunks")).scalar() == 0:
        op.drop_table("memory_chunks")
    op.drop_table("memory_metadata")
    op.drop_index(
        op.f("ix_memory_context_items_conversation_id_relevance_score"),
        table_name="memory_context_items",
    )
    op.drop_table("memory_context_items")
    op.drop_table("conversation_messages")
    op.drop_index(op.f("ix_conversation_states_updated_at"), table_name="conversation_states")
    op.drop_index(
        op.f("ix_conversation_states_user_id_conversation_id"), table_name="conversation_states"
    )
    op.drop_table("conversation_states")
