"""Faults on a real SQLite file: a writer process killed with SIGKILL mid-save, a file
locked by another writer past the retry budget, a statement failing half-way,
corrupt stored rows."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import statestore
from statestore import (
    AgentState,
    BackendUnavailable,
    ContextItem,
    ConversationNotFound,
    CorruptState,
    Message,
    StatePatch,
    StateStoreError,
)
from statestore.backends.sqlite import sqlite_path

CONVERSATIONS = 8
BATCH = 5

# Appends batches of BATCH messages to CONVERSATIONS conversations, forever: round r
# of conversation c writes "c:r:0".."c:r:4" and step_count=r in one transaction, by
# update_state on even rounds and save_state of a loaded window on odd ones.
WRITER = textwrap.dedent(
    f"""
    import asyncio, sys
    import statestore
    from statestore import AgentState, LoadOptions, Message, StatePatch

    async def main(url):
        async with statestore.open_store("sqlite", url) as store:
            for c in range({CONVERSATIONS}):
                try:
                    await store.load_state(f"c{{c}}")
                except statestore.ConversationNotFound:
                    await store.save_state(f"c{{c}}", AgentState(step_count=0))
            r = 0
            while True:
                for c in range({CONVERSATIONS}):
                    cid = f"c{{c}}"
                    state = await store.load_state(cid, LoadOptions(last_messages=1))
                    r = state.step_count + 1
                    batch = [Message("user", f"{{c}}:{{r}}:{{j}}") for j in range({BATCH})]
                    if r % 2:
                        state.conversation_history += batch
                        state.step_count = r
                        state.metadata["round"] = r
                        await store.save_state(cid, state)
                    else:
                        await store.update_state(cid, StatePatch(
                            append_messages=batch, step_count=r, set_metadata={{"round": r}}))

    asyncio.run(main(sys.argv[1]))
    """
)


@contextmanager
def _write_lock_held(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Another connection holding the file's write lock until the block ends (or
    until the block rolls it back itself)."""
    holder = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def _message_count(path: Path) -> int:
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM conversation_messages").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


