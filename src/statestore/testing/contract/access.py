"""Invariant 6 (ownership), not found, delete, listing with paging, and the NUL /
validation policy: bad input raises ValidationError and writes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest

from ...core.errors import ConversationNotFound, ValidationError
from ...core.model import AgentState
from ...core.query import StatePatch
from ...core.store import Store
from ._support import ContractTest, message, new_id, rich_state

__all__ = ["TestOwnership", "TestNotFoundAndDelete", "TestListing", "TestValidation"]


class TestOwnership(ContractTest):
    """Invariant 6: another user's conversation is invisible, never revealed."""

    async def _owned(self, store: Store) -> tuple[str, str, AgentState]:
        cid, owner = new_id(), new_id("user")
        await store.save_state(cid, rich_state(), user_id=owner)
        return cid, owner, await store.load_state(cid, user_id=owner)

    async def test_every_operation_with_the_wrong_user(self, store: Store) -> None:
        """load, save, update (with or without expected_version) and delete naming
        another user see ConversationNotFound or False, and change nothing."""
        cid, owner, before = await self._owned(store)
        other = new_id("user")
        with pytest.raises(ConversationNotFound) as raised:
            await store.load_state(cid, user_id=other)
        assert "plan the trip" not in str(raised.value)
        with pytest.raises(ConversationNotFound):
            await store.save_state(cid, AgentState(user_input="theft"), user_id=other)
        with pytest.raises(ConversationNotFound):
            await store.save_state(cid, AgentState(), user_id=other, expected_version=1)
        with pytest.raises(ConversationNotFound):
            await store.save_state(cid, AgentState(), user_id=other, expected_version=0)
        with pytest.raises(ConversationNotFound):
            await store.update_state(cid, StatePatch(step_count=0), user_id=other)
        with pytest.raises(ConversationNotFound):
            await store.update_state(
                cid, StatePatch(step_count=0), user_id=other, expected_version=1
            )
        assert await store.delete_state(cid, user_id=other) is False
        listed = await store.list_conversations(user_id=other)
        assert cid not in [c.conversation_id for c in listed]
        after = await store.load_state(cid, user_id=owner)
        assert after == before and after.version == 1 and after.user_id == owner

    async def test_loaded_state_saved_by_another_user(self, store: Store) -> None:
        """A state loaded by its owner and saved naming another user is refused."""
        cid, _, state = await self._owned(store)
        state.conversation_history.append(message(99))
        with pytest.raises(ConversationNotFound):
            await store.save_state(cid, state, user_id=new_id("user"))
        assert len((await store.load_state(cid)).conversation_history) == 24

    async def test_owner_and_anonymous_calls_see_it(self, store: Store) -> None:
        """The owner and calls naming no user see and change the conversation; its owner
        stays."""
        cid, owner, _ = await self._owned(store)
        loaded = await store.load_state(cid)
        assert loaded.user_id == owner
        await store.update_state(cid, StatePatch(step_count=1))
        await store.update_state(cid, StatePatch(step_count=2), user_id=owner)
        state = await store.load_state(cid, user_id=owner)
        assert (state.step_count, state.user_id, state.version) == (2, owner, 3)
        await store.save_state(cid, AgentState(user_input="replaced"))
        again = await store.load_state(cid, user_id=owner)
        assert again.user_input == "replaced" and again.user_id == owner

    async def test_owner_can_delete(self, store: Store) -> None:
        """The owner deletes its conversation; it is then gone for everyone."""
        cid, owner, _ = await self._owned(store)
        assert await store.delete_state(cid, user_id=owner) is True
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)

    async def test_conversation_without_owner_is_shared(self, store: Store) -> None:
        """A conversation saved without user_id is visible to a call naming any user."""
        cid = new_id()
        await store.save_state(cid, AgentState(user_input="shared"))
        loaded = await store.load_state(cid, user_id=new_id("user"))
        assert loaded.user_input == "shared" and loaded.user_id is None


class TestNotFoundAndDelete(ContractTest):
    """Missing conversations and deletion."""

    async def test_missing_conversation(self, store: Store) -> None:
        """Loading or updating a conversation that never existed raises
        ConversationNotFound, which is also a KeyError naming the id."""
        cid = new_id()
        with pytest.raises(KeyError) as raised:
            await store.load_state(cid)
        assert isinstance(raised.value, ConversationNotFound)
        assert raised.value.conversation_id == cid and cid in str(raised.value)
        with pytest.raises(ConversationNotFound):
            await store.update_state(cid, StatePatch())
        assert await store.delete_state(cid) is False

    async def test_delete(self, store: Store) -> None:
        """delete_state removes everything: load fails, it is not listed, a second
        delete returns False, and the id can be used again from version 1."""
        cid, user = new_id(), new_id("user")
        await store.save_state(cid, rich_state(), user_id=user)
        await store.update_state(cid, StatePatch(append_messages=[message(50)]))
        assert await store.delete_state(cid) is True
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)
        assert await store.list_conversations(user_id=user) == []
        assert await store.delete_state(cid) is False
        result = await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        assert result.version == 1 and result.message_count == 1
        loaded = await store.load_state(cid)
        assert loaded.user_id is None and len(loaded.conversation_history) == 1

    async def test_delete_leaves_other_conversations(self, store: Store) -> None:
        """Deleting one conversation does not touch another."""
        keep, drop = new_id(), new_id()
        await store.save_state(keep, rich_state())
        await store.save_state(drop, rich_state())
        await store.delete_state(drop)
        assert (await store.load_state(keep)).to_dict() == rich_state().to_dict()


