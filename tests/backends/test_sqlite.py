"""What only the SQLite backend has: connection pragmas, migration on open, the
schema check, foreign keys that really cascade, JSON kept as TEXT."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import statestore
from statestore import AgentState, ContextItem, Message, SchemaOutOfDate, ValidationError
from statestore.backends.sql import migrate
from statestore.backends.sqlite import SqliteBackend, sqlite_path

CHILD_TABLES = ("conversation_messages", "memory_context_items", "memory_metadata")


def _file(url: str) -> Path:
    return sqlite_path(url)


def _query(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows from a fresh sqlite3 connection, independent of the store's."""
    conn = sqlite3.connect(_file(url))
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def _state() -> AgentState:
    return AgentState(
        user_input="hello",
        conversation_history=[
            Message(role="user", content="hello"),
            Message(role="assistant", content="hi there"),
        ],
        memory_context=[ContextItem(content="likes tea", relevance_score=0.9)],
        metadata={"topic": "drinks", "n": 1},
    )


async def _pragma(store: object, name: str) -> object:
    row = await store.backend._db.run(  # type: ignore[attr-defined]
        lambda tx: tx.fetchrow(f"PRAGMA {name}"), write=False
    )
    assert row is not None
    return row[0]


@pytest.mark.parametrize("backend", ["sqlite", "legacy-blob"])
async def test_pragmas_on_the_store_connection(sqlite_url: str, backend: str) -> None:
    """The connection the store uses (legacy-blob on SQLite too) has WAL, foreign keys,
    NORMAL sync and a busy timeout set."""
    async with statestore.open_store(backend, sqlite_url) as store:
        assert await _pragma(store, "journal_mode") == "wal"
        assert await _pragma(store, "foreign_keys") == 1
        assert await _pragma(store, "synchronous") == 1  # NORMAL
        assert await _pragma(store, "busy_timeout") == 5000


async def test_busy_timeout_option(sqlite_url: str) -> None:
    """``busy_timeout`` (seconds) reaches the connection as milliseconds."""
    async with statestore.open_store("sqlite", sqlite_url, busy_timeout=2.5) as store:
        assert await _pragma(store, "busy_timeout") == 2500


async def test_wal_persists_in_the_file(sqlite_url: str) -> None:
    """WAL is a property of the file: another connection sees it too."""
    async with statestore.open_store("sqlite", sqlite_url):
        pass
    assert _query(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


async def test_migrates_itself_on_open(sqlite_url: str) -> None:
    """Opening a new file creates the schema at the head revision."""
    assert not _file(sqlite_url).exists()
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", _state())
    assert _query(sqlite_url, "SELECT version_num FROM alembic_version") == [
        (migrate.head_revision(),)
    ]


async def test_migrates_an_outdated_file_on_open(sqlite_url: str) -> None:
    """A file whose schema was downgraded to base is brought back to head on open."""
    await migrate.upgrade(sqlite_url)
    await migrate.downgrade(sqlite_url, "base")
    assert _query(sqlite_url, "SELECT count(*) FROM alembic_version") == [(0,)]
    state = _state()
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", state)
        assert (await store.load_state("c1")).to_dict() == state.to_dict()


async def test_migrate_false_on_empty_file_raises(sqlite_url: str) -> None:
    """With migrate=False an empty file is not touched: SchemaOutOfDate names the fix."""
    _file(sqlite_url).touch()
    with pytest.raises(SchemaOutOfDate, match="statestore migrate") as caught:
        async with statestore.open_store("sqlite", sqlite_url, migrate=False):
            pass
    assert "none" in str(caught.value)
    tables = _query(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert tables == []


async def test_migrate_false_on_migrated_file_opens(sqlite_url: str) -> None:
    """With migrate=False a file already at head opens and works."""
    await migrate.upgrade(sqlite_url)
    async with statestore.open_store("sqlite", sqlite_url, migrate=False) as store:
        result = await store.save_state("c1", _state())
    assert result.version == 1


async def test_delete_cascades_to_child_rows(sqlite_url: str) -> None:
    """Deleting a conversation row removes its messages, items and metadata through
    ON DELETE CASCADE, and leaves other conversations alone."""
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("gone", _state())
        await store.save_state("kept", _state())
        for table in CHILD_TABLES:
            counts = _query(
                sqlite_url, f"SELECT count(*) FROM {table} WHERE conversation_id = ?", "gone"
            )
            assert counts[0][0] > 0, table
        assert await store.delete_state("gone") is True
    for table in CHILD_TABLES:
        remaining = _query(sqlite_url, f"SELECT DISTINCT conversation_id FROM {table}")
        assert remaining == [("kept",)], table


async def test_cascade_is_in_the_schema(sqlite_url: str) -> None:
    """The foreign keys themselves say ON DELETE CASCADE (not emulated in Python)."""
    await migrate.upgrade(sqlite_url)
    for table in CHILD_TABLES:
        fks = _query(sqlite_url, f"PRAGMA foreign_key_list({table})")
        assert [(fk[2], fk[3], fk[6]) for fk in fks] == [
            ("conversation_states", "conversation_id", "CASCADE")
        ], table


async def test_json_columns_are_text(sqlite_url: str) -> None:
    """JSON is stored as TEXT (no JSON affinity turning "123" into a number)."""
    state = _state()
    state.metadata = {"digits": "123"}
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", state)
        loaded = await store.load_state("c1")
    assert loaded.metadata == {"digits": "123"}
    assert _query(sqlite_url, "SELECT typeof(value), value FROM memory_metadata") == [
        ("text", '"123"')
    ]
    columns = {
        row[1]: row[2] for row in _query(sqlite_url, "PRAGMA table_info(conversation_states)")
    }
    assert columns["focus_areas"] == "TEXT"
    assert columns["last_tool_result"] == "TEXT"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory"])
def test_in_memory_urls_are_refused(url: str) -> None:
    """In-memory databases are refused up front (migrations would see another one)."""
    with pytest.raises(ValidationError, match="in-memory"):
        SqliteBackend(url)
