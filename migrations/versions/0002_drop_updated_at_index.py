"""drop the index on conversation_states.updated_at

No query used it (pruning by age pages through conversations by id), and every write
sets updated_at: the index cost each write an index update, and on PostgreSQL it ruled
out HOT updates of the state row, so each write touched every index of the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_conversation_states_updated_at", table_name="conversation_states")


def downgrade() -> None:
    op.create_index("ix_conversation_states_updated_at", "conversation_states", ["updated_at"])
