"""StatestoreSessionService on SQLite and PostgreSQL: what it stores where, ADK's state
scopes, ids that need escaping, NUL characters, the stale-session check under
concurrency, and reads and listings answered by the database."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.session import Session
from google.genai import types

import statestore
from statestore import LoadOptions
from statestore.integrations.google_adk import StatestoreSessionService


@pytest.fixture
def service(adk_store: statestore.Store) -> StatestoreSessionService:
    return StatestoreSessionService(adk_store)


class _Recording:
    """A store that records the calls made to it."""

    def __init__(self, store: statestore.Store) -> None:
        self.store = store
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return await method(*args, **kwargs)

        return recorded


def _event(author: str = "user", text: str | None = None, **kwargs: Any) -> Event:
    content = None
    if text is not None:
        role = "user" if author == "user" else "model"
        content = types.Content(role=role, parts=[types.Part(text=text)])
    return Event(invocation_id="inv", author=author, content=content, **kwargs)


async def test_one_conversation_per_session_with_its_state_as_metadata(
    service: StatestoreSessionService, adk_store: statestore.Store
) -> None:
    session = await service.create_session(
        app_name="shop",
        user_id="u1",
        session_id="s1",
        state={"cart": ["apple"], "app:currency": "EUR", "user:name": "Ada", "temp:x": 1},
    )
    assert session.state == {"cart": ["apple"], "app:currency": "EUR", "user:name": "Ada"}
    stored = await adk_store.load_state(
        "adk/shop/u1/s1", LoadOptions(shared=frozenset({"adk:app/shop", "adk:user/shop/u1"}))
    )
    assert stored.user_id == "u1"
    assert stored.metadata["cart"] == ["apple"]
    assert set(stored.metadata) == {"cart", "temp:last_update_time"}
    assert stored.shared == {
        "adk:app/shop": {"currency": "EUR"},
        "adk:user/shop/u1": {"name": "Ada"},
    }


async def test_an_event_is_one_message_written_with_its_state_in_one_transaction(
    service: StatestoreSessionService, adk_store: statestore.Store
) -> None:
    session = await service.create_session(app_name="shop", user_id="u1", session_id="s1")
    call = types.Part(function_call=types.FunctionCall(name="get_price", args={"item": "a"}))
    event = Event(
        invocation_id="inv1",
        author="a_very_long_agent_name_that_does_not_fit_in_a_role",
        content=types.Content(role="model", parts=[call]),
        actions=EventActions(state_delta={"k": 1, "app:a": 2, "user:u": 3, "temp:t": 4}),
    )
    await service.append_event(session, event)
    stored = await adk_store.load_state("adk/shop/u1/s1")
    assert stored.version == 2  # created, then one write for the event and its state
    (message,) = stored.conversation_history
    assert (message.role, message.content, message.message_type, message.tool_name) == (
        "agent",
        "",
        "adk_event",
        "get_price",
    )
    assert message.timestamp.timestamp() == pytest.approx(event.timestamp, abs=1e-6)
    assert message.payload == event.model_dump(mode="json", exclude_none=True)
    assert "temp:t" not in message.payload["actions"]["state_delta"]
    assert stored.metadata["k"] == 1
    shared = await adk_store.load_shared(["adk:app/shop", "adk:user/shop/u1"])
    assert shared == {"adk:app/shop": {"a": 2}, "adk:user/shop/u1": {"u": 3}}
    assert session.state == {"k": 1, "app:a": 2, "user:u": 3, "temp:t": 4}
    by_tool = await adk_store.load_state("adk/shop/u1/s1", LoadOptions(tool_name="get_price"))
    assert len(by_tool.conversation_history) == 1


async def test_events_of_every_kind_come_back_equal(service: StatestoreSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    events = [
        _event("user", "What does a kilo of apples cost?"),
        Event(
            invocation_id="inv",
            author="shopper",
            content=types.Content(
                role="model",
                parts=[
                    types.Part(text="Let me look.", thought=True),
                    types.Part(
                        function_call=types.FunctionCall(
                            id="call-1", name="price", args={"item": "apple", "kg": 1.5}
                        )
                    ),
                ],
            ),
            long_running_tool_ids={"call-1"},
        ),
        Event(
            invocation_id="inv",
            author="shopper",
            content=types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id="call-1", name="price", response={"eur": 3.25, "ok": True}
                        )
                    )
                ],
            ),
        ),
        Event(
            invocation_id="inv",
            author="shopper",
            content=types.Content(
                role="model",
                parts=[types.Part.from_bytes(data=b"\x00\x01png", mime_type="image/png")],
            ),
            actions=EventActions(state_delta={"last": {"eur": 3.25}}, transfer_to_agent="x"),
            custom_metadata={"trace": [1, 2.5, None, "\x00nul"]},
        ),
    ]
    for event in events:
        await service.append_event(session, event)
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None
    assert got.events == events
    assert got == session


@pytest.mark.parametrize("text", ["plain", "nul \x00 inside", "\x00", "temp:json:x"])
async def test_what_the_store_refuses_as_it_is_round_trips_escaped(
    service: StatestoreSessionService, text: str
) -> None:
    """ADK state and events may hold what the store refuses as it is (NUL characters,
    which PostgreSQL cannot store in text or JSONB; integers beyond 64 bits; NaN and
    infinities); the adapter escapes them, and what looks like an escape, exactly."""
    odd = {"big": 2**70, "inf": float("inf"), "small": -(2**64)}
    state = {
        "plain": text,
        f"key{text}": {"nested": [text]},
        f"w{text}": {"$statestore.json": text},
        "odd": odd,
        f"app:{text}": text,
        "app:odd": odd,
        f"user:{text}": [text],
        "user:wrapper": {"$statestore.json": text},
    }
    session = await service.create_session(app_name="app", user_id="u", session_id="s", state=state)
    assert session.state == state
    delta = {"later": text, "app:b": text}
    event = _event(
        "user", text, actions=EventActions(state_delta=delta), custom_metadata={"n": 2**70}
    )
    await service.append_event(session, event)
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None
    assert got.state == {**state, "later": text, "app:b": text}
    assert got.events == session.events
    assert got.events[0].content is not None
    assert got.events[0].content.parts is not None
    assert got.events[0].content.parts[0].text == text
    assert got.events[0].custom_metadata == {"n": 2**70}
    listed = (await service.list_sessions(app_name="app", user_id="u")).sessions
    assert [s.state for s in listed] == [got.state]
    user_state = await service.get_user_state(app_name="app", user_id="u")
    assert user_state == {text: [text], "wrapper": {"$statestore.json": text}}
    nan = await service.create_session(
        app_name="app", user_id="u", state={"nan": float("nan"), "app:nan": float("nan")}
    )
    got = await service.get_session(app_name="app", user_id="u", session_id=nan.id)
    assert got is not None
    assert math.isnan(got.state["nan"]) and math.isnan(got.state["app:nan"])


async def test_nan_and_infinities_in_an_event_come_back_as_none_and_in_state_as_they_are(
    service: StatestoreSessionService,
) -> None:
    """What the docs say of NaN and infinities: ADK's JSON form of an event holds null
    for them (ADK's database service gives None back too); state keeps them."""
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    odd = {"nan": math.nan, "inf": math.inf, "big": 2**70}
    event = _event(custom_metadata=odd, actions=EventActions(state_delta={"nan": math.nan}))
    await service.append_event(session, event)
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None
    assert got.events[0].custom_metadata == {"nan": None, "inf": None, "big": 2**70}
    assert math.isnan(got.state["nan"])


def _nested(levels: int) -> Any:
    """A value ``levels`` dicts deep."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [63, 64, 70])
async def test_state_nested_deeper_than_the_store_allows_round_trips_escaped(
    service: StatestoreSessionService, levels: int
) -> None:
    """State of every scope nested past the store's depth limit (around its 64
    levels, and 70) is stored escaped, as ADK's services store it, from
    create_session and from an event's delta."""
    deep = _nested(levels)
    state = {"k": deep, "user:k": deep, "app:k": deep}
    session = await service.create_session(app_name="app", user_id="u", state=state)
    delta = {"later": deep, "user:later": deep, "app:later": deep}
    await service.append_event(session, _event(actions=EventActions(state_delta=delta)))
    expected = {**state, **delta}
    assert session.state == expected
    got = await service.get_session(app_name="app", user_id="u", session_id=session.id)
    assert got is not None and got.state == expected
    listed = (await service.list_sessions(app_name="app", user_id="u")).sessions
    assert [s.state for s in listed] == [expected]
    assert await service.get_user_state(app_name="app", user_id="u") == {"k": deep, "later": deep}


