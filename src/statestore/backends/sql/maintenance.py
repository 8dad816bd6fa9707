"""``Maintenance`` for the backends over a ``Database`` adapter (normalized and
legacy-blob, on SQLite and PostgreSQL): table sizes and the largest conversations of
both layouts, VACUUM and ANALYZE.

Everything runs through the backend's own connection (``Database.run``), so it
answers for the database the backend stores in, with the engine's own means: on
SQLite the ``dbstat`` table (when SQLite was built with it; rows only otherwise), on
PostgreSQL ``pg_total_relation_size``. A distributed engine overrides
``storage_stats`` to sum its shards.
"""

from __future__ import annotations

from ...core.maintenance import StoreStats
from . import citus
from .database import Database, Tx
from .statements import statements_for

__all__ = ["SqlMaintenance", "TABLES"]

TABLES = (
    "conversation_states",
    "conversation_messages",
    "memory_context_items",
    "memory_metadata",
    "memory_chunks",
    "shared_state",
)
"""Every table statestore keeps (fixed names: safe to put in SQL text)."""


class SqlMaintenance:
    """A mixin for a backend holding its ``Database`` adapter in ``_db``."""

    _db: Database

    async def storage_stats(self, *, top: int = 10) -> StoreStats:
        """Rows and bytes per table, conversation counts and the ``top`` largest
        conversations (normalized: by message content bytes; legacy: by the bytes of
        all snapshots)."""
        engine = self._db.engine

        async def body(tx: Tx) -> StoreStats:
            if engine == "sqlite":
                stats = await _sqlite_stats(tx)
            else:
                stats = await _postgres_stats(tx)
            await _largest(tx, stats, top, self._db.engine)
            return stats

        return await self._db.run(body, write=False)

    def vacuum_advice(self) -> str:
        """How this engine reuses freed space, and what ``vacuum()`` would do."""
        if self._db.engine == "sqlite":
            return (
                "SQLite reuses the freed pages but does not shrink the file; run again with "
                "--vacuum to VACUUM (rewrites the file, blocks writers meanwhile) and ANALYZE."
            )
        return (
            "PostgreSQL: autovacuum makes the deleted rows' space reusable; after a large "
            "prune run with --vacuum for VACUUM (ANALYZE) of the statestore tables now "
            "(VACUUM FULL returns space to the OS but locks the tables: plan a window)."
        )

    async def vacuum(self) -> str:
        """SQLite: VACUUM and ANALYZE the file. PostgreSQL: VACUUM (ANALYZE) each
        statestore table. Runs outside a transaction (VACUUM cannot run in one)."""
        if self._db.engine == "sqlite":

            async def sqlite(tx: Tx) -> str:
                await tx.execute("VACUUM")
                await tx.execute("ANALYZE")
                # In WAL mode the rewritten file lands in the WAL first: copy it back
                # so the database file itself shrinks now.
                await tx.fetch("PRAGMA wal_checkpoint(TRUNCATE)")
                return "SQLite: VACUUM and ANALYZE done."

            return await self._db.run(sqlite, write=False)

        async def postgres(tx: Tx) -> str:
            present = await _present_postgres(tx)
            for table in present:
                await tx.execute(f"VACUUM (ANALYZE) {table}")  # fixed names only
            return "PostgreSQL: VACUUM (ANALYZE) done on " + ", ".join(present) + "."

        return await self._db.run(postgres, write=False)


async def _present_postgres(tx: Tx) -> list[str]:
    rows = await tx.fetch(
        "SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) "
        "WHERE to_regclass(t) IS NOT NULL ORDER BY n",
        list(TABLES),
    )
    return [row[0] for row in rows]


async def _sqlite_stats(tx: Tx) -> StoreStats:
    stats = StoreStats("sqlite")
    owner: dict[str, str] = {
        row[0]: row[1] for row in await tx.fetch("SELECT name, tbl_name FROM sqlite_master")
    }
    has_dbstat = await tx.fetchrow(
        "SELECT 1 FROM pragma_compile_options WHERE compile_options = 'ENABLE_DBSTAT_VTAB'"
    )
    sizes: dict[str, int] = {}
    if has_dbstat is not None:
        # dbstat counts the pages of each table and each index; an index's bytes go
        # to its table.
        for name, size in await tx.fetch("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(str(name), str(name))
            sizes[table] = sizes.get(table, 0) + int(size)
    for table in TABLES:
        if table not in owner:
            continue
        row = await tx.fetchrow(f"SELECT count(*) FROM {table}")  # fixed names only
        stats.rows[table] = int(row[0]) if row else 0
        if has_dbstat is not None:
            stats.bytes[table] = sizes.get(table, 0)
    return stats


async def _postgres_stats(tx: Tx) -> StoreStats:
    stats = StoreStats("postgresql")
    for table in await _present_postgres(tx):
        row = await tx.fetchrow(f"SELECT count(*) FROM {table}")  # fixed names only
        assert row is not None
        stats.rows[table] = int(row[0])
        stats.bytes[table] = await citus.relation_size(tx, table)  # Citus: all shards
    return stats


async def _largest(tx: Tx, stats: StoreStats, top: int, engine: str) -> None:
    """Conversation counts and the largest conversations of the layouts present."""
    statements = statements_for(engine)
    if "conversation_states" in stats.rows:
        stats.conversations = stats.rows["conversation_states"]
        largest = statements.get("maintenance_sql.largest")
        rows = await tx.fetch(largest.sql, *largest.args({"limit": top}))
        stats.largest = [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
    if "memory_chunks" in stats.rows:
        row = await tx.fetchrow("SELECT count(DISTINCT conversation_id) FROM memory_chunks")
        stats.legacy_conversations = int(row[0]) if row else 0
        largest = statements.get("maintenance_sql.largest_legacy")
        rows = await tx.fetch(largest.sql, *largest.args({"limit": top}))
        stats.largest_legacy = [(r[0], int(r[1]), int(r[2])) for r in rows]
