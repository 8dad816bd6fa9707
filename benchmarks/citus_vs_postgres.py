"""An append and a smart load on Citus against plain PostgreSQL, in one run.

    .venv/bin/python benchmarks/citus_vs_postgres.py \\
        --citus postgresql://postgres@127.0.0.1:5433/statestore_bench \\
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 300]

``--citus`` is a database on a Citus coordinator; it is migrated (and so distributed)
first. ``--postgres`` is a server where a scratch database is created, migrated and
dropped (default: STATESTORE_TEST_POSTGRES_URL or the local server). Both get the same
conversation (1,000 messages, 50 context items); the script prints the median and the
90th percentile of each operation and the Citus/PostgreSQL ratio of the medians, and
deletes what it wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import statestore
from statestore import AgentState, ContextItem, LoadOptions, Message, StatePatch
from statestore.backends.sql import migrate
from statestore.testing.plugin import scratch_database

MESSAGES = 1000
ITEMS = 50


def _state() -> AgentState:
    return AgentState(
        user_input="hi",
        conversation_history=[
            Message(role="user" if i % 2 else "assistant", content=f"message {i} " * 8)
            for i in range(MESSAGES)
        ],
        memory_context=[
            ContextItem(source="rag", content=f"item {i}", relevance_score=(i % 10) / 10)
            for i in range(ITEMS)
        ],
        metadata={"model": "m"},
    )


async def _time(rounds: int, op: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(rounds // 10):  # warm the pool and the statement caches
        await op()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await op()
        times.append(time.perf_counter() - started)
    return times


async def measure(url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per append and per smart load on the database at ``url``."""
    cid = f"bench-citus-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=url) as store:
        await store.save_state(cid, _state())
        patch = StatePatch(append_messages=[Message(role="user", content="one more turn")])
        try:
            return {
                "append": await _time(rounds, lambda: store.update_state(cid, patch)),
                "smart load": await _time(
                    rounds, lambda: store.load_state(cid, LoadOptions.smart())
                ),
            }
        finally:
            await store.delete_state(cid)


def _ms(times: list[float]) -> str:
    median = statistics.median(times) * 1000
    p90 = statistics.quantiles(times, n=10)[-1] * 1000
    return f"{median:7.3f} ms (p90 {p90:7.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--citus", required=True, help="a database on a Citus coordinator")
    parser.add_argument("--postgres", help="a plain PostgreSQL server (scratch database)")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if args.postgres:
        os.environ["STATESTORE_TEST_POSTGRES_URL"] = args.postgres
    asyncio.run(migrate.upgrade(args.citus))
    with scratch_database("statestore_bench", migrated=True) as plain:
        results = {
            "postgres": asyncio.run(measure(plain, args.rounds)),
            "citus": asyncio.run(measure(args.citus, args.rounds)),
        }
    print(f"{MESSAGES} messages, {ITEMS} context items, {args.rounds} rounds")
    for op in ("append", "smart load"):
        pg, citus = results["postgres"][op], results["citus"][op]
        ratio = statistics.median(citus) / statistics.median(pg)
        print(f"{op:10}  postgres {_ms(pg)}  citus {_ms(citus)}  citus/postgres {ratio:4.1f}x")


if __name__ == "__main__":
    main()
