"""An append and a smart load on Citus against plain PostgreSQL, in one run.

    .venv/bin/python benchmarks/citus_vs_postgres.py \\
        --citus postgresql://postgres@127.0.0.1:5433/statestore_bench \\
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 300]

``--citus`` is a database on a Citus coordinator; it is migrated (and so distributed)
first. ``--postgres`` is a server where a scratch database is created, migrated and
dropped (default: STATESTORE_TEST_POSTGRES_URL or the local server). Both get the same
conversation (1,000 messages, 50 context items); the script prints the median and the
90th percentile of each operation and the Citus/PostgreSQL ratio of the medians, and
deletes what it wrote. Citus is measured twice: with the delegated calls (one round
trip per append and per windowed load, what a store uses once migrated) and with the
statements sent one by one through the coordinator, as before them. It prints whether
each connection uses TLS: the client's to each server, and the coordinator's to its
workers (Citus turns TLS on there by default; ``?sslmode=disable`` in a URL and
``citus.node_conninfo`` turn it off).
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
from statestore.backends.postgres import asyncpg_dsn
from statestore.backends.sql import migrate
from statestore.backends.sql.citus import HAS_CITUS
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


async def measure(url: str, rounds: int, *, delegated: bool = True) -> dict[str, list[float]]:
    """Seconds per append and per smart load on the database at ``url``; on Citus
    without the delegated calls unless ``delegated``."""
    cid = f"bench-citus-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=url) as store:
        if not delegated:
            store.backend._db.delegates_calls = False
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


async def tls(url: str) -> str:
    """Whether the connections to ``url`` use TLS: the client's, and on a Citus
    coordinator the coordinator's to its workers."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        client = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        text = f"client TLS {'on' if client else 'off'}"
        if await conn.fetchval(HAS_CITUS):
            conninfo = await conn.fetchval("SHOW citus.node_conninfo")
            workers = await conn.fetch("SELECT result FROM run_command_on_workers('SHOW ssl')")
            on = "sslmode=disable" not in conninfo and all(r[0] == "on" for r in workers)
            text += f", coordinator to workers TLS {'on' if on else 'off'} ({conninfo})"
        return text
    finally:
        await conn.close()


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
            "citus, statements": asyncio.run(measure(args.citus, args.rounds, delegated=False)),
        }
        print(f"postgres: {asyncio.run(tls(plain))}")
    print(f"citus: {asyncio.run(tls(args.citus))}")
    print(f"{MESSAGES} messages, {ITEMS} context items, {args.rounds} rounds")
    for op in ("append", "smart load"):
        pg = results["postgres"][op]
        print(f"{op:10}  postgres           {_ms(pg)}")
        for name in ("citus", "citus, statements"):
            times = results[name][op]
            ratio = statistics.median(times) / statistics.median(pg)
            print(f"{'':10}  {name:18} {_ms(times)}  /postgres {ratio:4.1f}x")


if __name__ == "__main__":
    main()
