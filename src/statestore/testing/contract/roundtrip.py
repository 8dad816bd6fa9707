"""Invariant 1 (round trip) and invariant 2's replacing save: what is saved loads back
equal, field for field; the store gives seqs and item ids."""

from __future__ import annotations

import pytest

from ...core.model import AgentState, ContextItem, Message
from ...core.store import Store
from ..plugin import BackendTarget, open_target
from ._support import ContractTest, item, message, new_id, requires, rich_state

__all__ = ["TestRoundTrip", "TestLargeData"]

UNICODE_TEXTS = [
    "日本語のテキストと中文字符",  # CJK
    "مرحبا بالعالم",  # RTL Arabic
    "שלום עולם",  # RTL Hebrew
    "emoji 🧠🤖👩‍👩‍👧‍👦🏳️‍🌈 flags 🇯🇵",  # astral plane, ZWJ sequences
    "combining: e\u0301 a\u0308, zero width: a\u200bb, bidi: \u202eabc\u202c",
    "quotes ' \" ` ; -- /* */ \\ % _ $1 ?1",  # SQL-looking text is plain data
    "tab\tnewline\ncarriage\rreturn \x7f \x01",
]


def assert_same_state(loaded: AgentState, saved: AgentState) -> None:
    """Field for field, with a readable difference."""
    assert loaded.to_dict() == saved.to_dict()
    assert loaded == saved


