"""StatestoreSession on its own: every kind of item the SDK produces comes back exactly
as added and in order, the messages it becomes can be queried, and each method is one
atomic step, on every backend (SQLite and PostgreSQL, the legacy layout on both,
dual, and the example plugin's in-memory one)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from agents.memory import Session, SessionSettings
from openai.types.responses import ResponseFunctionToolCall

import statestore
from statestore import ConversationNotFound, LoadOptions, Store
from statestore.integrations.openai_agents import StatestoreSession

# One of each kind of item the Responses API and the SDK put in a session, with the
# shapes the SDK stores (``model_dump(exclude_unset=True)`` of its output items).
ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "developer", "content": "Answer briefly."},
    {"role": "system", "content": "You are a weather bot."},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "and this picture?"},
            {
                "type": "input_image",
                "image_url": "data:image/png;base64,iVBORw0KGgo=",
                "detail": "auto",
            },
        ],
    },
    {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Need the weather tool."}],
        "encrypted_content": "gAAAAAB...",
    },
    {
        "arguments": '{"city":"Paris"}',
        "call_id": "call_1",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {"call_id": "call_1", "output": "sunny, 21\u00b0C", "type": "function_call_output"},
    {
        "type": "custom_tool_call",
        "call_id": "call_2",
        "name": "run_sql",
        "input": "SELECT 1",
        "id": "ctc_1",
    },
    {"type": "custom_tool_call_output", "call_id": "call_2", "output": "1"},
    {
        "type": "computer_call",
        "id": "cu_1",
        "call_id": "call_3",
        "action": {"type": "click", "button": "left", "x": 10, "y": 20},
        "pending_safety_checks": [],
        "status": "completed",
    },
    {
        "type": "computer_call_output",
        "call_id": "call_3",
        "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"},
    },
    {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "paris weather"},
    },
    {
        "type": "file_search_call",
        "id": "fs_1",
        "queries": ["forecast"],
        "status": "completed",
        "results": None,
    },
    {
        "type": "mcp_list_tools",
        "id": "mcpl_1",
        "server_label": "weather",
        "tools": [{"name": "forecast", "input_schema": {"type": "object"}}],
    },
    {
        "type": "mcp_approval_request",
        "id": "mcpr_1",
        "server_label": "weather",
        "name": "forecast",
        "arguments": "{}",
    },
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {
        "type": "mcp_call",
        "id": "mcp_1",
        "server_label": "weather",
        "name": "forecast",
        "arguments": "{}",
        "output": "rain",
    },
    {
        "type": "local_shell_call",
        "id": "ls_1",
        "call_id": "call_4",
        "action": {"type": "exec", "command": ["ls"], "env": {}},
        "status": "completed",
    },
    {"type": "local_shell_call_output", "id": "call_4", "output": "README.md\n"},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": None},
    {
        "type": "code_interpreter_call",
        "id": "ci_1",
        "code": "print(1)",
        "container_id": "c_1",
        "outputs": [{"type": "logs", "logs": "1\n"}],
        "status": "completed",
    },
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
    {"type": "item_reference", "id": "msg_0"},
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {
                "type": "output_text",
                "text": "Sunny: 21\u00b0C \U0001f31e, nul \u0000 inside, quotes ' \" and \\",
                "annotations": [],
                "logprobs": [],
            }
        ],
    },
]

# What each item becomes: (role, message_type, tool_name).
COLUMNS = [
    ("user", "message", None),
    ("developer", "message", None),
    ("system", "message", None),
    ("user", "message", None),
    ("assistant", "reasoning", None),
    ("assistant", "function_call", "get_weather"),
    ("tool", "function_call_output", "get_weather"),
    ("assistant", "custom_tool_call", "run_sql"),
    ("tool", "custom_tool_call_output", "run_sql"),
    ("assistant", "computer_call", None),
    ("tool", "computer_call_output", None),
    ("assistant", "web_search_call", None),
    ("assistant", "file_search_call", None),
    ("assistant", "mcp_list_tools", None),
    ("assistant", "mcp_approval_request", "forecast"),
    ("user", "mcp_approval_response", None),
    ("assistant", "mcp_call", "forecast"),
    ("assistant", "local_shell_call", None),
    ("tool", "local_shell_call_output", None),
    ("assistant", "image_generation_call", None),
    ("assistant", "code_interpreter_call", None),
    ("assistant", "compaction", None),
    ("event", "item_reference", None),
    ("assistant", "message", None),
]


def same(a: object, b: object) -> bool:
    """Equal, with the same types and the same key order everywhere."""
    return json.dumps(a) == json.dumps(b) and a == b


async def test_it_is_a_session(store: Store, session_id: str) -> None:
    session = StatestoreSession(session_id, store)
    assert isinstance(session, Session)
    assert session.session_id == session_id
    assert session.session_settings == SessionSettings()


async def test_every_item_kind_comes_back_exactly_and_in_order(
    store: Store, session_id: str
) -> None:
    session = StatestoreSession(session_id, store)
    await session.add_items(ITEMS[:3])
    await session.add_items(ITEMS[3:])
    got = await session.get_items()
    assert same(got, ITEMS)
    # A session on another object (as in another process) reads the same.
    assert same(await StatestoreSession(session_id, store).get_items(), ITEMS)


async def test_items_become_queryable_messages_without_their_text_twice(
    store: Store, session_id: str
) -> None:
    await StatestoreSession(session_id, store).add_items(ITEMS)
    state = await store.load_state(session_id)
    messages = state.conversation_history
    assert [(m.role, m.message_type, m.tool_name) for m in messages] == COLUMNS
    assert all(m.content == "" for m in messages)
    assert [m.seq for m in messages] == list(range(len(ITEMS)))
    calls = await store.load_state(session_id, LoadOptions(tool_name="get_weather"))
    assert [m.payload for m in calls.conversation_history] == ITEMS[5:7]


async def test_an_output_takes_its_tool_name_from_a_call_stored_earlier(
    store: Store, session_id: str
) -> None:
    """A tool that waits for approval: its call is saved in one turn, its output in a
    later one."""
    session = StatestoreSession(session_id, store)
    await session.add_items([ITEMS[0], ITEMS[5]])
    await session.add_items([{"call_id": "unknown", "output": "?", "type": "function_call_output"}])
    await session.add_items([ITEMS[6]])
    messages = (await store.load_state(session_id)).conversation_history
    assert [m.tool_name for m in messages] == [None, "get_weather", None, "get_weather"]


async def test_get_items_limits_like_sqlite_session(store: Store, session_id: str) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(6)]
    session = StatestoreSession(session_id, store)
    assert await session.get_items() == []
    assert await session.get_items(limit=3) == []
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=10) == items
    assert await session.get_items(limit=0) == []
    assert await session.get_items(limit=-1) == items  # SQLite's LIMIT -1: no limit
    limited = StatestoreSession(session_id, store, session_settings={"limit": 4})
    assert limited.session_settings == SessionSettings(limit=4)
    assert await limited.get_items() == items[-4:]
    assert await limited.get_items(limit=1) == items[-1:]


async def test_pop_item_takes_the_newest_item_back(store: Store, session_id: str) -> None:
    session = StatestoreSession(session_id, store)
    assert await session.pop_item() is None  # no conversation yet
    await session.add_items(ITEMS[4:7])
    assert same(await session.pop_item(), ITEMS[6])
    assert same(await session.pop_item(), ITEMS[5])
    assert same(await session.get_items(), ITEMS[4:5])
    assert same(await session.pop_item(), ITEMS[4])
    assert await session.pop_item() is None  # an empty conversation
    await session.add_items(ITEMS[:1])
    assert await session.get_items() == ITEMS[:1]


async def test_clear_session_removes_this_session_only(store: Store, session_id: str) -> None:
    session = StatestoreSession(session_id, store)
    other = StatestoreSession(f"{session_id}-other", store)
    await session.clear_session()  # nothing stored yet: nothing to do
    await session.add_items(ITEMS[:2])
    await other.add_items(ITEMS[2:3])
    await session.clear_session()
    assert await session.get_items() == []
    with pytest.raises(ConversationNotFound):
        await store.load_state(session_id)
    assert await other.get_items() == ITEMS[2:3]
    await session.add_items(ITEMS[:1])
    assert await session.get_items() == ITEMS[:1]


async def test_a_users_session_is_invisible_to_another_user(store: Store, session_id: str) -> None:
    alice = StatestoreSession(session_id, store, user_id="alice")
    mallory = StatestoreSession(session_id, store, user_id="mallory")
    await alice.add_items(ITEMS[:2])
    assert (await store.load_state(session_id)).user_id == "alice"
    assert await mallory.get_items() == []
    assert await mallory.pop_item() is None
    with pytest.raises(ConversationNotFound):
        await mallory.add_items(ITEMS[2:3])
    await mallory.clear_session()
    assert await alice.get_items() == ITEMS[:2]


async def test_add_items_of_nothing_writes_nothing(store: Store, session_id: str) -> None:
    await StatestoreSession(session_id, store).add_items([])
    with pytest.raises(ConversationNotFound):
        await store.load_state(session_id)


async def test_an_item_that_is_not_json_is_refused_and_nothing_is_written(
    store: Store, session_id: str
) -> None:
    session = StatestoreSession(session_id, store)
    await session.add_items(ITEMS[:1])
    with pytest.raises(statestore.ValidationError):
        await session.add_items([ITEMS[1], {"role": "user", "content": object()}])  # type: ignore[list-item]
    assert await session.get_items() == ITEMS[:1]


@pytest.mark.parametrize(
    "item",
    [
        "hello",
        None,
        [{"role": "user", "content": "hi"}],
        ResponseFunctionToolCall(type="function_call", call_id="c", name="n", arguments="{}"),
    ],
    ids=["str", "none", "list", "sdk-model"],
)
async def test_an_item_that_is_not_a_dict_is_refused_by_position_before_anything_is_written(
    store: Store, session_id: str, item: Any
) -> None:
    """An item that is not a dict raises ValidationError naming its position and
    type, and nothing of the call is written."""
    session = StatestoreSession(session_id, store)
    await session.add_items(ITEMS[:1])
    with pytest.raises(statestore.ValidationError) as caught:
        await session.add_items([ITEMS[5], item])
    assert caught.value.field == "items[1]"
    assert type(item).__name__ in caught.value.reason
    assert await session.get_items() == ITEMS[:1]


def _nested(levels: int) -> Any:
    """A value ``levels`` lists deep."""
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [63, 64, 70])
async def test_an_item_nested_deeper_than_the_store_keeps_round_trips(
    store: Store, session_id: str, levels: int
) -> None:
    """An item nested past the store's depth limit (around it, and 70), which the
    SDK accepts, is kept as its JSON text: it comes back exactly, in its place,
    and its message stays queryable."""
    deep_call = {"type": "function_call", "call_id": "c", "name": "deep", "arguments": "{}"}
    deep_output = {"type": "function_call_output", "call_id": "c", "output": _nested(levels)}
    items = [{"role": "user", "content": _nested(levels)}, deep_call, deep_output, ITEMS[0]]
    session = StatestoreSession(session_id, store)
    await session.add_items(items)  # type: ignore[arg-type]
    assert await session.get_items() == items
    by_tool = await store.load_state(session_id, LoadOptions(tool_name="deep"))
    assert [(m.role, m.message_type) for m in by_tool.conversation_history] == [
        ("assistant", "function_call"),
        ("tool", "function_call_output"),
    ]
    assert await session.pop_item() == ITEMS[0]
    assert await session.pop_item() == deep_output


async def test_an_item_too_deep_and_not_json_is_refused_by_position(
    store: Store, session_id: str
) -> None:
    """Past the depth limit a value the store refuses is still refused, naming the
    item, and nothing is written."""
    session = StatestoreSession(session_id, store)
    bad = {"role": "user", "content": [float("nan"), _nested(70)]}
    with pytest.raises(statestore.ValidationError) as caught:
        await session.add_items([ITEMS[0], bad])  # type: ignore[list-item]
    assert caught.value.field.startswith("items[1].payload")
    assert await session.get_items() == []


async def test_messages_written_without_payload_read_as_plain_messages(
    store: Store, session_id: str
) -> None:
    """A conversation that other code also writes to (plain statestore messages)."""
    await store.update_state(
        session_id,
        statestore.StatePatch(append_messages=[statestore.Message(role="user", content="hi")]),
        create=True,
    )
    session = StatestoreSession(session_id, store)
    await session.add_items(ITEMS[:1])
    assert await session.get_items() == [{"role": "user", "content": "hi"}, ITEMS[0]]


class GatedStore(Store):
    """The same store (its open backend), whose update_state waits for ``release``."""

    __slots__ = ("release", "started")

    def __init__(self, store: Store) -> None:
        super().__init__(store.backend)
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def update_state(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        await self.release.wait()
        return await super().update_state(*args, **kwargs)


async def test_a_cancelled_write_still_ends_then_raises_the_cancellation(
    store: Store, session_id: str
) -> None:
    """Cancelled while its write runs, add_items lets the write end (its outcome is then
    known, as with SQLiteSession) and raises CancelledError after it."""
    gated = GatedStore(store)
    session = StatestoreSession(session_id, gated)
    task = asyncio.create_task(session.add_items(ITEMS[:1]))
    await gated.started.wait()
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the write
    gated.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await StatestoreSession(session_id, store).get_items() == ITEMS[:1]


async def test_concurrent_writers_lose_nothing(
    store: Store, session_id: str, request: pytest.FixtureRequest
) -> None:
    """Tasks on this loop and threads with loops of their own append to one session at
    once (the first ones race to create it)."""
    session = StatestoreSession(session_id, store)

    def in_thread(n: int) -> None:
        asyncio.run(session.add_items([{"role": "user", "content": f"thread {n}"}]))

    threads = [threading.Thread(target=in_thread, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        await asyncio.gather(
            *(session.add_items([{"role": "user", "content": f"task {n}"}]) for n in range(8))
        )
    finally:
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
    assert not any(thread.is_alive() for thread in threads)
    contents = sorted(item["content"] for item in await session.get_items())  # type: ignore[typeddict-item]
    assert contents == sorted([f"task {n}" for n in range(8)] + [f"thread {n}" for n in range(4)])


def test_a_sync_store_is_accepted(tmp_path: Any) -> None:
    with statestore.open_store_sync("sqlite", url=f"sqlite:///{tmp_path}/s.db") as sync_store:
        session = StatestoreSession("s", sync_store)
        assert session.store is sync_store.store
        asyncio.run(session.add_items(ITEMS[:2]))
        assert asyncio.run(session.get_items()) == ITEMS[:2]
        assert len(sync_store.load_state("s").conversation_history) == 2


def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError, match="Store or SyncStore"):
        StatestoreSession("s", object())


@pytest.mark.parametrize(
    ("session_id", "user_id", "field"),
    [
        ("user 42 ", None, "session_id"),
        ("", None, "session_id"),
        ("x" * 256, None, "session_id"),
        ("a\tb", None, "session_id"),
        ("s", " bob", "user_id"),
        ("s", "", "user_id"),
    ],
)
def test_ids_outside_statestores_rules_are_refused_when_the_session_is_built(
    tmp_path: Any, session_id: str, user_id: str | None, field: str
) -> None:
    """A session id or user id the store would refuse raises ValidationError naming
    it when the session is built, not at its first call."""
    with statestore.open_store_sync("sqlite", url=f"sqlite:///{tmp_path}/s.db") as sync_store:
        with pytest.raises(statestore.ValidationError) as caught:
            StatestoreSession(session_id, sync_store, user_id=user_id)
        assert caught.value.field == field
