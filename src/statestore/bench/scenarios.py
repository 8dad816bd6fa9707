"""The benchmark scenarios, defined once for pytest-benchmark (``benchmarks/``) and
``statestore bench``.

A scenario prepares a freshly reset subject (data written, untimed) and returns a
``Prepared``: the operation to time, what to do before each round (untimed), how many
rounds it allows, and measurements taken on the side (storage, peak memory) as
``extra``. ``measure`` times it inside the event loop (``statestore bench``);
``benchmarks/`` hands the same callables to ``benchmark.pedantic``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..core import jsoncodec
from ..core.model import AgentState, ContextItem, Message
from ..core.query import LoadOptions
from .data import make_context, make_messages
from .subjects import Subject, Target

__all__ = [
    "CONCURRENCY_HISTORY",
    "GROW_LEGACY_LIMIT",
    "SCENARIOS",
    "TURN",
    "WINDOW",
    "Measurement",
    "Prepared",
    "Scenario",
    "measure",
    "plan_rounds",
    "run_concurrency",
]

WINDOW = LoadOptions(last_messages=20, context_limit=0)
TURN = LoadOptions(last_messages=20, min_relevance=0.7, context_limit=10)
FULL = LoadOptions()

GROW_LEGACY_LIMIT = 1_000
"""Legacy-blob rewrites the whole document on every append, so growing to N costs
O(N²): 1,000 takes seconds, 10,000 would take many minutes (and gigabytes)."""

CONCURRENCY_HISTORY = 100
"""Messages each simulated user's conversation starts with."""

Op = Callable[[], Coroutine[Any, Any, object]]


async def _nothing() -> None:
    return None


@dataclass
class Prepared:
    """A scenario ready to time on one subject."""

    run: Op
    """The timed operation."""
    before: Callable[[], Coroutine[Any, Any, None]] = _nothing
    """Untimed, before each round (e.g. build the state the round saves)."""
    max_rounds: int | None = None
    """At most this many rounds (appends: the conversation must not grow much)."""
    warmup: bool = True
    """One untimed round first (statement caches, imports)."""
    after: Callable[[], Coroutine[Any, Any, dict[str, Any]]] | None = None
    """Measurements taken after the last round, added to ``extra``."""
    check: Callable[[], Coroutine[Any, Any, None]] = _nothing
    """Raises AssertionError unless the stored data is exactly as expected."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    prepare: Callable[[Subject, int], Coroutine[Any, Any, Prepared]]
    skip: Callable[[Target, int], str | None] = lambda target, size: None


@functools.cache
def _messages(size: int) -> tuple[Message, ...]:
    return tuple(make_messages(size))


@functools.cache
def _context() -> tuple[ContextItem, ...]:
    return tuple(make_context())


def new_state(size: int, *, with_messages: bool = True) -> AgentState:
    """A never-saved state of ``size`` messages (the cached immutable messages in a
    fresh list, so building one costs little)."""
    return AgentState(
        user_input="what did we decide about the schema?",
        focus_areas=["task"],
        step_count=size // 2,
        last_tool_result={"ok": True, "rows": 3},
        conversation_history=list(_messages(size)) if with_messages else [],
        memory_context=list(_context()),
        metadata={"model": "gpt-x", "temperature": 0.2},
    )


def document_bytes(size: int) -> int:
    """The size of the legacy JSON document of a ``size``-message conversation: the
    payload, for scale."""
    return len(jsoncodec.dumps(new_state(size).to_dict()).encode())


async def peak_memory(op: Op) -> int:
    """Peak Python memory (bytes, tracemalloc) allocated while ``op`` runs."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = await op()
        peak = tracemalloc.get_traced_memory()[1] - base
        del result
    finally:
        if started:
            tracemalloc.stop()
    return peak


class _Fresh:
    """Message numbering past the saved history, so each round appends new data."""

    def __init__(self, start: int) -> None:
        self._next = itertools.count(start)

    def messages(self, count: int) -> list[Message]:
        start = next(self._next)
        for _ in range(count - 1):
            next(self._next)
        return make_messages(count, start=start, seed=2)


async def _expect_count(subject: Subject, conversation_id: str, expected: int) -> None:
    count = await subject.message_count(conversation_id)
    if count != expected:
        raise AssertionError(f"{conversation_id}: {count} messages stored, expected {expected}")


def _expected_load(options: LoadOptions, size: int) -> tuple[int, int]:
    messages = size if options.last_messages is None else min(options.last_messages, size)
    items = [c for c in _context() if c.relevance_score >= (options.min_relevance or 0.0)]
    limit = len(items) if options.context_limit is None else options.context_limit
    return messages, min(limit, len(items))


