"""The benchmark suite: the scenarios of ``statestore.bench`` on every backend
registered through entry points (each engine it accepts), next to the raw-driver
baseline on the same schema (``raw.py``), in the same run. Every subject's database is
emptied and measured the same way (``raw.RawStorage``).

Full run (about 4.5 minutes on 2 cores)::

    .venv/bin/pytest benchmarks --benchmark-only --benchmark-group-by=group

Quick mode, so the scenarios cannot rot (CI; small sizes, few rounds)::

    STATESTORE_BENCH_QUICK=1 .venv/bin/pytest benchmarks -q --benchmark-disable
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from raw import RAW, RawStorage, RawSubject

from statestore.bench import StoreSubject, Subject, Target

pytest_plugins = ["statestore.testing.plugin"]

QUICK = os.environ.get("STATESTORE_BENCH_QUICK") == "1"
SIZES = [50] if QUICK else [100, 1_000, 10_000]
USERS = [10] if QUICK else [10, 50, 100]
TURNS = 3 if QUICK else 10

# Backends that need no URL (or wrap others, like dual) are left out: the scenarios
# measure storage layouts on a database engine.
SKIPPED_BACKENDS = {"dual"}


def bench_targets() -> list[Target]:
    """Every registered backend on each of its engines, then the raw baseline."""
    from statestore.testing.plugin import backend_targets  # after pytest_plugins loads it

    targets = [
        Target(t.backend, t.engine)
        for t in backend_targets()
        if t.engine in ("sqlite", "postgresql") and t.backend not in SKIPPED_BACKENDS
    ]
    return [*targets, Target(RAW, "sqlite"), Target(RAW, "postgresql")]


class LoopClock:
    """A timer for pytest-benchmark that advances only while the timed coroutine runs
    inside the event loop, so ``runner.run``'s own cost (about 0.1 ms: a task, a loop
    start and stop) stays out of the figures and the ratios to the raw baseline."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def now(self) -> float:
        return self.elapsed

    async def timed(self, op: Callable[[], Coroutine[Any, Any, object]]) -> None:
        started = time.perf_counter()
        await op()
        self.elapsed += time.perf_counter() - started

    def install(self, benchmark: Any) -> None:
        """Use this clock for ``benchmark`` (pytest-benchmark takes its timer from the
        command line only; it keeps it in ``_timer``)."""
        if hasattr(benchmark, "_timer"):
            benchmark._timer = self.now
        else:  # a pytest-benchmark without it: wall time, runner.run included
            self.now = time.perf_counter  # type: ignore[method-assign]


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """The machine facts the README's results section quotes."""
    machine_info["nproc"] = os.cpu_count()
    machine_info["postgresql"] = _postgres_version()


def _postgres_version() -> str | None:
    from statestore.testing.plugin import DEFAULT_SERVER

    async def query() -> str:
        import asyncpg

        server = os.environ.get("STATESTORE_TEST_POSTGRES_URL", DEFAULT_SERVER)
        conn = await asyncpg.connect(server, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except Exception:  # no server: the report says so
        return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the targets of one group back to back (scenario by scenario, size by size),
    so a slow spell on a shared machine weighs on all of them alike and the ratios
    within a group stay fair."""
    from statestore.bench import SCENARIOS

    order = {name: i for i, name in enumerate(SCENARIOS)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            return (len(order) + 1, 0, 0)
        params = callspec.params
        if "users" in params:  # concurrency last: it loads the machine most
            return (len(order), params["users"], 0)
        return (order.get(params.get("scenario"), 0), params.get("size", 0), 0)

    items.sort(key=key)  # stable: the target order within a group is kept


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_target" in metafunc.fixturenames:
        targets = bench_targets()
        metafunc.parametrize("bench_target", targets, ids=[t.id for t in targets])


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """An event loop for the test: pytest-benchmark calls plain functions, so each
    timed call is ``runner.run(coroutine)`` (the same small overhead for every target)."""
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def subject(
    bench_target: Target, runner: asyncio.Runner, request: pytest.FixtureRequest
) -> Iterator[Subject]:
    """The open subject for ``bench_target``, on emptied tables."""
    fixture = "sqlite_url" if bench_target.engine == "sqlite" else "postgres_url"
    url: Any = request.getfixturevalue(fixture)
    storage = RawStorage(bench_target.engine, str(url))
    opened: Subject = (
        RawSubject(bench_target, str(url))
        if bench_target.backend == RAW
        else StoreSubject(bench_target, str(url), storage=storage)
    )
    try:
        runner.run(opened.open())
        yield opened
    finally:
        runner.run(opened.close())
