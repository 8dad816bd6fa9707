"""Citus: statestore's tables distributed by ``conversation_id``, and their true sizes.

On a Citus coordinator the ``postgres`` and ``legacy-blob`` backends run unchanged once
the tables are distributed: every table statestore defines (``tables.metadata``) is
distributed by ``conversation_id`` in one co-location group (that of
``conversation_states``), so the rows of one conversation, in every table, live in one
shard group on one worker; ``alembic_version`` becomes a reference table (a copy on
every node), so a store opened on any node sees the schema revision.

``distribute_tables`` does it and is idempotent: it distributes what is not distributed
yet. ``migrate.upgrade`` runs it after the migrations, in their transaction, so
``statestore migrate`` turns a Citus database into a statestore database and keeps a
table added by a later migration distributed too. On a database without the ``citus``
extension (plain PostgreSQL, SQLite) it does nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...core.errors import StateStoreError
from .database import Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "ANCHOR",
    "DISTRIBUTION_COLUMN",
    "REFERENCE_TABLES",
    "distribute_tables",
    "is_citus",
    "HAS_CITUS",
    "relation_size",
]

log = logging.getLogger("statestore")

DISTRIBUTION_COLUMN = "conversation_id"
# The table the others are co-located with (distributed first: the others' foreign keys
# point at it).
ANCHOR = "conversation_states"
REFERENCE_TABLES = ("alembic_version",)
# Tables keyed by something else than a conversation, each distributed by its own key in
# a co-location group of its own.
OWN_DISTRIBUTION = {"shared_state": "namespace"}

HAS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
# The Citus tables of the current schema: 'h' hash-distributed, anything else
# (reference, or a local table Citus tracks) not distributed by conversation.
_CITUS_TABLES = (
    "SELECT c.relname, p.partmethod FROM pg_dist_partition p "
    "JOIN pg_class c ON c.oid = p.logicalrelid "
    "WHERE c.relnamespace = current_schema()::regnamespace"
)


def is_citus(connection: Connection) -> bool:
    """Whether ``connection`` (PostgreSQL) is to a database with Citus installed."""
    return bool(connection.exec_driver_sql(HAS_CITUS).scalar())


def distribute_tables(connection: Connection) -> list[str]:
    """Distribute what is not distributed yet (see the module docstring), in the
    caller's transaction; returns one line per table it changed. Nothing on a
    database without Citus (or not PostgreSQL)."""
    if connection.dialect.name != "postgresql" or not is_citus(connection):
        return []
    import sqlalchemy as sa  # only here: a migration, not opening a store

    from .tables import metadata

    known = {name for name, _ in connection.exec_driver_sql(_CITUS_TABLES)}
    present = set(sa.inspect(connection).get_table_names())
    done = []
    # The anchor first, then the rest in the metadata's (dependency) order.
    tables = [ANCHOR] + [t.name for t in metadata.sorted_tables if t.name != ANCHOR]
    for name in tables:
        if name in known or name not in present:
            continue
        column = OWN_DISTRIBUTION.get(name, DISTRIBUTION_COLUMN)
        if column not in metadata.tables[name].c:
            raise StateStoreError(f"cannot distribute {name}: it has no {column} column")
        colocate = "none" if name == ANCHOR or name in OWN_DISTRIBUTION else ANCHOR
        connection.execute(
            sa.text("SELECT create_distributed_table(:table, :column, colocate_with => :colocate)"),
            {"table": name, "column": column, "colocate": colocate},
        )
        with_whom = "alone" if colocate == "none" and name != ANCHOR else f"with {ANCHOR}"
        done.append(f"{name}: distributed by {column}, co-located {with_whom}")
    for name in REFERENCE_TABLES:
        if name in known or name not in present:
            continue
        connection.execute(sa.text("SELECT create_reference_table(:table)"), {"table": name})
        done.append(f"{name}: reference table")
    for line in done:
        name = line.split(":", 1)[0]
        # Rows the table had are now in its shards; Citus keeps the local copy until
        # told, where it would only take space.
        connection.execute(
            sa.text("SELECT truncate_local_data_after_distributing_table(:table)"),
            {"table": name},
        )
        log.info("citus: %s", line)
    return done


async def relation_size(tx: Tx, table: str) -> int:
    """Bytes ``table`` takes with its indexes: on Citus the sum over its shards on every
    node (the coordinator's own relation of a distributed table is an empty shell),
    else ``pg_total_relation_size``."""
    size = "pg_total_relation_size($1)"
    has_citus = await tx.fetchrow(HAS_CITUS)
    if has_citus is not None and has_citus[0]:
        size = (
            "CASE WHEN EXISTS (SELECT 1 FROM pg_dist_partition "
            "WHERE logicalrelid = to_regclass($1)) "
            "THEN citus_total_relation_size($1) ELSE pg_total_relation_size($1) END"
        )
    row = await tx.fetchrow(f"SELECT {size}", table)
    assert row is not None
    return int(row[0])
