"""Invariant 2 (appends are O(new), windows never delete what they did not load) and
invariant 3 (partial updates): saving a loaded state and ``update_state``."""

from __future__ import annotations

from typing import Any

import pytest

from ...core.errors import ConversationNotFound, ValidationError
from ...core.model import AgentState, Message
from ...core.query import LoadOptions, StatePatch
from ...core.store import Store
from ._support import ContractTest, item, message, new_id, requires, rich_state

__all__ = ["TestIncrementalSave", "TestStatePatch"]


def contents(state: AgentState) -> list[str]:
    return [m.content for m in state.conversation_history]


class TestIncrementalSave(ContractTest):
    """Invariant 2: a state loaded (or saved) before writes only what changed."""

    async def test_append_to_loaded_state(self, store: Store) -> None:
        """Appending to a loaded state and saving it keeps the old messages and gives
        the new ones the next seqs."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0), message(1)]))
        state = await store.load_state(cid)
        state.conversation_history += [message(2), message(3)]
        result = await store.save_state(cid, state)
        assert result.message_count == 4 and result.version == 2
        assert [m.seq for m in state.conversation_history] == [0, 1, 2, 3]
        loaded = await store.load_state(cid)
        assert loaded == state

    async def test_unchanged_state_saved_again(self, store: Store) -> None:
        """Saving a loaded state twice without changes duplicates nothing; each save is
        a write (version + 1) and the times agree with what loads report."""
        cid, user = new_id(), new_id("user")
        await store.save_state(cid, rich_state(), user_id=user)
        state = await store.load_state(cid)
        first = await store.save_state(cid, state)
        second = await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.to_dict() == rich_state().to_dict()
        assert (first.version, second.version, loaded.version) == (2, 3, 3)
        assert loaded.updated_at == second.updated_at == state.updated_at
        assert loaded.created_at == state.created_at
        assert loaded.created_at is not None and loaded.created_at <= second.updated_at
        (listed,) = await store.list_conversations(user_id=user)
        assert (listed.created_at, listed.updated_at) == (loaded.created_at, second.updated_at)
        assert (listed.version, listed.message_count) == (3, 24)

    async def test_same_object_saved_turn_after_turn(self, store: Store) -> None:
        """One state object saved after every turn keeps the store equal to it."""
        cid = new_id()
        state = AgentState()
        for turn in range(5):
            state.conversation_history.append(message(turn))
            state.memory_context.append(item(turn, turn / 10))
            state.step_count = turn
            state.metadata[f"turn{turn}"] = turn
            result = await store.save_state(cid, state)
            assert result.version == turn + 1
        loaded = await store.load_state(cid)
        assert loaded == state and loaded.to_dict() == state.to_dict()

    async def test_window_never_deletes_unloaded_messages(self, store: Store) -> None:
        """A state loaded with last_messages=2, appended to and saved, keeps every
        message it did not load."""
        cid = new_id()
        await store.save_state(
            cid, AgentState(conversation_history=[message(i) for i in range(10)])
        )
        window = await store.load_state(cid, LoadOptions(last_messages=2))
        window.conversation_history.append(message(10))
        window.user_input = "next"
        result = await store.save_state(cid, window)
        assert result.message_count == 11
        loaded = await store.load_state(cid)
        assert contents(loaded) == [f"message {i}" for i in range(11)]
        assert [m.seq for m in loaded.conversation_history] == list(range(11))
        assert loaded.user_input == "next"

    async def test_empty_window_then_append(self, store: Store) -> None:
        """A state loaded with last_messages=0 appends after the stored history."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(i) for i in range(3)]))
        state = await store.load_state(cid, LoadOptions(last_messages=0))
        state.conversation_history.append(message(3))
        await store.save_state(cid, state)
        assert contents(await store.load_state(cid)) == [f"message {i}" for i in range(4)]

    async def test_window_edit_rewrites_only_the_window(self, store: Store) -> None:
        """Editing the loaded tail (replace one message, drop another) rewrites the
        window and keeps what is before it."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(i) for i in range(6)]))
        window = await store.load_state(cid, LoadOptions(last_messages=3))
        window.conversation_history[0] = message(30, content="edited")
        del window.conversation_history[2]
        result = await store.save_state(cid, window)
        assert result.message_count == 5
        loaded = await store.load_state(cid)
        expected = ["message 0", "message 1", "message 2", "edited", "message 4"]
        assert contents(loaded) == expected
        assert [m.seq for m in loaded.conversation_history] == list(range(5))

    async def test_filtered_state_refuses_edits(self, store: Store) -> None:
        """A state loaded with a message filter cannot edit or drop its loaded messages
        (ValidationError, nothing written) but can append."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        state = await store.load_state(cid, LoadOptions(message_types=frozenset({"tool_call"})))
        assert len(state.conversation_history) == 8
        before = await store.load_state(cid)

        state.conversation_history[0] = message(50, content="edited")
        with pytest.raises(ValidationError) as raised:
            await store.save_state(cid, state)
        assert raised.value.field == "conversation_history"
        del state.conversation_history[0]
        with pytest.raises(ValidationError):
            await store.save_state(cid, state)
        after = await store.load_state(cid)
        assert after == before and after.version == before.version

        state = await store.load_state(cid, LoadOptions(tool_name="search"))
        state.conversation_history.append(message(24, message_type="tool_call", tool_name="search"))
        result = await store.save_state(cid, state)
        assert result.message_count == 25
        loaded = await store.load_state(cid)
        assert loaded.conversation_history[:24] == before.conversation_history
        assert loaded.conversation_history[24].tool_name == "search"
        assert loaded.conversation_history[24].seq == 24

    async def test_context_filter_never_deletes_unloaded_items(self, store: Store) -> None:
        """A state loaded with min_relevance and context_limit keeps unloaded items on
        save; removing a loaded item removes only that one."""
        cid = new_id()
        await store.save_state(cid, AgentState(memory_context=[item(i, i / 10) for i in range(10)]))
        state = await store.load_state(cid, LoadOptions(min_relevance=0.5, context_limit=3))
        assert [c.content for c in state.memory_context] == ["item 7", "item 8", "item 9"]
        removed = state.memory_context.pop(1)
        state.memory_context.append(item(10, 0.05))
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        names = [c.content for c in loaded.memory_context]
        assert names == [f"item {i}" for i in range(10) if i != 8] + ["item 10"]
        assert removed.content not in names

    async def test_metadata_changes(self, store: Store) -> None:
        """Changing, adding and deleting metadata keys of a loaded state is saved."""
        cid = new_id()
        await store.save_state(cid, AgentState(metadata={"keep": 1, "change": [1], "drop": "x"}))
        state = await store.load_state(cid)
        state.metadata["change"].append(2)  # mutated in place
        state.metadata["new"] = {"a": None}
        del state.metadata["drop"]
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.metadata == {"keep": 1, "change": [1, 2], "new": {"a": None}}

    async def test_scalar_changes_of_loaded_state(self, store: Store) -> None:
        """Scalar fields of a loaded state are saved, None included."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        state = await store.load_state(cid, LoadOptions(last_messages=1))
        state.user_input = None
        state.focus_areas = []
        state.step_count = 8
        state.last_tool_result = None
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert (loaded.user_input, loaded.focus_areas, loaded.step_count) == (None, [], 8)
        assert loaded.last_tool_result is None
        assert len(loaded.conversation_history) == 24

    async def test_clearing_a_loaded_history_truncates(self, store: Store) -> None:
        """Emptying the history of a fully loaded state deletes the stored messages."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0), message(1)]))
        state = await store.load_state(cid)
        state.conversation_history.clear()
        result = await store.save_state(cid, state)
        assert result.message_count == 0
        assert (await store.load_state(cid)).conversation_history == []

    @requires("stable_item_ids")
    async def test_item_ids_are_stable_and_never_reused(self, store: Store) -> None:
        """Removing an item leaves the others' ids unchanged; a new item never gets the
        id of a removed one, even the newest."""
        cid = new_id()
        await store.save_state(cid, AgentState(memory_context=[item(i) for i in range(3)]))
        state = await store.load_state(cid)
        ids = [c.item_id for c in state.memory_context]
        last = state.memory_context.pop()
        first = state.memory_context.pop(0)
        await store.save_state(cid, state)
        await store.update_state(cid, StatePatch(add_context=[item(3)]))
        loaded = await store.load_state(cid)
        assert loaded.memory_context[0].item_id == ids[1]
        new_id_ = loaded.memory_context[1].item_id
        assert new_id_ not in ids and new_id_ not in (first.item_id, last.item_id)