# -- the scenarios ----------------------------------------------------------------------


async def _save_full(subject: Subject, size: int) -> Prepared:
    await subject.save_new("storage", new_state(size))
    extra = {
        "bytes_per_conversation": await subject.storage_bytes(),
        "document_bytes": document_bytes(size),
    }
    ids = itertools.count()
    pending: list[AgentState] = []

    async def before() -> None:
        pending.append(new_state(size))

    saved: list[str] = []

    async def run() -> None:
        saved.append(f"save-{next(ids)}")
        await subject.save_new(saved[-1], pending.pop())

    async def check() -> None:
        await _expect_count(subject, saved[-1], size)

    return Prepared(run, before, check=check, extra=extra)


async def _append_one(subject: Subject, size: int) -> Prepared:
    await subject.save_new("c", new_state(size))
    fresh = _Fresh(size)
    pending: list[list[Message]] = []

    async def before() -> None:
        pending.append(fresh.messages(1))

    appended = [0]

    async def run() -> None:
        await subject.append("c", pending.pop())
        appended[0] += 1

    async def check() -> None:
        await _expect_count(subject, "c", size + appended[0])

    return Prepared(run, before, max_rounds=max(3, size // 2), check=check)


async def _save_after_turn(subject: Subject, size: int) -> Prepared:
    await subject.save_new("c", new_state(size))
    state = await subject.load_for_save("c")
    fresh = _Fresh(size)
    pending: list[list[Message]] = []

    async def before() -> None:
        pending.append(fresh.messages(2))

    turns = [0]

    async def run() -> None:
        await subject.save_turn("c", state, pending.pop())
        turns[0] += 1

    async def check() -> None:
        await _expect_count(subject, "c", size + 2 * turns[0])

    return Prepared(run, before, max_rounds=max(3, size // 4), check=check)


async def _update_scalar(subject: Subject, size: int) -> Prepared:
    await subject.save_new("c", new_state(size))
    steps = itertools.count(size)

    async def run() -> None:
        await subject.set_step("c", next(steps))

    async def check() -> None:
        await _expect_count(subject, "c", size)

    return Prepared(run, check=check)


def _load(
    options: LoadOptions, *, memory: bool
) -> Callable[[Subject, int], Coroutine[Any, Any, Prepared]]:
    async def prepare(subject: Subject, size: int) -> Prepared:
        await subject.save_new("c", new_state(size))

        last: list[object] = [None]

        async def run() -> object:
            last[0] = result = await subject.load("c", options)
            return result

        async def check() -> None:
            expected = _expected_load(options, size)
            if subject.counts(last[0]) != expected:
                raise AssertionError(
                    f"loaded (messages, items) {subject.counts(last[0])}, expected {expected}"
                )

        extra = {}
        if memory:
            await run()  # warm caches first: the peak of a steady-state load
            extra["peak_memory_bytes"] = await peak_memory(run)
            last[0] = None
        return Prepared(run, check=check, extra=extra)

    return prepare


async def _grow(subject: Subject, size: int) -> Prepared:
    messages = _messages(size)

    async def run() -> None:
        await subject.save_new("grow", new_state(size, with_messages=False))
        for message in messages:
            await subject.append("grow", [message])

    async def after() -> dict[str, Any]:
        return {"bytes_after_grow": await subject.storage_bytes()}

    async def check() -> None:
        await _expect_count(subject, "grow", size)

    return Prepared(run, max_rounds=1, warmup=False, after=after, check=check)


def _grow_skip(target: Target, size: int) -> str | None:
    if target.is_legacy and size > GROW_LEGACY_LIMIT:
        return (
            f"legacy-blob grows to {GROW_LEGACY_LIMIT:,} messages at most: every append "
            f"rewrites the whole document, so {size:,} would take many minutes"
        )
    return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("save_full", "save_state of a new conversation", _save_full),
        Scenario(
            "append_one",
            "update_state appending one message to an existing conversation",
            _append_one,
        ),
        Scenario(
            "save_after_turn",
            "save_state of a loaded state plus two messages",
            _save_after_turn,
        ),
        Scenario("update_scalar", "update_state setting step_count only", _update_scalar),
        Scenario("load_full", "load_state of everything", _load(FULL, memory=True)),
        Scenario(
            "load_window",
            "load_state of the last 20 messages, no context",
            _load(WINDOW, memory=False),
        ),
        Scenario(
            "load_turn",
            "load_state of the last 20 messages + the top 10 context items >= 0.7",
            _load(TURN, memory=True),
        ),
        Scenario(
            "grow",
            "a new conversation grown to N messages, one update_state per message",
            _grow,
            skip=_grow_skip,
        ),
    )
}


# -- timing -----------------------------------------------------------------------------


def plan_rounds(
    first_seconds: float, max_rounds: int | None, *, quick: bool, budget: float = 1.0
) -> int:
    """How many timed rounds fit in the time budget (``first_seconds`` is one round).
    Quick mode spends a twentieth of the budget, yet times a sub-millisecond scenario
    enough rounds that one slow round (a checkpoint, a collection) cannot set the
    median."""
    if quick:
        low, high, budget = 2, 25, 0.05
    else:
        low, high = 5, 300
    rounds = int(budget / max(first_seconds, 1e-6))
    rounds = max(low, min(high, rounds))
    if max_rounds is not None:
        rounds = min(rounds, max_rounds)
    return max(1, rounds)


async def timed(prepared: Prepared) -> float:
    """One round: ``before`` untimed, then ``run``; its seconds."""
    await prepared.before()
    started = time.perf_counter()
    await prepared.run()
    return time.perf_counter() - started


@dataclass
class Measurement:
    """The rounds of one scenario on one target and size."""

    scenario: str
    target: str
    engine: str
    size: int
    times: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def to_dict(self) -> dict[str, Any]:
        times = self.times
        return {
            "scenario": self.scenario,
            "target": self.target,
            "engine": self.engine,
            "size": self.size,
            "rounds": len(times),
            "median_s": self.median,
            "mean_s": statistics.fmean(times) if times else None,
            "min_s": min(times) if times else None,
            "max_s": max(times) if times else None,
            "extra": self.extra,
            "skipped": self.skipped,
        }


async def measure(subject: Subject, scenario: Scenario, size: int, *, quick: bool) -> Measurement:
    """Reset ``subject``, prepare ``scenario`` and time it in the event loop."""
    target = subject.target
    result = Measurement(scenario.name, target.id, target.engine, size)
    reason = scenario.skip(target, size)
    if reason is not None:
        result.skipped = reason
        return result
    await subject.reset()
    prepared = await scenario.prepare(subject, size)
    result.extra.update(prepared.extra)
    max_rounds = prepared.max_rounds
    if prepared.warmup:
        first = await timed(prepared)
        max_rounds = None if max_rounds is None else max(1, max_rounds - 1)
    else:
        first = await timed(prepared)
        result.times.append(first)
        max_rounds = 0 if max_rounds is None else max_rounds - 1
    rounds = plan_rounds(first, max_rounds, quick=quick) if max_rounds != 0 else 0
    for _ in range(rounds):
        result.times.append(await timed(prepared))
    if prepared.after is not None:
        result.extra.update(await prepared.after())
    await prepared.check()
    return result


# -- concurrency ------------------------------------------------------------------------


async def run_concurrency(subject: Subject, users: int, turns: int) -> dict[str, Any]:
    """``users`` simulated users, each on a conversation of its own, each running
    ``turns`` turns (load_turn, append two messages and set step_count). Returns
    turns per second, p50 and p99 latency (ms), errors, and lost writes (messages a
    successful call appended that are missing at the end). Resets ``subject`` first."""
    await subject.reset()
    for user in range(users):
        await subject.save_new(f"user-{user}", new_state(CONCURRENCY_HISTORY))
    latencies: list[float] = []
    errors: list[str] = []
    done = [0] * users

    async def user_turns(user: int) -> None:
        cid = f"user-{user}"
        fresh = _Fresh(CONCURRENCY_HISTORY + user * 10_000)
        for turn in range(turns):
            new = fresh.messages(2)
            started = time.perf_counter()
            try:
                await subject.load(cid, TURN)
                await subject.append(cid, new, step_count=turn + 1)
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)
            done[user] += 1

    started = time.perf_counter()
    await asyncio.gather(*(user_turns(u) for u in range(users)))
    elapsed = time.perf_counter() - started
    lost = 0
    for user in range(users):
        expected = CONCURRENCY_HISTORY + 2 * done[user]
        lost += max(0, expected - await subject.message_count(f"user-{user}"))
    latencies.sort()
    return {
        "users": users,
        "turns": len(latencies),
        "seconds": elapsed,
        "turns_per_s": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "lost_writes": lost,
    }


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]
