"""Fixtures of the tool tests: a legacy store full of odd rows, and a PostgreSQL
database of their own (copy and prune see every conversation in a database, so they
cannot share the session one)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import statestore
from statestore import AgentState, ContextItem, Message
from statestore.backends.sqlite import sqlite_path
from statestore.testing.plugin import (
    _admin,
    scratch_database,
)

TABLES = "conversation_states, conversation_messages, memory_context_items, memory_metadata"

BIG = "long text \u00e9\u4e2d " * 40_000  # about 600 kB


@pytest.fixture(scope="module")
def own_pg_server() -> Iterator[str]:
    """A migrated PostgreSQL database for this module, dropped at the end."""
    with scratch_database("statestore_tools", migrated=True) as url:
        yield url


@pytest.fixture
def own_pg_url(own_pg_server: str) -> str:
    """``own_pg_server`` emptied for this test."""
    asyncio.run(_admin(own_pg_server, f"TRUNCATE {TABLES}, memory_chunks"))
    return own_pg_server


async def raw_insert(
    url: str, conversation_id: str, content: str, user_id: str | None = None
) -> None:
    """Add a legacy row by hand, as old code (or a broken writer) would have."""
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
                "VALUES ($1, $2, $3, '2024-05-01T10:00:00Z')",
                user_id,
                conversation_id,
                content,
            )
        finally:
            await conn.close()
        return
    conn = sqlite3.connect(sqlite_path(url))
    with conn:
        conn.execute(
            "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
            "VALUES (?, ?, ?, ?)",
            (user_id, conversation_id, content, "2024-05-01T10:00:00.000000+00:00"),
        )
    conn.close()


def good_states() -> dict[str, tuple[str | None, AgentState]]:
    """Conversations every backend must carry exactly: id -> (owner, state)."""
    ts = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return {
        "plain": (
            None,
            AgentState(
                user_input="hi",
                conversation_history=[Message(role="user", content="hi", timestamp=ts)],
            ),
        ),
        "owned": (
            "alice",
            AgentState(
                user_input=None,
                focus_areas=["billing", "tone"],
                step_count=7,
                last_tool_result={"rows": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
                conversation_history=[
                    Message(role="user", content="refund?", timestamp=ts),
                    Message(
                        role="assistant",
                        content="",
                        message_type="tool_call",
                        tool_name="lookup",
                        timestamp=ts,
                        metadata={"args": {"id": 3}},
                    ),
                    Message(
                        role="tool",
                        content="{}",
                        message_type="tool_result",
                        tool_name="lookup",
                        timestamp=ts,
                    ),
                ],
                memory_context=[
                    ContextItem(
                        content="likes tea",
                        source="ltm",
                        relevance_score=0.25,
                        context_type="tone",
                        timestamp=ts,
                    ),
                    ContextItem(
                        content="rag hit",
                        source="rag",
                        relevance_score=1.0,
                        timestamp=ts,
                        metadata={"doc": "x"},
                    ),
                ],
                metadata={"lang": "en", "score": 0.5, "tags": ["a"], "n": -(2**63)},
            ),
        ),
        "unicode-\u00e9\u4e2d\U0001f600": (
            "b\u00f6b",
            AgentState(
                user_input="\u05e9\u05dc\u05d5\u05dd \U0001f44b \u202e rtl",
                conversation_history=[
                    Message(
                        role="user",
                        content="\U0001f600 \u4e2d\u6587 \u00e9",
                        timestamp=ts,
                        metadata={"\u00e9": "\u4e2d"},
                    )
                ],
                metadata={"emoji": "\U0001f680"},
            ),
        ),
        "big": (
            None,
            AgentState(
                conversation_history=[
                    Message(role="user", content=BIG, timestamp=ts),
                    Message(role="assistant", content="ok", timestamp=ts),
                ]
                + [Message(role="user", content=f"m{i}", timestamp=ts) for i in range(300)]
            ),
        ),
        "empty": (None, AgentState()),
    }


# Legacy rows no backend can read: id -> raw document text.
CORRUPT_ROWS = {
    "bad-json": "{not json",
    "bad-type": orjson.dumps({"step_count": "seven"}).decode(),
    "bad-shape": orjson.dumps(["a", "list"]).decode(),
    # Any role name is a role (frameworks have many), but not an empty one.
    "bad-role": orjson.dumps({"conversation_history": [{"role": "", "content": "x"}]}).decode(),
    "bad-score": orjson.dumps(
        {"memory_context": [{"content": "x", "relevance_score": 7}]}
    ).decode(),
}


async def build_legacy(url: str) -> dict[str, tuple[str | None, AgentState]]:
    """A legacy store with the good conversations (one of them saved as several
    snapshots, one as a hand-written document without timestamps) and the corrupt
    rows. Returns the good ones as they must arrive."""
    good = good_states()
    async with statestore.open_store("legacy-blob", url) as store:
        for cid, (owner, state) in good.items():
            await store.save_state(cid, state, user_id=owner)
        # Several snapshots of one conversation: the newest is the state.
        snap_state = AgentState(user_input="v1")
        await store.save_state("snapshots", snap_state)
        for i in range(3):
            snap_state.conversation_history.append(Message(role="user", content=f"turn {i}"))
            snap_state.user_input = f"v{i + 2}"
            await store.save_state("snapshots", snap_state)
        good["snapshots"] = (None, await store.load_state("snapshots"))
    await raw_insert(
        url,
        "no-timestamps",
        orjson.dumps({"conversation_history": [{"role": "user", "content": "old"}]}).decode(),
        "carol",
    )
    async with statestore.open_store("legacy-blob", url) as store:
        good["no-timestamps"] = ("carol", await store.load_state("no-timestamps"))
    for cid, content in CORRUPT_ROWS.items():
        await raw_insert(url, cid, content)
    # A conversation whose newest snapshot is corrupt is corrupt, older ones
    # notwithstanding.
    async with statestore.open_store("legacy-blob", url) as store:
        await store.save_state("bad-newest", AgentState(user_input="fine once"))
    await raw_insert(url, "bad-newest", '{"user_input": 5}')
    return good


CORRUPT_IDS = {*CORRUPT_ROWS, "bad-newest"}


async def assert_arrived(url_name: tuple[str, str], good: dict[str, Any]) -> None:
    """Every good conversation is on the target with its owner and content."""
    name, url = url_name
    async with statestore.open_store(name, url) as target:
        for cid, (owner, state) in good.items():
            copy = await target.load_state(cid)
            assert copy.user_id == owner, cid
            assert copy.to_dict() == state.to_dict(), cid
        listed = [i.conversation_id for i in await target.list_conversations(limit=1000)]
    assert sorted(listed) == sorted(good)
