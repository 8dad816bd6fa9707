"""Simulated users, each on a conversation of its own, running turns (load_turn,
append two messages, set step_count) at the same time on one store: turns per
second, p50/p99 latency, errors and lost writes in ``extra_info``."""

from __future__ import annotations

import asyncio

import pytest
from conftest import TURNS, USERS
from pytest_benchmark.fixture import BenchmarkFixture
from raw import RAW

from statestore.bench import Subject
from statestore.bench.scenarios import run_concurrency


@pytest.mark.parametrize("users", USERS, ids=lambda n: f"users{n}")
def test_concurrency(
    benchmark: BenchmarkFixture, subject: Subject, runner: asyncio.Runner, users: int
) -> None:
    """Every turn of every user succeeds and every appended message is stored."""
    if subject.target.backend == RAW:
        pytest.skip("the raw baseline is a single connection: not run concurrently")

    benchmark.group = f"concurrency-{users}"
    target = subject.target
    benchmark.extra_info.update(scenario="concurrency", target=target.id, engine=target.engine)
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome.update(runner.run(run_concurrency(subject, users, TURNS)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(outcome)
    assert outcome["errors"] == 0, outcome["first_error"]
    assert outcome["lost_writes"] == 0
    assert outcome["turns"] == users * TURNS
