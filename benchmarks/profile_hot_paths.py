"""Hot-path timings of the normalized backends against the raw drivers and legacy-blob.

Run: ``.venv/bin/python benchmarks/profile_hot_paths.py [--engine sqlite|postgres]
[--reps 200] [--grow 1000] [--skip-grow]``. PostgreSQL comes from
``STATESTORE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
a scratch database is created and dropped.

Every figure is a median in milliseconds, measured in the same run as the raw-driver
version of the same work (aiosqlite / asyncpg by hand: one INSERT per append,
``ORDER BY seq DESC LIMIT 20`` per window, plain SELECTs for a full load, ``executemany``
for a full save), so the ratios hold even on a busy machine. N = 1,000 messages of
about 400 characters, 50 context items. It also times the floor of a full load: a
benchmark-workload conversation's message rows by the driver alone, decoded, and as
``Message`` objects; on PostgreSQL, a one-statement call on the store's own pool
against one on asyncpg's (``pool=``). On SQLite it also times, with plain sqlite3,
each statement of an append and the rows of a full save against one document.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import string
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import statestore
from statestore import AgentState, ContextItem, LoadOptions, Message, StatePatch
from statestore.backends.sql import migrate
from statestore.bench.data import make_state as bench_state

N_MESSAGES = 1000
N_ITEMS = 50
SERVER = os.environ.get(
    "STATESTORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

rng = random.Random(42)
WORDS = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]


def text(n: int = 400) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def message(i: int) -> Message:
    return Message(role="user" if i % 2 == 0 else "assistant", content=text())


def item(i: int) -> ContextItem:
    return ContextItem(
        content=text(200),
        source=("ltm", "rag", "focus")[i % 3],
        relevance_score=round(rng.random(), 3),
        context_type=("general", "code", "plan")[i % 3],
    )


def full_state() -> AgentState:
    return AgentState(
        user_input="what next?",
        focus_areas=["code"],
        step_count=3,
        last_tool_result={"ok": True},
        conversation_history=[message(i) for i in range(N_MESSAGES)],
        memory_context=[item(i) for i in range(N_ITEMS)],
        metadata={"model": "x", "n": 1},
    )


async def timed(*fns: Callable[[], Awaitable[Any]], reps: int, warmup: int = 5) -> list[float]:
    """Median milliseconds of each of ``fns`` over ``reps`` calls after ``warmup``
    ones. Calls are interleaved (a, b, a, b, ...) so that load from other processes
    weighs on every variant alike and the ratios stay fair."""
    for _ in range(warmup):
        for fn in fns:
            await fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, samples, strict=True):
            t = time.perf_counter()
            await fn()
            out.append((time.perf_counter() - t) * 1000)
    return [statistics.median(s) for s in samples]


async def peak_kib(fn: Callable[[], Awaitable[Any]]) -> float:
    """Peak traced Python memory of one call, KiB (the result kept alive)."""
    await fn()
    gc.collect()
    tracemalloc.start()
    result = await fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak / 1024


MSG_SQL = (
    "INSERT INTO conversation_messages (conversation_id, seq, role, content, message_type, "
    "tool_name, created_at, metadata) VALUES ({})"
)
ITEM_SQL = (
    "INSERT INTO memory_context_items (conversation_id, item_id, source, content, "
    "relevance_score, context_type, created_at, metadata) VALUES ({})"
)
STATE_SQL = (
    "INSERT INTO conversation_states (conversation_id, user_id, user_input, focus_areas, "
    "step_count, last_tool_result, version, message_count, next_item_id, created_at, "
    "updated_at) VALUES ({})"
)
WINDOW_SQL = (
    "SELECT seq, role, content, message_type, tool_name, created_at, metadata "
    "FROM conversation_messages WHERE conversation_id = {0} ORDER BY seq DESC LIMIT 20"
)
ALL_MSGS_SQL = (
    "SELECT seq, role, content, message_type, tool_name, created_at, metadata "
    "FROM conversation_messages WHERE conversation_id = {0} ORDER BY seq"
)
ALL_ITEMS_SQL = (
    "SELECT item_id, source, content, relevance_score, context_type, created_at, metadata "
    "FROM memory_context_items WHERE conversation_id = {0} ORDER BY item_id"
)
STATE_ROW_SQL = "SELECT * FROM conversation_states WHERE conversation_id = {0}"
FLOOR_SQL = (
    "SELECT seq, role, content, message_type, tool_name, created_at, metadata, payload "
    "FROM conversation_messages WHERE conversation_id = {0} ORDER BY seq"
)


class RawSqlite:
    """The same work by hand with aiosqlite (same pragmas as the backend)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    async def __aenter__(self) -> RawSqlite:
        import aiosqlite

        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        # aiosqlite as its documentation uses it (implicit BEGIN, then commit()): the
        # raw append of the reference figures.
        self.plain = await aiosqlite.connect(self.path)
        await self.plain.execute("PRAGMA synchronous=NORMAL")  # as the backend: no fsync
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            await self.conn.execute(f"PRAGMA {pragma}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()
        await self.plain.close()

    async def create(self, cid: str, state: AgentState) -> None:
        c = self.conn
        await c.execute("BEGIN IMMEDIATE")
        await c.execute(
            STATE_SQL.format(", ".join("?" * 11)),
            (cid, None, state.user_input, '["code"]', 0, "null", 1, 0, 0, self.ts, self.ts),
        )
        await c.executemany(
            MSG_SQL.format(", ".join("?" * 8)),
            [
                (cid, i, m.role, m.content, m.message_type, None, self.ts, "{}")
                for i, m in enumerate(state.conversation_history)
            ],
        )
        await c.executemany(
            ITEM_SQL.format(", ".join("?" * 8)),
            [
                (cid, i, x.source, x.content, x.relevance_score, x.context_type, self.ts, "{}")
                for i, x in enumerate(state.memory_context)
            ],
        )
        await c.execute("COMMIT")

    async def append(self, cid: str, seq: int, m: Message) -> None:
        """``execute`` + ``commit()``: two thread hops."""
        await self.plain.execute(
            MSG_SQL.format(", ".join("?" * 8)),
            (cid, seq, m.role, m.content, m.message_type, None, self.ts, "{}"),
        )
        await self.plain.commit()

    async def append_one_hop(self, cid: str, seq: int, m: Message) -> None:
        """Autocommit: one thread hop, the lower bound of any aiosqlite write."""
        await self.conn.execute(
            MSG_SQL.format(", ".join("?" * 8)),
            (cid, seq, m.role, m.content, m.message_type, None, self.ts, "{}"),
        )

    async def window(self, cid: str) -> list[Any]:
        return list(await self.conn.execute_fetchall(WINDOW_SQL.format("?"), (cid,)))

    async def messages(self, cid: str) -> list[Any]:
        return list(await self.conn.execute_fetchall(FLOOR_SQL.format("?"), (cid,)))

    async def full(self, cid: str) -> list[Any]:
        c = self.conn
        return [
            list(await c.execute_fetchall(STATE_ROW_SQL.format("?"), (cid,))),
            list(await c.execute_fetchall(ALL_MSGS_SQL.format("?"), (cid,))),
            list(await c.execute_fetchall(ALL_ITEMS_SQL.format("?"), (cid,))),
        ]


class RawPostgres:
    """The same work by hand with asyncpg (one connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ts = datetime.now(UTC)

    async def __aenter__(self) -> RawPostgres:
        import asyncpg

        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def create(self, cid: str, state: AgentState) -> None:
        c = self.conn
        ph = lambda n: ", ".join(f"${i}" for i in range(1, n + 1))  # noqa: E731
        async with c.transaction():
            await c.execute(
                STATE_SQL.format(ph(11)),
                cid, None, state.user_input, '["code"]', 0, "null", 1, 0, 0, self.ts, self.ts,
            )  # fmt: skip
            await c.executemany(
                MSG_SQL.format(ph(8)),
                [
                    (cid, i, m.role, m.content, m.message_type, None, self.ts, "{}")
                    for i, m in enumerate(state.conversation_history)
                ],
            )
            await c.executemany(
                ITEM_SQL.format(ph(8)),
                [
                    (cid, i, x.source, x.content, x.relevance_score, x.context_type, self.ts, "{}")
                    for i, x in enumerate(state.memory_context)
                ],
            )

    async def append(self, cid: str, seq: int, m: Message) -> None:
        await self.conn.execute(
            MSG_SQL.format("$1, $2, $3, $4, $5, $6, $7, $8"),
            cid, seq, m.role, m.content, m.message_type, None, self.ts, "{}",
        )  # fmt: skip

    async def window(self, cid: str) -> list[Any]:
        return list(await self.conn.fetch(WINDOW_SQL.format("$1"), cid))

    async def messages(self, cid: str) -> list[Any]:
        return list(await self.conn.fetch(FLOOR_SQL.format("$1"), cid))

    async def full(self, cid: str) -> list[Any]:
        c = self.conn
        return [
            await c.fetch(STATE_ROW_SQL.format("$1"), cid),
            await c.fetch(ALL_MSGS_SQL.format("$1"), cid),
            await c.fetch(ALL_ITEMS_SQL.format("$1"), cid),
        ]


async def load_floor(raw: Any, engine: str, reps: int) -> list[float]:
    """What a full load's messages cost past the driver, whoever builds them: the rows
    of conversation ``floor`` (the benchmark workload, ``statestore.bench.data``) as
    the driver gives them; with each row's timestamp and JSON decoded, no objects; and
    as the ``Message`` objects a load returns. Median ms of each."""
    to_time = datetime.fromisoformat if engine == "sqlite" else None  # asyncpg decodes
    loads = orjson.loads

    async def decoded() -> list[tuple[Any, ...]]:
        return [
            (
                seq,
                role,
                content,
                kind,
                tool,
                to_time(at) if to_time else at,
                loads(meta),
                None if payload is None else loads(payload),
            )
            for seq, role, content, kind, tool, at, meta, payload in await raw.messages("floor")
        ]

    async def built() -> list[Message]:
        return [
            Message(
                role,
                content,
                kind,
                tool,
                to_time(at) if to_time else at,
                loads(meta),
                seq,
                True,  # validated, as a load builds them
                None if payload is None else loads(payload),
            )
            for seq, role, content, kind, tool, at, meta, payload in await raw.messages("floor")
        ]

    return await timed(lambda: raw.messages("floor"), decoded, built, reps=max(reps // 4, 10))


async def pool_cost(store: Any, url: str, reps: int) -> list[float]:
    """A one-statement call (the state row alone) on the store's own pool, and on a
    store given ``pool=asyncpg.create_pool(...)`` with asyncpg's defaults (which run a
    reset query when a connection is released). Median ms of each."""
    import asyncpg

    head = LoadOptions(last_messages=0, context_limit=0)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with statestore.open_store("postgres", url, pool=pool) as pooled:
            return await timed(
                lambda: store.load_state("ours", head),
                lambda: pooled.load_state("ours", head),
                reps=reps,
            )
    finally:
        await pool.close()


def row(name: str, ours: float, ref: float, ref_name: str, target: str) -> None:
    print(f"  {name:<12} {ours:9.3f} ms   {ref_name} {ref:9.3f} ms", end="")
    print(f"   ratio {ours / ref:6.2f}  ({target})")


async def run_engine(engine: str, url: str, reps: int, grow: int) -> None:
    backend = "sqlite" if engine == "sqlite" else "postgres"
    state = full_state()
    extra = [message(i) for i in range(8)]
    print(f"\n== {engine} (N={N_MESSAGES} messages, {N_ITEMS} items, {reps} reps, medians)")
    raw_cls: Any = (
        RawSqlite(Path(url.split("///", 1)[1])) if engine == "sqlite" else RawPostgres(url)
    )
    async with (
        statestore.open_store(backend, url) as store,
        statestore.open_store("legacy-blob", url) as legacy,
        raw_cls as raw,
    ):
        # Seed one conversation of each kind.
        await store.save_state("ours", state)
        await legacy.save_state("legacy", state)
        await raw.create("raw", state)
        await store.save_state("floor", bench_state(N_MESSAGES))

        seq = {"ours": N_MESSAGES, "raw": N_MESSAGES}
        k = iter(range(10**9))

        async def ours_append() -> None:
            await store.update_state("ours", StatePatch(append_messages=[extra[next(k) % 8]]))

        async def raw_append() -> None:
            await raw.append("raw", seq["raw"], extra[0])
            seq["raw"] += 1

        async def legacy_append() -> None:
            await legacy.update_state("legacy", StatePatch(append_messages=[extra[0]]))

        window = LoadOptions(last_messages=20, context_limit=0)
        results = {}
        # Loads first, on exactly N messages, then appends (which grow the conversations).
        results["window"] = await timed(
            lambda: store.load_state("ours", window), lambda: raw.window("raw"), reps=reps
        )
        results["full_load"] = await timed(
            lambda: store.load_state("ours"),
            lambda: legacy.load_state("legacy"),
            lambda: raw.full("raw"),
            reps=max(reps // 4, 10),
        )
        results["load_floor"] = await load_floor(raw, engine, reps)
        if engine == "postgresql":
            results["pool"] = await pool_cost(store, url, reps)
        turn = LoadOptions.smart()
        results["load_turn_mem"] = (
            await peak_kib(lambda: store.load_state("ours", turn)),
            await peak_kib(lambda: legacy.load_state("legacy", turn)),
        )

        saves = iter(range(10**9))

        def fresh() -> AgentState:
            return AgentState(
                user_input=state.user_input,
                focus_areas=list(state.focus_areas),
                conversation_history=list(state.conversation_history),
                memory_context=list(state.memory_context),
                metadata=dict(state.metadata),
            )

        save_reps = max(reps // 10, 10)
        results["full_save"] = await timed(
            lambda: store.save_state(f"s-{next(saves)}", fresh()),
            lambda: legacy.save_state(f"s-{next(saves)}", fresh()),
            lambda: raw.create(f"r-{next(saves)}", state),
            reps=save_reps,
            warmup=2,
        )

        async def raw_one_hop() -> None:
            await raw.append_one_hop("raw", seq["raw"], extra[0])
            seq["raw"] += 1

        appends = [ours_append, raw_append] + ([raw_one_hop] if engine == "sqlite" else [])
        results["append"] = await timed(*appends, reps=reps)
        # Legacy appends rewrite the whole document: fewer of them, after the others.
        results["append"].extend(await timed(legacy_append, reps=max(reps // 10, 10), warmup=2))

        grow_res = None
        if grow:

            async def grow_run(s: Any, cid: str) -> float:
                t = time.perf_counter()
                await s.save_state(cid, AgentState())
                for i in range(grow):
                    await s.update_state(cid, StatePatch(append_messages=[extra[i % 8]]))
                return time.perf_counter() - t

            grow_res = (await grow_run(store, "grow"), await grow_run(legacy, "grow"))

    w, rw = results["window"]
    fl, lfl, rfl = results["full_load"]
    fs, lfs, rfs = results["full_save"]
    ap, rap, *one_hop = results["append"][:-1]
    lap = results["append"][-1]
    mem, lmem = results["load_turn_mem"]
    row("append_one", ap, rap, "raw", "target <= 1.6")
    if one_hop:
        print(f"  {'':<12} raw autocommit, one hop {one_hop[0]:.3f} ms", end="")
        print(f" (ratio {ap / one_hop[0]:.2f})")
    print(f"  {'':<12} legacy append {lap:.3f} ms")
    row("load_window", w, rw, "raw", "target <= 2")
    row("load_full", fl, lfl, "legacy", "target <= 1")
    print(f"  {'':<12} raw full load {rfl:.3f} ms (ratio {fl / rfl:.2f})")
    driver, decoded, built = results["load_floor"]
    print(
        f"  {'':<12} the messages alone, by the driver: {driver:.3f} ms; decoded "
        f"{decoded:.3f} ms ({decoded / driver:.2f}x); as Message objects {built:.3f} ms "
        f"({built / driver:.2f}x)"
    )
    row("save_full", fs, lfs, "legacy", "target <= 1")
    print(f"  {'':<12} raw full save {rfs:.3f} ms (ratio {fs / rfs:.2f})")
    if "pool" in results:
        own, theirs = results["pool"]
        print(
            f"  {'pool':<12} the state row alone: own pool {own:.3f} ms, asyncpg's pool "
            f"{theirs:.3f} ms ({theirs / own:.2f}x)"
        )
    print(f"  {'load_turn':<12} peak {mem:9.1f} KiB   legacy {lmem:9.1f} KiB", end="")
    print(f"   ratio {mem / lmem:6.2f}  (target <= 0.3)")
    if engine == "sqlite":
        sqlite_anatomy(Path(url.split("///", 1)[1]), reps)
    if grow_res:
        ours_s, leg_s = grow_res
        print(f"  {'grow':<12} {ours_s:9.3f} s    legacy {leg_s:9.3f} s", end="")
        print(f"    speed-up {leg_s / ours_s:6.1f}x  (target >= 10, {grow} appends)")


def sqlite_anatomy(path: Path, reps: int) -> None:
    """Where a SQLite append and a full save spend their time, statement by statement,
    with plain sqlite3 on the same file and settings (no thread hop, no Python of ours):
    the SQL of ``update_state`` appending one message against the raw one-INSERT
    append, and 1,000 message rows against one 1,000-message document."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    insert = (
        "INSERT INTO conversation_messages (conversation_id, seq, role, content, "
        "message_type, tool_name, created_at, metadata) VALUES (?, ?, 'user', ?, 'text', "
        "NULL, ?, '{}')"
    )
    update = (
        "UPDATE conversation_states SET updated_at = ?2, version = version + 1, "
        "message_count = message_count + 1 WHERE conversation_id = ?1 "
        "RETURNING version, message_count, next_item_id, user_id, created_at"
    )
    (count,) = conn.execute(
        "SELECT message_count FROM conversation_states WHERE conversation_id = 'ours'"
    ).fetchone()
    spent: dict[str, list[float]] = {}

    def clock(name: str, sql: str, args: tuple[Any, ...] = ()) -> None:
        started = time.perf_counter()
        conn.execute(sql, args).fetchall()
        spent.setdefault(name, []).append(time.perf_counter() - started)

    content = text()
    for i in range(reps):
        clock("BEGIN IMMEDIATE", "BEGIN IMMEDIATE")
        clock("UPDATE ... RETURNING", update, ("ours", now))
        clock("INSERT", insert, ("ours", count + 2 * i, content, now))
        clock("COMMIT", "COMMIT")
        clock("raw autocommit INSERT", insert, ("ours", count + 2 * i + 1, content, now))
    # The raw rows above bypassed the state row: put its count right again.
    conn.execute(
        "UPDATE conversation_states SET message_count = message_count + ?1 "
        "WHERE conversation_id = 'ours'",
        (reps,),
    )
    parts = ", ".join(f"{name} {statistics.median(t) * 1e6:.0f}" for name, t in spent.items())
    print(f"  {'':<12} append SQL, plain sqlite3 (µs): {parts}")

    messages = [message(i) for i in range(N_MESSAGES)]
    document = orjson.dumps({"conversation_history": [m.to_dict() for m in messages]})
    rows_ms, document_ms = [], []
    for i in range(max(reps // 20, 5)):
        rows = [(f"anatomy-{i}", seq, m.content, now) for seq, m in enumerate(messages)]
        conn.execute(
            "INSERT INTO conversation_states (conversation_id, focus_areas, step_count, "
            "last_tool_result, version, message_count, next_item_id, created_at, updated_at) "
            "VALUES (?1, '[]', 0, 'null', 1, 0, 0, ?2, ?2)",
            (f"anatomy-{i}", now),
        )
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        rows_ms.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO memory_chunks (conversation_id, content, created_at) VALUES (?, ?, ?)",
            (f"anatomy-{i}", document.decode(), now),
        )
        document_ms.append((time.perf_counter() - started) * 1e3)
    conn.close()
    print(
        f"  {'':<12} save SQL, plain sqlite3: {N_MESSAGES:,} message rows "
        f"{statistics.median(rows_ms):.2f} ms, one {N_MESSAGES:,}-message document "
        f"{statistics.median(document_ms):.2f} ms"
    )


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--grow", type=int, default=1000)
    parser.add_argument("--skip-grow", action="store_true")
    args = parser.parse_args()
    grow = 0 if args.skip_grow else args.grow
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            await run_engine("sqlite", f"sqlite:///{tmp}/perf.db", args.reps, grow)
    if args.engine in ("postgres", "both"):
        name = f"statestore_perf_{uuid.uuid4().hex[:10]}"
        await _admin(f'CREATE DATABASE "{name}"')
        url = SERVER.rpartition("/")[0] + "/" + name
        try:
            await migrate.upgrade(url)
            await run_engine("postgresql", url, args.reps, grow)
        finally:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