async def test_app_user_and_session_state_scopes(service: StatestoreSessionService) -> None:
    s1 = await service.create_session(
        app_name="app", user_id="u1", session_id="s1", state={"app:k": "a", "user:k": "u1"}
    )
    await service.append_event(
        s1, _event(actions=EventActions(state_delta={"own": 1, "user:more": 2, "app:k2": 3}))
    )
    s2 = await service.create_session(app_name="app", user_id="u1", session_id="s2")
    assert s2.state == {"app:k": "a", "app:k2": 3, "user:k": "u1", "user:more": 2}
    other_user = await service.create_session(app_name="app", user_id="u2", session_id="s1")
    assert other_user.state == {"app:k": "a", "app:k2": 3}
    other_app = await service.create_session(app_name="app2", user_id="u1", session_id="s1")
    assert other_app.state == {}
    assert await service.get_user_state(app_name="app", user_id="u1") == {"k": "u1", "more": 2}
    await service.delete_session(app_name="app", user_id="u1", session_id="s1")
    again = await service.get_session(app_name="app", user_id="u1", session_id="s2")
    assert again is not None and again.state["user:more"] == 2


@pytest.mark.parametrize(
    ("app", "user", "session_id", "conversation_id"),
    [
        ("my app", "ada@example.com", "s-1", "adk/my app/ada@example.com/s-1"),
        ("a/b", "u%1", "s/2", "adk/a%2Fb/u%251/s%2F2"),
        ("é", "tab\there ", "s 3", "adk/é/tab%09here%20/s 3"),
        ("", "", "x", "adk///x"),
        (" a", " bob", "s", "adk/%20a/%20bob/s"),
        ("app", "\u3000bob\u3000", "s", "adk/app/%E3%80%80bob%E3%80%80/s"),
        ("app", " ", "s", "adk/app/%20/s"),
    ],
)
async def test_ids_are_escaped_unambiguously(
    service: StatestoreSessionService,
    adk_store: statestore.Store,
    app: str,
    user: str,
    session_id: str,
    conversation_id: str,
) -> None:
    await service.create_session(
        app_name=app, user_id=user, session_id=session_id, state={"user:k": 1}
    )
    # A look-alike in a neighbouring app and user must not show up.
    await service.create_session(app_name=app + "x", user_id=user, session_id=session_id)
    await service.create_session(app_name=app, user_id=user + "x", session_id=session_id)
    stored = await adk_store.load_state(conversation_id)
    assert stored.metadata["temp:last_update_time"] > 0
    assert stored.user_id == (conversation_id.split("/")[2] or None)
    listed = (await service.list_sessions(app_name=app, user_id=user)).sessions
    assert [(s.app_name, s.user_id, s.id, s.state) for s in listed] == [
        (app, user, session_id, {"user:k": 1})
    ]
    every_user = (await service.list_sessions(app_name=app)).sessions
    assert sorted(s.user_id for s in every_user) == sorted([user, user + "x"])
    got = await service.get_session(app_name=app, user_id=user, session_id=session_id)
    assert got is not None and got.state == {"user:k": 1}


