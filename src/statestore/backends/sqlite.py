"""SQLite backend: the normalized layout in one local file, through the standard
library's ``sqlite3`` in a thread the backend owns.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
(``sqlite+aiosqlite://`` is accepted too). In-memory databases are not supported:
migrations and the store would see different databases.

The file is opened in WAL mode with ``synchronous=NORMAL`` (a committed write survives
a process crash; the last transactions may be lost on power failure), foreign keys on,
and a busy timeout. Migrations are applied on open unless ``migrate=False``.

How it runs: a store owns one thread and one ``sqlite3`` connection used only there
(sqlite3 itself refuses use from another thread). The thread serves a queue of calls in
turn; a whole operation (a load; a write plan between ``BEGIN IMMEDIATE`` and
``COMMIT``) is one call, answered with ``call_soon_threadsafe``: one thread hop per
operation however many statements it runs, and the caller's loop never blocks, opening
included (the directory, the pragmas, migrations). The queue is the order, so callers
on any loop or thread are served: the loop that opened the store, others in other
threads, ``asyncio.run`` after the opening loop has closed. An answer for a caller whose
loop closed meanwhile is dropped.

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
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
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
    if parts.query:  # none is read: refused rather than ignored (?mode=ro would not be)
        raise ValidationError(
            "url", f"takes no options after '?' (got {parts.query!r}): sqlite:///path.db"
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


def _fixed_width(text: str) -> str:
    """orjson's text of a UTC datetime as the stored form, fixed width so that text
    order is time order: ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (orjson leaves out a
    zero fraction, and formats in C, much faster than ``isoformat``)."""
    return text if len(text) == 32 else f"{text[:19]}.000000{text[19:]}"


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
        conn.execute("ROLLBACK")


class _Tx:
    """The store's connection as the ``Tx`` of an operation body, which runs on the
    backend's thread: each statement runs at once."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._db._connection().execute(sql, args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        # fetchall, not fetchone: an UPDATE ... RETURNING must run to its end.
        return next(iter(self._db._connection().execute(sql, args).fetchall()), None)

    async def execute(self, sql: str, *args: Any) -> int:
        return self._db._connection().execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db._connection().executemany(sql, rows)

    async def copy_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # executemany is SQLite's bulk path (sql: the one-row INSERT).
        self._db._connection().executemany(sql, rows)


