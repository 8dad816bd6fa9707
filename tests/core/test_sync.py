"""The synchronous API (``statestore.sync``): ``SyncStore`` has the Store's methods
with the same signatures, forwards to the async Store underneath (one
implementation), opens and closes with its own thread, refuses at once what would
deadlock, answers from inside a running loop, and never leaves a caller hanging when
it closes. On a real SQLite file; every backend runs SyncStore in the contract suite
(``statestore.testing.contract.loops``)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import statestore
from statestore import (
    AgentState,
    ConversationNotFound,
    LoadOptions,
    Message,
    Registry,
    SchemaOutOfDate,
    StatePatch,
    StateStoreError,
    Store,
    SyncStore,
    ValidationError,
    hookimpl,
    open_store_sync,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture
def sync(url: str) -> Iterator[SyncStore]:
    with open_store_sync("sqlite", url) as opened:
        yield opened


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("statestore-sync")]


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def test_sync_store_has_every_method_of_store_with_its_signature() -> None:
    """Every public coroutine method of Store is a plain method of SyncStore with the
    same parameters (names, kinds, defaults, annotations) and a docstring: the two
    cannot drift apart."""
    store_methods = {
        name: method
        for name, method in public_methods(Store).items()
        if inspect.iscoroutinefunction(method)
    }
    assert {"save_state", "load_state", "update_state", "delete_state"} <= set(store_methods)
    sync_methods = public_methods(SyncStore)
    for name, method in store_methods.items():
        assert name in sync_methods, f"SyncStore lacks {name}"
        mirrored = sync_methods[name]
        assert not inspect.iscoroutinefunction(mirrored), name
        expected = inspect.signature(method).parameters
        actual = inspect.signature(mirrored).parameters
        assert list(actual.values()) == list(expected.values()), name
        assert inspect.signature(mirrored).return_annotation in (
            inspect.signature(method).return_annotation,
        ), name
        assert inspect.getdoc(mirrored), name


def test_open_store_sync_mirrors_open_store() -> None:
    """open_store_sync takes open_store's arguments (same names, kinds, defaults)."""
    assert (
        inspect.signature(open_store_sync).parameters
        == inspect.signature(statestore.open_store).parameters
    )
    assert statestore.SyncStore is SyncStore and "open_store_sync" in statestore.__all__


def test_round_trip_through_the_sync_api(sync: SyncStore) -> None:
    """The Store's calls without await: same results, same errors."""
    state = AgentState(user_input="hi", conversation_history=[Message("user", "hi")])
    saved = sync.save_state("c1", state, user_id="u1")
    assert saved.version == 1 and state.version == 1
    state.conversation_history.append(Message("assistant", "hello"))
    assert sync.save_state("c1", state, user_id="u1").version == 2
    result = sync.update_state("c1", StatePatch(step_count=4), user_id="u1")
    assert result.version == 3
    loaded = sync.load_state("c1", LoadOptions(last_messages=1), user_id="u1")
    assert [m.content for m in loaded.conversation_history] == ["hello"]
    assert loaded.step_count == 4 and loaded.history_total == 2
    with pytest.raises(ConversationNotFound):
        sync.load_state("c1", user_id="someone else")
    with pytest.raises(ValidationError, match="conversation_id"):
        sync.load_state("")
    assert [c.conversation_id for c in sync.list_conversations(user_id="u1")] == ["c1"]
    assert sync.delete_state("c1") is True
    assert sync.delete_state("c1") is False
    assert sync.name == "sqlite" and sync.capabilities == sync.store.capabilities
    assert "SqliteBackend" in repr(sync)


def test_the_newer_store_methods_through_the_sync_api(sync: SyncStore) -> None:
    """update_state(create=True), pop_messages, shared state and listing options."""
    sync.update_state("app/u1/s1", StatePatch(append_messages=[Message("user", "a")]), create=True)
    sync.update_state("app/u1/s1", StatePatch(append_messages=[Message("assistant", "b")]))
    sync.update_state("other", StatePatch(step_count=1), create=True)
    popped = sync.pop_messages("app/u1/s1")
    assert [m.content for m in popped] == ["b"]
    assert sync.load_state("app/u1/s1").history_total == 1
    sync.update_shared("app:demo", {"theme": "dark", "n": 1})
    sync.update_shared("app:demo", delete=["n"])
    assert sync.load_shared(["app:demo", "user:none"]) == {
        "app:demo": {"theme": "dark"},
        "user:none": {},
    }
    listed = sync.list_conversations(prefix="app/", with_metadata=True, order="updated")
    assert [c.conversation_id for c in listed] == ["app/u1/s1"]
    assert listed[0].metadata == {}


