"""An OpenAI Agents SDK turn through a session, on SQLite: ``add_items`` of a turn's
two items, then ``get_items(limit=20)``, as the Runner does. The SDK's own
``SQLiteSession`` and ``StatestoreSession`` (over the ``sqlite`` backend) run in the
same process on files in the same directory, each on a session already holding
``HISTORY`` items, grouped ``openai-agents-turn`` so the report shows them side by
side; ``test_turn_ratio`` runs them in alternation and reports the ratio of medians.

Both files are in WAL mode, but SQLiteSession keeps SQLite's default
``synchronous=FULL`` (an fsync per commit) where statestore uses ``synchronous=NORMAL``
(a commit survives a crash of the application, not of the machine): the third subject,
SQLiteSession with ``synchronous=NORMAL``, compares them at the same durability.

    .venv/bin/pytest benchmarks/test_openai_agents_session.py --benchmark-only \
        --benchmark-group-by=group -s
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import SQLiteSession
from conftest import QUICK, LoopClock
from pytest_benchmark.fixture import BenchmarkFixture

import statestore
from statestore.integrations.openai_agents import StatestoreSession

HISTORY = 100
ROUNDS = 20 if QUICK else 300
TEXT = "lorem ipsum dolor sit amet " * 15  # about 400 characters, as the scenarios use


def turn(n: int) -> list[Any]:
    """The items a Runner saves for one plain turn: the user's message, the reply."""
    return [
        {"role": "user", "content": f"question {n}: {TEXT}"},
        {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": f"answer {n}: {TEXT}", "annotations": []}],
        },
    ]


class NormalSyncSQLiteSession(SQLiteSession):
    """SQLiteSession at statestore's durability: ``synchronous=NORMAL``."""

    @staticmethod
    def _configure_connection(conn: sqlite3.Connection) -> None:
        SQLiteSession._configure_connection(conn)
        conn.execute("PRAGMA synchronous=NORMAL")


SUBJECTS = {
    "sdk": "SQLiteSession",
    "sdk-normal": "SQLiteSession-synchronous-NORMAL",
    "statestore": "StatestoreSession",
}


class Sessions:
    """The sessions, open, each holding HISTORY items, on one event loop."""

    def __init__(self, directory: Path, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.store = runner.run(
            statestore.open_store("sqlite", url=f"sqlite:///{directory}/statestore.db").__aenter__()
        )
        self.sessions: dict[str, Any] = {
            "sdk": SQLiteSession("bench", directory / "sdk.db"),
            "sdk-normal": NormalSyncSQLiteSession("bench", directory / "sdk-normal.db"),
            "statestore": StatestoreSession("bench", self.store),
        }
        self.n = 0
        for session in self.sessions.values():
            for n in range(HISTORY // 2):
                runner.run(session.add_items(turn(n)))

    def session(self, name: str) -> Any:
        return self.sessions[name]

    async def one_turn(self, session: Any) -> None:
        self.n += 1
        await session.add_items(turn(self.n))
        window = await session.get_items(limit=20)
        assert len(window) == 20

    def close(self) -> None:
        self.sessions["sdk"].close()
        self.sessions["sdk-normal"].close()
        self.runner.run(self.store.close())


@pytest.fixture
def sessions(tmp_path: Path, runner: asyncio.Runner) -> Iterator[Sessions]:
    opened = Sessions(tmp_path, runner)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize("name", list(SUBJECTS), ids=list(SUBJECTS.values()))
def test_turn(benchmark: BenchmarkFixture, sessions: Sessions, name: str) -> None:
    """add_items(two items) + get_items(limit=20) through one session."""
    benchmark.group = "openai-agents-turn"
    benchmark.extra_info.update(session=name, history=HISTORY)
    session = sessions.session(name)
    clock = LoopClock()
    clock.install(benchmark)
    benchmark.pedantic(
        lambda: sessions.runner.run(clock.timed(lambda: sessions.one_turn(session))),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=min(10, ROUNDS),
    )


def test_turn_ratio(sessions: Sessions) -> None:
    """The two sessions in alternation, round by round (so a slow spell of a shared
    machine weighs on both alike); prints the median of each and their ratio."""
    seconds: dict[str, list[float]] = {name: [] for name in SUBJECTS}

    async def timed(name: str) -> None:
        started = time.perf_counter()
        await sessions.one_turn(sessions.session(name))
        seconds[name].append(time.perf_counter() - started)

    for _ in range(min(10, ROUNDS)):  # warm-up
        for name in seconds:
            sessions.runner.run(sessions.one_turn(sessions.session(name)))
    for _ in range(ROUNDS):
        for name in seconds:
            sessions.runner.run(timed(name))
    median = {name: statistics.median(seconds[name]) for name in SUBJECTS}
    ours = median["statestore"]
    print(
        f"\nopenai-agents turn on SQLite, median of {ROUNDS}: "
        + ", ".join(f"{SUBJECTS[n]} {m * 1000:.3f} ms" for n, m in median.items())
        + f"; ratio ours/SQLiteSession {ours / median['sdk']:.2f}, "
        f"ours/SQLiteSession-synchronous-NORMAL {ours / median['sdk-normal']:.2f}"
    )
    assert len(seconds["statestore"]) == ROUNDS
