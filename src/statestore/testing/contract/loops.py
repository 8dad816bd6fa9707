"""Contract: a store serves any event loop on any thread, and synchronous code.

Frameworks call a store from ``asyncio.run`` in a synchronous method (a new loop
each call), from worker threads running loops of their own, and from plain threads.
A store opened on one loop is used from others, concurrently: every write is kept
exactly once, a call abandoned by a loop that then closes leaves the store working,
and ``SyncStore`` serves plain threads. Nothing here may hang: every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ...core.errors import StateStoreError
from ...core.model import AgentState, Message
from ...core.query import StatePatch
from ...core.store import Store
from ...sync import SyncStore
from ..plugin import BackendTarget, open_target
from ._support import ContractTest, new_id

__all__ = ["TestAnyLoop", "TestSyncStore"]

T = TypeVar("T")

THREADS = 6
APPENDS = 5
# The longest any one step may take before the test fails as a hang.
BOUND = 30.0


def _in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` for i in range(count), each in a thread of its own, started
    together; their results in order (the first error is raised). The threads are
    daemons: a call that hangs fails the test instead of blocking the test run."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException | None] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=BOUND)
            results[i] = work(i)
        except BaseException as exc:  # handed to the caller
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2 * BOUND
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = sum(thread.is_alive() for thread in threads)
    if hung:
        raise AssertionError(f"{hung} of {count} threads still wait for the store: it hangs")
    for error in errors:
        if error is not None:
            raise error
    return results


async def _off_loop(work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread, awaited on this loop (bounded)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the caller
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the test's loop ended (it timed out)
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, daemon=True).start()
    return await asyncio.wait_for(answer, 2 * BOUND + 5)


def _own_loop(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coro()`` on a new event loop of the calling thread, bounded."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro(), BOUND)

    return asyncio.run(bounded())


async def _append(store: Store, cid: str, writer: str, count: int = APPENDS) -> None:
    for n in range(count):
        patch = StatePatch(append_messages=[Message(role="user", content=f"{writer}:{n}")])
        await store.update_state(cid, patch)


def _assert_each_once(state: AgentState, writers: list[str], count: int = APPENDS) -> None:
    """Every writer's ``count`` messages are stored once each, in its own order."""
    contents = [m.content for m in state.conversation_history]
    assert len(contents) == len(writers) * count, contents
    assert not [c for c, n in Counter(contents).items() if n > 1], "a write was kept twice"
    for writer in writers:
        mine = [c for c in contents if c.split(":")[0] == writer]
        assert mine == [f"{writer}:{n}" for n in range(count)], mine
    assert [m.seq for m in state.conversation_history] == list(range(len(contents)))


