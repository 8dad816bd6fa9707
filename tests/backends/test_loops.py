"""Event loops and threads, engine by engine: what the contract suite (``loops.py``)
cannot see from outside a Store.

PostgreSQL: the store's own pool keeps each loop's connections apart, never opens
more than ``pool_size`` whatever the number of loops, closes the connections of a
loop that has closed, and keeps the usual loop's calls on one connection; an
application's pool (``pool=``) refuses another loop at once and keeps working.
SQLite: opening a store does its file work (the directory, the file) off the
caller's loop, and callers whose loops end before their answer arrives leave no
error behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

import statestore
from statestore import AgentState, Message, StatePatch, StateStoreError

T = TypeVar("T")


def new_id(prefix: str = "loops") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def in_thread(work: Callable[[], T]) -> T:
    """``work()`` in a new thread (with no event loop), its result or error here."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)  # a hang fails, never blocks
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the call hung"
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result


def on_new_loop(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``coro()`` run by ``asyncio.run`` in a thread of its own (a loop that then
    closes)."""
    return in_thread(lambda: asyncio.run(asyncio.wait_for(coro(), 60)))


def append(text: str) -> StatePatch:
    return StatePatch(append_messages=[Message("user", text)])


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[Any]:
    """A session of the test's own on the test database."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


def tagged(url: str) -> tuple[str, str]:
    """``url`` with an application_name of its own (asyncpg passes unknown query
    parameters as server settings), so that the store's sessions can be counted."""
    name = new_id("app")
    return f"{url}?application_name={name}", name


async def sessions(admin: Any, name: str, *, busy: bool = False) -> list[int]:
    """The server pids of the sessions called ``name`` (those still open; if
    ``busy``, only those running a statement or inside a transaction)."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND "
        "(NOT $2 OR state <> 'idle')",
        name,
        busy,
    )
    return sorted(row["pid"] for row in rows)


async def settle(admin: Any, name: str, expected: int) -> list[int]:
    """The sessions called ``name`` once their count is ``expected`` (the server
    notices a closed session a moment later), or as they are after 2 s."""
    for _ in range(100):
        pids = await sessions(admin, name)
        if len(pids) == expected:
            return pids
        await asyncio.sleep(0.02)
    return await sessions(admin, name)


@pytest.mark.postgres
async def test_the_usual_loop_keeps_using_one_connection(postgres_url: str, admin: Any) -> None:
    """Calls one after another on the loop that opened the store share one session
    (no connection per call, no other loop's), and run on the caller's thread."""
    url, name = tagged(postgres_url)
    async with statestore.open_store("postgres", url) as store:
        cid = new_id()
        await store.save_state(cid, AgentState())
        first = await sessions(admin, name)
        threads = threading.active_count()
        for i in range(20):
            await store.update_state(cid, append(str(i)))
            await store.load_state(cid)
        assert await sessions(admin, name) == first and len(first) == 1
        assert threading.active_count() == threads


@pytest.mark.postgres
async def test_each_loop_gets_connections_of_its_own(postgres_url: str, admin: Any) -> None:
    """A call from another loop opens a connection there (the opening loop's stays
    idle for it); when that loop has closed, its connection is closed as soon as
    the store meets a new loop, and the opening loop's goes on serving."""
    url, name = tagged(postgres_url)
    async with statestore.open_store("postgres", url) as store:
        cid = new_id()
        await store.save_state(cid, AgentState())
        home = await sessions(admin, name)
        on_new_loop(lambda: store.update_state(cid, append("other loop")))
        both = await sessions(admin, name)
        assert len(both) == 2 and set(home) < set(both)
        on_new_loop(lambda: store.update_state(cid, append("third loop")))
        # The second loop's session is gone, the third's stays idle until a fourth.
        after = await settle(admin, name, 2)
        assert set(home) < set(after) and not (set(both) - set(home)) & set(after)
        loaded = await store.load_state(cid)
        assert [m.content for m in loaded.conversation_history] == ["other loop", "third loop"]
        assert set(home) <= set(await sessions(admin, name))
    assert await settle(admin, name, 0) == []


@pytest.mark.postgres
async def test_pool_size_holds_across_loops(postgres_url: str, admin: Any) -> None:
    """Eight threads with loops of their own and the opening loop call at once
    through pool_size=2: never more than two sessions at work, every write kept, and
    every session closed with the store. (A connection handed from one loop to
    another is closed on its own loop as its replacement opens: the server may list
    the closing session, idle, a moment longer.)"""
    url, name = tagged(postgres_url)
    async with statestore.open_store("postgres", url, pool_size=2) as store:
        cid = new_id()
        await store.save_state(cid, AgentState())
        peak = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, len(await sessions(admin, name, busy=True)))
                await asyncio.sleep(0)

        async def writes(writer: str) -> None:
            for n in range(10):
                await store.update_state(cid, append(f"{writer}:{n}"))

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    writes("home"),
                    *(
                        asyncio.to_thread(on_new_loop, lambda i=i: writes(f"t{i}"))
                        for i in range(8)
                    ),
                ),
                90,
            )
        finally:
            stop.set()
            await watcher
        assert 1 <= peak <= 2
        loaded = await store.load_state(cid)
        contents = [m.content for m in loaded.conversation_history]
        assert len(contents) == len(set(contents)) == 90
    assert await settle(admin, name, 0) == []


