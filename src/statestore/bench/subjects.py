"""What a benchmark runs against: a registered backend through the public API
(``StoreSubject``), or the raw-driver baseline (``RawSubject``) on the same schema.

Both offer the same few operations, so each scenario is written once. A subject
also empties its database (``reset``) and measures what it stores
(``storage_bytes``): on PostgreSQL ``pg_total_relation_size`` summed over the tables,
on SQLite the file size after a WAL checkpoint, each minus the empty schema.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import aiosqlite

from ..backends.sql import migrate as migrations
from ..backends.sql.tables import metadata as schema
from ..core import jsoncodec
from ..core.model import AgentState, Message
from ..core.query import LoadOptions, StatePatch
from ..core.registry import default_registry
from ..core.store import Store

__all__ = [
    "RAW",
    "RawRows",
    "RawSubject",
    "StoreSubject",
    "Subject",
    "Target",
    "make_subject",
    "sqlite_file",
]

RAW = "raw"
"""The name of the raw-driver baseline among the targets."""

TABLES = tuple(table.name for table in schema.sorted_tables)


@dataclass(frozen=True, slots=True)
class Target:
    """One backend (or the raw baseline) on one engine."""

    backend: str
    engine: str  # "sqlite" or "postgresql"

    @property
    def id(self) -> str:
        """``sqlite``, ``postgres``, ``legacy-blob[sqlite]``, ``raw[postgresql]``, ...
        (the ids of the test suite's ``backend_target``)."""
        if self.backend != RAW:
            schemes = default_registry().get(self.backend).spec.url_schemes
            if len(schemes) == 1:
                return self.backend
        return f"{self.backend}[{self.engine}]"

    @property
    def is_legacy(self) -> bool:
        return self.backend == "legacy-blob"


class Subject(Protocol):
    """The operations the scenarios time, plus set-up and measurement."""

    target: Target

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None:
        """Empty every table (storage measured from here on is this run's only)."""
        ...

    async def storage_bytes(self) -> int:
        """Bytes the tables take beyond the empty schema."""
        ...

    async def save_new(self, conversation_id: str, state: AgentState) -> None:
        """Save a never-saved state as a new conversation."""
        ...

    async def append(
        self, conversation_id: str, messages: Sequence[Message], step_count: int | None = None
    ) -> None:
        """Append messages (and set step_count) without loading."""
        ...

    async def set_step(self, conversation_id: str, step_count: int) -> None: ...

    async def load(self, conversation_id: str, options: LoadOptions) -> object: ...

    async def load_for_save(self, conversation_id: str) -> AgentState | None:
        """The whole state, loaded to be extended and saved (``save_turn``)."""
        ...

    async def save_turn(
        self, conversation_id: str, state: AgentState | None, new: Sequence[Message]
    ) -> None:
        """Save ``state`` (from ``load_for_save``) with the messages ``new`` added."""
        ...

    async def message_count(self, conversation_id: str) -> int: ...


# -- storage --------------------------------------------------------------------------------


_template: Path | None = None


async def _sqlite_template() -> Path:
    """An empty, migrated SQLite file, copied for every fresh database (migrating
    each time would cost more than most scenarios)."""
    global _template
    if _template is None or not _is_file(_template):
        path = Path(tempfile.mkdtemp(prefix="statestore-bench-")) / "template.db"
        await migrations.upgrade(f"sqlite:///{path}")
        _checkpoint(path)
        _template = path
    return _template


def _is_file(path: Path) -> bool:
    return path.is_file()


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _sqlite_size(path: Path) -> int:
    _checkpoint(path)
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def sqlite_file(url: str) -> Path:
    """The file of a ``sqlite:///`` URL."""
    from ..backends.sqlite import sqlite_path

    return sqlite_path(url)


async def _fresh_sqlite(path: Path) -> None:
    template = await _sqlite_template()
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


def _pg_dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


async def _pg_size(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(url))
    try:
        size: int = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint "
            "FROM unnest($1::text[]) t",
            list(TABLES),
        )
    finally:
        await conn.close()
    return size


