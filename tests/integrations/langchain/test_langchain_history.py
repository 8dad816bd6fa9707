"""StatestoreChatMessageHistory on SQLite and PostgreSQL: every message kind comes back
equal and of its class, sync and async, over a Store and a SyncStore; the stored rows
are queryable; what cannot come back is refused before anything is written; and
RunnableWithMessageHistory with a fake chat model remembers the first turn."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

import statestore
from statestore import (
    ConversationNotFound,
    CorruptState,
    LoadOptions,
    Message,
    StatePatch,
    ValidationError,
)
from statestore.integrations.langchain import StatestoreChatMessageHistory
from statestore.testing.plugin import BackendTarget

from .kinds import KINDS, MESSAGES

# RunnableWithMessageHistory is what these tests exercise; langchain-core 1.x warns
# that it is deprecated in favour of LangGraph persistence (still there until 2.0).
pytestmark = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated:"
    "langchain_core._api.deprecation.LangChainDeprecationWarning"
)


def _session() -> str:
    return f"lc-{uuid.uuid4().hex}"


def _same(got: list[BaseMessage], expected: list[BaseMessage]) -> None:
    assert got == expected
    assert [type(m) for m in got] == [type(m) for m in expected]
    assert [m.model_dump() for m in got] == [m.model_dump() for m in expected]


# -- round trips ---------------------------------------------------------------------


async def test_every_kind_round_trips_async(store: statestore.Store) -> None:
    """aadd_messages then aget_messages gives every kind back equal, of its class, in
    one write."""
    session = _session()
    history = StatestoreChatMessageHistory(session, store)
    await history.aadd_messages(MESSAGES)
    _same(await history.aget_messages(), MESSAGES)
    _same(await StatestoreChatMessageHistory(session, store).aget_messages(), MESSAGES)
    assert (await store.load_state(session)).version == 1


def test_every_kind_round_trips_sync(sync_store: statestore.SyncStore) -> None:
    """add_messages / add_message then messages, over a SyncStore, give every kind back."""
    session = _session()
    history = StatestoreChatMessageHistory(session, sync_store)
    history.add_messages(MESSAGES[:5])
    for message in MESSAGES[5:]:
        history.add_message(message)
    _same(history.messages, MESSAGES)
    _same(StatestoreChatMessageHistory(session, sync_store).messages, MESSAGES)
    assert sync_store.load_state(session).version == 1 + len(MESSAGES) - 5


async def test_async_methods_over_a_sync_store(sync_store: statestore.SyncStore) -> None:
    """The async methods work over a SyncStore too (through its Store)."""
    history = StatestoreChatMessageHistory(_session(), sync_store)
    await history.aadd_messages(MESSAGES)
    _same(await history.aget_messages(), MESSAGES)
    await history.aclear()
    assert await history.aget_messages() == []


async def test_sync_methods_over_an_async_store(
    store: statestore.Store, backend_target: BackendTarget
) -> None:
    """The sync methods work over an async Store, called from a thread with no loop and
    from inside a running loop."""
    history = StatestoreChatMessageHistory(_session(), store)
    await asyncio.to_thread(history.add_messages, MESSAGES[:3])
    history.add_messages(MESSAGES[3:])  # inside this test's running loop
    _same(await asyncio.to_thread(lambda: history.messages), MESSAGES)
    _same(history.messages, MESSAGES)
    history.clear()
    assert await history.aget_messages() == []


def test_sync_methods_over_an_async_store_from_plain_code(sync_store: statestore.SyncStore) -> None:
    """Plain sync code (no loop anywhere) can use a history over the async Store."""
    history = StatestoreChatMessageHistory(_session(), sync_store.store)
    history.add_messages(MESSAGES)
    _same(history.messages, MESSAGES)
    history.clear()
    assert history.messages == []


async def test_concurrent_first_appends_are_all_kept(store: statestore.Store) -> None:
    """Concurrent aadd_messages to a session that does not exist yet: one creates it,
    none is lost, each call's messages stay together."""
    session = _session()

    async def add(n: int) -> None:
        await StatestoreChatMessageHistory(session, store).aadd_messages(
            [HumanMessage(f"q{n}"), AIMessage(f"a{n}")]
        )

    await asyncio.gather(*(add(n) for n in range(10)))
    got = await StatestoreChatMessageHistory(session, store).aget_messages()
    pairs = [(got[i].content, got[i + 1].content) for i in range(0, len(got), 2)]
    assert sorted(pairs) == sorted((f"q{n}", f"a{n}") for n in range(10))
    assert (await store.load_state(session)).version == 10


