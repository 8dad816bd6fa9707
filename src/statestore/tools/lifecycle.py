"""Looking after stored data: export and import (JSON lines), prune by age, stats.

The export format, one conversation a line (UTF-8 JSON, no header)::

    {"conversation_id": "c1", "user_id": "u1" | null, "version": 3,
     "created_at": "2026-01-02T03:04:05.000006+00:00", "updated_at": "...",
     "state": {<the legacy document: AgentState.to_dict()>}}

``state`` holds every content field (messages and context items with their timestamps
and metadata); ``import`` restores it and the owner exactly. ``version``,
``created_at`` and ``updated_at`` are informative: the importing store sets its own.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson

from ..core.backend import ConversationInfo
from ..core.config import url_scheme
from ..core.errors import ConversationNotFound, CorruptState, StateStoreError, ValidationError
from ..core.model import AgentState
from ..core.store import Store
from .copy import CopyStats, ProblemSink, Run, Tick, iter_conversations, store_verified

__all__ = [
    "export_conversations",
    "import_conversations",
    "parse_age",
    "prune_conversations",
    "maintain",
    "table_stats",
    "StoreStats",
]

EXPORT_KEYS = frozenset(
    {"conversation_id", "user_id", "version", "created_at", "updated_at", "state"}
)


# -- export / import ----------------------------------------------------------------------


async def export_conversations(
    store: Store,
    out: IO[bytes],
    *,
    user_id: str | None = None,
    batch_size: int = 200,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
) -> CopyStats:
    """Write every conversation (of ``user_id``) to ``out``, one JSON line each; a
    corrupt conversation goes to ``on_problem`` and is left out. ``read`` counts the
    lines written."""
    run = Run(on_problem, tick)
    async for page in iter_conversations(store, user_id=user_id, batch_size=batch_size):
        for info in page:
            try:
                state = await store.load_state(info.conversation_id)
            except ConversationNotFound:
                continue
            except CorruptState as exc:
                run.problem(info.conversation_id, "corrupt", exc.reason)
                run.tick()
                continue
            out.write(orjson.dumps(export_record(state)) + b"\n")
            run.stats.read += 1
            run.tick()
    return run.stats


def export_record(state: AgentState) -> dict[str, Any]:
    """One line of the export format."""
    return {
        "conversation_id": state.conversation_id,
        "user_id": state.user_id,
        "version": state.version,
        "created_at": state.created_at.isoformat() if state.created_at else None,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
        "state": state.to_dict(),
    }


def parse_record(line: bytes) -> tuple[str, str | None, AgentState]:
    """(conversation_id, user_id, state) of one export line; ValidationError if the
    line is not one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("line", f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValidationError("line", "must be a JSON object")
    unknown = record.keys() - EXPORT_KEYS
    if unknown:
        raise ValidationError("line", f"unknown keys {sorted(unknown)}")
    conversation_id = record.get("conversation_id")
    user_id = record.get("user_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise ValidationError("conversation_id", "must be a non-empty string")
    if user_id is not None and not isinstance(user_id, str):
        raise ValidationError("user_id", "must be a string or null")
    if "state" not in record:
        raise ValidationError("state", "is missing")
    return conversation_id, user_id, AgentState.from_dict(record["state"])


async def import_conversations(
    store: Store,
    lines: Iterable[bytes],
    *,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
) -> CopyStats:
    """Write each exported conversation to ``store`` unless it already holds the same
    owner and content, and verify it. A bad line is reported (``invalid``, named by its
    conversation id or line number) and skipped. Blank lines are ignored."""
    run = Run(on_problem, tick)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversation_id, user_id, state = parse_record(line)
        except ValidationError as exc:
            run.problem(_name_of(line, number), "invalid", f"line {number}: {exc}")
            run.tick()
            continue
        state.user_id = user_id
        run.stats.read += 1
        await store_verified(run, store, conversation_id, state)
        run.tick()
    return run.stats


def _name_of(line: bytes, number: int) -> str:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return f"line {number}"
    cid = record.get("conversation_id") if isinstance(record, dict) else None
    return cid if isinstance(cid, str) and cid else f"line {number}"


# -- prune --------------------------------------------------------------------------------

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → a timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise ValidationError("older-than", f"must be a number and a unit s/m/h/d/w, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


async def prune_conversations(
    store: Store,
    older_than: timedelta,
    *,
    user_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    now: datetime | None = None,
    on_removed: Callable[[ConversationInfo], None] | None = None,
) -> int:
    """Delete the conversations (of ``user_id``) last updated before ``now -
    older_than``, a page at a time; ``dry_run`` only lists them. Returns how many
    were (or would be) removed; each one goes to ``on_removed``."""
    cutoff = (now or datetime.now(UTC)) - older_than
    removed = 0
    async for page in iter_conversations(store, user_id=user_id, batch_size=batch_size):
        for info in page:
            if info.updated_at >= cutoff:
                continue
            if dry_run or await store.delete_state(info.conversation_id, user_id=user_id):
                removed += 1
                if on_removed is not None:
                    on_removed(info)
    return removed


# -- engine-level maintenance and stats ----------------------------------------------------

TABLES = (
    "conversation_states",
    "conversation_messages",
    "memory_context_items",
    "memory_metadata",
    "memory_chunks",
)


async def maintain(url: str, *, run: bool) -> list[str]:
    """After a prune: reclaim space and refresh planner statistics (``run``), or say
    how. Returns lines to show."""
    engine = url_scheme(url)
    if engine == "sqlite":
        if not run:
            return [
                "SQLite reuses the freed pages but does not shrink the file; run again with "
                "--vacuum to VACUUM (rewrites the file, blocks writers meanwhile) and ANALYZE."
            ]
        with contextlib.closing(_sqlite(url, readonly=False)) as conn:
            conn.execute("VACUUM")
            conn.execute("ANALYZE")
        return ["SQLite: VACUUM and ANALYZE done."]
    if not run:
        return [
            "PostgreSQL: autovacuum makes the deleted rows' space reusable; after a large "
            "prune run with --vacuum for VACUUM (ANALYZE) of the statestore tables now "
            "(VACUUM FULL returns space to the OS but locks the tables: plan a window)."
        ]
    conn = await _pg_connect(url)
    try:
        for table in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")  # fixed names only
    finally:
        await conn.close()
    return ["PostgreSQL: VACUUM (ANALYZE) done on " + ", ".join(TABLES) + "."]


@dataclass(slots=True)
class StoreStats:
    """What ``statestore stats`` shows."""

    engine: str
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    conversations: int = 0
    legacy_conversations: int = 0
    # (conversation_id, messages, context items, content bytes)
    largest: list[tuple[str, int, int, int]] = field(default_factory=list)
    # (conversation_id, snapshots, bytes of all snapshots)
    largest_legacy: list[tuple[str, int, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "conversations": self.conversations,
            "legacy_conversations": self.legacy_conversations,
            "tables": {t: {"rows": self.rows[t], "bytes": self.bytes.get(t)} for t in self.rows},
            "largest": [
                {"conversation_id": c, "messages": m, "context_items": i, "content_bytes": b}
                for c, m, i, b in self.largest
            ],
            "largest_legacy": [
                {"conversation_id": c, "snapshots": n, "bytes": b}
                for c, n, b in self.largest_legacy
            ],
        }


_LARGEST = (
    "SELECT s.conversation_id, s.message_count, "
    "(SELECT count(*) FROM memory_context_items i WHERE i.conversation_id = s.conversation_id), "
    "(SELECT coalesce(sum({length}), 0) FROM conversation_messages m "
    "WHERE m.conversation_id = s.conversation_id) AS size "
    "FROM conversation_states s ORDER BY size DESC, s.conversation_id LIMIT {top}"
)
_LARGEST_LEGACY = (
    "SELECT conversation_id, count(*), sum({length}) AS size FROM memory_chunks "
    "GROUP BY conversation_id ORDER BY size DESC, conversation_id LIMIT {top}"
)


async def table_stats(url: str, *, top: int = 10) -> StoreStats:
    """Rows and bytes per table, conversation counts and the ``top`` largest
    conversations (normalized: by message content bytes; legacy: by bytes of all
    snapshots) of the database at ``url``."""
    engine = url_scheme(url)
    if engine == "sqlite":
        return _sqlite_stats(url, top)
    if engine in ("postgresql", "postgres"):
        return await _pg_stats(url, top)
    raise ValidationError("url", f"stats needs a sqlite or postgresql URL, not {engine!r}")


def _sqlite(url: str, *, readonly: bool) -> sqlite3.Connection:
    from ..backends.sqlite import sqlite_path

    path = sqlite_path(url)
    if not path.exists():
        raise StateStoreError(f"SQLite file {path} does not exist")
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None)
    return conn


def _sqlite_stats(url: str, top: int) -> StoreStats:
    stats = StoreStats("sqlite")
    conn = _sqlite(url, readonly=True)
    try:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        sizes: dict[str, int] = {}
        try:
            # dbstat counts the pages of each table and its indexes.
            for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                sizes[name] = size
        except sqlite3.Error:
            pass  # SQLite built without dbstat: rows only
        indexes = {r[0]: r[1] for r in conn.execute("SELECT name, tbl_name FROM sqlite_master")}
        for table in TABLES:
            if table not in present:
                continue
            stats.rows[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if sizes:
                stats.bytes[table] = sum(s for n, s in sizes.items() if indexes.get(n) == table)
        length = "length(CAST(content AS BLOB))"
        if "conversation_states" in present:
            stats.conversations = stats.rows["conversation_states"]
            stats.largest = [
                tuple(r) for r in conn.execute(_LARGEST.format(length=length, top=int(top)))
            ]
        if "memory_chunks" in present:
            stats.legacy_conversations = conn.execute(
                "SELECT count(DISTINCT conversation_id) FROM memory_chunks"
            ).fetchone()[0]
            stats.largest_legacy = [
                tuple(r) for r in conn.execute(_LARGEST_LEGACY.format(length=length, top=int(top)))
            ]
    finally:
        conn.close()
    return stats


async def _pg_connect(url: str) -> Any:
    from ..backends.postgres import _import_asyncpg, asyncpg_dsn, translate_error

    asyncpg = _import_asyncpg()
    try:
        return await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    except Exception as exc:
        raise (translate_error(exc, url) or exc) from exc


async def _pg_stats(url: str, top: int) -> StoreStats:
    stats = StoreStats("postgresql")
    conn = await _pg_connect(url)
    try:
        for table in TABLES:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                continue
            stats.rows[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
            stats.bytes[table] = await conn.fetchval("SELECT pg_total_relation_size($1)", table)
        length = "octet_length(content)"
        if "conversation_states" in stats.rows:
            stats.conversations = stats.rows["conversation_states"]
            rows = await conn.fetch(_LARGEST.format(length=length, top=int(top)))
            stats.largest = [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
        if "memory_chunks" in stats.rows:
            stats.legacy_conversations = await conn.fetchval(
                "SELECT count(DISTINCT conversation_id) FROM memory_chunks"
            )
            rows = await conn.fetch(_LARGEST_LEGACY.format(length=length, top=int(top)))
            stats.largest_legacy = [(r[0], int(r[1]), int(r[2])) for r in rows]
    finally:
        await conn.close()
    return stats
