"""The storm on a SQLite file: writer processes do turns on one conversation (WAL)
while one of them is killed with SIGKILL over and over, and a reader checks every load.

A turn is a windowed load, then one ``update_state`` that appends two messages
(``<id>:q``, ``<id>:a``) and sets ``step_count`` to one more than it loaded and
``user_input`` to the turn's id, with ``expected_version`` (a conflict reloads and tries
again; a turn whose outcome is unknown is never retried). A turn's id is
``<slot>.<generation>:<n>``. The writer in slot 0 is forked afresh for each generation
by a parent process that stays (a fork starts in milliseconds, a new interpreter in
seconds), and killed 50-400 ms after its store opened.

By default (CI) the storm makes 20 kills. Run it long with, for example::

    STATESTORE_SQLITE_STORM_KILLS=500 ./test tests/backends/test_storm_sqlite.py -s

(``-s`` shows the closing line: kills, acknowledged turns, failed turns, reads).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import statestore
from statestore import AgentState, LoadOptions
from statestore.backends.sqlite import sqlite_path

STORM_KILLS = int(os.environ.get("STATESTORE_SQLITE_STORM_KILLS", "20"))
WRITERS = 3  # slot 0 is the one killed; the others write throughout
CID = "storm"

# A writer prints "ready" once its store is open, "try <id>" before a turn's write,
# "ack <id>" after it returned, "fail <id>" when it raised BackendUnavailable, and
# stops between turns once the stop file exists or the test process is gone. Slot 0
# is a parent that forks a writer for each generation read from stdin, printing
# "pid <pid>" and then "exit <code>" when that writer has ended.
WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, threading
    import statestore
    from statestore import (
        BackendUnavailable, LoadOptions, Message, StatePatch, VersionConflict)

    def say(*words):
        # One write(2) of a short line to a pipe is atomic: a writer killed at any
        # moment never leaves half a line for the next one to be glued to.
        os.write(1, (" ".join(map(str, words)) + "\\n").encode())

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def main(url, slot, generation, stop, owner):
        async with statestore.open_store("sqlite", url) as store:
            say("ready")
            n = 0
            while not os.path.exists(stop) and alive(owner):
                n += 1
                turn = f"{slot}.{generation}:{n}"
                say("try", turn)
                while True:
                    state = await store.load_state("storm", LoadOptions(last_messages=4))
                    patch = StatePatch(
                        append_messages=[Message("user", f"{turn}:q"),
                                         Message("assistant", f"{turn}:a")],
                        step_count=state.step_count + 1,
                        user_input=turn,
                    )
                    try:
                        await store.update_state(
                            "storm", patch, expected_version=state.version)
                    except VersionConflict:
                        continue  # nothing was written: load again
                    except BackendUnavailable:
                        say("fail", turn)
                    else:
                        say("ack", turn)
                    break

    async def warm(url):
        async with statestore.open_store("sqlite", url) as store:
            await store.load_state("storm", LoadOptions(last_messages=4))

    url, slot, stop, owner = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    if slot:
        asyncio.run(main(url, slot, 0, stop, owner))
    else:
        # One store opened and closed first, so that each fork finds the plugins,
        # migrations and statements already loaded.
        asyncio.run(warm(url))
        for thread in threading.enumerate():  # fork with no other thread alive
            if thread is not threading.main_thread():
                thread.join()
        for line in sys.stdin:
            pid = os.fork()
            if pid == 0:
                asyncio.run(main(url, slot, int(line), stop, owner))
                os._exit(0)
            say("pid", pid)
            say("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
)


@dataclass
class Log:
    """What the writers said about their turns."""

    tried: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Writer:
    """A writer process (or slot 0's forking parent) and what it says."""

    def __init__(self, process: asyncio.subprocess.Process, log: Log) -> None:
        self.process = process
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.listener = asyncio.create_task(self._listen(log))

    @classmethod
    async def start(cls, url: str, slot: int, stop: Path, log: Log) -> Writer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            url,
            str(slot),
            str(stop),
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, log)

    async def _listen(self, log: Log) -> None:
        assert self.process.stdout is not None
        turns = {"try": log.tried, "ack": log.acked, "fail": log.failed}
        async for line in self.process.stdout:
            word, _, rest = line.decode().strip().partition(" ")
            if word in turns:
                turns[word].append(rest)
            else:
                self.events.put_nowait((word, rest))
        self.events.put_nowait(("eof", ""))

    async def said(self, *words: str) -> dict[str, str]:
        """The next events, which must be ``words`` (in any order)."""
        got = dict([await self.events.get() for _ in words])
        assert sorted(got) == sorted(words), got
        return got


def _turn_of(first: str, second: str) -> str:
    """The turn two consecutive messages belong to; fails on a torn turn."""
    turn = first.removesuffix(":q")
    assert first == f"{turn}:q" and second == f"{turn}:a", f"torn turn: {first!r}, {second!r}"
    return turn