def test_many_threads_append_to_one_history(sync_store: statestore.SyncStore) -> None:
    """Appends from several threads at once are all kept, each call's messages together."""
    session = _session()

    def add(n: int) -> None:
        StatestoreChatMessageHistory(session, sync_store).add_messages(
            [HumanMessage(f"q{n}"), AIMessage(f"a{n}")]
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(16)))
    got = StatestoreChatMessageHistory(session, sync_store).messages
    assert len(got) == 32
    pairs = {(got[i].content, got[i + 1].content) for i in range(0, 32, 2)}
    assert pairs == {(f"q{n}", f"a{n}") for n in range(16)}


# -- the conversation behind it ------------------------------------------------------


async def test_missing_conversation_reads_empty_and_clear_deletes(store: statestore.Store) -> None:
    """A history that was never written reads []; clear deletes the conversation."""
    session = _session()
    history = StatestoreChatMessageHistory(session, store)
    assert await history.aget_messages() == []
    await history.aclear()  # nothing to clear: no error
    await history.aadd_messages([])  # nothing to add: nothing written
    with pytest.raises(ConversationNotFound):
        await store.load_state(session)
    await history.aadd_messages([HumanMessage("hi")])
    assert (await store.load_state(session)).history_total == 1
    await history.aclear()
    with pytest.raises(ConversationNotFound):
        await store.load_state(session)


async def test_stored_rows_are_queryable(store: statestore.Store) -> None:
    """Each message is one row with its role, message_type and tool_name set, an empty
    content, and the LangChain message as payload."""
    session = _session()
    await StatestoreChatMessageHistory(session, store).aadd_messages(MESSAGES)
    rows = (await store.load_state(session)).conversation_history
    assert [(m.role, m.message_type, m.tool_name) for m in rows] == [
        (role, message_type, tool_name) for _, role, message_type, tool_name in KINDS
    ]
    assert all(m.content == "" for m in rows)
    assert [m.payload for m in rows] == [{"type": m.type, "data": m.model_dump()} for m in MESSAGES]
    ai = await store.load_state(session, LoadOptions(message_types=["ai"]))
    assert [m.seq for m in ai.conversation_history] == [3, 4]
    search = await store.load_state(session, LoadOptions(tool_name="search"))
    assert [m.message_type for m in search.conversation_history] == [
        "ai",
        "tool",
        "AIMessageChunk",
        "AIMessageChunk",
    ]


async def test_user_owns_the_conversation(store: statestore.Store) -> None:
    """With user_id the conversation belongs to that user; another user's history of
    the same session sees nothing and cannot write to it."""
    session = _session()
    await StatestoreChatMessageHistory(session, store, user_id="u1").aadd_messages(
        [HumanMessage("mine")]
    )
    other = StatestoreChatMessageHistory(session, store, user_id="u2")
    assert await other.aget_messages() == []
    with pytest.raises(ConversationNotFound):
        await other.aadd_messages([HumanMessage("theirs")])
    assert (await store.load_state(session, user_id="u1")).user_id == "u1"
    _same(
        await StatestoreChatMessageHistory(session, store, user_id="u1").aget_messages(),
        [HumanMessage("mine")],
    )


async def test_messages_written_by_other_code_read_as_plain_messages(
    store: statestore.Store,
) -> None:
    """Messages stored without a payload (by the agent loop) read by role."""
    session = _session()
    await store.update_state(
        session,
        StatePatch(
            append_messages=[
                Message(role="system", content="s"),
                Message(role="user", content="u"),
                Message(role="assistant", content="a"),
                Message(role="tool", content="t"),
            ]
        ),
        create=True,
    )
    _same(
        await StatestoreChatMessageHistory(session, store).aget_messages(),
        [SystemMessage("s"), HumanMessage("u"), AIMessage("a"), ChatMessage("t", role="tool")],
    )


async def test_a_foreign_payload_is_reported_as_corrupt(store: statestore.Store) -> None:
    """A payload that is not a LangChain message raises CorruptState naming the session."""
    session = _session()
    await store.update_state(
        session,
        StatePatch(append_messages=[Message(role="user", content="", payload={"kind": "x"})]),
        create=True,
    )
    with pytest.raises(CorruptState, match=session):
        await StatestoreChatMessageHistory(session, store).aget_messages()


# -- refusals ------------------------------------------------------------------------