@pytest.mark.postgres
async def test_a_busy_pool_across_loops_times_out_clearly(postgres_url: str) -> None:
    """With the only connection held by a transaction on the opening loop, a call
    from another loop waits pool_timeout and raises BackendUnavailable; once the
    connection is free, that loop is served."""
    async with statestore.open_store(
        "postgres", postgres_url, pool_size=1, pool_timeout=0.3
    ) as store:
        cid = new_id()
        await store.save_state(cid, AgentState())
        db = store.backend._db
        async with db.transaction():
            started = time.monotonic()
            with pytest.raises(statestore.BackendUnavailable, match="pool_size=1"):
                on_new_loop(lambda: store.load_state(cid))
            assert time.monotonic() - started < 5
        on_new_loop(lambda: store.update_state(cid, append("served")))
        assert (await store.load_state(cid)).history_total == 1


@pytest.mark.postgres
async def test_a_call_left_pending_on_a_dropped_loop_leaves_no_socket_open(
    postgres_url: str, admin: Any
) -> None:
    """An application drops its loop (closes it) while a store call waits on a row
    lock there; when the garbage collector closes the pending call, its connection's
    socket is closed then, not left open for the collector to find (a ResourceWarning
    in whatever runs next). The write is applied whole or not at all (the server may
    finish it once the lock is gone), and the store goes on serving."""
    async with statestore.open_store("postgres", postgres_url, pool_size=2) as store:
        cid = new_id()
        await store.save_state(cid, AgentState(step_count=0))
        lock = admin.transaction()
        await lock.start()
        await admin.execute(
            "SELECT 1 FROM conversation_states WHERE conversation_id = $1 FOR UPDATE", cid
        )
        pool = store.backend._db._pool  # type: ignore[attr-defined]

        def drop_a_loop_with_a_call_pending() -> list[Any]:
            loop = asyncio.new_event_loop()
            patch = StatePatch(step_count=1, append_messages=[Message("user", "dropped")])
            task = loop.create_task(store.update_state(cid, patch))
            loop.run_until_complete(asyncio.sleep(0.3))  # the UPDATE waits on the lock
            used = [conn for conn, (owner, _) in pool._owners.items() if owner is loop]
            assert used, "the call holds a connection of its loop"
            loop.close()
            task.get_coro().close()  # what the garbage collector does to it
            return [
                conn for conn in used if conn._transport.get_extra_info("socket").fileno() != -1
            ]

        try:
            assert in_thread(drop_a_loop_with_a_call_pending) == []
        finally:
            await lock.rollback()
        loaded = await store.load_state(cid)
        assert (loaded.version, loaded.step_count, loaded.history_total) in ((1, 0, 0), (2, 1, 1))
        await store.update_state(cid, StatePatch(step_count=2))
        assert (await store.load_state(cid)).step_count == 2


@pytest.mark.postgres
async def test_a_connection_closed_as_its_loop_runs_its_last_step_leaves_no_socket_open(
    postgres_url: str,
) -> None:
    """A connection of another loop that the pool drops is closed by a callback on its
    own loop; when that loop runs the callback in its very last step (then closes, as
    ``asyncio.run`` may), the socket is still closed by the time the store closes,
    not left open for the garbage collector."""
    async with statestore.open_store("postgres", postgres_url, pool_size=2) as store:
        cid = new_id()
        await store.save_state(cid, AgentState())
        pool = store.backend._db._pool  # type: ignore[attr-defined]
        loop = asyncio.new_event_loop()
        try:
            in_thread(lambda: loop.run_until_complete(store.load_state(cid)))
            used = [conn for conn, (owner, _) in pool._owners.items() if owner is loop]
            assert used, "the other loop's call left its connection idle in the pool"
            await pool.expire()  # drops it: a callback on its loop closes it

            def last_step() -> None:
                loop.call_soon(loop.stop)  # after the pool's callback, in one step
                loop.run_forever()

            in_thread(last_step)
        finally:
            loop.close()
    assert [c for c in used if c._transport.get_extra_info("socket").fileno() != -1] == []


