"""The raw-driver baseline: the same schema written and read by hand with aiosqlite
or asyncpg (``RawSubject``), and ``RawStorage``, which empties and measures a
database with the driver for every subject of a benchmark run alike. Benchmark-only
code: it lives here, not in the installed package."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiosqlite

from statestore.backends.postgres import asyncpg_dsn
from statestore.backends.sql import migrate as migrations
from statestore.backends.sql.maintenance import TABLES
from statestore.backends.sqlite import sqlite_path
from statestore.bench import Target
from statestore.core import jsoncodec
from statestore.core.model import AgentState, Message
from statestore.core.query import LoadOptions

__all__ = ["RAW", "RawRows", "RawStorage", "RawSubject"]

RAW = "raw"
"""The name of the raw-driver baseline among the targets."""


class RawStorage:
    """Empties a database and measures it with the driver: on SQLite every table
    emptied and the file rewritten (VACUUM), its size (and its WAL's) after a
    checkpoint; on PostgreSQL TRUNCATE, and ``pg_total_relation_size`` summed over the
    tables."""

    def __init__(self, engine: str, url: str) -> None:
        self.engine = engine
        self.url = url

    async def reset(self) -> None:
        if self.engine == "sqlite":
            conn = sqlite3.connect(sqlite_path(self.url), isolation_level=None)
            try:
                for table in TABLES:
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("VACUUM")
            finally:
                conn.close()
            return
        import asyncpg

        pg = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            await pg.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        finally:
            await pg.close()

    async def size(self) -> int:
        if self.engine == "sqlite":
            path = sqlite_path(self.url)
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            wal = path.with_name(path.name + "-wal")
            return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        import asyncpg

        pg = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            size: int = await pg.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint "
                "FROM unnest($1::text[]) t",
                list(TABLES),
            )
        finally:
            await pg.close()
        return size


class RawRows(NamedTuple):
    """What a raw load returns: the driver's rows, table by table."""

    state: list[Any]
    messages: list[Any]
    items: list[Any]
    metadata: list[Any]


_MSG_COLS = "conversation_id, seq, role, content, message_type, tool_name, created_at, metadata"
_ITEM_COLS = (
    "conversation_id, item_id, source, content, relevance_score, context_type, created_at, metadata"
)
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


class RawSubject:
    """The same schema written and read by hand with the driver (aiosqlite or asyncpg),
    the floor the backends are measured against: one INSERT per append (the seq comes
    from a counter the application keeps), ``ORDER BY seq DESC LIMIT n`` for a window,
    four plain SELECTs for a full load, ``executemany`` for a full save, on one
    connection. Rows are returned as the driver gives them: no objects built, no JSON
    decoded.
    """

    def __init__(self, target: Target, url: str) -> None:
        self.target = target
        self.url = url
        self._storage = RawStorage(target.engine, url)
        self._sqlite: aiosqlite.Connection | None = None
        self._pg: Any = None
        self._counts: dict[str, int] = {}
        self._empty = 0

    async def open(self) -> None:
        if self._sqlite is None and self._pg is None:
            if self.target.engine == "sqlite":
                await migrations.upgrade(self.url)  # a new file: the schema first
            await self._reopen()
        await self.reset()

    async def _reopen(self) -> None:
        if self.target.engine == "sqlite":
            conn = await aiosqlite.connect(sqlite_path(self.url), isolation_level=None)
            # The settings the sqlite backend uses.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            self._sqlite = conn
        else:
            import asyncpg

            self._pg = await asyncpg.connect(asyncpg_dsn(self.url))

    async def _shut(self) -> None:
        conn, self._sqlite = self._sqlite, None
        if conn is not None:
            await conn.close()
        pg, self._pg = self._pg, None
        if pg is not None:
            await pg.close()

    async def close(self) -> None:
        await self._shut()

    async def reset(self) -> None:
        self._counts.clear()
        await self._storage.reset()
        self._empty = await self._storage.size()

    async def storage_bytes(self) -> int:
        return await self._storage.size() - self._empty

    # Placeholders: ``$n`` is asyncpg's form, ``?n`` SQLite's.
    def _sql(self, sql: str) -> str:
        return sql.replace("$", "?") if self._sqlite is not None else sql

    def _ts(self, value: datetime) -> Any:
        return value.strftime(_TS_FORMAT) if self._sqlite is not None else value

    def _message_rows(
        self, conversation_id: str, first_seq: int, messages: Sequence[Message]
    ) -> list[tuple[Any, ...]]:
        ts, dumps = self._ts, jsoncodec.dumps
        return [
            (
                conversation_id,
                first_seq + i,
                m.role,
                m.content,
                m.message_type,
                m.tool_name,
                ts(m.timestamp),
                dumps(m.metadata),
            )
            for i, m in enumerate(messages)
        ]

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any], bool]]) -> None:
        """Run (sql, args, many) statements in one transaction."""
        if self._sqlite is not None:
            conn = self._sqlite
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args, many in statements:
                    if many:
                        await conn.executemany(self._sql(sql), args)
                    else:
                        await conn.execute(self._sql(sql), args)
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            return
        pg = self._pg
        async with pg.transaction():
            for sql, args, many in statements:
                if many:
                    await pg.executemany(sql, args)
                else:
                    await pg.execute(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> None:
        if self._sqlite is not None:
            await self._sqlite.execute(self._sql(sql), args)
        else:
            await self._pg.execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        if self._sqlite is not None:
            return list(await self._sqlite.execute_fetchall(self._sql(sql), args))
        return list(await self._pg.fetch(sql, *args))

    async def save_new(self, conversation_id: str, state: AgentState) -> None:
        now = self._ts(datetime.now(UTC))
        messages = state.conversation_history
        items = [
            (
                conversation_id,
                i,
                c.source,
                c.content,
                c.relevance_score,
                c.context_type,
                self._ts(c.timestamp),
                jsoncodec.dumps(c.metadata),
            )
            for i, c in enumerate(state.memory_context)
        ]
        await self._transaction(
            [
                (
                    "INSERT INTO conversation_states (conversation_id, user_id, user_input, "
                    "focus_areas, step_count, last_tool_result, version, message_count, "
                    "next_item_id, created_at, updated_at) "
                    "VALUES ($1, NULL, $2, $3, $4, $5, 1, $6, $7, $8, $8)",
                    (
                        conversation_id,
                        state.user_input,
                        jsoncodec.dumps(state.focus_areas),
                        state.step_count,
                        jsoncodec.dumps(state.last_tool_result),
                        len(messages),
                        len(items),
                        now,
                    ),
                    False,
                ),
                (
                    f"INSERT INTO conversation_messages ({_MSG_COLS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    self._message_rows(conversation_id, 0, messages),
                    True,
                ),
                (
                    f"INSERT INTO memory_context_items ({_ITEM_COLS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    items,
                    True,
                ),
                (
                    "INSERT INTO memory_metadata (conversation_id, key, value) VALUES ($1, $2, $3)",
                    [(conversation_id, k, jsoncodec.dumps(v)) for k, v in state.metadata.items()],
                    True,
                ),
            ]
        )
        self._counts[conversation_id] = len(messages)

    async def append(
        self, conversation_id: str, messages: Sequence[Message], step_count: int | None = None
    ) -> None:
        first = self._counts[conversation_id]
        self._counts[conversation_id] = first + len(messages)
        rows = self._message_rows(conversation_id, first, messages)
        insert = (
            f"INSERT INTO conversation_messages ({_MSG_COLS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        if step_count is None and len(rows) == 1:
            await self._execute(insert, *rows[0])  # one INSERT, autocommit
            return
        step = "" if step_count is None else ", step_count = $3"
        args: tuple[Any, ...] = (conversation_id, len(rows))
        if step_count is not None:
            args += (step_count,)
        await self._transaction(
            [
                (insert, rows, True),
                (
                    "UPDATE conversation_states SET message_count = message_count + $2, "
                    f"version = version + 1{step} WHERE conversation_id = $1",
                    args,
                    False,
                ),
            ]
        )

    async def set_step(self, conversation_id: str, step_count: int) -> None:
        await self._execute(
            "UPDATE conversation_states SET step_count = $2, version = version + 1, "
            "updated_at = $3 WHERE conversation_id = $1",
            conversation_id,
            step_count,
            self._ts(datetime.now(UTC)),
        )

    async def load(self, conversation_id: str, options: LoadOptions) -> object:
        cid = conversation_id
        if options.last_messages is None:
            state = await self._fetch(
                "SELECT * FROM conversation_states WHERE conversation_id = $1", cid
            )
            messages = await self._fetch(
                "SELECT * FROM conversation_messages WHERE conversation_id = $1 ORDER BY seq", cid
            )
            items = await self._fetch(
                "SELECT * FROM memory_context_items WHERE conversation_id = $1 ORDER BY item_id",
                cid,
            )
            meta = await self._fetch(
                "SELECT * FROM memory_metadata WHERE conversation_id = $1", cid
            )
            return RawRows(state, messages, items, meta)
        messages = await self._fetch(
            "SELECT * FROM conversation_messages WHERE conversation_id = $1 "
            "ORDER BY seq DESC LIMIT $2",
            cid,
            options.last_messages,
        )
        messages.reverse()
        if options.context_limit == 0:
            return RawRows([], messages, [], [])
        sql = (
            "SELECT * FROM memory_context_items WHERE conversation_id = $1 "
            "AND relevance_score >= $2 ORDER BY relevance_score DESC, item_id"
        )
        args: list[Any] = [cid, options.min_relevance or 0.0]
        if options.context_limit is not None:
            sql += " LIMIT $3"
            args.append(options.context_limit)
        items = await self._fetch(sql, *args)
        items.sort(key=lambda row: row[1])
        return RawRows([], messages, items, [])

    def counts(self, loaded: object) -> tuple[int, int]:
        assert isinstance(loaded, RawRows), type(loaded).__name__
        return len(loaded.messages), len(loaded.items)

    async def load_for_save(self, conversation_id: str) -> AgentState | None:
        return None  # the application knows what it has; only new rows are written

    async def save_turn(
        self, conversation_id: str, state: AgentState | None, new: Sequence[Message]
    ) -> None:
        await self.append(conversation_id, new, step_count=None)

    async def message_count(self, conversation_id: str) -> int:
        rows = await self._fetch(
            "SELECT count(*) FROM conversation_messages WHERE conversation_id = $1",
            conversation_id,
        )
        return int(rows[0][0])