def _check_whole(state: AgentState) -> list[str]:
    """A loaded state holds whole turns only, its scalars match them, and its seqs are
    contiguous. Returns the turns it holds, in order."""
    history = state.conversation_history
    total = state.history_total
    assert total == 2 * state.step_count, (total, state.step_count)
    first = total - len(history)
    assert [m.seq for m in history] == list(range(first, total))
    assert first % 2 == 0 and len(history) % 2 == 0
    turns = [
        _turn_of(a.content, b.content) for a, b in zip(history[::2], history[1::2], strict=True)
    ]
    assert state.user_input == (turns[-1] if turns else "start")
    return turns


async def _read_until(url: str, stop: asyncio.Event) -> int:
    """Load the conversation over and over (windows, and whole now and then: the
    history grows large) until ``stop``,
    checking each load. Returns the number of loads."""
    loads = 0
    async with statestore.open_store("sqlite", url) as store:
        while not stop.is_set():
            window = None if loads % 50 == 0 else random.choice([2, 6, 20])
            _check_whole(await store.load_state(CID, LoadOptions(last_messages=window)))
            loads += 1
            await asyncio.sleep(0)
    return loads


def _order(turn: str) -> tuple[int, int, int]:
    slot, rest = turn.split(".")
    generation, n = rest.split(":")
    return int(slot), int(generation), int(n)


async def test_writers_killed_over_and_over_reader_never_sees_a_torn_turn(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Three writer processes do turns on one conversation while the first is killed
    with SIGKILL STORM_KILLS times (a fresh one each time, killed 50-400 ms after its
    store opened) and a reader checks every load (whole turns, matching scalars,
    contiguous seqs). Afterwards: integrity_check ok, every acknowledged turn stored
    exactly once, no turn stored twice, each writer's turns in its order."""
    path = sqlite_path(sqlite_url)
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(CID, AgentState(user_input="start"))
    stop_file = tmp_path / "stop"
    log = Log()
    stop_reading = asyncio.Event()
    reader = asyncio.create_task(_read_until(sqlite_url, stop_reading))
    writers = [await Writer.start(sqlite_url, slot, stop_file, log) for slot in range(WRITERS)]
    victim, survivors = writers[0], writers[1:]
    kills, stage = 0, "starting the writers"
    try:
        async with asyncio.timeout(120 + STORM_KILLS):  # a hung call fails, not hangs
            for survivor in survivors:
                await survivor.said("ready")
            assert victim.process.stdin is not None
            for generation in range(STORM_KILLS):
                stage = f"starting writer 0.{generation}"
                victim.process.stdin.write(f"{generation}\n".encode())
                pid = int((await victim.said("pid", "ready"))["pid"])
                await asyncio.sleep(random.uniform(0.05, 0.4))
                assert victim.events.empty(), "the writer died by itself"
                stage = f"killing writer 0.{generation}"
                os.kill(pid, signal.SIGKILL)
                assert await victim.said("exit") == {"exit": str(-signal.SIGKILL)}
                kills += 1
                assert not reader.done(), reader  # the reader failed a check: see its error
            stage = "stopping"
            stop_file.touch()
            victim.process.stdin.close()
            codes = [await writer.process.wait() for writer in writers]
            stop_reading.set()
            loads = await reader
            await asyncio.gather(*(writer.listener for writer in writers))
    except TimeoutError as exc:
        raise AssertionError(f"hung while {stage}") from exc
    finally:  # on failure: nothing left running
        stop_file.touch()
        reader.cancel()
        for writer in writers:
            if writer.process.returncode is None:
                writer.process.kill()
                await writer.process.wait()
    assert codes == [0] * WRITERS

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    async with statestore.open_store("sqlite", sqlite_url) as store:
        stored = _check_whole(await store.load_state(CID))
    assert len(stored) == len(set(stored)), "a turn was stored twice"
    assert set(log.acked) <= set(stored), set(log.acked) - set(stored)
    assert set(stored) <= set(log.tried)
    for slot in range(WRITERS):
        mine = [_order(t) for t in stored if _order(t)[0] == slot]
        assert mine == sorted(mine), f"writer {slot}'s turns out of order"
    unacked = set(log.tried) - set(log.acked)
    print(
        f"\nSQLite storm: {kills} kills, {len(log.acked)} acknowledged turns, "
        f"{len(unacked)} failed turns ({len(unacked & set(stored))} of them stored whole, "
        f"{len(log.failed)} BackendUnavailable), {loads} checked reads"
    )
    assert len(log.acked) > 0 and loads > 0
    # the kills cut turns short: some turn of the killed writer was never acknowledged
    assert any(_order(t)[0] == 0 for t in unacked)
