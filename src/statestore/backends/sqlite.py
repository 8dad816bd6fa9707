"""SQLite backend: the normalized layout in one local file, through the standard
library's ``sqlite3`` in a thread the backend owns.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
(``sqlite+aiosqlite://`` is accepted too). In-memory databases are not supported:
migrations and the store would see different databases.

The file is opened in WAL mode with ``synchronous=NORMAL`` (a committed write survives
a process crash; the last transactions may be lost on power failure), foreign keys on,
and a busy timeout. Migrations are applied on open unless ``migrate=False``.

How it runs: a store owns one thread running an event loop of its own, and one
``sqlite3`` connection used only there (sqlite3 itself refuses use from another
thread). A whole operation (a load; a write plan between ``BEGIN IMMEDIATE`` and
``COMMIT``) is one task on that loop, started and answered with
``call_soon_threadsafe``: one thread hop per operation however many statements it
runs, and the caller's loop never blocks, opening included (the
directory, the pragmas, migrations). Operations take turns on an ``asyncio.Lock`` that
lives on the backend's loop, so callers on any loop or thread are served.

Caveats: one writer at a time per file. Within a process, one connection serves the
store and operations take turns; across processes, a writer that finds the file locked
waits (``busy_timeout``), retries with backoff, and then raises BackendUnavailable.
A cancelled call is either wholly applied or not at all; it never leaves a
transaction open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ..core import jsoncodec
from ..core.config import url_scheme
from ..core.errors import BackendUnavailable, SchemaOutOfDate, StateStoreError, ValidationError
from ..core.hookspecs import BackendSpec, hookimpl
from .sql import migrate as migrations
from .sql.database import Tx
from .sql.normalized import NormalizedBackend

__all__ = ["SqliteBackend", "SqliteDatabase", "sqlite_path"]

T = TypeVar("T")
Row = Sequence[Any]


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///`` URL names."""
    if url_scheme(url) != "sqlite":
        raise ValidationError("url", "the sqlite backend needs a sqlite:/// URL")
    parts = urlsplit(url)
    database = unquote(parts.path[1:])  # after the third slash
    if (
        parts.netloc
        or not database
        or database == ":memory:"
        or "memory" in parse_qs(parts.query).get("mode", ())
    ):
        raise ValidationError(
            "url",
            "needs a file: sqlite:///relative.db or sqlite:////absolute.db "
            "(in-memory databases are not supported)",
        )
    return Path(database)


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _translate(exc: sqlite3.Error, path: Path) -> StateStoreError:
    if _is_busy(exc):
        return BackendUnavailable(
            f"SQLite file {path} stayed locked by another writer; try again later"
        )
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    ):
        return BackendUnavailable(f"SQLite file {path}: {exc}")
    return StateStoreError(f"SQLite file {path}: {exc}")


async def _backoff(attempt: int) -> None:
    """Wait before retrying a locked file: 10 ms doubling up to 1 s, jittered so that
    processes contending for one file do not retry in step."""
    await asyncio.sleep(min(0.01 * 2**attempt, 1.0) * (1 + random.random()))


def _fixed_width(text: str) -> str:
    """orjson's text of a UTC datetime as the stored form, fixed width so that text
    order is time order: ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (orjson leaves out a
    zero fraction, and formats in C, much faster than ``isoformat``)."""
    return text if len(text) == 32 else f"{text[:19]}.000000{text[19:]}"


# The statements a Tx runs, as plain functions of the connection (on its thread).


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return conn.execute(sql, args).fetchall()


