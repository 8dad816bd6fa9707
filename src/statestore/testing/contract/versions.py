"""Invariant 5 (versions) and invariant 4 (atomic writes): every write increments the
version; a stale ``expected_version`` raises VersionConflict and changes nothing; a
write that fails leaves the previous state exactly as it was; concurrent appends
without ``expected_version`` are all kept."""

from __future__ import annotations

import asyncio

import pytest

from ...core.errors import ConversationNotFound, StateStoreError, VersionConflict
from ...core.model import AgentState
from ...core.query import LoadOptions, StatePatch
from ...core.store import Store
from ._support import ContractTest, item, message, new_id, rich_state

__all__ = ["TestVersions", "TestAtomicWrites", "TestStaleCopies"]


class TestVersions(ContractTest):
    """Invariant 5: versions and optimistic concurrency."""

    async def test_every_write_increments_the_version(self, store: Store) -> None:
        """save, save, update, save: versions 1, 2, 3, 4, as loads report."""
        cid = new_id()
        state = AgentState()
        versions = [(await store.save_state(cid, state)).version]
        state.step_count = 1
        versions.append((await store.save_state(cid, state)).version)
        versions.append((await store.update_state(cid, StatePatch(step_count=2))).version)
        versions.append((await store.save_state(cid, AgentState())).version)
        assert versions == [1, 2, 3, 4]
        assert (await store.load_state(cid)).version == 4

    async def test_matching_expected_version_writes(self, store: Store) -> None:
        """expected_version equal to the stored version lets save and update through."""
        cid = new_id()
        await store.save_state(cid, AgentState(), expected_version=0)
        state = await store.load_state(cid)
        state.user_input = "x"
        assert (await store.save_state(cid, state, expected_version=1)).version == 2
        patch = StatePatch(step_count=3)
        assert (await store.update_state(cid, patch, expected_version=2)).version == 3

    async def test_expected_version_zero_means_new(self, store: Store) -> None:
        """expected_version=0 creates a conversation, and raises VersionConflict (writing
        nothing) when it already exists."""
        cid = new_id()
        await store.save_state(cid, AgentState(user_input="first"), expected_version=0)
        with pytest.raises(VersionConflict) as raised:
            await store.save_state(cid, AgentState(user_input="second"), expected_version=0)
        assert raised.value.conversation_id == cid
        assert raised.value.expected == 0 and raised.value.actual == 1
        loaded = await store.load_state(cid)
        assert (loaded.user_input, loaded.version) == ("first", 1)

    async def test_stale_save_conflicts_and_changes_nothing(self, store: Store) -> None:
        """A save naming a stale version raises VersionConflict with both versions and
        leaves the stored state as it was."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        await store.update_state(cid, StatePatch(step_count=9))
        before = await store.load_state(cid)
        stale = AgentState(user_input="stale", conversation_history=[message(0)])
        with pytest.raises(VersionConflict) as raised:
            await store.save_state(cid, stale, expected_version=1)
        assert (raised.value.expected, raised.value.actual) == (1, 2)
        after = await store.load_state(cid)
        assert after == before and after.version == 2

    async def test_stale_update_conflicts_and_changes_nothing(self, store: Store) -> None:
        """An update naming a stale version raises VersionConflict and applies no part
        of the patch."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        before = await store.load_state(cid)
        patch = StatePatch(
            user_input="no",
            append_messages=[message(99)],
            add_context=[item(99)],
            set_metadata={"no": 1},
            delete_metadata=["n"],
        )
        with pytest.raises(VersionConflict):
            await store.update_state(cid, patch, expected_version=5)
        after = await store.load_state(cid)
        assert after == before and after.version == 1

    async def test_expected_version_of_missing_conversation(self, store: Store) -> None:
        """A write naming a version >= 1 of a conversation that does not exist raises
        ConversationNotFound and creates nothing."""
        cid = new_id()
        with pytest.raises(ConversationNotFound):
            await store.save_state(cid, AgentState(), expected_version=1)
        with pytest.raises(ConversationNotFound):
            await store.update_state(cid, StatePatch(step_count=1), expected_version=1)
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)

    async def test_loaded_state_knows_its_version(self, store: Store) -> None:
        """A loaded state's version is what to pass as expected_version; the object's
        version follows its own saves."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        state = await store.load_state(cid, LoadOptions(last_messages=0))
        state.conversation_history.append(message(0))
        await store.save_state(cid, state, expected_version=state.version)
        assert state.version == 2
        state.conversation_history.append(message(1))
        await store.save_state(cid, state, expected_version=state.version)
        assert (await store.load_state(cid)).version == 3

    async def test_ten_concurrent_appends_are_all_kept(self, store: Store) -> None:
        """10 concurrent update_state appends to one conversation are all stored, each
        with its own seq, and the version counts every write."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        await asyncio.gather(
            *(store.update_state(cid, StatePatch(append_messages=[message(i)])) for i in range(10))
        )
        loaded = await store.load_state(cid)
        assert sorted(m.content for m in loaded.conversation_history) == sorted(
            f"message {i}" for i in range(10)
        )
        assert [m.seq for m in loaded.conversation_history] == list(range(10))
        assert loaded.version == 11

    async def test_concurrent_saves_of_loaded_states_keep_all_appends(self, store: Store) -> None:
        """Five states loaded at the same version, each appending one message and saved
        concurrently without expected_version: all five messages are kept."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        states = [await store.load_state(cid) for _ in range(5)]
        for i, state in enumerate(states, start=1):
            state.conversation_history.append(message(i))
        await asyncio.gather(*(store.save_state(cid, s) for s in states))
        loaded = await store.load_state(cid)
        assert loaded.conversation_history[0].content == "message 0"
        assert sorted(m.content for m in loaded.conversation_history) == [
            f"message {i}" for i in range(6)
        ]
        assert [m.seq for m in loaded.conversation_history] == list(range(6))


class TestAtomicWrites(ContractTest):
    """Invariant 4: a write that fails leaves the previous state exactly as it was."""

    async def test_losing_writer_of_a_race_writes_nothing(self, store: Store) -> None:
        """Two writers load version 1 and save many changes with expected_version=1 at the
        same time: the database lets exactly one through; the other raises VersionConflict
        and none of its messages, items, metadata or scalars are stored."""
        cid = new_id()
        await store.save_state(cid, rich_state())
        a, b = await store.load_state(cid), await store.load_state(cid)
        for tag, state in (("a", a), ("b", b)):
            state.user_input = tag
            state.step_count += 1
            state.conversation_history += [message(100, content=f"{tag}{i}") for i in range(20)]
            state.memory_context.pop(0)
            state.memory_context.append(item(50, 0.9, content=tag))
            state.metadata[tag] = tag
            del state.metadata["session"]
        results = await asyncio.gather(
            store.save_state(cid, a, expected_version=1),
            store.save_state(cid, b, expected_version=1),
            return_exceptions=True,
        )
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(conflicts) == 1, results
        winner = "a" if results[1] is conflicts[0] else "b"
        loaded = await store.load_state(cid)
        assert loaded.version == 2 and loaded.user_input == winner
        loser = "b" if winner == "a" else "a"
        assert not [m for m in loaded.conversation_history if m.content.startswith(loser)]
        assert [c.content for c in loaded.memory_context].count(loser) == 0
        assert loser not in loaded.metadata
        assert len(loaded.conversation_history) == 44

    async def test_failed_batch_after_successful_writes(self, store: Store) -> None:
        """In a batch of writes the one that fails (stale version) is the only one
        missing: those before it are kept whole, it adds nothing."""
        cid = new_id()
        await store.save_state(cid, AgentState())
        for i in range(3):
            await store.update_state(
                cid, StatePatch(append_messages=[message(i)], step_count=i), expected_version=i + 1
            )
        before = await store.load_state(cid)
        with pytest.raises(VersionConflict):
            await store.update_state(
                cid,
                StatePatch(
                    append_messages=[message(i) for i in range(3, 50)],
                    add_context=[item(0)],
                    set_metadata={"half": "way"},
                    step_count=99,
                ),
                expected_version=3,
            )
        after = await store.load_state(cid)
        assert after == before and after.version == 4
        assert len(after.conversation_history) == 3 and after.step_count == 2

    async def test_failed_save_leaves_the_state_object_usable(self, store: Store) -> None:
        """After a failed save the object still saves its changes once the cause is
        fixed (here: by reloading its version)."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(0)]))
        state = await store.load_state(cid)
        await store.update_state(cid, StatePatch(step_count=5))
        state.conversation_history.append(message(1))
        with pytest.raises(VersionConflict):
            await store.save_state(cid, state, expected_version=state.version)
        assert state.conversation_history[1].seq is None  # not marked as stored
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert [m.content for m in loaded.conversation_history] == ["message 0", "message 1"]

    async def test_errors_are_statestore_errors(self, store: Store) -> None:
        """VersionConflict and ConversationNotFound derive from StateStoreError."""
        cid = new_id()
        with pytest.raises(StateStoreError):
            await store.load_state(cid)
        await store.save_state(cid, AgentState())
        with pytest.raises(StateStoreError):
            await store.save_state(cid, AgentState(), expected_version=7)