class TestListing(ContractTest):
    """list_conversations: ordered by id, filtered by user, paged with limit/after."""

    async def test_listing_and_paging(self, store: Store) -> None:
        """Seven conversations of a fresh user come back in id order, 3 at a time, with
        their version, message count, owner and times."""
        user = new_id("user")
        prefix = new_id("list")
        ids = [f"{prefix}-{i}" for i in (4, 0, 6, 2, 1, 5, 3)]
        for n, cid in enumerate(ids):
            await store.save_state(
                cid, AgentState(conversation_history=[message(i) for i in range(n)]), user_id=user
            )
        await store.update_state(ids[0], StatePatch(append_messages=[message(9)]))
        await store.save_state(new_id(), AgentState(), user_id=new_id("user"))  # not ours

        pages, after = [], None
        while True:
            page = await store.list_conversations(user_id=user, limit=3, after=after)
            assert len(page) <= 3
            if not page:
                break
            pages.append([c.conversation_id for c in page])
            after = page[-1].conversation_id
        assert pages == [
            [f"{prefix}-{i}" for i in (0, 1, 2)],
            [f"{prefix}-{i}" for i in (3, 4, 5)],
            [f"{prefix}-6"],
        ]
        infos = {c.conversation_id: c for c in await store.list_conversations(user_id=user)}
        assert sorted(infos) == sorted(ids)
        for n, cid in enumerate(ids):
            info = infos[cid]
            assert info.user_id == user
            assert info.message_count == (n + 1 if n == 0 else n)
            assert info.version == (2 if n == 0 else 1)
            assert info.created_at <= info.updated_at
            assert info.created_at.utcoffset() is not None
        first = infos[ids[0]]
        assert first.updated_at > first.created_at or first.version == 2

    async def test_listing_everyone(self, store: Store) -> None:
        """Without user_id every conversation is listed, in id order, starting after
        ``after``."""
        prefix = new_id("all")
        ids = [f"{prefix}-{i}" for i in range(3)]
        for cid in ids:
            await store.save_state(cid, AgentState(), user_id=new_id("user"))
        listed = await store.list_conversations(after=f"{prefix}-", limit=3)
        assert [c.conversation_id for c in listed] == ids
        everyone = [c.conversation_id for c in await store.list_conversations(limit=10_000)]
        assert everyone == sorted(everyone) and set(ids) <= set(everyone)

    async def test_listing_order_is_by_code_point(self, store: Store) -> None:
        """Ids are ordered by Unicode code point (case, punctuation and accents
        included), whatever the database's collation, and paging follows that order."""
        user, prefix = new_id("user"), new_id("order")
        suffixes = ["b", "A", "a", "_x", "Z", "a-1", "a1", "é", "日本", "a b", "~"]
        ids = [f"{prefix}-{s}" for s in suffixes]
        for cid in ids:
            await store.save_state(cid, AgentState(), user_id=user)
        listed = [c.conversation_id for c in await store.list_conversations(user_id=user)]
        assert listed == sorted(ids)
        paged, after = [], None
        while page := await store.list_conversations(user_id=user, limit=4, after=after):
            paged += [c.conversation_id for c in page]
            after = page[-1].conversation_id
        assert paged == sorted(ids)

    async def test_unknown_user_lists_nothing(self, store: Store) -> None:
        """A user with no conversations gets an empty list."""
        assert await store.list_conversations(user_id=new_id("user")) == []

    async def test_bad_listing_arguments(self, store: Store) -> None:
        """A limit below 1 or a malformed id raises ValidationError."""
        bad: list[dict[str, Any]] = [{"limit": 0}, {"limit": -1}, {"after": ""}, {"user_id": 5}]
        for arguments in bad:
            with pytest.raises(ValidationError):
                await store.list_conversations(**arguments)


BAD_TEXT = ["a\x00b", "\x00", "lone \ud800 surrogate"]


def _bad_states(text: str) -> dict[str, AgentState]:
    return {
        "user_input": AgentState(user_input=text),
        "focus_areas": AgentState(focus_areas=["ok", text]),
        "last_tool_result": AgentState(last_tool_result={"k": [text]}),
        "metadata value": AgentState(metadata={"k": text}),
        "metadata key": AgentState(metadata={text: 1}),
    }


