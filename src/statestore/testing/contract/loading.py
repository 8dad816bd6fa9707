"""Invariant 7 (same answers): every LoadOptions field, alone and combined, selects
exactly what ``LoadOptions.select_messages`` / ``select_context`` select from the whole
state, on every backend; windows report which part of the history they hold."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ...core.errors import ValidationError
from ...core.model import AgentState
from ...core.query import LoadOptions
from ...core.store import Store
from ._support import T0, ContractTest, item, message, new_id, rich_state

__all__ = ["TestLoadOptions"]

MESSAGE_OPTIONS = [
    LoadOptions(),
    LoadOptions(last_messages=0),
    LoadOptions(last_messages=1),
    LoadOptions(last_messages=5),
    LoadOptions(last_messages=24),
    LoadOptions(last_messages=1000),
    LoadOptions(message_types=frozenset({"tool_call"})),
    LoadOptions(message_types=frozenset({"tool_call", "tool_result"})),
    LoadOptions(message_types=frozenset({"nothing-has-this-type"})),
    LoadOptions(message_types=frozenset()),
    LoadOptions(tool_name="search"),
    LoadOptions(tool_name="no-such-tool"),
    LoadOptions(tool_name="calculator", message_types=frozenset({"tool_result"})),
    LoadOptions(tool_name="search", last_messages=1),
    LoadOptions(message_types=frozenset({"text", "error"}), last_messages=3),
    LoadOptions(message_types=frozenset({"error"}), last_messages=0),
    LoadOptions(messages_since=T0 + timedelta(seconds=10)),
    LoadOptions(messages_since=T0 + timedelta(seconds=10), last_messages=4),
    LoadOptions(messages_since=T0 + timedelta(seconds=7), tool_name="search"),
    LoadOptions(messages_since=T0 + timedelta(days=365)),
    LoadOptions(messages_since=T0 - timedelta(days=1), last_messages=2),
]

CONTEXT_OPTIONS = [
    LoadOptions(),
    LoadOptions(min_relevance=0.7),
    LoadOptions(min_relevance=0.0),
    LoadOptions(min_relevance=1.0),
    LoadOptions(context_limit=0),
    LoadOptions(context_limit=1),
    LoadOptions(context_limit=3),
    LoadOptions(context_limit=4),  # cuts through the 0.7 ties
    LoadOptions(context_limit=100),
    LoadOptions(context_sources=frozenset({"rag"})),
    LoadOptions(context_sources=frozenset({"rag", "focus"})),
    LoadOptions(context_sources=frozenset()),
    LoadOptions(context_types=frozenset({"code"})),
    LoadOptions(context_types=frozenset({"code", "general"}), context_sources=frozenset({"ltm"})),
    LoadOptions(focus_only=True),
    LoadOptions(focus_only=True, min_relevance=0.7, context_limit=2),
    LoadOptions(min_relevance=0.7, context_limit=3),
    LoadOptions(context_sources=frozenset({"ltm", "rag"}), context_limit=2),
    LoadOptions.smart(),
    LoadOptions.smart(window=3, context_limit=2),
    LoadOptions(
        last_messages=4,
        message_types=frozenset({"tool_call", "tool_result"}),
        tool_name="search",
        min_relevance=0.5,
        context_limit=2,
        context_sources=frozenset({"ltm", "rag", "focus"}),
        context_types=frozenset({"code", "plan", "general"}),
        focus_only=True,
    ),
]


def _describe(options: LoadOptions) -> str:
    fields = [f for f in options.__slots__ if getattr(options, f) != getattr(LoadOptions(), f)]
    return ", ".join(f"{f}={getattr(options, f)!r}" for f in fields) or "defaults"


class TestLoadOptions(ContractTest):
    """Invariant 7: the same LoadOptions give the same answers on every backend."""

    async def _saved(self, store: Store, state: AgentState | None = None) -> tuple[str, AgentState]:
        cid = new_id()
        state = state or rich_state()
        await store.save_state(cid, state)  # gives the state its seqs and item ids
        return cid, state

    async def test_message_options(self, store: Store) -> None:
        """Each message option (and combination) loads the messages select_messages
        picks, with their seqs, and the window bounds that go with them."""
        cid, whole = await self._saved(store)
        wrong = []
        for options in MESSAGE_OPTIONS:
            loaded = await store.load_state(cid, options)
            expected = options.select_messages(whole.conversation_history)
            got = [(m.seq, m) for m in loaded.conversation_history]
            if got != [(m.seq, m) for m in expected]:
                wrong.append(
                    f"{_describe(options)}: seqs {[s for s, _ in got]}, "
                    f"expected {[m.seq for m in expected]}"
                )
            if loaded.history_total != 24:
                wrong.append(f"{_describe(options)}: history_total {loaded.history_total}")
            if expected and loaded.history_start != expected[0].seq:
                wrong.append(f"{_describe(options)}: history_start {loaded.history_start}")
            if loaded.memory_context != whole.memory_context:
                wrong.append(f"{_describe(options)}: message options changed the context")
        assert not wrong, "\n".join(wrong)

    async def test_context_options(self, store: Store) -> None:
        """Each context option (and combination) loads the items select_context picks,
        in saved order, with their ids."""
        cid, whole = await self._saved(store)
        wrong = []
        for options in CONTEXT_OPTIONS:
            loaded = await store.load_state(cid, options)
            expected = options.select_context(whole.memory_context, whole.focus_areas)
            got = [(c.item_id, c) for c in loaded.memory_context]
            if got != [(c.item_id, c) for c in expected]:
                wrong.append(
                    f"{_describe(options)}: items {[i for i, _ in got]}, "
                    f"expected {[c.item_id for c in expected]}"
                )
            # Scalars and metadata do not depend on the options.
            if (loaded.user_input, loaded.focus_areas, loaded.step_count, loaded.metadata) != (
                whole.user_input,
                whole.focus_areas,
                whole.step_count,
                whole.metadata,
            ):
                wrong.append(f"{_describe(options)}: scalar fields differ")
        assert not wrong, "\n".join(wrong)

    async def test_context_limit_ties_keep_the_earlier_item(self, store: Store) -> None:
        """context_limit keeps the k most relevant; among equal scores the earlier item,
        and returns them in saved order."""
        state = AgentState(
            memory_context=[item(0, 0.5), item(1, 0.8), item(2, 0.5), item(3, 0.8), item(4, 0.5)]
        )
        cid, _ = await self._saved(store, state)
        loaded = await store.load_state(cid, LoadOptions(context_limit=3))
        assert [c.content for c in loaded.memory_context] == ["item 0", "item 1", "item 3"]

    async def test_focus_only_follows_the_stored_focus_areas(self, store: Store) -> None:
        """focus_only keeps items whose context_type is a focus area; none when the
        state has no focus areas."""
        state = AgentState(
            focus_areas=[],
            memory_context=[item(0, context_type="code"), item(1, context_type="plan")],
        )
        cid, _ = await self._saved(store, state)
        assert (await store.load_state(cid, LoadOptions(focus_only=True))).memory_context == []
        loaded = await store.load_state(cid)
        loaded.focus_areas = ["plan"]
        await store.save_state(cid, loaded)
        focused = await store.load_state(cid, LoadOptions(focus_only=True))
        assert [c.content for c in focused.memory_context] == ["item 1"]

    async def test_options_on_an_empty_conversation(self, store: Store) -> None:
        """Every option applied to an empty conversation loads an empty state whose
        window starts at 0."""
        cid, _ = await self._saved(store, AgentState())
        for options in MESSAGE_OPTIONS + CONTEXT_OPTIONS:
            loaded = await store.load_state(cid, options)
            assert loaded.conversation_history == [] and loaded.memory_context == []
            assert (loaded.history_start, loaded.history_total) == (0, 0), _describe(options)

    async def test_window_bounds(self, store: Store) -> None:
        """A window of the last 3 of 10 messages starts at seq 7 of 10; a window of 0
        starts at the end."""
        cid, _ = await self._saved(
            store, AgentState(conversation_history=[message(i) for i in range(10)])
        )
        window = await store.load_state(cid, LoadOptions(last_messages=3))
        assert [m.seq for m in window.conversation_history] == [7, 8, 9]
        assert (window.history_start, window.history_total) == (7, 10)
        none = await store.load_state(cid, LoadOptions(last_messages=0))
        assert (none.history_start, none.history_total) == (10, 10)

    @pytest.mark.parametrize(
        "bad",
        [
            {"last_messages": -1},
            {"context_limit": -1},
            {"min_relevance": 1.5},
            {"min_relevance": float("nan")},
            {"message_types": "text"},
            {"tool_name": "a\x00b"},
            {"focus_only": 1},
        ],
    )
    async def test_bad_options_fail_before_io(self, bad: dict[str, object]) -> None:
        """Invalid LoadOptions raise ValidationError when built."""
        with pytest.raises(ValidationError):
            LoadOptions(**bad)  # type: ignore[arg-type]

    async def test_options_must_be_load_options(self, store: Store) -> None:
        """Passing something other than LoadOptions raises ValidationError."""
        cid, _ = await self._saved(store, AgentState())
        with pytest.raises(ValidationError):
            await store.load_state(cid, {"last_messages": 1})  # type: ignore[arg-type]