SCALAR_PATCHES: list[dict[str, Any]] = [
    {"user_input": "new input"},
    {"user_input": None},
    {"focus_areas": ["x", "y"]},
    {"focus_areas": []},
    {"step_count": 42},
    {"step_count": 0},
    {"last_tool_result": {"deep": [1, {"x": None}]}},
    {"last_tool_result": None},
    {"last_tool_result": "text"},
]


class TestStatePatch(ContractTest):
    """Invariant 3: update_state applies a StatePatch in one transaction."""

    async def test_scalar_field_alone(self, store: Store) -> None:
        """A patch of one scalar field (None included) sets it and leaves every other
        field as it was."""
        for fields in SCALAR_PATCHES:
            cid = new_id()
            await store.save_state(cid, rich_state())
            result = await store.update_state(cid, StatePatch(**fields))
            assert (result.version, result.message_count) == (2, 24), fields
            loaded = await store.load_state(cid)
            expected = rich_state()
            for name, value in fields.items():
                setattr(expected, name, value)
            assert loaded.to_dict() == expected.to_dict(), fields

    async def test_empty_patch_still_a_write(self, store: Store) -> None:
        """An empty patch changes no field but increments the version."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        result = await store.update_state(cid, StatePatch())
        loaded = await store.load_state(cid)
        assert result.version == loaded.version == 2
        assert loaded.to_dict() == rich_state().to_dict()

    async def test_append_messages(self, store: Store) -> None:
        """append_messages extends the history with the next seqs."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        result = await store.update_state(cid, StatePatch(append_messages=[message(1), message(2)]))
        assert result.message_count == 3
        loaded = await store.load_state(cid)
        assert contents(loaded) == ["message 0", "message 1", "message 2"]
        assert [m.seq for m in loaded.conversation_history] == [0, 1, 2]

    async def test_add_and_remove_context(self, store: Store) -> None:
        """add_context appends items; remove_context removes the items with those ids
        (unknown ids are ignored)."""
        cid = new_id()
        await store.save_state(cid, AgentState(memory_context=[item(0), item(1), item(2)]))
        ids = [c.item_id or 0 for c in (await store.load_state(cid)).memory_context]
        assert len(set(ids)) == 3
        await store.update_state(cid, StatePatch(remove_context=[ids[1], 10_000]))
        await store.update_state(cid, StatePatch(add_context=[item(3, 0.9)]))
        loaded = await store.load_state(cid)
        assert [c.content for c in loaded.memory_context] == ["item 0", "item 2", "item 3"]
        assert loaded.memory_context[2].relevance_score == 0.9

    async def test_set_and_delete_metadata(self, store: Store) -> None:
        """set_metadata sets keys (None is a value), delete_metadata removes keys
        (missing keys are ignored), other keys stay."""
        cid = new_id()
        await store.save_state(cid, AgentState(metadata={"a": 1, "b": 2, "c": 3}))
        await store.update_state(
            cid,
            StatePatch(set_metadata={"a": None, "d": {"x": [1]}}, delete_metadata=["b", "zz"]),
        )
        loaded = await store.load_state(cid)
        assert loaded.metadata == {"a": None, "c": 3, "d": {"x": [1]}}

    async def test_every_field_in_one_patch(self, store: Store) -> None:
        """A patch with every field applies all of them in one write."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        first = (await store.load_state(cid)).memory_context[0]
        patch = StatePatch(
            user_input="u",
            focus_areas=["plan"],
            step_count=8,
            last_tool_result=[1, 2],
            append_messages=[message(24)],
            add_context=[item(12, 0.99, context_type="plan")],
            remove_context=[first.item_id] if first.item_id is not None else [],
            set_metadata={"n": 4},
            delete_metadata=["none"],
        )
        result = await store.update_state(cid, patch)
        assert result.version == 2 and result.message_count == 25
        loaded = await store.load_state(cid)
        expected = rich_state()
        expected.user_input, expected.focus_areas, expected.step_count = "u", ["plan"], 8
        expected.last_tool_result = [1, 2]
        expected.conversation_history.append(message(24))
        expected.memory_context = [
            *expected.memory_context[1:],
            item(12, 0.99, context_type="plan"),
        ]
        expected.metadata["n"] = 4
        del expected.metadata["none"]
        assert loaded.to_dict() == expected.to_dict()

    async def test_patch_then_loaded_state_save(self, store: Store) -> None:
        """A state loaded before a patch and saved after it keeps the patch's appended
        messages (they are not in its window, so they are not its to delete)."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        state = await store.load_state(cid)
        await store.update_state(cid, StatePatch(append_messages=[message(1)]))
        state.conversation_history.append(message(2))
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert contents(loaded) == ["message 0", "message 1", "message 2"]
        assert [m.seq for m in loaded.conversation_history] == [0, 1, 2]

    async def test_patch_of_missing_conversation(self, store: Store) -> None:
        """update_state of a conversation that does not exist raises
        ConversationNotFound and creates nothing."""
        cid = new_id()
        with pytest.raises(ConversationNotFound):
            await store.update_state(cid, StatePatch(append_messages=[message(0)]))
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)

    async def test_patch_must_be_a_state_patch(self, store: Store) -> None:
        """Passing something other than a StatePatch raises ValidationError."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        with pytest.raises(ValidationError):
            await store.update_state(cid, {"step_count": 1})  # type: ignore[arg-type]

    async def test_appended_message_objects_are_not_modified(self, store: Store) -> None:
        """Messages handed to a patch are values: the caller's objects stay as they were."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        mine = Message(role="user", content="hi")
        await store.update_state(cid, StatePatch(append_messages=[mine]))
        assert mine.seq is None
        assert (await store.load_state(cid)).conversation_history == [mine]