async def test_listing_takes_wildcard_characters_literally(
    service: StatestoreSessionService,
) -> None:
    apps = ["a_", "ab", "a%", "a%25", "a\\", "a\\b"]
    for app in apps:
        await service.create_session(app_name=app, user_id="u", session_id="s")
    for app in apps:
        listed = (await service.list_sessions(app_name=app)).sessions
        assert [(s.user_id, s.id) for s in listed] == [("u", "s")], app


async def test_ids_too_long_for_the_store_are_refused(service: StatestoreSessionService) -> None:
    with pytest.raises(ValueError, match="255"):
        await service.create_session(app_name="a" * 100, user_id="u" * 100, session_id="s" * 60)


@pytest.mark.parametrize(
    ("app", "user", "too_long"),
    [
        ("a" * 120, "u" * 126, "user: state namespace of 256 characters"),
        ("a" * 248, "", "app: state namespace of 256 characters"),
    ],
    ids=["user-namespace", "app-namespace"],
)
async def test_namespaces_too_long_for_the_store_are_refused_before_anything_is_written(
    service: StatestoreSessionService,
    adk_store: statestore.Store,
    app: str,
    user: str,
    too_long: str,
) -> None:
    """A conversation id that fits with a namespace that does not raises ValueError
    from every call, and nothing is written: the session does not half exist."""
    state = {"k": 1, "app:k": 2, "user:k": 3}
    for _ in range(2):  # the second time too: no AlreadyExistsError
        with pytest.raises(ValueError, match=too_long):
            await service.create_session(app_name=app, user_id=user, session_id="s", state=state)
    assert await adk_store.list_conversations() == []
    hand_built = Session(app_name=app, user_id=user, id="s")
    with pytest.raises(ValueError, match=too_long):
        await service.append_event(hand_built, _event(actions=EventActions(state_delta=state)))
    assert hand_built.state == {}
    assert await adk_store.list_conversations() == []
    with pytest.raises(ValueError, match=too_long):
        await service.get_session(app_name=app, user_id=user, session_id="s")
    if user:
        with pytest.raises(ValueError, match=too_long):
            await service.get_user_state(app_name=app, user_id=user)
        await service.create_session(app_name=app, user_id="other", session_id="s")
        listed = (await service.list_sessions(app_name=app)).sessions
        assert [(s.user_id, s.id) for s in listed] == [("other", "s")]


