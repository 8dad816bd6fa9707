"""Several processes on one SQLite file: every append kept, in each writer's order,
and no "database is locked" ever reaching a caller."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections import defaultdict

import statestore
from statestore import AgentState, LoadOptions, Message, StatePatch

PROCESSES = 4
TASKS = 20
APPENDS = 25

# Appends APPENDS messages "<tag>:<n>" to one conversation, alternating update_state
# and save_state of a loaded window; creates the conversation if asked to.
WORKER = textwrap.dedent(
    """
    import asyncio, sys
    import statestore
    from statestore import AgentState, LoadOptions, Message, StatePatch

    async def main(url, cid, tag, n, create):
        async with statestore.open_store("sqlite", url) as store:
            if create:
                await store.save_state(cid, AgentState(user_input=tag))
            for i in range(n):
                message = Message("user", f"{tag}:{i}")
                if i % 2:
                    state = await store.load_state(cid, LoadOptions(last_messages=1))
                    state.conversation_history.append(message)
                    await store.save_state(cid, state)
                else:
                    await store.update_state(cid, StatePatch(append_messages=[message]))

    url, cid, tag, n, create = sys.argv[1:]
    asyncio.run(main(url, cid, tag, int(n), create == "1"))
    """
)


async def _spawn(*args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        *map(str, args),
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(process: asyncio.subprocess.Process) -> None:
    _, stderr = await process.communicate()
    text = stderr.decode()
    assert "locked" not in text, text
    assert process.returncode == 0, text


def _by_writer(messages: list[Message]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        tag, n = m.content.split(":")
        grouped[tag].append(int(n))
    return grouped


async def test_processes_and_tasks_append_to_one_conversation(sqlite_url: str) -> None:
    """Four processes and twenty tasks of this process append to one conversation in
    one file at the same time: every message is kept, each writer's in its order,
    seqs contiguous, and no writer ever saw "database is locked"."""
    cid = "shared"
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(cid, AgentState(user_input="start"))
        processes = [await _spawn(sqlite_url, cid, f"p{p}", APPENDS, 0) for p in range(PROCESSES)]

        async def task(t: int) -> None:
            for i in range(APPENDS):
                message = Message("assistant", f"t{t}:{i}")
                if i % 2:
                    state = await store.load_state(cid, LoadOptions(last_messages=1))
                    state.conversation_history.append(message)
                    await store.save_state(cid, state)
                else:
                    await store.update_state(cid, StatePatch(append_messages=[message]))

        await asyncio.gather(*(task(t) for t in range(TASKS)))
        for process in processes:
            await _finish(process)

        loaded = await store.load_state(cid)
    total = (PROCESSES + TASKS) * APPENDS
    assert [m.seq for m in loaded.conversation_history] == list(range(total))
    assert loaded.version == 1 + total
    grouped = _by_writer(loaded.conversation_history)
    assert sorted(grouped) == sorted(
        [f"p{p}" for p in range(PROCESSES)] + [f"t{t}" for t in range(TASKS)]
    )
    for tag, ns in grouped.items():
        assert ns == list(range(APPENDS)), f"{tag} lost or reordered messages: {ns}"


async def test_processes_opening_a_fresh_file_at_once(sqlite_url: str) -> None:
    """Four processes open the same not-yet-created file at the same moment (each
    one migrating it) and write their own conversation: all succeed, and every
    conversation is whole."""
    processes = [await _spawn(sqlite_url, f"own-{p}", f"p{p}", 10, 1) for p in range(PROCESSES)]
    for process in processes:
        await _finish(process)
    async with statestore.open_store("sqlite", sqlite_url, migrate=False) as store:
        for p in range(PROCESSES):
            state = await store.load_state(f"own-{p}")
            assert state.user_input == f"p{p}"
            assert [m.content for m in state.conversation_history] == [
                f"p{p}:{i}" for i in range(10)
            ]
