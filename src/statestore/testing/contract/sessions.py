"""What agent frameworks' session stores need, on every backend: messages that carry a
framework's item whole (``Message.payload``), append-or-create, removing the last
messages, state shared across conversations written in a conversation's transaction,
listing for a sessions page, and loading the messages since a time."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ...core.errors import ConversationNotFound, ValidationError, VersionConflict
from ...core.model import AgentState, Message
from ...core.query import LoadOptions, StatePatch
from ...core.store import Store
from ._support import T0, ContractTest, message, new_id

__all__ = [
    "TestAppendOrCreate",
    "TestSessionListing",
    "TestMessagesSince",
    "TestPayloads",
    "TestPopMessages",
    "TestSharedState",
]

# What frameworks hand over: nested objects, lists, every JSON type, key order that is
# not sorted, NUL and other control characters, astral-plane text, big and negative
# numbers, floats that must stay floats.
PAYLOADS: list[Any] = [
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q": "x"}',
        "status": None,
        "z": 1,
        "a": [1, 2.5, -3, True, False, None, {"nested": {"deep": ["x"]}}],
    },
    {"role": "developer", "content": [{"type": "input_text", "text": "nul \x00 in \x00 text"}]},
    [
        "a",
        "\x00",
        "\x01\x1f",
        "\U0001d518 astral, \u2713 check",
        "",
        2**63 - 1,
        -(2**63),
        1.0,
        0.1,
        1e300,
        -0.0,
    ],
    'plain string with a NUL \x00 and a quote " and a backslash \\',
    0,
    3.5,
    True,
    {},
    [],
]


def _payload_messages() -> list[Message]:
    return [
        message(i, role="developer" if i % 2 else "event", content="", payload=payload)
        for i, payload in enumerate(PAYLOADS)
    ]


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (``1 == 1.0 == True`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a == 0:
        return str(a) == str(b)  # -0.0 stays -0.0
    return bool(a == b)


class TestPayloads(ContractTest):
    """A message can carry a framework's item as JSON, returned exactly."""

    async def test_payloads_round_trip_exactly(self, store: Store) -> None:
        """Every kind of payload, NUL characters included, comes back equal, with the
        same types and key order, through a save, a patch and a windowed load; role,
        message_type and tool_name stay as given."""
        cid = new_id()
        messages = _payload_messages()
        await store.save_state(cid, AgentState(conversation_history=messages[:4]))
        await store.update_state(cid, StatePatch(append_messages=messages[4:]))
        loaded = await store.load_state(cid)
        assert loaded.conversation_history == messages
        for got, sent in zip(loaded.conversation_history, PAYLOADS, strict=True):
            assert _same(got.payload, sent), (got.payload, sent)
        assert [m.role for m in loaded.conversation_history] == [m.role for m in messages]
        window = await store.load_state(cid, LoadOptions(last_messages=3))
        assert [m.payload for m in window.conversation_history] == PAYLOADS[-3:]

    async def test_payload_and_tool_name_stay_queryable(self, store: Store) -> None:
        """Messages with payloads filter by type and tool like any other."""
        cid = new_id()
        call = message(
            0,
            role="assistant",
            content="",
            message_type="function_call",
            tool_name="lookup",
            payload={"name": "lookup", "arguments": "{}"},
        )
        other = message(1, role="developer", content="be brief", payload={"x": "\x00"})
        await store.save_state(cid, AgentState(conversation_history=[call, other]))
        by_tool = await store.load_state(cid, LoadOptions(tool_name="lookup"))
        assert by_tool.conversation_history == [call]
        by_type = await store.load_state(cid, LoadOptions(message_types=frozenset({"text"})))
        assert by_type.conversation_history == [other]

    async def test_a_message_without_payload_stays_without(self, store: Store) -> None:
        """None means no payload: it is not stored as JSON null text, and the legacy
        document of such a message keeps the old keys only."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        (loaded,) = (await store.load_state(cid)).conversation_history
        assert loaded.payload is None
        assert "payload" not in loaded.to_dict()

    @pytest.mark.parametrize(
        ("payload", "where"),
        [
            ({"a": "\ud800"}, "payload.a"),
            ({"a": float("nan")}, "payload.a"),
            ({1: "x"}, "payload"),
            ({"a": {1, 2}}, "payload.a"),
            ([2**64], "payload[0]"),
        ],
    )
    async def test_a_bad_payload_is_refused_before_anything_is_written(
        self, store: Store, payload: Any, where: str
    ) -> None:
        """A payload no backend can store exactly is a ValidationError naming where,
        when the message is built; one spoiled after that is caught by the write,
        which then changes nothing."""
        with pytest.raises(ValidationError, match=where.replace("[", r"\[")):
            Message("event", "", payload=payload)
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        spoiled = {"ok": 1}
        sent = Message("event", "", payload=spoiled)
        spoiled["ok"] = payload
        with pytest.raises(ValidationError, match="payload"):
            await store.update_state(cid, StatePatch(append_messages=[sent]))
        loaded = await store.load_state(cid)
        assert (loaded.version, len(loaded.conversation_history)) == (1, 1)


class TestAppendOrCreate(ContractTest):
    """``update_state(..., create=True)``: one atomic call whether or not the
    conversation exists yet."""

    async def test_creates_then_appends(self, store: Store) -> None:
        """The first call creates the conversation (default scalars, owned by the
        caller), the next ones append."""
        cid, user = new_id(), new_id("user")
        first = await store.update_state(
            cid, StatePatch(append_messages=[message(0)], step_count=2), user_id=user, create=True
        )
        assert (first.version, first.message_count) == (1, 1)
        second = await store.update_state(
            cid, StatePatch(append_messages=[message(1), message(2)]), user_id=user, create=True
        )
        assert (second.version, second.message_count) == (2, 3)
        loaded = await store.load_state(cid, user_id=user)
        assert loaded.conversation_history == [message(0), message(1), message(2)]
        assert [m.seq for m in loaded.conversation_history] == [0, 1, 2]
        assert (loaded.user_id, loaded.step_count, loaded.user_input) == (user, 2, "")
        assert loaded.focus_areas == [] and loaded.metadata == {}

    async def test_without_create_a_missing_conversation_is_not_found(self, store: Store) -> None:
        cid = new_id()
        with pytest.raises(ConversationNotFound):
            await store.update_state(cid, StatePatch(append_messages=[message(0)]))
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)

    async def test_expected_version_zero_means_must_not_exist(self, store: Store) -> None:
        """create=True with expected_version=0 creates once; the second such call is a
        VersionConflict and changes nothing."""
        cid = new_id()
        patch = StatePatch(append_messages=[message(0)], set_metadata={"k": 1})
        await store.update_state(cid, patch, create=True, expected_version=0)
        with pytest.raises(VersionConflict):
            await store.update_state(cid, patch, create=True, expected_version=0)
        loaded = await store.load_state(cid)
        assert (loaded.version, len(loaded.conversation_history)) == (1, 1)

    async def test_never_creates_over_another_users_conversation(self, store: Store) -> None:
        cid, owner, other = new_id(), new_id("user"), new_id("user")
        await store.update_state(
            cid, StatePatch(append_messages=[message(0)]), user_id=owner, create=True
        )
        with pytest.raises(ConversationNotFound):
            await store.update_state(
                cid, StatePatch(append_messages=[message(1)]), user_id=other, create=True
            )
        loaded = await store.load_state(cid, user_id=owner)
        assert len(loaded.conversation_history) == 1

    async def test_concurrent_first_writers_all_land(self, store: Store) -> None:
        """Many writers racing to create the same conversation: one creates, every
        message is kept exactly once, seqs 0..n-1."""
        cid = new_id()
        n = 12
        await asyncio.gather(
            *(
                store.update_state(cid, StatePatch(append_messages=[message(i)]), create=True)
                for i in range(n)
            )
        )
        loaded = await store.load_state(cid)
        assert sorted(m.content for m in loaded.conversation_history) == sorted(
            f"message {i}" for i in range(n)
        )
        assert [m.seq for m in loaded.conversation_history] == list(range(n))
        assert loaded.version == n


class TestPopMessages(ContractTest):
    """``pop_messages``: the last messages removed and returned in one call."""

    async def test_pops_the_last_messages(self, store: Store) -> None:
        cid = new_id()
        history = [message(i, payload={"i": i} if i % 2 else None) for i in range(5)]
        await store.save_state(cid, AgentState(conversation_history=history))
        (last,) = await store.pop_messages(cid)
        assert last == history[4] and last.seq == 4
        popped = await store.pop_messages(cid, 2)
        assert popped == history[2:4] and [m.seq for m in popped] == [2, 3]
        loaded = await store.load_state(cid)
        assert loaded.conversation_history == history[:2]
        assert (loaded.version, loaded.history_total) == (3, 2)
        # What comes next takes the freed seqs: the history stays contiguous.
        await store.update_state(cid, StatePatch(append_messages=[message(9)]))
        loaded = await store.load_state(cid)
        assert [m.seq for m in loaded.conversation_history] == [0, 1, 2]
        assert loaded.conversation_history[-1] == message(9)

    async def test_popping_more_than_stored(self, store: Store) -> None:
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0), message(1)]))
        assert await store.pop_messages(cid, 5) == [message(0), message(1)]
        assert await store.pop_messages(cid) == []
        loaded = await store.load_state(cid)
        assert loaded.conversation_history == [] and loaded.history_total == 0

    async def test_missing_or_not_yours(self, store: Store) -> None:
        cid, owner = new_id(), new_id("user")
        with pytest.raises(ConversationNotFound):
            await store.pop_messages(cid)
        await store.save_state(cid, AgentState(conversation_history=[message(0)]), user_id=owner)
        with pytest.raises(ConversationNotFound):
            await store.pop_messages(cid, user_id=new_id("user"))
        with pytest.raises(ValidationError, match="count"):
            await store.pop_messages(cid, 0)
        assert len((await store.load_state(cid)).conversation_history) == 1

    async def test_a_stale_pop_changes_nothing(self, store: Store) -> None:
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0), message(1)]))
        with pytest.raises(VersionConflict):
            await store.pop_messages(cid, expected_version=7)
        assert len((await store.load_state(cid)).conversation_history) == 2

    async def test_concurrent_pops_never_return_a_message_twice(self, store: Store) -> None:
        cid = new_id()
        history = [message(i) for i in range(10)]
        await store.save_state(cid, AgentState(conversation_history=history))
        results = await asyncio.gather(*(store.pop_messages(cid) for _ in range(6)))
        popped = [m for result in results for m in result]
        assert sorted(m.seq for m in popped if m.seq is not None) == [4, 5, 6, 7, 8, 9]
        assert (await store.load_state(cid)).conversation_history == history[:4]


class TestSharedState(ContractTest):
    """State shared across conversations, by namespace."""

    async def test_set_read_delete(self, store: Store) -> None:
        app, user = new_id("app:"), new_id("user:")
        assert await store.load_shared([app]) == {app: {}}
        await store.update_shared(app, {"theme": "dark", "n": 1, "nul": "a\x00b"})
        await store.update_shared(user, {"name": "Ada"})
        await store.update_shared(app, {"n": 2}, delete=["theme"])
        assert await store.load_shared([app, user]) == {
            app: {"n": 2, "nul": "a\x00b"},
            user: {"name": "Ada"},
        }

    async def test_read_with_a_conversation(self, store: Store) -> None:
        """``LoadOptions.shared`` reads the namespaces with the conversation; a load
        without it has none."""
        cid, app, user = new_id(), new_id("app:"), new_id("user:")
        await store.save_state(cid, AgentState(user_input="hi"))
        await store.update_shared(app, {"k": [1, {"x": None}]})
        loaded = await store.load_state(
            cid, LoadOptions(shared=frozenset({app, user}), last_messages=5)
        )
        assert loaded.shared == {app: {"k": [1, {"x": None}]}, user: {}}
        assert (await store.load_state(cid)).shared == {}

    async def test_written_in_the_conversations_transaction(self, store: Store) -> None:
        """A patch's shared changes land with it, and not at all when it fails."""
        cid, app = new_id(), new_id("app:")
        await store.update_state(
            cid,
            StatePatch(append_messages=[message(0)], set_shared={app: {"turns": 1}}),
            create=True,
        )
        assert await store.load_shared([app]) == {app: {"turns": 1}}
        stale = StatePatch(append_messages=[message(1)], set_shared={app: {"turns": 99}})
        with pytest.raises(VersionConflict):
            await store.update_state(cid, stale, expected_version=5)
        with pytest.raises(ValidationError, match="turns"):
            StatePatch(set_shared={app: {"turns": 98}}, delete_shared={app: ["turns"]})
        with pytest.raises(ConversationNotFound):
            await store.update_state(new_id(), StatePatch(set_shared={app: {"turns": 97}}))
        assert await store.load_shared([app]) == {app: {"turns": 1}}
        await store.update_state(cid, StatePatch(delete_shared={app: ["turns"]}))
        assert await store.load_shared([app]) == {app: {}}

    async def test_shared_by_every_conversation(self, store: Store) -> None:
        """Two conversations see one namespace's changes, and deleting a
        conversation leaves shared state alone."""
        a, b, user = new_id(), new_id(), new_id("user:")
        options = LoadOptions(shared=frozenset({user}))
        await store.update_state(a, StatePatch(set_shared={user: {"lang": "fr"}}), create=True)
        await store.update_state(b, StatePatch(set_shared={user: {"tz": "UTC"}}), create=True)
        assert (await store.load_state(a, options)).shared == {user: {"lang": "fr", "tz": "UTC"}}
        await store.delete_state(a)
        assert (await store.load_state(b, options)).shared == {user: {"lang": "fr", "tz": "UTC"}}

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda s: s.update_shared("", {"k": 1}), "namespace"),
            (lambda s: s.update_shared(" app", {"k": 1}), "namespace"),
            (lambda s: s.update_shared("app", {"k": float("inf")}), "set"),
            (lambda s: s.update_shared("app", {"k\x00": 1}), "key"),
            (lambda s: s.load_shared("app"), "namespaces"),
            (lambda s: s.update_state("c", StatePatch(set_shared={"app": 1})), "set_shared"),  # type: ignore[dict-item]
        ],
    )
    async def test_bad_input_is_refused(self, store: Store, call: Any, field: str) -> None:
        with pytest.raises(ValidationError, match=field):
            await call(store)