async def _pg_truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(url))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


class _Storage:
    """Reset and size measurement shared by both subjects."""

    target: Target
    url: str
    _empty: int

    async def _reopen(self) -> None:
        raise NotImplementedError

    async def _shut(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        if self.target.engine == "sqlite":
            # A new file: deleted rows would leave free pages in the old one.
            await self._shut()
            path = sqlite_file(self.url)
            await _fresh_sqlite(path)
            self._empty = _sqlite_size(path)
            await self._reopen()
        else:
            await _pg_truncate(self.url)
            self._empty = await _pg_size(self.url)

    async def storage_bytes(self) -> int:
        if self.target.engine == "sqlite":
            return _sqlite_size(sqlite_file(self.url)) - self._empty
        return await _pg_size(self.url) - self._empty


# -- a backend through the public API -------------------------------------------------------


class StoreSubject(_Storage):
    """A registered backend, opened with ``open_store`` and used as an application would."""

    def __init__(self, target: Target, url: str, **options: Any) -> None:
        self.target = target
        self.url = url
        self._options = options
        self._store: Store | None = None
        self._empty = 0

    @property
    def store(self) -> Store:
        assert self._store is not None, "open() first"
        return self._store

    async def open(self) -> None:
        await self.reset()
        if self._store is None:
            await self._reopen()

    async def _reopen(self) -> None:
        store = default_registry().open_store(self.target.backend, self.url, **self._options)
        await store.__aenter__()
        self._store = store

    async def _shut(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def close(self) -> None:
        await self._shut()

    async def save_new(self, conversation_id: str, state: AgentState) -> None:
        await self.store.save_state(conversation_id, state)

    async def append(
        self, conversation_id: str, messages: Sequence[Message], step_count: int | None = None
    ) -> None:
        if step_count is None:
            patch = StatePatch(append_messages=list(messages))
        else:
            patch = StatePatch(append_messages=list(messages), step_count=step_count)
        await self.store.update_state(conversation_id, patch)

    async def set_step(self, conversation_id: str, step_count: int) -> None:
        await self.store.update_state(conversation_id, StatePatch(step_count=step_count))

    async def load(self, conversation_id: str, options: LoadOptions) -> object:
        return await self.store.load_state(conversation_id, options)

    async def load_for_save(self, conversation_id: str) -> AgentState | None:
        return await self.store.load_state(conversation_id)

    async def save_turn(
        self, conversation_id: str, state: AgentState | None, new: Sequence[Message]
    ) -> None:
        assert state is not None
        state.conversation_history.extend(new)
        await self.store.save_state(conversation_id, state)

    async def message_count(self, conversation_id: str) -> int:
        state = await self.store.load_state(conversation_id, LoadOptions(last_messages=0))
        return state.history_total


# -- the raw-driver baseline ----------------------------------------------------------------


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


class RawSubject(_Storage):
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
        self._sqlite: aiosqlite.Connection | None = None
        self._pg: Any = None
        self._counts: dict[str, int] = {}
        self._empty = 0

    async def open(self) -> None:
        await self.reset()
        if self._sqlite is None and self._pg is None:
            await self._reopen()

    async def _reopen(self) -> None:
        if self.target.engine == "sqlite":
            conn = await aiosqlite.connect(sqlite_file(self.url), isolation_level=None)
            # The settings the sqlite backend uses.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            self._sqlite = conn
        else:
            import asyncpg

            self._pg = await asyncpg.connect(_pg_dsn(self.url))

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
        await super().reset()

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


def make_subject(target: Target, url: str, **options: Any) -> Subject:
    """The subject for ``target`` on the database at ``url`` (not yet open)."""
    if target.backend == RAW:
        return RawSubject(target, url)
    return StoreSubject(target, url, **options)
