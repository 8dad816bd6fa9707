"""The legacy layout read and written by raw SQL: rows in ``memory_chunks`` written by
hand in the old format load, and what the legacy-blob backend writes is exactly
``AgentState.to_dict()`` as JSON. Run on both engines."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import statestore
from statestore import (
    AgentState,
    ContextItem,
    ConversationNotFound,
    CorruptState,
    LoadOptions,
    Message,
    StatePatch,
)
from statestore.backends.sql import migrate
from statestore.backends.sqlite import sqlite_path
from statestore.tools.lifecycle import prune_conversations

# A document as the old system wrote it: naive timestamps, a tool call, nested JSON.
OLD_DOCUMENT = {
    "user_input": "what is 6 * 7?",
    "focus_areas": ["math"],
    "step_count": 2,
    "last_tool_result": {"value": 42, "unit": None},
    "conversation_history": [
        {
            "role": "user",
            "content": "what is 6 * 7?",
            "message_type": "text",
            "tool_name": None,
            "timestamp": "2024-05-01T12:00:00",
            "metadata": {},
        },
        {
            "role": "tool",
            "content": "42",
            "message_type": "tool_result",
            "tool_name": "calculator",
            "timestamp": "2024-05-01T14:00:01+02:00",
            "metadata": {"latency_ms": 3},
        },
    ],
    "memory_context": [
        {
            "source": "ltm",
            "content": "user likes arithmetic",
            "relevance_score": 0.8,
            "context_type": "math",
            "timestamp": "2024-04-30T09:30:00.123456",
            "metadata": {"origin": ["chat", 7]},
        }
    ],
    "metadata": {"session": {"client": "cli", "ids": [1, 2, 3]}},
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def legacy_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each engine (SQLite: fresh file; PostgreSQL: the
    session database, tests use fresh conversation ids). Synchronous: the session
    fixture runs its own event loop."""
    if request.param == "sqlite":
        url = str(request.getfixturevalue("sqlite_url"))
        asyncio.run(migrate.upgrade(url))
        return url
    return str(request.getfixturevalue("postgres_url"))


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


async def _insert(url: str, conversation_id: str, content: str, user_id: str | None = None) -> None:
    """Write one memory_chunks row by hand, as the old system did."""
    now = datetime.now(UTC)
    sql = (
        "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
        "VALUES ($1, $2, $3, $4)"
    )
    if _is_sqlite(url):
        conn = sqlite3.connect(sqlite_path(url))
        with conn:
            conn.execute(
                sql.replace("$", "?"),
                (user_id, conversation_id, content, now.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")),
            )
        conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        await pg.execute(sql, user_id, conversation_id, content, now)
    finally:
        await pg.close()


async def _rows(url: str, conversation_id: str) -> list[tuple[Any, ...]]:
    """(user_id, content) of every row of a conversation, oldest first."""
    sql = "SELECT user_id, content FROM memory_chunks WHERE conversation_id = $1 ORDER BY id"
    if _is_sqlite(url):
        conn = sqlite3.connect(sqlite_path(url))
        try:
            return list(conn.execute(sql.replace("$", "?"), (conversation_id,)))
        finally:
            conn.close()
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await pg.fetch(sql, conversation_id)]
    finally:
        await pg.close()


def _cid() -> str:
    return f"legacy-{uuid.uuid4().hex}"


async def test_hand_written_row_loads(legacy_url: str) -> None:
    """A row in the old format, written by raw SQL, loads field for field."""
    cid = _cid()
    await _insert(legacy_url, cid, json.dumps(OLD_DOCUMENT), user_id="u1")
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        state = await store.load_state(cid)
    assert state.user_id == "u1"
    assert state.version == 1
    assert state.user_input == "what is 6 * 7?"
    assert state.focus_areas == ["math"]
    assert state.step_count == 2
    assert state.last_tool_result == {"value": 42, "unit": None}
    assert state.metadata == {"session": {"client": "cli", "ids": [1, 2, 3]}}
    first, second = state.conversation_history
    assert (first.seq, first.role, first.content) == (0, "user", "what is 6 * 7?")
    assert first.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # naive read as UTC
    assert (second.seq, second.tool_name, second.message_type) == (1, "calculator", "tool_result")
    assert second.timestamp == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert second.metadata == {"latency_ms": 3}
    (item,) = state.memory_context
    assert (item.item_id, item.source, item.relevance_score) == (0, "ltm", 0.8)
    assert item.metadata == {"origin": ["chat", 7]}


async def test_minimal_old_document_loads_with_defaults(legacy_url: str) -> None:
    """An old document that omits optional keys loads with the model's defaults."""
    cid = _cid()
    doc = {
        "user_input": "hi",
        "conversation_history": [
            {"role": "user", "content": "hi", "timestamp": "2024-01-01T00:00:00"}
        ],
    }
    await _insert(legacy_url, cid, json.dumps(doc))
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        state = await store.load_state(cid)
    assert (state.step_count, state.focus_areas, state.metadata) == (0, [], {})
    assert state.memory_context == []
    assert [(m.role, m.message_type, m.tool_name) for m in state.conversation_history] == [
        ("user", "text", None)
    ]


