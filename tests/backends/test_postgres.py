"""What only the PostgreSQL backend has: the schema check on open, JSONB and
timestamptz columns, foreign keys that really cascade, connection errors that never
show the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import statestore
from statestore import (
    AgentState,
    BackendUnavailable,
    ContextItem,
    Message,
    SchemaOutOfDate,
    StateStoreError,
)
from statestore.backends.sql import migrate
from statestore.testing.plugin import (
    _with_database,
    scratch_database,
)

pytestmark = pytest.mark.postgres

CHILD_TABLES = ("conversation_messages", "memory_context_items", "memory_metadata")


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database of this test's own, dropped afterwards."""
    with scratch_database("statestore_pg") as url:
        yield url


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    """Rows from a connection of the test's own, independent of the store's pool."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _state() -> AgentState:
    return AgentState(
        user_input="hello",
        conversation_history=[
            Message(role="user", content="hello"),
            Message(role="tool", content="42", message_type="tool_result", tool_name="calc"),
        ],
        memory_context=[ContextItem(content="likes tea", relevance_score=0.9)],
        metadata={"topic": "drinks", "nested": {"a": [1, 2]}},
    )


@pytest.mark.parametrize("backend", ["postgres", "legacy-blob"])
async def test_unmigrated_database_raises_schema_out_of_date(
    empty_postgres_url: str, backend: str
) -> None:
    """Opening an un-migrated database does not create tables: SchemaOutOfDate says to
    run `statestore migrate`."""
    with pytest.raises(SchemaOutOfDate, match="statestore migrate"):
        async with statestore.open_store(backend, empty_postgres_url):
            pass
    tables = await _fetch(
        empty_postgres_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert tables == []


async def test_outdated_database_raises_schema_out_of_date(empty_postgres_url: str) -> None:
    """A database downgraded to base (alembic_version empty) is out of date too."""
    await migrate.upgrade(empty_postgres_url)
    await migrate.downgrade(empty_postgres_url, "base")
    with pytest.raises(SchemaOutOfDate, match="revision none"):
        async with statestore.open_store("postgres", empty_postgres_url):
            pass


async def test_migrate_true_migrates_on_open(empty_postgres_url: str) -> None:
    """``migrate=True`` applies the migrations on open, then the store works."""
    state = _state()
    async with statestore.open_store("postgres", empty_postgres_url, migrate=True) as store:
        await store.save_state("c1", state)
        assert (await store.load_state("c1")).to_dict() == state.to_dict()
    rows = await _fetch(empty_postgres_url, "SELECT version_num FROM alembic_version")
    assert [r[0] for r in rows] == [migrate.head_revision()]


async def test_json_columns_are_jsonb(postgres_url: str) -> None:
    """Every JSON column is JSONB and every timestamp timestamptz (information_schema);
    message payloads and shared state values are JSON text (text columns), kept byte
    for byte, NUL escapes included."""
    rows = await _fetch(
        postgres_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type IN "
        "('jsonb', 'json', 'timestamp with time zone', 'timestamp without time zone')",
    )
    types = {(r[0], r[1]): r[2] for r in rows}
    jsonb = {
        ("conversation_states", "focus_areas"),
        ("conversation_states", "last_tool_result"),
        ("conversation_messages", "metadata"),
        ("memory_context_items", "metadata"),
        ("memory_metadata", "value"),
    }
    assert {k for k, v in types.items() if v == "jsonb"} == jsonb
    assert {k for k, v in types.items() if v.startswith("timestamp")} == {
        ("conversation_states", "created_at"),
        ("conversation_states", "updated_at"),
        ("conversation_messages", "created_at"),
        ("memory_context_items", "created_at"),
        ("memory_chunks", "created_at"),
        ("shared_state", "updated_at"),
    }
    assert set(types.values()) == {"jsonb", "timestamp with time zone"}


async def test_json_is_stored_as_json(postgres_url: str) -> None:
    """Metadata values are real JSONB documents the database can query."""
    cid = f"jsonb-{uuid.uuid4().hex}"
    async with statestore.open_store("postgres", postgres_url) as store:
        await store.save_state(cid, _state())
    rows = await _fetch(
        postgres_url,
        "SELECT value -> 'a' ->> 1 FROM memory_metadata WHERE conversation_id = $1 "
        "AND key = 'nested'",
        cid,
    )
    assert [r[0] for r in rows] == ["2"]


async def test_delete_cascades_to_child_rows(postgres_url: str) -> None:
    """Deleting a conversation row removes its messages, items and metadata through
    ON DELETE CASCADE, and leaves other conversations alone."""
    gone, kept = f"gone-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    async with statestore.open_store("postgres", postgres_url) as store:
        await store.save_state(gone, _state())
        await store.save_state(kept, _state())
        assert await store.delete_state(gone) is True
    for table in CHILD_TABLES:
        sql = (
            f"SELECT conversation_id, count(*) FROM {table} "
            "WHERE conversation_id IN ($1, $2) GROUP BY 1"
        )
        counts = {r[0]: r[1] for r in await _fetch(postgres_url, sql, gone, kept)}
        assert gone not in counts, table
        assert counts[kept] > 0, table


async def test_cascade_is_in_the_schema(postgres_url: str) -> None:
    """The foreign keys themselves say ON DELETE CASCADE (not emulated in Python)."""
    rows = await _fetch(
        postgres_url,
        "SELECT tc.table_name, rc.delete_rule FROM information_schema.referential_constraints rc "
        "JOIN information_schema.table_constraints tc ON tc.constraint_name = rc.constraint_name",
    )
    assert sorted((r[0], r[1]) for r in rows) == [(t, "CASCADE") for t in sorted(CHILD_TABLES)]


async def test_unreachable_server_hides_password() -> None:
    """A server that cannot be reached raises BackendUnavailable, password masked."""
    url = "postgresql://statestore:s3cr3t-pw@127.0.0.1:1/nowhere"
    with pytest.raises(BackendUnavailable) as caught:
        async with statestore.open_store("postgres", url):
            pass
    assert "s3cr3t-pw" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_missing_database_hides_password(postgres_url: str) -> None:
    """A database that does not exist is a one-line StateStoreError, password masked."""
    parts = urlsplit(_with_database(postgres_url, f"missing_{uuid.uuid4().hex[:8]}"))
    host = parts.netloc.rsplit("@", 1)[-1]
    url = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:s3cr3t-pw@{host}"))
    with pytest.raises(StateStoreError) as caught:
        async with statestore.open_store("postgres", url):
            pass
    assert "does not exist" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


async def test_store_over_an_application_pool(postgres_url: str) -> None:
    """open_store("postgres", pool=...) takes its connections from the application's
    asyncpg pool, needs no URL, and leaves the pool open and working when it closes."""
    import asyncpg

    pool = await asyncpg.create_pool(postgres_url, min_size=0, max_size=2)
    try:
        async with statestore.open_store("postgres", pool=pool) as store:
            cid = f"pool-{uuid.uuid4().hex[:8]}"
            state = _state()
            await store.save_state(cid, state)
            assert (await store.load_state(cid)).to_dict() == state.to_dict()
            assert "application's asyncpg pool" in repr(store)
        assert not pool.is_closing()
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM conversation_states WHERE conversation_id = $1", cid
            )
            == 1
        )
    finally:
        await pool.close()


async def test_pool_option_is_checked_before_any_io(postgres_url: str) -> None:
    """A pool that is not an asyncpg.Pool, migrate=True with a pool and no URL, and
    no URL and no pool at all are ValidationErrors naming the option."""
    import asyncpg

    with pytest.raises(statestore.ValidationError, match="pool"):
        statestore.open_store("postgres", pool=object())
    with pytest.raises(statestore.ValidationError, match="url"):
        statestore.open_store("postgres")
    pool = await asyncpg.create_pool(postgres_url, min_size=0, max_size=1)
    try:
        with pytest.raises(statestore.ValidationError, match="migrate"):
            async with statestore.open_store("postgres", pool=pool, migrate=True):
                pass
    finally:
        await pool.close()


def test_reads_are_told_from_writes() -> None:
    """Only statements with no INSERT, UPDATE or DELETE, a CTE's included, count as
    reads (a read meeting a dead connection is run again; a write is not)."""
    from statestore.backends.postgres import _is_read

    assert _is_read("SELECT user_id, updated_at FROM conversation_states WHERE x = $1")
    assert _is_read("WITH s AS (SELECT * FROM conversation_states) SELECT s.* FROM s UNION ALL ...")
    assert _is_read("(SELECT 1) UNION ALL (SELECT 2)")
    assert not _is_read("WITH s AS (UPDATE conversation_states SET version = version + 1) SELECT 1")
    assert not _is_read("insert into memory_metadata (key) values ($1)")
    assert not _is_read("DELETE FROM conversation_messages WHERE seq >= $2")
