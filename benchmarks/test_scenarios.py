"""Each scenario of ``statestore.bench.SCENARIOS`` at each size on each target,
grouped by ``{scenario}-{size}`` so the report shows the backends side by side.

Storage (bytes per conversation: live after ``save_full``, as left after ``grow``)
and peak Python memory (``load_full``, ``load_turn``) are in ``extra_info``.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import QUICK, SIZES, LoopClock
from pytest_benchmark.fixture import BenchmarkFixture

from statestore.bench import SCENARIOS, Subject
from statestore.bench.scenarios import plan_rounds, timed


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(
    benchmark: BenchmarkFixture, subject: Subject, runner: asyncio.Runner, scenario: str, size: int
) -> None:
    """The scenario runs on this target and leaves exactly the expected data."""

    definition = SCENARIOS[scenario]
    reason = definition.skip(subject.target, size)
    if reason is not None:
        pytest.skip(reason)
    benchmark.group = f"{scenario}-{size}"
    target = subject.target
    benchmark.extra_info.update(
        scenario=scenario, size=size, target=target.id, engine=target.engine
    )
    prepared = runner.run(definition.prepare(subject, size))
    benchmark.extra_info.update(prepared.extra)
    max_rounds = prepared.max_rounds
    first = 0.0
    if prepared.warmup:
        first = runner.run(timed(prepared))
        max_rounds = None if max_rounds is None else max(1, max_rounds - 1)
    rounds = plan_rounds(first, max_rounds, quick=QUICK) if prepared.warmup else 1

    def before() -> None:
        runner.run(prepared.before())

    clock = LoopClock()
    clock.install(benchmark)

    def run() -> None:
        runner.run(clock.timed(prepared.run))

    benchmark.pedantic(run, setup=before, rounds=rounds, iterations=1)
    if prepared.after is not None:
        benchmark.extra_info.update(runner.run(prepared.after()))
    runner.run(prepared.check())