class TestAnyLoop(ContractTest):
    """One async Store, called from event loops other than the one that opened it."""

    async def test_threads_with_loops_of_their_own_write_concurrently(self, store: Store) -> None:
        """Threads each running a loop of their own append to one conversation at the
        same time as the opening loop does: every message is kept exactly once, each
        writer's in its own order, and the opening loop goes on working."""
        cid = new_id("loops")
        await store.save_state(cid, AgentState(user_input="start"))

        def in_thread(i: int) -> None:
            _own_loop(lambda: _append(store, cid, f"t{i}"))

        threads = _off_loop(lambda: _in_threads(THREADS, in_thread))
        await asyncio.wait_for(asyncio.gather(threads, _append(store, cid, "home")), 3 * BOUND)

        loaded = await store.load_state(cid)
        _assert_each_once(loaded, ["home", *(f"t{i}" for i in range(THREADS))])
        assert loaded.version == 1 + (THREADS + 1) * APPENDS

    def test_asyncio_run_after_the_opening_loop_closed(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """A store opened in one ``asyncio.run`` serves the next ones (a new loop each,
        the old one closed: a framework's ``run_sync``), then threads with loops of
        their own, and closes from yet another loop."""
        store = open_target(backend_target, store_url)
        cid = new_id("loops")

        async def open_and_save() -> None:
            await store.__aenter__()
            await store.save_state(cid, AgentState(user_input="opened"))

        _own_loop(open_and_save)
        try:
            for turn in range(3):
                _own_loop(lambda turn=turn: _append(store, cid, f"run{turn}"))  # type: ignore[misc]
            _in_threads(THREADS, lambda i: _own_loop(lambda: _append(store, cid, f"t{i}")))
            loaded = _own_loop(lambda: store.load_state(cid))
        finally:
            _own_loop(store.close)
        _assert_each_once(
            loaded, [*(f"run{t}" for t in range(3)), *(f"t{i}" for i in range(THREADS))]
        )
        assert loaded.user_input == "opened"

    def test_calls_cut_short_by_their_loop_leave_the_store_working(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """Loops in other threads start writes and are cancelled part-way (a timeout),
        then close. Each cut write is applied wholly or not at all, and the store goes
        on serving every loop, the opening one included."""
        store = open_target(backend_target, store_url)
        cid = new_id("loops")
        home = asyncio.new_event_loop()
        try:
            home.run_until_complete(store.__aenter__())
            home.run_until_complete(store.save_state(cid, AgentState(user_input="start")))

            def cut_short(i: int) -> int:
                async def attempt() -> int:
                    done = 0
                    for n in range(APPENDS):
                        patch = StatePatch(append_messages=[Message("user", f"c{i}:{n}")])
                        try:
                            # A deadline of nothing, a little, then enough.
                            async with asyncio.timeout(0.0005 * n * n):
                                await store.update_state(cid, patch)
                            done += 1
                        except TimeoutError:
                            pass
                    return done

                return _own_loop(attempt)

            finished = _in_threads(THREADS, cut_short)
            _in_threads(THREADS, lambda i: _own_loop(lambda: _append(store, cid, f"t{i}")))
            home.run_until_complete(_append(store, cid, "home"))
            loaded = home.run_until_complete(store.load_state(cid))
        finally:
            home.run_until_complete(store.close())
            home.close()
        contents = [m.content for m in loaded.conversation_history]
        assert len(contents) == len(set(contents)), "a write was kept twice"
        for i, done in enumerate(finished):
            cut = [c for c in contents if c.startswith(f"c{i}:")]
            # Every write that reported success is stored; a cut one may be too.
            assert len(cut) >= done
        assert [m.seq for m in loaded.conversation_history] == list(range(len(contents)))
        assert loaded.version == 1 + len(contents)
        intact = [c for c in contents if not c.startswith("c")]
        assert Counter(c.split(":")[0] for c in intact) == Counter(
            {"home": APPENDS, **{f"t{i}": APPENDS for i in range(THREADS)}}
        )


class TestSyncStore(ContractTest):
    """``SyncStore`` over this backend: the Store's methods from plain threads."""

    def test_plain_threads_share_one_sync_store(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """Plain threads (no event loop) call one SyncStore at once: every append is
        kept exactly once, and the results, errors included, are the Store's."""
        cid = new_id("sync")
        with SyncStore(open_target(backend_target, store_url)) as sync:
            saved = sync.save_state(cid, AgentState(user_input="start"), user_id="u1")
            assert saved.version == 1

            def in_thread(i: int) -> None:
                for n in range(APPENDS):
                    patch = StatePatch(append_messages=[Message("user", f"t{i}:{n}")])
                    sync.update_state(cid, patch, user_id="u1")

            _in_threads(THREADS, in_thread)
            loaded = sync.load_state(cid, user_id="u1")
            listed = sync.list_conversations(user_id="u1")
            assert cid in [c.conversation_id for c in listed]
            assert sync.delete_state(cid, user_id="u1") is True
            assert sync.delete_state(cid, user_id="u1") is False
        _assert_each_once(loaded, [f"t{i}" for i in range(THREADS)])
        try:
            sync.load_state(cid)
        except StateStoreError as exc:
            assert "closed" in str(exc)
        else:
            raise AssertionError("a closed SyncStore answered a call")

    async def test_sync_store_called_from_a_running_loop(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """A SyncStore called from async code (a framework's sync method inside an
        async app) answers, blocking the caller's loop meanwhile; its ``.store``
        serves that loop without blocking it."""
        cid = new_id("sync")
        sync = SyncStore(open_target(backend_target, store_url))
        try:
            sync.open()
            sync.save_state(cid, AgentState(user_input="from a running loop"))
            assert (await sync.store.load_state(cid)).user_input == "from a running loop"
            await sync.store.update_state(cid, StatePatch(step_count=3))
            assert sync.load_state(cid).step_count == 3
        finally:
            sync.close()
