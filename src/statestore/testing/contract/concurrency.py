"""Contract: concurrent writers lose nothing.

Many tasks on one store write at once: every append is kept, each writer's messages
stay in the order it wrote them, seqs are contiguous, ``expected_version`` neither
raises a false conflict nor lets a stale write through, and unversioned scalar updates
are last-writer-wins without disturbing appends. The load scales with the engine:
100 concurrent tasks on PostgreSQL, 20 elsewhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest

from ...core.errors import ConversationNotFound, VersionConflict
from ...core.model import AgentState, Message
from ...core.query import LoadOptions, StatePatch
from ...core.store import Store
from ..plugin import BackendTarget
from ._support import ContractTest, new_id

__all__ = ["TestConcurrentWriters", "writers_for"]

APPENDS_PER_WRITER = 3


def writers_for(target: BackendTarget) -> int:
    """Concurrent tasks for this engine: a server takes 100, an embedded file 20."""
    return 100 if target.engine == "postgresql" else 20


def _by_writer(messages: list[Message]) -> dict[str, list[int]]:
    """``w<writer>:<n>`` contents grouped by writer, in stored order."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        writer, n = m.content.split(":")
        grouped[writer].append(int(n))
    return grouped


def _assert_contiguous(state: AgentState, expected: int) -> None:
    seqs = [m.seq for m in state.conversation_history]
    assert seqs == list(range(expected)), f"seqs are not 0..{expected - 1}: {seqs}"
    assert state.history_total == expected