async def test_padded_and_blank_session_ids(service: StatestoreSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="  s1  ")
    assert session.id == "s1"
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name="app", user_id="u", session_id="s1 ")
    assert await service.get_session(app_name="app", user_id="u", session_id=" s1") is not None
    blank = await service.create_session(app_name="app", user_id="u", session_id="   ")
    assert blank.id.strip() and blank.id != "s1"


async def test_concurrent_creates_of_one_id_leave_one_winner(
    service: StatestoreSessionService,
) -> None:
    results = await asyncio.gather(
        *(
            service.create_session(app_name="app", user_id="u", session_id="race", state={"by": i})
            for i in range(4)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExistsError) for r in results if r not in winners)
    got = await service.get_session(app_name="app", user_id="u", session_id="race")
    assert got is not None and got.state == winners[0].state


async def test_a_stale_session_object_cannot_append(
    service: StatestoreSessionService, adk_store: statestore.Store
) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    stale = session.model_copy(deep=True)
    await service.append_event(session, _event("user", "first"))
    before = await adk_store.load_state("adk/app/u/s")
    with pytest.raises(StaleSessionError, match="modified in storage"):
        await service.append_event(
            stale, _event("user", "lost", actions=EventActions(state_delta={"lost": 1}))
        )
    after = await adk_store.load_state("adk/app/u/s")
    assert after.version == before.version
    assert after.history_total == 1 and "lost" not in after.metadata
    # The session that wrote last goes on; a fresh read does too.
    await service.append_event(session, _event("user", "second"))
    fresh = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert fresh is not None
    await service.append_event(fresh, _event("user", "third"))


