"""A storm on a real PostgreSQL: fifty users taking turns while another task keeps
terminating the store's backends (issue 9).

CI runs it for ``STATESTORE_STORM_SECONDS`` seconds (default 10). To run it long::

    STATESTORE_STORM_SECONDS=300 ./test tests/backends/test_storm_postgres.py -s

``-s`` shows the figures (kills, acknowledged and failed turns); they are also
recorded as the test's properties (``--junitxml``).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

import statestore
from statestore import AgentState, BackendUnavailable, LoadOptions, Message, StatePatch
from statestore.testing.plugin import scratch_database

pytestmark = pytest.mark.postgres

USERS = 50
WRITERS_PER_CONVERSATION = 2  # two users append to each conversation, concurrently
# Only the detector of a hang, far above what any call here takes.
HANG = 120.0


def storm_seconds() -> float:
    return float(os.environ.get("STATESTORE_STORM_SECONDS", "10"))


@pytest.fixture
def storm_url() -> Iterator[str]:
    """A migrated database of this test's own: the killer terminates every session
    on it but its own, which are then only the store's."""
    with scratch_database("statestore_storm", migrated=True) as url:
        yield url


@dataclass
class Writer:
    user: int
    conversation: str
    acknowledged: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def returns(call: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await asyncio.wait_for(call, HANG)
    except TimeoutError:
        raise AssertionError(f"a call did not return within {HANG}s: it hung") from None


def turn(user: int, number: int) -> list[Message]:
    return [Message("user", f"w{user} t{number} q"), Message("assistant", f"w{user} t{number} a")]


async def take_turns(store: Any, writer: Writer, stop: asyncio.Event) -> None:
    """Turns until ``stop``: a windowed load, then two messages and a scalar in one
    update. A call that raises is recorded (any error but BackendUnavailable fails
    the test afterwards)."""
    number = 0
    while not stop.is_set():
        try:
            await returns(store.load_state(writer.conversation, LoadOptions(last_messages=10)))
        except BackendUnavailable:
            pass  # a read: nothing to check
        except Exception as exc:
            writer.errors.append(exc)
        try:
            await returns(
                store.update_state(
                    writer.conversation,
                    StatePatch(append_messages=turn(writer.user, number), step_count=number),
                )
            )
        except BackendUnavailable:
            writer.failed.append(number)
        except Exception as exc:
            writer.errors.append(exc)
            writer.failed.append(number)
        else:
            writer.acknowledged.append(number)
        number += 1


async def kill_backends(url: str, stop: asyncio.Event) -> int:
    """Every 50-400 ms, terminate every session of the database but this one's; the
    number of sessions terminated."""
    kills = 0
    admin = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            await asyncio.sleep(random.uniform(0.05, 0.4))
            kills += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    finally:
        await admin.close()
    return kills


TURN = re.compile(r"w(\d+) t(\d+) (q|a)")


async def test_storm_of_terminated_backends(storm_url: str, record_property: Any) -> None:
    """Fifty users doing turns for STATESTORE_STORM_SECONDS while the store's backends
    are terminated every 50-400 ms: no call hangs, the only error is
    BackendUnavailable, every acknowledged turn is stored exactly once, a failed turn
    is stored wholly or not at all, seqs are contiguous, each writer's turns keep
    their order, and afterwards the same store serves every call on the first try."""
    conversations = [f"storm-{i}" for i in range(USERS // WRITERS_PER_CONVERSATION)]
    writers = [Writer(u, conversations[u % len(conversations)]) for u in range(USERS)]
    async with statestore.open_store("postgres", storm_url) as store:
        for cid in conversations:
            await store.save_state(cid, AgentState(user_input=cid))
        stop = asyncio.Event()
        killer = asyncio.create_task(kill_backends(storm_url, stop))
        users = [asyncio.create_task(take_turns(store, w, stop)) for w in writers]
        await asyncio.sleep(storm_seconds())
        stop.set()
        await asyncio.gather(*users)
        kills = await killer

        acknowledged = sum(len(w.acknowledged) for w in writers)
        failed = sum(len(w.failed) for w in writers)
        print(
            f"\nstorm: {storm_seconds():g} s, {kills} backends terminated, "
            f"{acknowledged} turns acknowledged, {failed} failed"
        )
        record_property("kills", kills)
        record_property("acknowledged_turns", acknowledged)
        record_property("failed_turns", failed)
        assert [e for w in writers for e in w.errors] == []
        assert kills >= 10 * storm_seconds() / 2  # hundreds in a 10 s run
        assert acknowledged > 0 and failed > 0

        # Afterwards, the same store object, each call on the first try.
        stored: dict[str, AgentState] = {}
        for cid in conversations:
            stored[cid] = await store.load_state(cid)
        for cid in conversations:
            await store.update_state(cid, StatePatch(user_input="after"))
        for cid in conversations:
            assert (await store.load_state(cid, LoadOptions(last_messages=0))).user_input == "after"

    by_user = {w.user: w for w in writers}
    for cid, state in stored.items():
        history = state.conversation_history
        assert (
            [m.seq for m in history]
            == list(range(len(history)))
            == list(range(state.history_total))
        )
        parsed = [TURN.fullmatch(m.content) for m in history]
        assert all(parsed)
        turns = [(int(p[1]), int(p[2]), p[3]) for p in parsed if p]
        # Each turn whole: its question then its answer, next to each other.
        assert [t[2] for t in turns] == ["q", "a"] * (len(turns) // 2)
        pairs = [(turns[i][0], turns[i][1]) for i in range(0, len(turns), 2)]
        assert pairs == [(turns[i + 1][0], turns[i + 1][1]) for i in range(0, len(turns), 2)]
        counts = Counter(pairs)
        for user in {u for u, _ in pairs} | {w.user for w in writers if w.conversation == cid}:
            writer = by_user[user]
            assert writer.conversation == cid
            mine = [n for u, n in pairs if u == user]
            assert mine == sorted(mine)  # the writer's order kept
            for n in writer.acknowledged:
                assert counts[(user, n)] == 1, (
                    f"acknowledged turn {n} of w{user} stored {counts[(user, n)]} times"
                )
            attempted = set(writer.acknowledged) | set(writer.failed)
            assert set(mine) <= attempted
            assert all(counts[(user, n)] <= 1 for n in writer.failed)