class _MyHuman(HumanMessage):
    pass


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (AIMessage("", tool_calls=[{"name": "f", "args": {"x": math.nan}, "id": "1"}]), "payload"),
        (AIMessage("", tool_calls=[{"name": "f", "args": {"x": {1, 2}}, "id": "1"}]), "payload"),
        (HumanMessage("big", additional_kwargs={"n": 2**64}), "payload"),
        (HumanMessage("lone \ud800 surrogate"), "payload"),
        (_MyHuman("mine"), "messages[1]"),
    ],
    ids=["nan", "set", "int-over-64-bits", "lone-surrogate", "subclass"],
)
async def test_what_cannot_come_back_is_refused(
    store: statestore.Store, message: BaseMessage, field: str
) -> None:
    """A message that could not come back equal raises ValidationError naming it, and
    nothing of the call is written."""
    history = StatestoreChatMessageHistory(_session(), store)
    await history.aadd_messages([HumanMessage("before")])
    with pytest.raises(ValidationError) as caught:
        await history.aadd_messages([HumanMessage("ok"), message])
    assert caught.value.field.startswith("messages[1]")
    assert field in caught.value.field
    _same(await history.aget_messages(), [HumanMessage("before")])


def _nested(levels: int) -> Any:
    """A value ``levels`` dicts deep."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [59, 60, 70])
async def test_a_message_nested_deeper_than_the_store_keeps_round_trips(
    store: statestore.Store, levels: int
) -> None:
    """Tool-call arguments nested past the store's depth limit (the payload adds
    four levels: around the limit, and 70) are kept as JSON text and come back
    equal, of their class, in their place; the message stays queryable."""
    session = _session()
    deep = AIMessage("", tool_calls=[{"name": "t", "args": _nested(levels), "id": "1"}])
    messages = [HumanMessage("before"), deep, HumanMessage("after")]
    history = StatestoreChatMessageHistory(session, store)
    await history.aadd_messages(messages)
    _same(await history.aget_messages(), messages)
    by_tool = await store.load_state(session, LoadOptions(tool_name="t"))
    assert [m.message_type for m in by_tool.conversation_history] == ["ai"]


async def test_a_message_too_deep_and_not_json_is_refused(store: statestore.Store) -> None:
    """Past the depth limit a value the store refuses is still refused, naming the
    message, and nothing is written."""
    history = StatestoreChatMessageHistory(_session(), store)
    bad = AIMessage(
        "", tool_calls=[{"name": "t", "args": {"x": math.nan, "d": _nested(70)}, "id": "1"}]
    )
    with pytest.raises(ValidationError) as caught:
        await history.aadd_messages([HumanMessage("ok"), bad])
    assert caught.value.field.startswith("messages[1].payload")
    assert await history.aget_messages() == []


def test_store_must_be_a_store() -> None:
    """Anything but a Store or SyncStore is refused when the history is built."""
    with pytest.raises(TypeError, match="Store or SyncStore"):
        StatestoreChatMessageHistory("s", object())  # type: ignore[arg-type]


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
def test_ids_outside_statestores_rules_are_refused_when_the_history_is_built(
    tmp_path: Any, session_id: str, user_id: str | None, field: str
) -> None:
    """A session id or user id the store would refuse raises ValidationError naming
    it when the history is built, not at its first call."""
    with statestore.open_store_sync("sqlite", url=f"sqlite:///{tmp_path}/s.db") as sync_store:
        with pytest.raises(ValidationError) as caught:
            StatestoreChatMessageHistory(session_id, sync_store, user_id=user_id)
        assert caught.value.field == field


# -- RunnableWithMessageHistory ------------------------------------------------------


class _ModelInputs(BaseCallbackHandler):
    """Records the messages each chat model call was given."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.calls.extend(messages)


def _chain(
    get_history: Callable[[str], StatestoreChatMessageHistory],
) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are terse."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    model = GenericFakeChatModel(messages=iter(["Hello Ada.", "You are Ada."]))
    return RunnableWithMessageHistory(
        prompt | model,
        get_history,
        input_messages_key="question",
        history_messages_key="history",
    )


def _check_remembered(
    inputs: _ModelInputs, stored: list[BaseMessage], reply: type[BaseMessage] = AIMessage
) -> None:
    assert [m.content for m in inputs.calls[0]] == ["You are terse.", "I am Ada."]
    assert [m.content for m in inputs.calls[1]] == [
        "You are terse.",
        "I am Ada.",
        "Hello Ada.",
        "Who am I?",
    ]
    assert [(type(m), m.content) for m in stored] == [
        (HumanMessage, "I am Ada."),
        (reply, "Hello Ada."),
        (HumanMessage, "Who am I?"),
        (reply, "You are Ada."),
    ]
    assert isinstance(stored[1], AIMessage) and stored[1].id is not None