async def test_concurrent_appends_from_copies_of_one_read_leave_one_winner(
    service: StatestoreSessionService,
) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s")
    for round_ in range(5):
        latest = await service.get_session(app_name="app", user_id="u", session_id="s")
        assert latest is not None
        copies = [latest.model_copy(deep=True) for _ in range(3)]
        results = await asyncio.gather(
            *(
                service.append_event(
                    copy, _event(actions=EventActions(state_delta={f"r{round_}": i}))
                )
                for i, copy in enumerate(copies)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Event) for r in results) == 1
        assert sum(isinstance(r, StaleSessionError) for r in results) == 2
    final = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert final is not None
    assert len(final.events) == 5
    assert all(f"r{i}" in final.state for i in range(5))


@pytest.mark.parametrize("appended_before", [0, 1])
async def test_a_session_object_from_before_a_delete_and_create_cannot_append(
    service: StatestoreSessionService, adk_store: statestore.Store, appended_before: int
) -> None:
    """A session deleted and created again under its id starts again at version 1; a
    session object read before the delete is still stale there, as with ADK's
    database service, and writes nothing into the new session."""
    old = await service.create_session(app_name="app", user_id="u", session_id="s")
    for _ in range(appended_before):
        await service.append_event(old, _event("user", "old"))
    await service.delete_session(app_name="app", user_id="u", session_id="s")
    new = await service.create_session(app_name="app", user_id="u", session_id="s")
    for _ in range(appended_before):
        await service.append_event(new, _event("user", "new"))
    before = await adk_store.load_state("adk/app/u/s")
    with pytest.raises(StaleSessionError):
        await service.append_event(
            old, _event("user", "lost", actions=EventActions(state_delta={"lost": 1}))
        )
    after = await adk_store.load_state("adk/app/u/s")
    assert after.version == before.version and after.metadata == before.metadata
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None and got.events == new.events and "lost" not in got.state
    await service.append_event(new, _event("user", "goes on"))


async def test_concurrent_appends_through_one_session_object_all_land_in_order(
    service: StatestoreSessionService,
) -> None:
    """Appends racing on one session object (ADK appends from background tasks too)
    all land, in the order they were made, as with ADK's own services."""
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    events = [_event(actions=EventActions(state_delta={f"k{i}": i})) for i in range(5)]
    results = await asyncio.gather(*(service.append_event(session, e) for e in events))
    assert results == events
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None
    assert got.events == session.events == events
    assert got.state == session.state == {f"k{i}": i for i in range(5)}
    assert service._append_locks == {}  # nothing left behind once the appends are done
    await service.append_event(session, _event())


async def test_a_session_built_by_hand_appends_only_when_current(
    service: StatestoreSessionService,
) -> None:
    created = await service.create_session(app_name="app", user_id="u", session_id="s")
    later = created.last_update_time + 5
    await service.append_event(created, _event("user", "hi", timestamp=later))
    # No revision marker: judged by last update time and last event, as ADK's
    # database service judges such objects.
    current = Session(
        app_name="app",
        user_id="u",
        id="s",
        events=list(created.events),
        last_update_time=created.last_update_time - 0.001,
    )
    await service.append_event(current, _event("user", "again"))
    behind = Session(app_name="app", user_id="u", id="s", last_update_time=0.0)
    with pytest.raises(StaleSessionError):
        await service.append_event(behind, _event("user", "lost"))
    missing = Session(app_name="app", user_id="u", id="nope")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(missing, _event())
    await service.delete_session(app_name="app", user_id="u", session_id="s")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(created, _event())