class TestSessionListing(ContractTest):
    """``list_conversations`` for a sessions page."""

    async def _three(self, store: Store, prefix: str, user: str) -> list[str]:
        """Conversations saved in the order b, a, c (so update order differs from id
        order), each with metadata."""
        ids = [f"{prefix}b", f"{prefix}a", f"{prefix}c"]
        for i, cid in enumerate(ids):
            await store.save_state(cid, AgentState(metadata={"title": cid, "i": i}), user_id=user)
            await asyncio.sleep(0.002)  # distinct update times on every clock
        return ids

    async def test_by_prefix_and_order(self, store: Store) -> None:
        user = new_id("user")
        prefix = new_id("app") + "/"
        b, a, c = await self._three(store, prefix, user)
        await store.save_state(prefix[:-1] + "0", AgentState(), user_id=user)  # not under it
        by_id = await store.list_conversations(prefix=prefix)
        assert [x.conversation_id for x in by_id] == [a, b, c]
        assert all(x.metadata is None for x in by_id)
        newest = await store.list_conversations(prefix=prefix, order="updated", with_metadata=True)
        assert [x.conversation_id for x in newest] == [c, a, b]
        assert [x.metadata for x in newest] == [
            {"title": c, "i": 2},
            {"title": a, "i": 1},
            {"title": b, "i": 0},
        ]
        await store.update_state(b, StatePatch(set_metadata={"i": 9}))
        newest = await store.list_conversations(prefix=prefix, order="updated")
        assert [x.conversation_id for x in newest] == [b, c, a]

    async def test_pages(self, store: Store) -> None:
        user = new_id("user")
        prefix = new_id("app") + "/"
        b, a, c = await self._three(store, prefix, user)
        for order, expected in (("id", [a, b, c]), ("updated", [c, a, b])):
            seen: list[str] = []
            after = None
            while True:
                page = await store.list_conversations(
                    user_id=user, prefix=prefix, order=order, limit=2, after=after
                )
                if not page:
                    break
                seen += [x.conversation_id for x in page]
                after = page[-1].conversation_id
            assert seen == expected, order

    async def test_by_user_and_unusual_prefixes(self, store: Store) -> None:
        """Only the user's; a prefix ending in the last code point or holding
        characters LIKE would treat as wildcards matches literally."""
        user, other = new_id("user"), new_id("user")
        base = new_id("p")
        ids = [f"{base}%_\U0010ffff", f"{base}%_\U0010ffffx", f"{base}%a", f"{base}x"]
        for cid in ids:
            await store.save_state(cid, AgentState(), user_id=user)
        await store.save_state(f"{base}%_\U0010ffffz", AgentState(), user_id=other)
        listed = await store.list_conversations(user_id=user, prefix=f"{base}%_\U0010ffff")
        assert [x.conversation_id for x in listed] == ids[:2]
        listed = await store.list_conversations(prefix=f"{base}%")
        assert [x.conversation_id for x in listed] == sorted([*ids[:3], f"{base}%_\U0010ffffz"])

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"order": "name"}, "order"),
            ({"prefix": ""}, "prefix"),
            ({"with_metadata": 1}, "with_metadata"),
        ],
    )
    async def test_bad_arguments(self, store: Store, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(ValidationError, match=field):
            await store.list_conversations(**kwargs)


class TestMessagesSince(ContractTest):
    """``LoadOptions.messages_since``: the messages stamped at or after a time."""

    async def test_since(self, store: Store) -> None:
        cid = new_id()
        history = [message(i) for i in range(6)]  # stamped T0 + i seconds
        await store.save_state(cid, AgentState(conversation_history=history))
        since = T0 + timedelta(seconds=3)
        loaded = await store.load_state(cid, LoadOptions(messages_since=since))
        assert loaded.conversation_history == history[3:]
        assert [m.seq for m in loaded.conversation_history] == [3, 4, 5]
        window = await store.load_state(cid, LoadOptions(messages_since=since, last_messages=2))
        assert window.conversation_history == history[4:]
        after_all = await store.load_state(cid, LoadOptions(messages_since=T0 + timedelta(days=1)))
        assert after_all.conversation_history == [] and after_all.history_total == 6

    async def test_timezones_and_microseconds(self, store: Store) -> None:
        """The bound is an instant: any time zone, to the microsecond."""
        from datetime import timezone

        cid = new_id()
        stamps = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(microseconds=2)]
        await store.save_state(
            cid,
            AgentState(
                conversation_history=[message(i, timestamp=t) for i, t in enumerate(stamps)]
            ),
        )
        east = (T0 + timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=5)))
        loaded = await store.load_state(cid, LoadOptions(messages_since=east))
        assert [m.timestamp for m in loaded.conversation_history] == stamps[1:]

    async def test_a_naive_time_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="messages_since"):
            LoadOptions(messages_since=T0.replace(tzinfo=None))