class TestValidation(ContractTest):
    """Bad values (NUL characters, lone surrogates, wrong types) raise ValidationError
    on every backend before any I/O, and nothing is written."""

    async def test_bad_text_in_a_new_state(self, store: Store) -> None:
        """Each state field holding NUL or a lone surrogate is refused (the error names
        the field); the conversation is not created."""
        for text in BAD_TEXT:
            for field, state in _bad_states(text).items():
                cid = new_id()
                with pytest.raises(ValidationError) as raised:
                    await store.save_state(cid, state)
                assert raised.value.field.startswith(field.split()[0]), (field, raised.value)
                with pytest.raises(ConversationNotFound):
                    await store.load_state(cid)

    async def test_bad_text_in_a_loaded_state(self, store: Store) -> None:
        """A loaded state changed to hold bad text (next to valid appends) is refused and
        the stored state stays as it was."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        before = await store.load_state(cid)
        for text, field in [(t, f) for t in BAD_TEXT for f in ("user_input", "metadata")]:
            state = await store.load_state(cid)
            state.conversation_history.append(message(50))
            if field == "user_input":
                state.user_input = text
            else:
                state.metadata["new"] = text
            with pytest.raises(ValidationError) as raised:
                await store.save_state(cid, state)
            assert field in raised.value.field
            assert state.conversation_history[-1].seq is None
        after = await store.load_state(cid)
        assert after == before and after.version == 1

    async def test_bad_ids(self, store: Store) -> None:
        """A conversation id or user id with bad text is refused by every operation."""
        for text in BAD_TEXT:
            calls: list[Callable[[], Awaitable[object]]] = [
                partial(store.save_state, text, AgentState()),
                partial(store.save_state, new_id(), AgentState(), user_id=text),
                partial(store.load_state, text),
                partial(store.update_state, text, StatePatch()),
                partial(store.delete_state, text),
                partial(store.list_conversations, user_id=text),
                partial(store.list_conversations, after=text),
            ]
            for call in calls:
                with pytest.raises(ValidationError):
                    await call()

    @pytest.mark.parametrize(
        "field",
        ["user_input", "focus_areas", "last_tool_result", "set_metadata", "message", "item"],
    )
    async def test_bad_text_in_a_patch(self, field: str) -> None:
        """A StatePatch, Message or ContextItem holding NUL is refused when built."""
        from ...core.model import ContextItem, Message

        values: dict[str, Any] = {
            "user_input": "a\x00",
            "focus_areas": ["a\x00"],
            "last_tool_result": ["a\x00"],
            "set_metadata": {"k\x00": 1},
        }
        with pytest.raises(ValidationError):
            if field == "message":
                Message(role="user", content="a\x00")
            elif field == "item":
                ContextItem(content="ok", source="a\x00")
            else:
                StatePatch(**{field: values[field]})

    async def test_bad_values_write_nothing(self, store: Store) -> None:
        """Out-of-range ints, non-finite floats, non-JSON values and wrong types raise
        ValidationError and create nothing."""
        bad_states = [
            AgentState(step_count=-1),
            AgentState(step_count=2**63),
            AgentState(step_count=True),
            AgentState(last_tool_result=float("nan")),
            AgentState(last_tool_result=float("inf")),
            AgentState(last_tool_result=2**64),
            AgentState(last_tool_result={1: "int key"}),
            AgentState(last_tool_result=(1, 2)),
            AgentState(metadata=[]),  # type: ignore[arg-type]
            AgentState(conversation_history=["not a message"]),  # type: ignore[list-item]
            AgentState(memory_context=[{"content": "x"}]),  # type: ignore[list-item]
            "not a state",
        ]
        for state in bad_states:
            cid = new_id()
            with pytest.raises(ValidationError):
                await store.save_state(cid, state)  # type: ignore[arg-type]
            with pytest.raises(ConversationNotFound):
                await store.load_state(cid)

    async def test_out_of_range_timestamps(self) -> None:
        """A timestamp that has no UTC equivalent raises ValidationError, not
        OverflowError; the extremes that do round trip (see TestRoundTrip)."""
        from datetime import datetime, timedelta, timezone

        from ...core.model import ContextItem, Message

        early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
        late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
        for when in (early, late):
            with pytest.raises(ValidationError, match="timestamp"):
                Message(role="user", content="x", timestamp=when)
            with pytest.raises(ValidationError, match="timestamp"):
                ContextItem(content="x", timestamp=when)

    async def test_too_deep_json(self, store: Store) -> None:
        """JSON nested deeper than 64 levels (or a cycle) is refused."""
        deep: Any = []
        for _ in range(70):
            deep = [deep]
        cycle: dict[str, Any] = {}
        cycle["self"] = cycle
        for value in (deep, cycle):
            cid = new_id()
            with pytest.raises(ValidationError):
                await store.save_state(cid, AgentState(metadata={"v": value}))
            with pytest.raises(ConversationNotFound):
                await store.load_state(cid)
