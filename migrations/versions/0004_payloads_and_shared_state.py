"""Message payloads and state shared across conversations

``conversation_messages.payload`` keeps a framework's item whole (``Message.payload``)
as JSON text; ``shared_state`` holds state shared by many conversations (per app, per
user), keyed by (namespace, key). Both are JSON text, not JSONB, on PostgreSQL too:
returned exactly as written, and a NUL in a string is the escape ``\\u0000``, which
JSONB refuses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001 (the schema of that day, not imported from tables.py, which moves on).
Id = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")


def upgrade() -> None:
    op.add_column("conversation_messages", sa.Column("payload", sa.Text(), nullable=True))
    op.create_table(
        "shared_state",
        sa.Column("namespace", Id, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "key", name="pk_shared_state"),
    )


def downgrade() -> None:
    op.drop_table("shared_state")
    with op.batch_alter_table("conversation_messages") as batch:
        batch.drop_column("payload")