async def test_a_delivered_again_event_is_stored_once(service: StatestoreSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    event = _event(actions=EventActions(state_delta={"n": 1}))
    await service.append_event(session, event)
    await service.append_event(session, event)
    await service.append_event(session, event.model_copy(deep=True))
    twin = Event(id=event.id, invocation_id="other", author="agent")
    await service.append_event(session, twin)
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None and [e.author for e in got.events] == ["user", "agent"]


async def test_event_windows_are_read_by_the_database(
    service: StatestoreSessionService, adk_store: statestore.Store
) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    base = float(int(time.time()))
    for i in range(6):
        await service.append_event(session, _event("user", f"m{i}", timestamp=base + i))
    service.store = recording = _Recording(adk_store)  # type: ignore[assignment]
    config = GetSessionConfig(num_recent_events=3, after_timestamp=base + 2)
    got = await service.get_session(app_name="app", user_id="u", session_id="s", config=config)
    assert got is not None
    assert [e.timestamp for e in got.events] == [base + 3, base + 4, base + 5]
    ((name, args, _),) = recording.calls
    assert name == "load_state"
    assert args[1].last_messages == 3
    assert args[1].messages_since.timestamp() == base + 2
    since = GetSessionConfig(after_timestamp=base + 4)
    got = await service.get_session(app_name="app", user_id="u", session_id="s", config=since)
    assert got is not None and [e.timestamp for e in got.events] == [base + 4, base + 5]
    none = GetSessionConfig(num_recent_events=0)
    got = await service.get_session(app_name="app", user_id="u", session_id="s", config=none)
    assert got is not None and got.events == [] and got.last_update_time == base + 5


async def test_listing_reads_no_conversation_and_orders_by_last_update(
    service: StatestoreSessionService, adk_store: statestore.Store
) -> None:
    for user, session_id in [("u1", "a"), ("u1", "b"), ("u2", "c")]:
        await service.create_session(
            app_name="app", user_id=user, session_id=session_id, state={"id": session_id}
        )
    a = await service.get_session(app_name="app", user_id="u1", session_id="a")
    assert a is not None
    await service.append_event(a, _event(timestamp=time.time() + 60))
    service.store = recording = _Recording(adk_store)  # type: ignore[assignment]
    mine = (await service.list_sessions(app_name="app", user_id="u1")).sessions
    assert [s.id for s in mine] == ["b", "a"]
    assert [s.events for s in mine] == [[], []]
    everyone = (await service.list_sessions(app_name="app", user_id=None)).sessions
    assert [(s.user_id, s.id, s.state["id"]) for s in everyone] == [
        ("u1", "b", "b"),
        ("u2", "c", "c"),
        ("u1", "a", "a"),
    ]
    assert everyone[-1].last_update_time == a.last_update_time
    assert [name for name, _, _ in recording.calls] == ["list_conversations", "load_shared"] * 2
    # A listed session carries its revision: it can append straight away.
    await service.append_event(everyone[0], _event())


async def test_listing_pages_through_many_sessions(service: StatestoreSessionService) -> None:
    await asyncio.gather(
        *(
            service.create_session(app_name="app", user_id="u", session_id=f"s{i:04d}")
            for i in range(1001)
        )
    )
    listed = (await service.list_sessions(app_name="app", user_id="u")).sessions
    assert sorted(s.id for s in listed) == [f"s{i:04d}" for i in range(1001)]


async def test_non_json_state_is_stored_as_adk_stores_it(service: StatestoreSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    await service.append_event(
        session, _event(actions=EventActions(state_delta={"callback": lambda: 1, "ok": 2}))
    )
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None
    assert got.state["ok"] == 2 and isinstance(got.state["callback"], str)
    assert len(got.events) == 1


def test_the_store_must_be_a_store(tmp_path: Any) -> None:
    """None or a URL is refused when the service is built, before any call could
    write half of its work; a SyncStore serves through its async Store, as it does
    for the other adapters."""
    for wrong in (None, "sqlite:///s.db"):
        with pytest.raises(TypeError, match="statestore Store or SyncStore"):
            StatestoreSessionService(wrong)  # type: ignore[arg-type]
    with statestore.open_store_sync("sqlite", url=f"sqlite:///{tmp_path}/s.db") as sync_store:
        service = StatestoreSessionService(sync_store)
        assert service.store is sync_store.store

        async def create() -> None:
            await service.create_session(app_name="a", user_id="u", session_id="s1")

        asyncio.run(create())
        assert [c.conversation_id for c in sync_store.list_conversations()] == ["adk/a/u/s1"]