@pytest.mark.postgres
async def test_application_pool_refuses_another_loop_and_keeps_working(
    postgres_url: str,
) -> None:
    """A store over the application's asyncpg pool, called from another loop, fails
    at once with an error that says why and what to do; the pool and the store go on
    working on their own loop, and a SyncStore over such a pool fails at open."""
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        async with statestore.open_store("postgres", pool=pool) as store:
            cid = new_id()
            await store.save_state(cid, AgentState())
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(StateStoreError, match="belongs to the event loop") as raised:
                    on_new_loop(lambda: store.update_state(cid, append("elsewhere")))
                assert time.monotonic() - started < 5
                assert "url=" in str(raised.value)
                assert not isinstance(raised.value, statestore.BackendUnavailable)
            await store.update_state(cid, append("home"))
            loaded = await store.load_state(cid)
            assert [m.content for m in loaded.conversation_history] == ["home"]
            assert await pool.fetchval("SELECT 1") == 1
            assert pool.get_size() <= 2

            def sync_over_pool() -> None:
                statestore.open_store_sync("postgres", pool=pool)

            with pytest.raises(StateStoreError, match="belongs to the event loop"):
                in_thread(sync_over_pool)
            assert (await store.load_state(cid)).history_total == 1
    finally:
        await pool.close()


@pytest.mark.postgres
def test_sync_store_on_postgres_closes_its_sessions(postgres_url: str) -> None:
    """A SyncStore's sessions are its own loop's, and all are closed by close()."""
    url, name = tagged(postgres_url)

    async def count() -> int:
        conn = await asyncpg.connect(postgres_url)
        try:
            return len(await settle(conn, name, 0))
        finally:
            await conn.close()

    with statestore.open_store_sync("postgres", url, pool_size=3) as sync:
        cid = new_id()
        sync.save_state(cid, AgentState())
        for i in range(5):
            sync.update_state(cid, append(str(i)))
        assert sync.load_state(cid).history_total == 5
    assert asyncio.run(count()) == 0


# -- SQLite ----------------------------------------------------------------------------


def test_sqlite_open_does_its_file_work_off_the_callers_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a store in a directory that does not exist yet creates it, and opens
    and migrates the file, on the store's own thread: the caller's loop never waits
    on the file system (checked with asyncio's debug mode, too: no slow callback)."""
    made: list[int] = []
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        made.append(threading.get_ident())
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    directory = tmp_path / "not" / "yet"
    url = f"sqlite:///{directory}/state.db"

    # Built before the loop starts: open_store() itself does no I/O, but its first
    # call in a process loads the installed plugins (imports).
    store = statestore.open_store("sqlite", url)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.05
        async with store:
            await store.save_state("c", AgentState(user_input="hi"))
        return threading.get_ident()

    slow: list[str] = []

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Executing" in record.getMessage():
                slow.append(record.getMessage())

    handler = Slow()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        caller = asyncio.run(main(), debug=True)
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert (directory / "state.db").is_file()
    assert made and caller not in made
    assert not slow, slow


def test_sqlite_callers_whose_loops_end_first_leave_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls cut short by a timeout in loops that close right after: the answers
    that arrive for them find no loop, and nothing complains (no callback error on
    the store's thread); the store serves the next loop."""
    url = f"sqlite:///{tmp_path}/state.db"
    store = statestore.open_store("sqlite", url)
    asyncio.run(store.__aenter__())
    try:
        asyncio.run(store.save_state("c", AgentState()))

        async def cut_short() -> None:
            for i in range(5):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0):
                        await store.update_state("c", append(str(i)))

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(20):
                asyncio.run(cut_short())
            time.sleep(0.2)  # the store's thread settles what was handed over
            loaded = asyncio.run(store.load_state("c"))
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
        assert loaded.version == 1 + loaded.history_total
    finally:
        asyncio.run(store.close())


def test_sqlite_store_opened_in_a_thread_is_closed_from_another(tmp_path: Path) -> None:
    """Opened by a loop in a worker thread that then ends, used and closed from the
    main thread's loops: the store's own thread ends with it."""
    url = f"sqlite:///{tmp_path}/state.db"
    store = statestore.open_store("sqlite", url)
    on_new_loop(store.__aenter__)
    asyncio.run(store.save_state("c", AgentState(user_input="x")))
    mine = [t for t in threading.enumerate() if t.name == f"statestore-sqlite {tmp_path}/state.db"]
    assert len(mine) == 1
    assert asyncio.run(store.load_state("c")).user_input == "x"
    asyncio.run(store.close())
    mine[0].join(timeout=5)
    assert not mine[0].is_alive()
