"""Adopting statestore on a database the old system already wrote: the legacy table
is kept with its rows, migrations add the new tables beside it, and the old
conversations load through legacy-blob and copy to the normalized layout."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import statestore
from statestore import AgentState, Message
from statestore.backends.sql import migrate
from statestore.core.maintenance import maintenance_of
from statestore.testing.plugin import scratch_database

OLD_STATE = AgentState(
    user_input="what is the weather?",
    step_count=3,
    conversation_history=[
        Message(role="user", content="what is the weather?"),
        Message(role="assistant", content="sunny", message_type="text"),
    ],
    metadata={"model": "old"},
)
DOCUMENT = orjson.dumps(OLD_STATE.to_dict()).decode()

# The old system's table, as it created it: JSONB content, an embedding column, no
# statestore index.
PG_LEGACY_DDL = """
CREATE TABLE memory_chunks (
    id BIGSERIAL PRIMARY KEY,
    user_id VARCHAR(255),
    conversation_id VARCHAR(255) NOT NULL,
    content JSONB NOT NULL,
    embedding TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@pytest.fixture
async def legacy_postgres_url() -> AsyncIterator[str]:
    """A database of this test's own holding only the old system's table and rows."""
    import asyncpg

    with scratch_database("statestore_adopt") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(PG_LEGACY_DDL)
            await conn.execute(
                "INSERT INTO memory_chunks (user_id, conversation_id, content) "
                "VALUES ('u1', 'old-1', $1)",
                DOCUMENT,
            )
        finally:
            await conn.close()
        yield url


@pytest.mark.postgres
async def test_postgres_migration_keeps_the_legacy_table_and_its_rows(
    legacy_postgres_url: str,
) -> None:
    """Migrating a PostgreSQL database with a legacy table keeps its rows, which then
    load through legacy-blob and copy into the normalized tables."""
    await migrate.upgrade(legacy_postgres_url)
    async with statestore.open_store("legacy-blob", legacy_postgres_url) as legacy:
        assert await legacy.load_state("old-1", user_id="u1") == OLD_STATE
    async with statestore.open_store("postgres", legacy_postgres_url) as store:
        await store.save_state("old-1", await _load("legacy-blob", legacy_postgres_url))
        assert await store.load_state("old-1") == OLD_STATE


@pytest.mark.postgres
async def test_postgres_downgrade_never_drops_legacy_rows(legacy_postgres_url: str) -> None:
    """Migrating down to base removes statestore's tables but keeps a legacy table
    that holds conversations."""
    import asyncpg

    await migrate.upgrade(legacy_postgres_url)
    await migrate.downgrade(legacy_postgres_url, "base")
    conn = await asyncpg.connect(legacy_postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM memory_chunks") == 1
        assert await conn.fetchval("SELECT to_regclass('conversation_states')") is None
    finally:
        await conn.close()


async def test_sqlite_file_of_the_old_system_migrates_on_open(tmp_path: Path) -> None:
    """A SQLite file with only the old table migrates itself on open and keeps its
    conversations."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE memory_chunks (id INTEGER PRIMARY KEY, user_id TEXT, "
            "conversation_id TEXT NOT NULL, content TEXT NOT NULL, embedding TEXT, "
            "created_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
            "VALUES ('u1', 'old-1', ?, '2025-01-02T03:04:05.000000+00:00')",
            (DOCUMENT,),
        )
    url = f"sqlite:///{path}"
    assert await _load("legacy-blob", url) == OLD_STATE
    async with statestore.open_store("sqlite", url) as store:
        await store.save_state("old-1", await _load("legacy-blob", url))
        assert await store.load_state("old-1") == OLD_STATE


async def _load(backend: str, url: str) -> AgentState:
    async with statestore.open_store(backend, url) as store:
        return await store.load_state("old-1")


@pytest.mark.postgres
async def test_stats_of_an_adopted_postgres_database(legacy_postgres_url: str) -> None:
    """stats (the sizes of the layouts) works on the old system's table, whose
    content is JSONB (octet_length takes text only)."""
    await migrate.upgrade(legacy_postgres_url)
    async with statestore.open_store("legacy-blob", legacy_postgres_url) as legacy:
        stats = await maintenance_of(legacy).storage_stats(top=5)
    assert stats.legacy_conversations == 1
    assert [cid for cid, _, _ in stats.largest_legacy] == ["old-1"]


@pytest.mark.postgres
async def test_a_legacy_table_with_naive_times_is_named_by_migrate() -> None:
    """An old table whose created_at has no time zone can be read but not written by
    legacy-blob (the driver refuses an aware time for it): migrate says so, with the
    statement that converts it, and after it legacy-blob writes."""
    import asyncpg

    with scratch_database("statestore_adopt") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(PG_LEGACY_DDL.replace("TIMESTAMPTZ", "TIMESTAMP"))
            await conn.execute(
                "INSERT INTO memory_chunks (user_id, conversation_id, content) "
                "VALUES ('u1', 'old-1', $1)",
                DOCUMENT,
            )
            with pytest.raises(
                statestore.StateStoreError, match="ALTER TABLE memory_chunks"
            ) as info:
                await migrate.upgrade(url)
            statement = str(info.value).split("with ", 1)[1].split(" (statestore", 1)[0]
            await conn.execute(statement)
        finally:
            await conn.close()
        await migrate.upgrade(url)
        async with statestore.open_store("legacy-blob", url) as legacy:
            await legacy.save_state("old-1", OLD_STATE, user_id="u1")
            assert (await legacy.load_state("old-1", user_id="u1")).version == 2
