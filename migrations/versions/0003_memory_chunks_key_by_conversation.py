"""memory_chunks: primary key (conversation_id, id) on PostgreSQL

Citus can distribute a table by conversation_id only if every unique constraint includes
that column; with the key (id) alone, memory_chunks had to stay on the coordinator, so
the legacy-blob and dual backends could not be routed to one shard per conversation.
Ids stay unique on their own (the sequence still gives them); the key only widens.

SQLite keeps its key (id): there ``id INTEGER PRIMARY KEY`` is the rowid that numbers
each new snapshot, for the old application writing the same file as for the legacy-blob
backend, and a two-column key would stop SQLite from numbering them. SQLite is never
distributed, so nothing is gained there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "pk_memory_chunks"


def _current_key_name() -> str:
    """The key's name: ours, or the old application's for a table 0001 adopted."""
    if context.is_offline_mode():
        return NAME
    name = sa.inspect(op.get_bind()).get_pk_constraint("memory_chunks").get("name")
    return name or NAME


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_constraint(_current_key_name(), "memory_chunks", type_="primary")
    op.create_primary_key(NAME, "memory_chunks", ["conversation_id", "id"])


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    # On Citus, undistribute memory_chunks first (undistribute_table): a distributed
    # table cannot have a key without its distribution column.
    op.drop_constraint(_current_key_name(), "memory_chunks", type_="primary")
    op.create_primary_key(NAME, "memory_chunks", ["id"])
