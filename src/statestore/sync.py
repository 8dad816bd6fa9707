"""The synchronous API: ``open_store_sync()`` and ``SyncStore``, for code that has no
event loop of its own (scripts, WSGI apps, a framework's synchronous methods).

    with statestore.open_store_sync("sqlite", url="sqlite:///state.db") as store:
        store.save_state("conv-1", AgentState(user_input="hi"))

There is one implementation: a ``SyncStore`` holds an ordinary async ``Store``
(``.store``) and runs each call's coroutine on an event loop of its own, in a daemon
thread it starts, waiting for the answer. Every check, every backend and every hook is
the async Store's. Any number of threads may call one SyncStore at once: their calls
run concurrently on its loop.

A call made from inside a running event loop (a framework's synchronous method called
from async code) works, but blocks that loop until the answer comes: async code should
``await sync_store.store.load_state(...)`` instead, which the Store serves from any loop.
A call made on the SyncStore's own thread (from a hook the store runs) would wait for
itself: it raises StateStoreError at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from .core.backend import Capability, ConversationInfo, SaveResult
from .core.errors import StateStoreError
from .core.model import AgentState, Message
from .core.query import LoadOptions, StatePatch
from .core.registry import open_store
from .core.store import Store

__all__ = ["SyncStore", "open_store_sync"]

T = TypeVar("T")

_DEFAULT_OPTIONS = LoadOptions()

# How long closing at exit (or when a SyncStore is collected unclosed) waits for the
# store to close its connections.
_CLOSE_AT_EXIT_SECONDS = 10.0


async def _end_leftovers() -> None:
    """Calls still running when the loop stopped end as ``asyncio.run`` ends its
    tasks: cancelled where they wait, so that every caller gets an answer."""
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class _LoopThread:
    """An event loop running in a daemon thread of its own until ``stop``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        loop = self.loop
        try:
            loop.run_forever()
            loop.run_until_complete(_end_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def on_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:  # never after stop: the call would wait for a loop that ended
            if self._stopping:
                coro.close()
                raise StateStoreError("this SyncStore is closed")
            return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop the loop and, unless called on it, wait for the thread to end."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.on_thread():
            self.thread.join()


def _shut_down(runner: _LoopThread, store: Store) -> None:
    """Close ``store`` and stop ``runner``: a SyncStore collected (or still open at
    exit) without ``close()``."""
    try:
        if not runner.on_thread():
            future = runner.submit(store.close())
            future.result(timeout=_CLOSE_AT_EXIT_SECONDS)
    except Exception:  # closing is best effort here; nobody is left to tell
        pass
    finally:
        runner.stop()


class SyncStore:
    """A ``Store`` with plain (not awaitable) methods, for synchronous code; what
    ``open_store_sync()`` returns. Use it as ``with``, or call ``close()``.

    ``store``: the async ``Store`` underneath, which serves any event loop too:
    async code holding a SyncStore awaits ``sync_store.store.<method>(...)`` rather
    than blocking its loop. The methods are the Store's, with the same arguments,
    results and errors; they may be called from any number of threads at once. See
    the module docstring for where calls wait.
    """

    def __init__(self, store: Store) -> None:
        """``store``: a Store not yet opened (``open_store(...)``); ``open()`` (or
        ``with``) opens it. This starts the SyncStore's thread; no I/O happens yet."""
        if not isinstance(store, Store):
            raise TypeError(f"SyncStore needs a statestore Store, not {type(store).__name__}")
        self.store = store
        self._opened = False
        self._runner = _LoopThread(f"statestore-sync {store.name}")
        self._finalizer = weakref.finalize(self, _shut_down, self._runner, store)

    def __repr__(self) -> str:
        return f"<SyncStore {self.store.backend!r}>"

    @property
    def name(self) -> str:
        """The backend's name (``sqlite``, ``postgres``, ...)."""
        return self.store.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The optional abilities of this store's backend."""
        return self.store.capabilities

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """One of the Store's methods: ``_run``, on a store that was opened."""
        if not self._opened:
            coro.close()
            raise StateStoreError(
                "this SyncStore is not open: use `with open_store_sync(...)`, or call open()"
            )
        return self._run(coro)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the SyncStore's loop and wait for its outcome."""
        runner = self._runner
        if runner.on_thread():
            coro.close()
            raise StateStoreError(
                "a SyncStore method was called on the SyncStore's own event-loop thread "
                "(from code the store itself runs, such as a statestore_operation_done "
                "hook), where waiting for the answer would wait forever: await the async "
                "Store's method instead (sync_store.store.<method>(...))"
            )
        future = runner.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise StateStoreError("the SyncStore was closed during this call") from None
        except BaseException:
            # The waiting thread was interrupted (KeyboardInterrupt): the call stops
            # too, applied wholly or not at all like any cancelled call.
            future.cancel()
            raise

    # -- opening and closing -----------------------------------------------------------

    def open(self) -> Self:
        """Open the store (connect, and migrate where that is the backend's default).
        Does nothing if already open; ``open_store_sync`` returns it open. A closed
        SyncStore does not open again: open a new one."""
        if not self._finalizer.alive:
            raise StateStoreError("this SyncStore is closed: open a new one (open_store_sync)")
        if not self._opened:
            self._run(self.store.__aenter__())
            self._opened = True
        return self

    def close(self) -> None:
        """Close the store and end the SyncStore's thread. Idempotent; calls made
        afterwards raise StateStoreError."""
        if not self._finalizer.alive:
            return
        if self._runner.on_thread():
            raise StateStoreError(
                "a SyncStore cannot be closed from its own event-loop thread: close it "
                "from the code that opened it"
            )
        try:
            self._run(self.store.close())
        finally:
            self._finalizer.detach()
            self._runner.stop()

    def __enter__(self) -> Self:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the Store's methods -----------------------------------------------------------

    def save_state(
        self,
        conversation_id: str,
        state: AgentState,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        """Store ``state``: a state loaded from (or saved to) this conversation writes
        only what changed, any other replaces what is stored. ``expected_version`` 0
        means "must not exist yet"; a stale one raises VersionConflict. See
        ``Store.save_state``."""
        return self._call(
            self.store.save_state(
                conversation_id, state, user_id=user_id, expected_version=expected_version
            )
        )

    def load_state(
        self,
        conversation_id: str,
        options: LoadOptions = _DEFAULT_OPTIONS,
        *,
        user_id: str | None = None,
    ) -> AgentState:
        """Load the parts ``options`` select; raise ConversationNotFound. See
        ``Store.load_state``."""
        return self._call(self.store.load_state(conversation_id, options, user_id=user_id))

    def update_state(
        self,
        conversation_id: str,
        patch: StatePatch,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
        create: bool = False,
    ) -> SaveResult:
        """Apply ``patch`` in one transaction. A missing conversation raises
        ConversationNotFound, unless ``create``: then it is created and the patch
        applied to it, atomically. See ``Store.update_state``."""
        return self._call(
            self.store.update_state(
                conversation_id,
                patch,
                user_id=user_id,
                expected_version=expected_version,
                create=create,
            )
        )

    def pop_messages(
        self,
        conversation_id: str,
        count: int = 1,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> list[Message]:
        """Remove the last ``count`` stored messages in one transaction and return
        them, oldest first (fewer if fewer are stored); raise ConversationNotFound.
        See ``Store.pop_messages``."""
        return self._call(
            self.store.pop_messages(
                conversation_id, count, user_id=user_id, expected_version=expected_version
            )
        )

    def delete_state(self, conversation_id: str, *, user_id: str | None = None) -> bool:
        """Delete a conversation; return whether one was deleted."""
        return self._call(self.store.delete_state(conversation_id, user_id=user_id))

    def list_conversations(
        self,
        *,
        user_id: str | None = None,
        prefix: str | None = None,
        order: str = "id",
        with_metadata: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ConversationInfo]:
        """Conversations, ``limit`` at a time, without loading them: of ``user_id``,
        whose id starts with ``prefix``, ordered by id (``"id"``) or most recently
        updated first (``"updated"``), with metadata if ``with_metadata``; ``after``
        is the last id of the previous page. See ``Store.list_conversations``."""
        return self._call(
            self.store.list_conversations(
                user_id=user_id,
                prefix=prefix,
                order=order,
                with_metadata=with_metadata,
                limit=limit,
                after=after,
            )
        )

    def load_shared(self, namespaces: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The state shared across conversations under each of ``namespaces``, read
        in one snapshot (``{}`` for a namespace with nothing stored). See
        ``Store.load_shared``."""
        return self._call(self.store.load_shared(namespaces))

    def update_shared(
        self,
        namespace: str,
        set: Mapping[str, Any] | None = None,  # the Store's name for it
        delete: Iterable[str] = (),
    ) -> None:
        """Set and delete keys of one namespace of shared state, in one transaction.
        See ``Store.update_shared``."""
        self._call(self.store.update_shared(namespace, set, delete))


def open_store_sync(
    name: str | None = None,
    url: str | None = None,
    *,
    migrate: bool | None = None,
    **options: Any,
) -> SyncStore:
    """Open a store for synchronous code: the arguments of ``open_store()``, the
    methods of ``Store`` without ``await``. The store is open when this returns
    (connection errors and SchemaOutOfDate are raised here); use it as ``with
    open_store_sync(...) as store:`` or call ``store.close()``."""
    sync = SyncStore(open_store(name, url, migrate=migrate, **options))
    try:
        return sync.open()
    except BaseException:
        sync.close()
        raise