class TestRoundTrip(ContractTest):
    """Invariant 1: load_state(save_state(s)) equals s."""

    async def test_every_field_round_trips(self, store: Store) -> None:
        """A state with every field set loads back equal."""
        cid = new_id()
        state = rich_state()
        saved = await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert_same_state(loaded, state)
        assert saved.version == loaded.version == 1
        assert saved.message_count == loaded.history_total == len(state.conversation_history)
        assert loaded.conversation_id == cid

    async def test_empty_state_round_trips(self, store: Store) -> None:
        """A default AgentState (empty lists, empty dicts, empty input) loads back equal."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        loaded = await store.load_state(cid)
        assert_same_state(loaded, AgentState())
        assert loaded.conversation_history == [] and loaded.memory_context == []
        assert loaded.history_total == 0

    async def test_explicit_none_values_round_trip(self, store: Store) -> None:
        """None is kept where it is a value: user_input, last_tool_result, tool_name,
        JSON nulls inside metadata."""
        cid = new_id()
        state = AgentState(
            user_input=None,
            last_tool_result=None,
            conversation_history=[message(0, tool_name=None, metadata={"x": None})],
            metadata={"k": None, "list": [None]},
        )
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.user_input is None
        assert loaded.last_tool_result is None
        assert loaded.conversation_history[0].tool_name is None
        assert loaded.metadata == {"k": None, "list": [None]}
        assert_same_state(loaded, state)

    async def test_empty_strings_are_not_none(self, store: Store) -> None:
        """Empty text stays empty text (not None), in every text field that allows it."""
        cid = new_id()
        state = AgentState(
            user_input="",
            last_tool_result="",
            conversation_history=[message(0, content="", tool_name="")],
            memory_context=[item(0, content="")],
            metadata={"": ""},
        )
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.user_input == "" and loaded.last_tool_result == ""
        assert loaded.conversation_history[0].tool_name == ""
        assert_same_state(loaded, state)

    async def test_unicode_round_trips(self, store: Store) -> None:
        """CJK, right-to-left, emoji and control-like text round trip in every text
        field, metadata keys included."""
        for text in UNICODE_TEXTS:
            cid = new_id()
            state = AgentState(
                user_input=text,
                focus_areas=[text],
                last_tool_result={text: [text]},
                conversation_history=[
                    message(
                        0, content=text, message_type=text, tool_name=text, metadata={text: text}
                    )
                ],
                memory_context=[
                    item(0, content=text, source=text, context_type=text, metadata={text: text})
                ],
                metadata={text: {text: text}},
            )
            await store.save_state(cid, state)
            loaded = await store.load_state(cid)
            assert loaded.to_dict() == state.to_dict(), text

    async def test_json_values_round_trip(self, store: Store) -> None:
        """JSON values at the edges of what is allowed come back equal and of the same
        type: 64-bit ints, floats large and small, nesting 60 levels deep."""
        cid = new_id()
        deep: object = "bottom"
        for _ in range(60):
            deep = {"d": [deep]} if isinstance(deep, str) else {"d": deep}
        values = {
            "int_max": 2**63 - 1,
            "int_min": -(2**63),
            "zero": 0,
            "float": 0.1,
            "float_whole": 2.0,
            "float_big": 1.5e300,
            "float_1e20": 1e20,
            "float_small": 5e-324,
            "float_neg": -123.456e-7,
            "bools": [True, False],
            "deep": deep,
            "empty": {"list": [], "dict": {}},
        }
        state = AgentState(last_tool_result=values, metadata=dict(values))
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert_same_state(loaded, state)
        for key, value in values.items():
            assert type(loaded.metadata[key]) is type(value), key
            assert type(loaded.last_tool_result[key]) is type(value), key

    async def test_timestamps_round_trip_in_utc(self, store: Store) -> None:
        """Message and item timestamps keep their instant to the microsecond, in UTC."""
        from datetime import timedelta, timezone

        cid = new_id()
        tz = timezone(timedelta(hours=-5, minutes=-30))
        when = message(0).timestamp.astimezone(tz).replace(microsecond=123456)
        state = AgentState(
            conversation_history=[message(0, timestamp=when)],
            memory_context=[item(0, timestamp=when)],
        )
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.conversation_history[0].timestamp == when
        assert loaded.memory_context[0].timestamp == when
        assert loaded.conversation_history[0].timestamp.utcoffset() == timedelta(0)

    async def test_extreme_timestamps_round_trip(self, store: Store) -> None:
        """Timestamps from year 1 to year 9999 round trip to the microsecond."""
        from datetime import UTC, datetime

        cid = new_id()
        extremes = [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
        state = AgentState(
            conversation_history=[message(i, timestamp=t) for i, t in enumerate(extremes)],
            memory_context=[item(i, timestamp=t) for i, t in enumerate(extremes)],
        )
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert [m.timestamp for m in loaded.conversation_history] == extremes
        assert [c.timestamp for c in loaded.memory_context] == extremes

    async def test_order_is_by_seq_not_timestamp(self, store: Store) -> None:
        """Messages come back in saved order even when timestamps run backwards; items in
        saved order too."""
        cid = new_id()
        history = [message(i, timestamp=message(10 - i).timestamp) for i in range(10)]
        items = [item(i, timestamp=item(10 - i).timestamp) for i in range(5)]
        state = AgentState(conversation_history=history, memory_context=items)
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert [m.content for m in loaded.conversation_history] == [m.content for m in history]
        assert [c.content for c in loaded.memory_context] == [c.content for c in items]

    async def test_seqs_are_positions(self, store: Store) -> None:
        """Loaded messages carry seq 0..n-1 and items distinct ids."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        loaded = await store.load_state(cid)
        assert [m.seq for m in loaded.conversation_history] == list(range(24))
        ids = [c.item_id for c in loaded.memory_context]
        assert None not in ids and len(set(ids)) == len(ids)

    async def test_save_updates_the_state_object(self, store: Store) -> None:
        """After a save the object tracks what is stored: seqs, item ids, version, ids."""
        cid = new_id()
        user = new_id("user")
        state = AgentState(
            conversation_history=[message(0), message(1)], memory_context=[item(0), item(1)]
        )
        result = await store.save_state(cid, state, user_id=user)
        assert [m.seq for m in state.conversation_history] == [0, 1]
        assert all(c.item_id is not None for c in state.memory_context)
        assert state.version == result.version == 1
        assert state.conversation_id == cid and state.user_id == user
        assert state.created_at is not None and state.updated_at == result.updated_at
        loaded = await store.load_state(cid)
        assert [c.item_id for c in loaded.memory_context] == [
            c.item_id for c in state.memory_context
        ]

    async def test_unloaded_state_replaces_what_is_stored(self, store: Store) -> None:
        """A state built in memory replaces the stored one (renumbered from seq 0), so the
        round trip holds for it too."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        replacement = AgentState(
            user_input="again",
            conversation_history=[message(100), message(101)],
            memory_context=[item(50, 0.2)],
            metadata={"only": 1},
        )
        result = await store.save_state(cid, replacement)
        loaded = await store.load_state(cid)
        assert_same_state(loaded, replacement)
        assert [m.seq for m in loaded.conversation_history] == [0, 1]
        assert result.version == loaded.version == 2
        assert result.message_count == 2

    async def test_state_loaded_elsewhere_is_copied_whole(self, store: Store) -> None:
        """A state loaded from one conversation and saved under another id copies it
        whole; the source is untouched."""
        source, copy = new_id(), new_id()
        await store.save_state(source, rich_state())
        loaded = await store.load_state(source)
        loaded.conversation_history.append(message(99))
        await store.save_state(copy, loaded)
        assert_same_state(await store.load_state(copy), loaded)
        assert len((await store.load_state(source)).conversation_history) == 24

    async def test_messages_and_items_are_values(self, store: Store) -> None:
        """One Message object saved twice in a history is stored twice."""
        cid = new_id()
        same = Message(role="user", content="twice")
        same_item = ContextItem(content="twice")
        state = AgentState(conversation_history=[same, same], memory_context=[same_item, same_item])
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert [m.seq for m in loaded.conversation_history] == [0, 1]
        assert len(loaded.memory_context) == 2
        assert_same_state(
            loaded,
            AgentState(conversation_history=[same, same], memory_context=[same_item, same_item]),
        )

    @requires("persistent")
    async def test_data_outlives_the_store_object(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """Saved data is found again by a new store opened on the same URL."""
        cid = new_id()
        state = rich_state()
        async with open_target(backend_target, store_url) as first:
            await first.save_state(cid, state)
        async with open_target(backend_target, store_url) as second:
            assert_same_state(await second.load_state(cid), state)


@pytest.mark.slow
class TestLargeData(ContractTest):
    """Large texts and long histories round trip, and windows stay correct."""

    async def test_one_megabyte_message(self, store: Store) -> None:
        """A 1 MB message (multi-byte characters included) round trips exactly."""
        cid = new_id()
        big = ("0123456789abcdef" * 65536)[:-8] + "日本語🧠🤖"
        state = AgentState(
            conversation_history=[message(0, content=big)],
            memory_context=[item(0, content=big)],
            metadata={"big": big},
        )
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.conversation_history[0].content == big
        assert_same_state(loaded, state)

    async def test_ten_thousand_messages(self, store: Store) -> None:
        """A 10,000-message conversation round trips; a window of its last 20 and an
        append after it behave as on a small one."""
        cid = new_id()
        history = [message(i) for i in range(10_000)]
        state = AgentState(conversation_history=history)
        result = await store.save_state(cid, state)
        assert result.message_count == 10_000
        loaded = await store.load_state(cid)
        assert len(loaded.conversation_history) == 10_000
        assert loaded.conversation_history[-1].seq == 9_999
        assert_same_state(loaded, state)
        from ...core.query import LoadOptions

        window = await store.load_state(cid, LoadOptions(last_messages=20))
        assert [m.seq for m in window.conversation_history] == list(range(9_980, 10_000))
        assert window.history_start == 9_980 and window.history_total == 10_000
        window.conversation_history.append(message(10_000))
        result = await store.save_state(cid, window)
        assert result.message_count == 10_001
        tail = await store.load_state(cid, LoadOptions(last_messages=2))
        assert [m.content for m in tail.conversation_history] == ["message 9999", "message 10000"]