def _fetchrow(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Row | None:
    # fetchall, not fetchone: an UPDATE ... RETURNING must run to its end.
    return next(iter(conn.execute(sql, args).fetchall()), None)


def _execute(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> int:
    return conn.execute(sql, args).rowcount


def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(sql, rows)


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
        conn.execute("ROLLBACK")


class _Tx:
    """The store's connection as a ``Tx``. In an operation body (on the backend's own
    loop) a statement runs at once; inside ``transaction()`` (on the caller's loop)
    each statement is one hop to the backend's thread."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db._call(_fetch, sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._db._call(_fetchrow, sql, args)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._db._call(_execute, sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db._call(_executemany, sql, rows)

    async def copy_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # executemany is SQLite's bulk path (sql: the one-row INSERT).
        await self._db._call(_executemany, sql, rows)


def _settle(task: asyncio.Task[T], outcome: asyncio.Future[T]) -> None:
    """Give ``task``'s outcome (on the backend's loop) to ``outcome`` (on the caller's)."""
    if outcome.cancelled():  # the caller was cancelled (and cancelled the task)
        return
    if task.cancelled():  # by the store closing under it
        outcome.set_exception(StateStoreError("the store was closed during this call"))
    elif (exc := task.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())


async def _end_leftovers() -> None:
    """Calls handed over while the store closed: started, then ended where they
    wait (as asyncio.run ends its own tasks), so that every caller gets an answer."""
    await asyncio.sleep(0)  # the starts already queued run first
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _serve(loop: asyncio.AbstractEventLoop, stopped: concurrent.futures.Future[None]) -> None:
    """The backend's thread: its loop, until ``close`` stops it."""
    try:
        loop.run_forever()
        loop.run_until_complete(_end_leftovers())
    finally:
        loop.close()
        stopped.set_result(None)


class SqliteDatabase:
    """One ``sqlite3`` connection in a thread (and event loop) of its own, shared by
    the operations of one store in turn."""

    engine = "sqlite"
    writers_take_turns = True
    statements_are_round_trips = False
    one_statement_append = False
    shards_by_conversation = False

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        retries: int = 5,
    ) -> None:
        self.path = sqlite_path(url)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        self.retries = retries
        self._tx = _Tx(self)
        # Set by connect: the backend's loop and its thread, and, used only on that
        # thread, the connection and the lock operations take turns on.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._stopped: concurrent.futures.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- the backend's thread ------------------------------------------------------

    async def connect(self, migrate: bool | None) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=_serve, args=(loop, stopped), name=f"statestore-sqlite {self.path}", daemon=True
        )
        thread.start()
        self._loop, self._thread_id, self._stopped = loop, thread.ident, stopped
        try:
            await self._submit(self._open(migrate))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._loop is None:
            return
        try:
            await self._submit(self._close_connection())
        finally:
            await self._stop()

    async def _stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        self._loop = self._thread_id = self._stopped = None
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.wrap_future(stopped)

    def _worker(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise StateStoreError("the store is not open: use `async with open_store(...)`")
        return self._loop

    async def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task on the backend's loop and wait for its outcome: one
        hop there and one back (``call_soon_threadsafe`` both ways, the cheapest
        crossing asyncio offers). Cancelling the caller cancels the task where it
        waits (for the lock, or between retries); its statements run without
        suspending, so it is never stopped between two of them."""
        try:
            worker = self._worker()
        except StateStoreError:
            coro.close()
            raise
        caller = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = caller.create_future()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = worker.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda done: caller.call_soon_threadsafe(_settle, done, outcome))

        try:
            worker.call_soon_threadsafe(start)
        except RuntimeError:  # its loop closed since: the store was closed meanwhile
            coro.close()
            raise StateStoreError("the store is not open") from None
        try:
            return await outcome
        except asyncio.CancelledError:
            # Runs after start() (one loop, first in first out): the task exists.
            with contextlib.suppress(RuntimeError):  # unless the store closed since
                worker.call_soon_threadsafe(lambda: started[0].cancel())
            raise

    def _post(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the backend's loop, waited for by no one: clean-up that
        must happen even when its caller is gone."""

        try:
            worker = self._worker()
        except StateStoreError:
            coro.close()
            raise

        def start() -> None:
            task = worker.create_task(coro)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        try:
            worker.call_soon_threadsafe(start)
        except RuntimeError:  # its loop closed since: the store was closed meanwhile
            coro.close()
            raise StateStoreError("the store is not open") from None

    async def _call(self, statement: Callable[..., T], *args: Any) -> T:
        """``statement(connection, *args)`` on the backend's thread."""
        if threading.get_ident() == self._thread_id:
            return statement(self._connection(), *args)
        return await self._submit(self._now(statement, *args))

    async def _now(self, statement: Callable[..., T], *args: Any) -> T:
        return statement(self._connection(), *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateStoreError("the store is not open: use `async with open_store(...)`")
        return self._conn

    # -- on the backend's loop -----------------------------------------------------

    async def _open(self, migrate: bool | None) -> None:
        # Switching a new file to WAL needs a lock that SQLite may refuse at once
        # (without waiting out busy_timeout) while another process sets the file up.
        for attempt in range(self.retries + 1):
            try:
                self._conn = await self._connect_file(migrate)
                self._lock = asyncio.Lock()
                return
            except sqlite3.Error as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise _translate(exc, self.path) from exc
            except OSError as exc:
                raise BackendUnavailable(f"cannot open SQLite file {self.path}: {exc}") from exc
            await _backoff(attempt)

    async def _connect_file(self, migrate: bool | None) -> sqlite3.Connection:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE below,
        # never sqlite3's implicit ones.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            current, head = _revision(conn), migrations.head_revision()
            if current != head:
                if migrate is False:
                    raise SchemaOutOfDate(
                        f"{self.url} is at schema revision {current or 'none'}, this "
                        f"statestore needs {head}: run `statestore migrate --url {self.url}`"
                    )
                migrations.upgrade_sqlite_blocking(self.url)  # on this store's own thread
        except BaseException:
            conn.close()
            raise
        return conn

    async def _close_connection(self) -> None:
        if self._lock is None:  # the open failed: it closed what it opened
            return
        async with self._lock:  # after the operations already waiting
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    async def _operation(self, body: Callable[[Tx], Coroutine[Any, Any, T]], write: bool) -> T:
        """``run``'s part on the backend's loop."""
        assert self._lock is not None
        async with self._lock:
            conn = self._connection()  # after the wait: the store may have closed
            if write:
                await self._begin(conn)
                try:
                    result = await body(self._tx)
                    conn.execute("COMMIT")
                except BaseException as exc:
                    _rollback(conn)
                    if isinstance(exc, sqlite3.Error):
                        raise _translate(exc, self.path) from exc
                    raise
                return result
            for attempt in range(self.retries + 1):
                try:
                    return await body(self._tx)
                except sqlite3.Error as exc:
                    # A read can meet a busy file too (another process recovering the
                    # WAL after a crash); reading again is always safe.
                    if not _is_busy(exc) or attempt == self.retries:
                        raise _translate(exc, self.path) from exc
                await _backoff(attempt)
        raise AssertionError("unreachable")

    async def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE takes the write lock now, so a transaction never fails
        half-way for want of it; a file locked past busy_timeout is retried with
        backoff."""
        for attempt in range(self.retries + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise _translate(exc, self.path) from exc
            await _backoff(attempt)

    async def _enter(self) -> None:
        """``transaction()``'s start: the lock, then BEGIN IMMEDIATE."""
        assert self._lock is not None
        await self._lock.acquire()
        try:
            await self._begin(self._connection())
        except BaseException:
            self._lock.release()
            raise

    async def _finish(self, commit: bool) -> None:
        """``transaction()``'s end: COMMIT (or ROLLBACK), then the lock is free."""
        assert self._lock is not None
        try:
            conn = self._connection()
            if not commit:
                _rollback(conn)
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise _translate(exc, self.path) from exc
        finally:
            self._lock.release()

    # -- the Database protocol -----------------------------------------------------

    async def run(self, body: Callable[[Tx], Coroutine[Any, Any, T]], *, write: bool) -> T:
        """Run ``body`` whole on the backend's thread (BEGIN IMMEDIATE ... COMMIT
        around it when ``write``): each hop between threads costs more than a small
        statement, so an operation takes one hop, not one per statement."""
        return await self._submit(self._operation(body, write))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction driven from the caller's loop (one hop per statement):
        for callers that interleave their own awaits; ``run`` is the fast path."""
        begun = asyncio.ensure_future(self._submit(self._enter()))
        try:
            # Shielded: once the lock is taken, only _finish may give it back.
            await asyncio.shield(begun)
        except asyncio.CancelledError:
            begun.add_done_callback(self._finish_if_begun)
            raise
        try:
            yield self._tx
        except BaseException as exc:
            await self._end(commit=False)
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path) from exc
            raise
        await self._end(commit=True)

    async def _end(self, commit: bool) -> None:
        # Shielded: a cancelled caller still leaves the transaction ended, lock free.
        await asyncio.shield(self._submit(self._finish(commit)))

    def _finish_if_begun(self, begun: asyncio.Future[None]) -> None:
        if not begun.cancelled() and begun.exception() is None:
            with contextlib.suppress(StateStoreError):  # closed meanwhile: nothing to end
                self._post(self._finish(commit=False))

    def ts(self, value: datetime) -> str:
        return _fixed_width(orjson.dumps(value).decode()[1:-1])

    def ts_many(self, values: Sequence[datetime]) -> list[str]:
        texts: list[str] = orjson.loads(orjson.dumps(list(values)))
        return [_fixed_width(t) for t in texts]

    def ts_out(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def list_param(self, values: Sequence[Any]) -> Any:
        return jsoncodec.dumps(list(values))


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError:  # no such table: never migrated
        return None
    return str(rows[0][0]) if rows else None


class SqliteBackend(NormalizedBackend):
    """The normalized layout on SQLite (see the module docstring)."""

    name: ClassVar[str] = "sqlite"

    def __init__(
        self,
        url: str,
        *,
        migrate: bool | None = None,
        busy_timeout: float = 5.0,
        retries: int = 5,
    ) -> None:
        super().__init__(
            SqliteDatabase(url, busy_timeout=busy_timeout, retries=retries),
            migrate=migrate,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBackend:
        return cls(url, **options)


def _factory(url: str | None, *, registry: object = None, **options: Any) -> SqliteBackend:
    from ..core.config import DEFAULT_SQLITE_URL

    return SqliteBackend(url or DEFAULT_SQLITE_URL, **options)


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="sqlite",
            factory=_factory,
            description="normalized tables in a local SQLite file (sqlite3); the default",
            url_schemes=("sqlite",),
        )
    ]