class _Job:
    """One call handed to the backend's thread: ``work(job)`` runs there, and its
    outcome is set on ``outcome`` on the caller's loop."""

    __slots__ = ("caller", "outcome", "work")

    def __init__(
        self,
        work: Callable[[_Job], Any],
        caller: asyncio.AbstractEventLoop,
        outcome: asyncio.Future[Any],
    ) -> None:
        self.work = work
        self.caller = caller
        self.outcome = outcome

    def abandoned(self) -> bool:
        """Whether the caller stopped waiting (cancelled). Read across threads: a
        caller cancelled a moment later gets its call run whole, result dropped."""
        return self.outcome.cancelled()

    def run(self) -> None:
        if self.abandoned():  # cancelled before its turn: never started
            return
        try:
            result = self.work(self)
        except BaseException as exc:  # the caller's to handle, on its loop
            self._answer(_settle_exception, exc)
        else:
            self._answer(_settle_result, result)

    def _answer(self, settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
        # A caller whose loop has closed meanwhile (its asyncio.run ended) is waiting
        # for nothing any more.
        with contextlib.suppress(RuntimeError):
            self.caller.call_soon_threadsafe(settle, self.outcome, value)


_Queue = queue.SimpleQueue[_Job | None]
_STOP = None  # the last item of the backend's queue: its thread ends there


def _settle_result(outcome: asyncio.Future[Any], result: Any) -> None:
    if not outcome.done():  # else the caller was cancelled meanwhile
        outcome.set_result(result)


def _settle_exception(outcome: asyncio.Future[Any], exc: BaseException) -> None:
    if not outcome.done():
        outcome.set_exception(exc)


class _Abandoned(Exception):
    """The caller of a call waiting out a locked file was cancelled: the call stops
    there, before anything was written."""


def _run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run an operation body on the backend's thread. A body does its I/O through its
    ``Tx`` only (``Database.run``), whose statements run here and return at once, so
    the coroutine ends at its first step; one that would suspend is a bug."""
    try:
        coro.send(None)
    except StopIteration as end:
        result: T = end.value
        return result
    coro.close()
    raise StateStoreError("a SQLite operation body awaited something other than its Tx")


class SqliteDatabase:
    """One ``sqlite3`` connection in a thread of its own, serving the operations of
    one store in turn from a queue."""

    engine = "sqlite"
    writers_take_turns = True
    statements_are_round_trips = False
    one_statement_append = False
    shards_by_conversation = False
    delegates_calls = False

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        retries: int = 5,
    ) -> None:
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not busy_timeout >= 0  # NaN too
        ):
            raise ValidationError("busy_timeout", "must be a number of seconds >= 0")
        if type(retries) is not int or retries < 0:
            raise ValidationError("retries", "must be an integer >= 0")
        self.path = sqlite_path(url)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        self.retries = retries
        self._tx = _Tx(self)
        # Set by connect: the queue of calls and the end of the thread serving it.
        # ``_guard`` orders puts against the last item (nothing is put after it).
        self._jobs: _Queue | None = None
        self._stopped: concurrent.futures.Future[None] | None = None
        self._guard = threading.Lock()
        # Used on the backend's thread only.
        self._conn: sqlite3.Connection | None = None

    # -- the backend's thread ------------------------------------------------------

    async def connect(self, migrate: bool | None) -> None:
        if self._jobs is not None:
            return
        jobs: _Queue = queue.SimpleQueue()
        stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._serve,
            args=(jobs, stopped),
            name=f"statestore-sqlite {self.path}",
            daemon=True,
        )
        thread.start()
        self._jobs, self._stopped = jobs, stopped
        try:
            await self._submit(lambda job: self._open(job, migrate))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop taking calls; the calls already queued are answered first, then the
        connection closes on its thread."""
        with self._guard:
            jobs, stopped = self._jobs, self._stopped
            self._jobs = self._stopped = None
            if jobs is None or stopped is None:
                return
            jobs.put(_STOP)
        await asyncio.wrap_future(stopped)

    def _serve(self, jobs: _Queue, stopped: concurrent.futures.Future[None]) -> None:
        """The backend's thread: each call in turn until the queue's last item."""
        try:
            while (job := jobs.get()) is not _STOP:
                job.run()
                # Not kept while waiting: a job holds its caller's future, so its result.
                job = None
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            stopped.set_result(None)

    async def _submit(self, work: Callable[[_Job], T]) -> T:
        """Run ``work(job)`` on the backend's thread and wait for its outcome: one hop
        there (a queue) and one back (``call_soon_threadsafe``). A call cancelled
        before its turn never runs, nor does a write cancelled while it waits for a
        locked file; one already running runs to its end, its outcome dropped
        (operations never stop between two statements)."""
        caller = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = caller.create_future()
        job = _Job(work, caller, outcome)
        with self._guard:
            if self._jobs is None:
                raise StateStoreError("the store is not open: use `async with open_store(...)`")
            self._jobs.put(job)
        return await outcome

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateStoreError("the store is not open: use `async with open_store(...)`")
        return self._conn

    def _backoff(self, attempt: int, job: _Job) -> None:
        """Wait before retrying a locked file: 10 ms doubling up to 1 s, jittered so
        that processes contending for one file do not retry in step. Nothing else can
        run meanwhile (this is the file's one connection in this process); a caller
        that stopped waiting ends the retries."""
        time.sleep(min(0.01 * 2**attempt, 1.0) * (1 + random.random()))
        if job.abandoned():
            raise _Abandoned

    # -- on the backend's thread ---------------------------------------------------

    def _open(self, job: _Job, migrate: bool | None) -> None:
        # Switching a new file to WAL needs a lock that SQLite may refuse at once
        # (without waiting out busy_timeout) while another process sets the file up.
        for attempt in range(self.retries + 1):
            try:
                self._conn = self._connect_file(migrate)
                return
            except sqlite3.Error as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise _translate(exc, self.path) from exc
            except OSError as exc:
                raise BackendUnavailable(f"cannot open SQLite file {self.path}: {exc}") from exc
            self._backoff(attempt, job)

    def _connect_file(self, migrate: bool | None) -> sqlite3.Connection:
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

    def _operation(self, job: _Job, body: Callable[[Tx], Coroutine[Any, Any, T]], write: bool) -> T:
        """``run``'s part on the backend's thread."""
        conn = self._connection()
        if write:
            self._begin(conn, job)
            try:
                result = _run_to_end(body(self._tx))
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, self.path) from exc
                raise
            return result
        for attempt in range(self.retries + 1):
            try:
                return _run_to_end(body(self._tx))
            except sqlite3.Error as exc:
                # A read can meet a busy file too (another process recovering the
                # WAL after a crash); reading again is always safe.
                if not _is_busy(exc) or attempt == self.retries:
                    raise _translate(exc, self.path) from exc
            self._backoff(attempt, job)
        raise AssertionError("unreachable")

    def _begin(self, conn: sqlite3.Connection, job: _Job) -> None:
        """BEGIN IMMEDIATE takes the write lock now, so a transaction never fails
        half-way for want of it; a file locked past busy_timeout is retried with
        backoff. A caller that stopped waiting meanwhile gets nothing written."""
        for attempt in range(self.retries + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise _translate(exc, self.path) from exc
            else:
                if job.abandoned():
                    _rollback(conn)
                    raise _Abandoned
                return
            self._backoff(attempt, job)

    # -- the Database protocol -----------------------------------------------------

    async def run(self, body: Callable[[Tx], Coroutine[Any, Any, T]], *, write: bool) -> T:
        """Run ``body`` whole on the backend's thread (BEGIN IMMEDIATE ... COMMIT
        around it when ``write``): each hop between threads costs more than a small
        statement, so an operation takes one hop, not one per statement."""
        return await self._submit(lambda job: self._operation(job, body, write))

    def ts(self, value: datetime) -> str:
        return _fixed_width(orjson.dumps(value).decode()[1:-1])

    def ts_many(self, values: Sequence[datetime]) -> list[str]:
        texts: list[str] = orjson.loads(orjson.dumps(list(values)))
        return [_fixed_width(t) for t in texts]

    # The builtin itself, not a method calling it: a load calls it once per row.
    ts_out = staticmethod(datetime.fromisoformat)

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