async def test_runnable_with_message_history_async(store: statestore.Store) -> None:
    """ainvoke twice: the second model call is given the first turn, read back from
    the database, and both turns are stored."""
    session = _session()
    chain = _chain(lambda session_id: StatestoreChatMessageHistory(session_id, store))
    inputs = _ModelInputs()
    config = {"configurable": {"session_id": session}, "callbacks": [inputs]}
    first = await chain.ainvoke({"question": "I am Ada."}, config)
    second = await chain.ainvoke({"question": "Who am I?"}, config)
    assert (first.content, second.content) == ("Hello Ada.", "You are Ada.")
    stored = await StatestoreChatMessageHistory(session, store).aget_messages()
    _check_remembered(inputs, stored)
    assert stored[3] == second


def test_runnable_with_message_history_sync(sync_store: statestore.SyncStore) -> None:
    """invoke twice (sync, over a SyncStore): the second turn remembers the first."""
    session = _session()
    chain = _chain(lambda session_id: StatestoreChatMessageHistory(session_id, sync_store))
    inputs = _ModelInputs()
    config = {"configurable": {"session_id": session}, "callbacks": [inputs]}
    chain.invoke({"question": "I am Ada."}, config)
    second = chain.invoke({"question": "Who am I?"}, config)
    stored = StatestoreChatMessageHistory(session, sync_store).messages
    _check_remembered(inputs, stored)
    assert stored[3] == second


def test_runnable_with_message_history_sync_over_async_store(
    sync_store: statestore.SyncStore,
) -> None:
    """invoke twice with the history over the async Store: the same."""
    session = _session()
    chain = _chain(lambda session_id: StatestoreChatMessageHistory(session_id, sync_store.store))
    inputs = _ModelInputs()
    config = {"configurable": {"session_id": session}, "callbacks": [inputs]}
    chain.invoke({"question": "I am Ada."}, config)
    chain.invoke({"question": "Who am I?"}, config)
    _check_remembered(inputs, StatestoreChatMessageHistory(session, sync_store).messages)


async def test_runnable_with_message_history_streams(store: statestore.Store) -> None:
    """astream twice: the streamed reply is stored whole (the chunks added up, an
    AIMessageChunk) and remembered."""
    session = _session()
    chain = _chain(lambda session_id: StatestoreChatMessageHistory(session_id, store))
    inputs = _ModelInputs()
    config = {"configurable": {"session_id": session}, "callbacks": [inputs]}
    for question in ("I am Ada.", "Who am I?"):
        chunks = [chunk async for chunk in chain.astream({"question": question}, config)]
        assert chunks
    stored = await StatestoreChatMessageHistory(session, store).aget_messages()
    _check_remembered(inputs, stored, reply=AIMessageChunk)


# -- the event loop ------------------------------------------------------------------


class _BlockingHistory(StatestoreChatMessageHistory):
    """A history that blocks its caller's event loop: what the check below must catch."""

    async def aget_messages(self) -> list[BaseMessage]:
        time.sleep(0.001)  # noqa: ASYNC251 (the blocking call the check must catch)
        return await super().aget_messages()


@pytest.mark.parametrize("history", [StatestoreChatMessageHistory, _BlockingHistory])
async def test_no_blocking_call_on_the_event_loop(
    store: statestore.Store, history: type[StatestoreChatMessageHistory]
) -> None:
    """Under langchain-core's own blocking-call check (blockbuster, as its conftest.py
    sets it up), ainvoke through the history makes no blocking call on the caller's
    event loop; a history that does is caught, so the check can fail."""
    blockbuster = pytest.importorskip("blockbuster", reason="blockbuster is in the dev extra")
    session = _session()
    chain = _chain(lambda session_id: history(session_id, store))
    config = {"configurable": {"session_id": session}}
    with blockbuster.blockbuster_ctx("langchain_core"):
        if history is _BlockingHistory:
            with pytest.raises(blockbuster.BlockingError):
                await chain.ainvoke({"question": "I am Ada."}, config)
            return
        await chain.ainvoke({"question": "I am Ada."}, config)
        await chain.ainvoke({"question": "Who am I?"}, config)
    assert len(await history(session, store).aget_messages()) == 4