class TestStaleCopies(ContractTest):
    """Writes from a state object that others have written past since it was loaded."""

    async def test_concurrent_first_saves_without_expected_version(self, store: Store) -> None:
        """Five saves creating one new conversation at once, none naming a version, all
        succeed (a replacing save is last-writer-wins): no VersionConflict."""
        cid = new_id()
        states = [
            AgentState(user_input=f"s{i}", conversation_history=[message(i)]) for i in range(5)
        ]
        results = await asyncio.gather(
            *(store.save_state(cid, s) for s in states), return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        loaded = await store.load_state(cid)
        assert loaded.version == 5
        assert loaded.to_dict() in [s.to_dict() for s in states]

    async def test_edit_after_a_concurrent_append_keeps_the_append(self, store: Store) -> None:
        """A state loaded whole, then edited (a message replaced) after someone else
        appended, never deletes the message it did not load: the save raises
        VersionConflict (its positions are stale) and writes nothing."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(i) for i in range(3)]))
        state = await store.load_state(cid)
        await store.update_state(cid, StatePatch(append_messages=[message(3, content="theirs")]))
        before = await store.load_state(cid)
        state.conversation_history[1] = message(1, content="edited")
        with pytest.raises(VersionConflict):
            await store.save_state(cid, state)
        after = await store.load_state(cid)
        assert after == before and after.version == before.version
        assert [m.content for m in after.conversation_history][-1] == "theirs"

    async def test_window_edit_after_a_concurrent_append_keeps_the_append(
        self, store: Store
    ) -> None:
        """The same with a window: a state loaded with last_messages=2 and edited after a
        concurrent append raises VersionConflict; reloaded, the edit goes through."""
        cid = new_id()
        await store.save_state(cid, AgentState(conversation_history=[message(i) for i in range(5)]))
        window = await store.load_state(cid, LoadOptions(last_messages=2))
        await store.update_state(cid, StatePatch(append_messages=[message(5, content="theirs")]))
        del window.conversation_history[0]
        with pytest.raises(VersionConflict):
            await store.save_state(cid, window)
        window = await store.load_state(cid, LoadOptions(last_messages=2))
        del window.conversation_history[0]
        await store.save_state(cid, window)
        loaded = await store.load_state(cid)
        contents = [m.content for m in loaded.conversation_history]
        assert contents == ["message 0", "message 1", "message 2", "message 3", "theirs"]

    async def test_removal_from_a_stale_copy_removes_that_item(self, store: Store) -> None:
        """An item removed from a state after another writer removed an earlier item is
        the one removed (or the save raises VersionConflict); no other item is lost."""
        cid = new_id()
        await store.save_state(cid, AgentState(memory_context=[item(0), item(1), item(2)]))
        stale = await store.load_state(cid)
        first = (await store.load_state(cid)).memory_context[0]
        assert first.item_id is not None
        await store.update_state(cid, StatePatch(remove_context=[first.item_id]))
        stale.memory_context.pop(1)  # "item 1"
        try:
            await store.save_state(cid, stale)
        except VersionConflict:
            expected = ["item 1", "item 2"]
        else:
            expected = ["item 2"]
        loaded = await store.load_state(cid)
        assert [c.content for c in loaded.memory_context] == expected