class TestConcurrentWriters(ContractTest):
    """Many tasks writing through one store at once."""

    async def test_concurrent_update_appends_are_all_kept_in_writer_order(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """Many tasks appending with update_state to one conversation: every message is
        kept, each writer's messages in its own order, seqs 0..n-1 with no gap."""
        writers = writers_for(backend_target)
        cid = new_id("conc")
        await store.save_state(cid, AgentState(user_input="start"))

        async def writer(w: int) -> None:
            for n in range(APPENDS_PER_WRITER):
                patch = StatePatch(append_messages=[Message(role="user", content=f"w{w}:{n}")])
                await store.update_state(cid, patch)

        await asyncio.gather(*(writer(w) for w in range(writers)))

        loaded = await store.load_state(cid)
        total = writers * APPENDS_PER_WRITER
        _assert_contiguous(loaded, total)
        assert loaded.version == 1 + total
        grouped = _by_writer(loaded.conversation_history)
        assert len(grouped) == writers
        for writer_id, ns in grouped.items():
            assert ns == list(range(APPENDS_PER_WRITER)), f"{writer_id} out of order: {ns}"

    async def test_concurrent_save_appends_are_all_kept_as_whole_batches(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """Tasks that each load a window, append two messages and save_state: every batch
        is kept whole and adjacent (one transaction), and nobody's messages are dropped."""
        writers = writers_for(backend_target)
        cid = new_id("conc")
        await store.save_state(cid, AgentState(conversation_history=[Message("system", "s:0")]))

        async def writer(w: int) -> None:
            for turn in range(2):
                state = await store.load_state(cid, LoadOptions(last_messages=1))
                state.conversation_history.append(Message("user", f"w{w}:{2 * turn}"))
                state.conversation_history.append(Message("assistant", f"w{w}:{2 * turn + 1}"))
                result = await store.save_state(cid, state)
                assert result.version == state.version

        await asyncio.gather(*(writer(w) for w in range(writers)))

        loaded = await store.load_state(cid)
        total = 1 + writers * 4
        _assert_contiguous(loaded, total)
        grouped = _by_writer(loaded.conversation_history)
        assert grouped.pop("s") == [0]
        assert len(grouped) == writers
        for ns in grouped.values():
            assert ns == [0, 1, 2, 3]
        history = loaded.conversation_history
        for i, m in enumerate(history):
            if m.role == "user":  # its assistant reply was saved in the same transaction
                assert history[i + 1].content.split(":")[0] == m.content.split(":")[0]

    async def test_versioned_increments_never_lose_an_update(self, store: Store) -> None:
        """Read-modify-write with expected_version from many tasks: the final counter
        equals the number of successful writes (no stale write got through), and every
        conflict reported a version that really had moved on (no false conflict)."""
        tasks, increments = 10, 3
        cid = new_id("conc")
        await store.save_state(cid, AgentState(step_count=0))
        conflicts = 0

        async def incrementer() -> None:
            nonlocal conflicts
            for _ in range(increments):
                while True:
                    state = await store.load_state(cid, LoadOptions(last_messages=0))
                    patch = StatePatch(step_count=state.step_count + 1)
                    try:
                        await store.update_state(cid, patch, expected_version=state.version)
                        break
                    except VersionConflict as exc:
                        assert exc.expected == state.version
                        assert exc.actual > exc.expected, "conflict without a newer version"
                        conflicts += 1

        await asyncio.gather(*(incrementer() for _ in range(tasks)))

        final = await store.load_state(cid)
        assert final.step_count == tasks * increments
        assert final.version == 1 + tasks * increments

    async def test_fresh_version_always_succeeds_and_stale_one_always_fails(
        self,
        store: Store,
    ) -> None:
        """A write naming the version it just read succeeds every time; one naming an
        older version raises VersionConflict and changes nothing, appends included."""
        cid = new_id("conc")
        version = (await store.save_state(cid, AgentState(step_count=0))).version
        for i in range(1, 6):
            patch = StatePatch(step_count=i, append_messages=[Message("user", f"turn {i}")])
            version = (await store.update_state(cid, patch, expected_version=version)).version
        before = await store.load_state(cid)
        assert before.version == version == 6

        stale = StatePatch(step_count=99, append_messages=[Message("user", "stale")])
        with pytest.raises(VersionConflict) as info:
            await store.update_state(cid, stale, expected_version=version - 1)
        assert (info.value.expected, info.value.actual) == (version - 1, version)
        replacement = AgentState(step_count=99, conversation_history=[Message("user", "stale")])
        with pytest.raises(VersionConflict):
            await store.save_state(cid, replacement, expected_version=version - 1)
        with pytest.raises(VersionConflict):
            await store.save_state(cid, AgentState(step_count=99), expected_version=0)

        after = await store.load_state(cid)
        assert after.version == version
        assert after.to_dict() == before.to_dict()
        # The state object that read the latest version can still write.
        before.step_count = 7
        assert (
            await store.save_state(cid, before, expected_version=version)
        ).version == version + 1

    async def test_concurrent_creates_with_expected_version_zero_have_one_winner(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """expected_version=0 ("must not exist yet") from many tasks at once: exactly one
        creates the conversation, the others get VersionConflict, the winner's state is
        what is stored."""
        writers = writers_for(backend_target)
        cid = new_id("conc")

        async def create(w: int) -> int | None:
            state = AgentState(
                user_input=f"w{w}", conversation_history=[Message("user", f"w{w}:0")]
            )
            try:
                await store.save_state(cid, state, expected_version=0)
            except VersionConflict:
                return None
            return w

        results = await asyncio.gather(*(create(w) for w in range(writers)))
        winners = [w for w in results if w is not None]
        assert len(winners) == 1
        stored = await store.load_state(cid)
        assert stored.version == 1
        assert stored.user_input == f"w{winners[0]}"
        assert [m.content for m in stored.conversation_history] == [f"w{winners[0]}:0"]

    async def test_concurrent_unversioned_creates_all_succeed(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """Replacing saves without a version on a conversation that does not exist
        yet, from many tasks at once: one creates it, the others replace it in turn
        (no false VersionConflict), and the last one's state is what is stored."""
        writers = writers_for(backend_target)
        cid = new_id("conc")

        async def create(w: int) -> int:
            state = AgentState(
                user_input=f"w{w}", conversation_history=[Message("user", f"w{w}:0")]
            )
            return (await store.save_state(cid, state)).version

        versions = await asyncio.gather(*(create(w) for w in range(writers)))
        assert sorted(versions) == list(range(1, writers + 1))
        stored = await store.load_state(cid)
        assert stored.version == writers
        assert [m.content for m in stored.conversation_history] == [f"{stored.user_input}:0"]

    async def test_unversioned_scalar_updates_are_last_writer_wins(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """Concurrent writes without a version: the stored scalars are those of the last
        write to commit (the one whose message got the highest seq), and appends made
        alongside scalar-only updates are all kept."""
        writers = writers_for(backend_target)
        cid = new_id("conc")
        await store.save_state(cid, AgentState(user_input="start", step_count=0))

        async def both(w: int) -> None:
            await store.update_state(
                cid,
                StatePatch(
                    user_input=f"w{w}",
                    step_count=w,
                    append_messages=[Message("user", f"w{w}:0")],
                ),
            )

        async def scalar_only(w: int) -> None:
            await store.update_state(cid, StatePatch(focus_areas=[f"w{w}"]))

        jobs = [both(w) for w in range(writers)] + [scalar_only(w) for w in range(writers)]
        await asyncio.gather(*jobs)

        final = await store.load_state(cid)
        _assert_contiguous(final, writers)
        assert final.version == 1 + 2 * writers
        last_writer = final.conversation_history[-1].content.split(":")[0]
        assert final.user_input == last_writer
        assert final.step_count == int(last_writer[1:])
        assert len(final.focus_areas) == 1 and final.focus_areas[0] in {
            f"w{w}" for w in range(writers)
        }

    async def test_many_users_on_many_conversations_at_once(
        self, store: Store, backend_target: BackendTarget
    ) -> None:
        """Each of many users runs a conversation of several turns at the same time (more
        users than pooled connections on PostgreSQL: callers wait, nobody fails); every
        turn is stored, and each user sees only their own conversation."""
        users = writers_for(backend_target)
        turns = 3
        run = uuid.uuid4().hex[:8]

        async def user(u: int) -> None:
            uid, cid = f"user-{run}-{u}", f"conv-{run}-{u}"
            await store.save_state(cid, AgentState(user_input="hello"), user_id=uid)
            for t in range(turns):
                state = await store.load_state(cid, LoadOptions(last_messages=2), user_id=uid)
                state.conversation_history += [
                    Message("user", f"u{u}:{2 * t}"),
                    Message("assistant", f"u{u}:{2 * t + 1}"),
                ]
                state.step_count = t + 1
                await store.save_state(cid, state, user_id=uid)
            await store.update_state(cid, StatePatch(set_metadata={"done": True}), user_id=uid)

        await asyncio.gather(*(user(u) for u in range(users)))

        for u in range(users):
            uid, cid = f"user-{run}-{u}", f"conv-{run}-{u}"
            state = await store.load_state(cid, user_id=uid)
            assert [m.content for m in state.conversation_history] == [
                f"u{u}:{n}" for n in range(2 * turns)
            ]
            assert (state.step_count, state.metadata, state.version) == (turns, {"done": True}, 5)
            listed = await store.list_conversations(user_id=uid)
            assert [info.conversation_id for info in listed] == [cid]
            other = f"user-{run}-{(u + 1) % users}"
            with pytest.raises(ConversationNotFound):
                await store.load_state(cid, user_id=other)