async def test_newest_row_wins_and_counts_as_version(legacy_url: str) -> None:
    """With several snapshots of one conversation the newest is read; the version is
    the number of snapshots."""
    cid = _cid()
    older = dict(OLD_DOCUMENT, step_count=1)
    await _insert(legacy_url, cid, json.dumps(older))
    await _insert(legacy_url, cid, json.dumps(OLD_DOCUMENT))
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        state = await store.load_state(cid)
    assert state.step_count == 2
    assert state.version == 2


async def test_hand_written_owner_is_enforced(legacy_url: str) -> None:
    """A hand-written row's user_id is its owner: another user does not see it."""
    cid = _cid()
    await _insert(legacy_url, cid, json.dumps(OLD_DOCUMENT), user_id="owner")
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid, user_id="intruder")
        assert (await store.load_state(cid, user_id="owner")).user_id == "owner"


async def test_saved_row_is_exactly_to_dict(legacy_url: str) -> None:
    """What the backend writes is exactly ``AgentState.to_dict()`` as JSON, key order
    included, with the user_id in its own column."""
    cid = _cid()
    state = AgentState(
        user_input="héllo 👋",
        focus_areas=["a", "b"],
        step_count=3,
        last_tool_result=[1, "two", {"three": 3.5}],
        conversation_history=[
            Message(role="user", content="héllo 👋"),
            Message(role="tool", content="ok", message_type="tool_call", tool_name="search"),
        ],
        memory_context=[ContextItem(content="c", source="rag", relevance_score=0.25)],
        metadata={"k": {"nested": [True, None]}},
    )
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        await store.save_state(cid, state, user_id="u9")
    ((user_id, content),) = await _rows(legacy_url, cid)
    assert user_id == "u9"
    document = json.loads(content)
    assert document == state.to_dict()
    assert list(document) == list(state.to_dict())


async def test_update_appends_a_whole_new_snapshot(legacy_url: str) -> None:
    """An update writes a new whole document (the old one stays) equal to the loaded
    state's ``to_dict()``; a hand-written document read back is unchanged."""
    cid = _cid()
    original = json.dumps(OLD_DOCUMENT)
    await _insert(legacy_url, cid, original)
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        await store.update_state(
            cid, StatePatch(append_messages=[Message(role="assistant", content="42")])
        )
        loaded = await store.load_state(cid, LoadOptions())
    rows = await _rows(legacy_url, cid)
    assert rows[0][1] == original
    assert len(rows) == 2
    assert json.loads(rows[1][1]) == loaded.to_dict()
    assert [m["content"] for m in json.loads(rows[1][1])["conversation_history"]] == [
        "what is 6 * 7?",
        "42",
        "42",
    ]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_a_timestamp_out_of_range_in_utc_is_corrupt(legacy_url: str, stamp: str) -> None:
    """A document timestamp that leaves the calendar once converted to UTC makes its
    conversation CorruptState (which copy reports and skips), not an OverflowError that
    stops a whole copy."""
    cid = _cid()
    message = {"role": "user", "content": "x", "timestamp": stamp}
    await _insert(legacy_url, cid, json.dumps({"conversation_history": [message]}))
    async with statestore.open_store("legacy-blob", legacy_url) as store:
        with pytest.raises(CorruptState, match="out of range in UTC"):
            await store.load_state(cid)


async def test_naive_row_times_of_the_old_system_read_as_utc(tmp_path: Any) -> None:
    """Rows the old system wrote with SQLite's CURRENT_TIMESTAMP (no offset) read as
    UTC, so listing newest first, prune and a write next to them work."""
    url = f"sqlite:///{tmp_path}/old.db"
    await migrate.upgrade(url)
    conn = sqlite3.connect(sqlite_path(url))
    with conn:
        conn.execute(
            "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
            "VALUES ('u1', 'old-1', '{\"step_count\": 1}', '2025-01-02 03:04:05.000000'), "
            "(NULL, 'old-2', '{}', CURRENT_TIMESTAMP)"
        )
    conn.close()
    async with statestore.open_store("legacy-blob", url) as store:
        old = await store.load_state("old-1", user_id="u1")
        assert old.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        await store.save_state("new-1", AgentState())
        listed = await store.list_conversations(order="updated")
        assert [c.conversation_id for c in listed] == ["new-1", "old-2", "old-1"]
        assert all(c.updated_at.tzinfo is not None for c in listed)
        # Only old-1 (2025) is older than a day; comparing it used to raise TypeError.
        assert await prune_conversations(store, timedelta(days=1), dry_run=True) == 1