def test_closing_ends_its_thread_and_later_calls_fail_clearly(url: str) -> None:
    """``with`` closes the store and ends the SyncStore's thread; a call afterwards
    raises StateStoreError saying it is closed; close() again does nothing."""
    before = set(sync_threads())
    with open_store_sync("sqlite", url) as sync:
        sync.save_state("c", AgentState())
        mine = set(sync_threads()) - before
        assert len(mine) == 1
    (thread,) = mine
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(StateStoreError, match="closed"):
        sync.load_state("c")
    sync.close()
    for reopen in (sync.open, sync.__enter__):
        with pytest.raises(StateStoreError, match="closed: open a new one"):
            reopen()
    with open_store_sync("sqlite", url) as again:
        assert again.load_state("c").version == 1


def test_a_failed_open_raises_and_leaves_no_thread(tmp_path: Path) -> None:
    """open_store_sync raises what opening raises (here SchemaOutOfDate) and ends the
    thread it started."""
    before = set(sync_threads())
    with pytest.raises(SchemaOutOfDate):
        open_store_sync("sqlite", f"sqlite:///{tmp_path}/fresh.db", migrate=False)
    time.sleep(0)  # nothing to wait for: close() joined the thread
    assert set(sync_threads()) <= before


def test_sync_store_over_a_store_opens_on_enter(url: str) -> None:
    """SyncStore(open_store(...)) does no I/O until open() or ``with``; open() is
    idempotent; a non-Store is refused."""
    sync = SyncStore(statestore.open_store("sqlite", url))
    try:
        with pytest.raises(StateStoreError, match=r"not open: use `with open_store_sync"):
            sync.load_state("c")
        assert sync.open() is sync.open()
        sync.save_state("c", AgentState(user_input="x"))
    finally:
        sync.close()
    with SyncStore(statestore.open_store("sqlite", url)) as entered:
        assert entered.load_state("c").user_input == "x"
    with pytest.raises(TypeError, match="Store"):
        SyncStore(object())  # type: ignore[arg-type]


def test_a_call_on_its_own_loop_thread_fails_at_once(url: str) -> None:
    """A hook the store runs (on the SyncStore's loop) calling the SyncStore back
    would wait for itself: it raises StateStoreError at once, saying what to do; the
    outer call and the store go on."""
    seen: list[BaseException] = []
    holder: dict[str, SyncStore] = {}

    class CallsBack:
        @hookimpl
        def statestore_operation_done(self, operation: str, **kwargs: Any) -> None:
            if operation == "save_state":
                try:
                    holder["sync"].load_state("c")
                except BaseException as exc:
                    seen.append(exc)

    registry = Registry.from_entry_points()
    registry.register(CallsBack())
    sync = SyncStore(registry.open_store("sqlite", url))
    holder["sync"] = sync
    done = threading.Event()

    def work() -> None:
        with sync:
            sync.save_state("c", AgentState(user_input="x"))
            assert sync.load_state("c").user_input == "x"
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    assert done.wait(timeout=30), "the call deadlocked"
    thread.join()
    assert len(seen) == 1 and isinstance(seen[0], StateStoreError)
    assert "own event-loop thread" in str(seen[0]) and ".store." in str(seen[0])


def test_calls_from_inside_a_running_loop_answer(url: str) -> None:
    """A synchronous method called from async code (LangChain's sync API in an async
    app) answers, blocking that loop meanwhile; ``.store`` serves the loop without
    blocking it, concurrently with other tasks of the loop."""

    async def main() -> tuple[int, int]:
        with open_store_sync("sqlite", url) as sync:
            sync.save_state("c", AgentState())
            for i in range(5):
                sync.update_state("c", StatePatch(append_messages=[Message("user", str(i))]))
            blocking = sync.load_state("c").history_total
            await asyncio.gather(
                *(
                    sync.store.update_state(
                        "c", StatePatch(append_messages=[Message("user", f"a{i}")])
                    )
                    for i in range(5)
                )
            )
            return blocking, (await sync.store.load_state("c")).history_total

    assert asyncio.run(main()) == (5, 10)


def test_closing_under_callers_answers_each_of_them(url: str) -> None:
    """Threads calling while another thread closes the SyncStore each get an answer,
    a result or StateStoreError, never a hang."""
    sync = open_store_sync("sqlite", url)
    sync.save_state("c", AgentState())
    outcomes: list[str] = []
    started = threading.Barrier(5)

    def caller() -> None:
        started.wait()
        try:
            while True:
                sync.update_state("c", StatePatch(append_messages=[Message("user", "x")]))
        except StateStoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.05)
    sync.close()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a caller hung on a closed SyncStore"
    assert len(outcomes) == 4 and all("closed" in o or "not open" in o for o in outcomes)
    with open_store_sync("sqlite", url) as again:
        state = again.load_state("c")
        assert state.version == 1 + state.history_total


def test_an_unclosed_sync_store_is_closed_when_collected(url: str) -> None:
    """A SyncStore dropped without close() closes its store and ends its thread
    when it is garbage collected."""
    before = set(sync_threads())
    sync = open_store_sync("sqlite", url)
    sync.save_state("c", AgentState())
    (thread,) = set(sync_threads()) - before
    del sync
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