async def _check_whole(url: str, path: Path) -> int:
    """Integrity check, then every conversation holds whole batches only, with the
    scalars and metadata of its last batch. Returns the number of messages."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    total = 0
    async with statestore.open_store("sqlite", url) as store:
        for c in range(CONVERSATIONS):
            state = await store.load_state(f"c{c}")
            history = state.conversation_history
            assert [m.seq for m in history] == list(range(len(history)))
            assert len(history) == state.history_total == BATCH * state.step_count
            for i, m in enumerate(history):
                assert m.content == f"{c}:{i // BATCH + 1}:{i % BATCH}"
            if state.step_count:
                assert state.metadata == {"round": state.step_count}
            total += len(history)
    return total


async def test_writer_killed_mid_save_leaves_a_sound_file(sqlite_url: str) -> None:
    """A process saving in a loop is killed with SIGKILL three times, at random points
    of its writes: each time the file passes PRAGMA integrity_check, and every
    conversation loads whole (only complete batches, scalars matching them); a new
    writer then carries on where the last one stopped."""
    path = sqlite_path(sqlite_url)
    async with statestore.open_store("sqlite", sqlite_url):
        pass  # create and migrate the file before the writer starts
    totals = []
    for kill in range(3):
        target = _message_count(path) + 150 + 37 * kill
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, sqlite_url)
        try:
            deadline = time.monotonic() + 60
            while _message_count(path) < target:
                assert writer.returncode is None, "the writer died by itself"
                assert time.monotonic() < deadline, "the writer made no progress"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.003 * kill)  # land somewhere else each time
        finally:
            writer.send_signal(signal.SIGKILL)
            await writer.wait()
        assert writer.returncode == -signal.SIGKILL
        totals.append(await _check_whole(sqlite_url, path))
    assert totals == sorted(totals) and totals[0] > 0


async def test_file_locked_past_the_retry_budget_is_backend_unavailable(
    sqlite_url: str,
) -> None:
    """Another connection holds the write lock longer than busy_timeout plus the
    retries: the write raises BackendUnavailable saying the file stayed locked (never
    a bare "database is locked"), reads still work (WAL), and the same store writes
    as soon as the lock is gone."""
    cid = f"locked-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("sqlite", sqlite_url, busy_timeout=0.05, retries=2) as store:
        await store.save_state(cid, AgentState(step_count=0))
        with _write_lock_held(sqlite_url):
            with pytest.raises(BackendUnavailable, match="stayed locked") as info:
                await store.update_state(cid, StatePatch(step_count=1))
            assert not isinstance(info.value, sqlite3.Error)
            assert "database is locked" not in str(info.value)
            with pytest.raises(BackendUnavailable):
                await store.save_state(cid, AgentState(step_count=2))
            assert (await store.load_state(cid)).step_count == 0
        await store.update_state(cid, StatePatch(step_count=3))
        assert (await store.load_state(cid)).step_count == 3


async def test_a_short_lock_is_waited_out(sqlite_url: str) -> None:
    """A lock held briefly by another connection delays the write but does not fail
    it: the busy timeout and retries absorb it."""
    cid = f"short-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(cid, AgentState())
        with _write_lock_held(sqlite_url) as holder:
            release = asyncio.get_running_loop().call_later(0.3, holder.execute, "ROLLBACK")
            try:
                await store.update_state(cid, StatePatch(step_count=1))
            finally:
                release.cancel()
        assert (await store.load_state(cid)).step_count == 1


async def test_a_call_cancelled_while_the_file_is_locked_stops_and_writes_nothing(
    sqlite_url: str,
) -> None:
    """A write waiting out another connection's lock (busy timeout, then retries with
    backoff) whose caller is cancelled stops at its next attempt: the store's thread
    is free for the next call long before the retry budget (over two seconds here)
    runs out, and the write never happens, also once the lock is gone."""
    cid = f"gave-up-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("sqlite", sqlite_url, busy_timeout=0.05, retries=8) as store:
        await store.save_state(cid, AgentState(step_count=0))
        with _write_lock_held(sqlite_url):
            waiting = asyncio.create_task(store.update_state(cid, StatePatch(step_count=1)))
            await asyncio.sleep(0.2)  # in its busy waits and retries by now
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            started = time.monotonic()
            assert (await store.load_state(cid)).step_count == 0  # a read: WAL
            assert time.monotonic() - started < 1.5
        assert (await store.load_state(cid)).step_count == 0
        await store.update_state(cid, StatePatch(step_count=2))
        assert (await store.load_state(cid)).step_count == 2


async def test_an_operation_body_that_suspends_is_refused_and_rolled_back(
    sqlite_url: str,
) -> None:
    """An operation body runs whole on the backend's thread and may await only its
    Tx. One that awaits anything else is an error naming that rule, its statements
    so far are rolled back, and the store goes on serving."""
    cid = f"suspends-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(cid, AgentState(step_count=0))
        db = store.backend._db  # type: ignore[attr-defined]

        async def body(tx: object) -> None:
            await tx.execute(  # type: ignore[attr-defined]
                "UPDATE conversation_states SET step_count = 7 WHERE conversation_id = ?", cid
            )
            await asyncio.sleep(0)

        with pytest.raises(StateStoreError, match="awaited something other than its Tx"):
            await db.run(body, write=True)
        assert (await store.load_state(cid)).step_count == 0
        await store.update_state(cid, StatePatch(step_count=1))
        assert (await store.load_state(cid)).step_count == 1


async def test_statement_failing_half_way_rolls_back(sqlite_url: str) -> None:
    """A database error inside a save after its first statements (a trigger refusing
    one context item) reaches the caller as a StateStoreError, not sqlite3's, and
    nothing of the save remains."""
    cid = f"trigger-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("sqlite", sqlite_url) as store:
        state = AgentState(
            user_input="old",
            conversation_history=[Message("user", f"old {i}") for i in range(10)],
            metadata={"k": "old"},
        )
        await store.save_state(cid, state)
        before = await store.load_state(cid)
        conn = sqlite3.connect(sqlite_path(sqlite_url))
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON memory_context_items "
            "WHEN NEW.content = 'refuse me' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
        )
        conn.commit()
        conn.close()
        state = await store.load_state(cid)
        state.user_input = "new"
        state.metadata["k"] = "new"
        state.conversation_history += [Message("user", f"new {i}") for i in range(500)]
        state.memory_context.append(ContextItem("refuse me"))
        with pytest.raises(StateStoreError, match="refused by trigger") as info:
            await store.save_state(cid, state)
        assert not isinstance(info.value, sqlite3.Error)
        after = await store.load_state(cid)
        assert after.version == before.version
        assert after.to_dict() == before.to_dict()


CORRUPTIONS = {
    "focus_areas not JSON": "UPDATE conversation_states SET focus_areas = 'not json'",
    "focus_areas an object": "UPDATE conversation_states SET focus_areas = '{\"a\": 1}'",
    "last_tool_result empty": "UPDATE conversation_states SET last_tool_result = ''",
    "step_count text": "UPDATE conversation_states SET step_count = 'many'",
    "created_at garbage": "UPDATE conversation_states SET created_at = 'yesterday'",
    "message metadata a list": "UPDATE conversation_messages SET metadata = '[1]'",
    "message timestamp garbage": "UPDATE conversation_messages SET created_at = 'noon'",
    "item metadata not JSON": "UPDATE memory_context_items SET metadata = '{'",
    "metadata value not JSON": "UPDATE memory_metadata SET value = '{bad'",
}


@pytest.mark.parametrize("edit", sorted(CORRUPTIONS))
async def test_hand_edited_rows_are_corrupt_state(sqlite_url: str, edit: str) -> None:
    """A column edited by hand to something that is not JSON or has the wrong shape:
    load_state raises CorruptState naming the conversation, never a driver or decode
    error, and the other conversations still load."""
    cid, neighbour = "corrupt-one", "neighbour"
    state = AgentState(
        user_input="x",
        focus_areas=["a"],
        conversation_history=[Message("user", "m", metadata={"a": 1})],
        memory_context=[ContextItem("i", metadata={"b": 2})],
        metadata={"k": [1, 2]},
    )
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(cid, state)
        await store.save_state(neighbour, AgentState(user_input="fine"))
        conn = sqlite3.connect(sqlite_path(sqlite_url))
        conn.execute(CORRUPTIONS[edit] + " WHERE conversation_id = ?", (cid,))
        conn.commit()
        conn.close()
        with pytest.raises(CorruptState) as info:
            await store.load_state(cid)
        assert info.value.conversation_id == cid and cid in str(info.value)
        assert (await store.load_state(neighbour)).user_input == "fine"
        assert await store.delete_state(cid)


@pytest.mark.parametrize("content", ["not json", "{", '{"memory_context": [{"source": 1}]}'])
async def test_corrupt_legacy_blob_is_corrupt_state(sqlite_url: str, content: str) -> None:
    """A legacy memory_chunks row that is not a state document: CorruptState naming
    the conversation; the others load, and the row can be deleted."""
    async with statestore.open_store("legacy-blob", sqlite_url) as store:
        await store.save_state("neighbour", AgentState(user_input="fine"))
        conn = sqlite3.connect(sqlite_path(sqlite_url))
        conn.execute(
            "INSERT INTO memory_chunks (conversation_id, content, created_at) VALUES (?, ?, ?)",
            ("broken", content, "2024-01-01T00:00:00.000000+00:00"),
        )
        conn.commit()
        conn.close()
        with pytest.raises(CorruptState, match="'broken'"):
            await store.load_state("broken")
        assert (await store.load_state("neighbour")).user_input == "fine"
        assert await store.delete_state("broken")
        with pytest.raises(ConversationNotFound):
            await store.load_state("broken")
