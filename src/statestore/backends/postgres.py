"""PostgreSQL backend: the normalized layout through asyncpg, for production.

URL: ``postgresql://user:password@host:5432/dbname`` (``postgres://`` and
``postgresql+asyncpg://`` are accepted too). Needs the ``postgres`` extra:
``pip install 'statestore[postgres]'``.

JSON columns are JSONB. Statements are prepared once per connection (asyncpg's
statement cache). Options:

- ``pool``: an ``asyncpg.Pool`` the application already has. The store takes its
  connections from it and never closes it; ``url`` is then needed only for
  ``migrate=True``. Without it the store keeps a pool of its own (``ConnectionPool``,
  cheaper per call than asyncpg's: see there):
- ``pool_size`` (default 10): most connections the store's own pool opens;
- ``pool_timeout`` (default 30 s): how long a call waits for a free connection, and
  for a new one to open, before BackendUnavailable;
- ``command_timeout`` (default 60 s, None for no limit): how long one statement may
  run. It is what bounds a call when the server goes silent without closing the
  connection (host powered off, network cut): nothing else can tell that apart from
  a slow statement.

With ``pool=``, connection limits and ``command_timeout`` are that pool's own
(``asyncpg.create_pool(max_size=..., command_timeout=...)``); ``pool_timeout`` still
bounds the wait for a free connection.

Event loops and threads: an asyncpg connection belongs to the event loop that opened
it. The store's own pool serves callers on any loop, in any thread, at once: it hands
each caller a connection of the caller's loop, opening one there when there is none,
with ``pool_size`` counting every loop's connections together (one loop's idle
connection gives way, closed on its own loop, when another loop needs the room), and
closes the connections of a loop that has closed (``asyncio.run`` has ended). A caller
on the loop it used before pays nothing for this: no thread hop, no wait. Opening
(and ``migrate=True``) runs on the opener's loop. An application's pool belongs to its
own loop: a call from any other loop raises StateStoreError at once, before touching
the pool, which keeps working.

When the connection or the server goes away:

- a call never waits on a connection the operating system reports closed: it raises
  BackendUnavailable at once (bulk inserts are one ``INSERT ... SELECT
  unnest(...)`` statement, not COPY: asyncpg's COPY waits for the socket to take more
  data and is never woken when the connection drops during that wait);
- a read (load, list) that meets a dead connection runs once more on another
  connection: it changes nothing, so running it twice is safe;
- a write is run again only when it provably never reached the server (its BEGIN
  failed, or the driver refused to send it on a connection it knew was closed). A
  write whose connection is lost after that raises BackendUnavailable and is never
  repeated. It is applied wholly or not at all, never in part: lost before its
  COMMIT, it is rolled back; lost during COMMIT (the message says the outcome is
  unknown), or during an append sent as one statement that commits on its own, it
  may have been applied;
- a connection found closed when taken from the pool is replaced.

Caveats: the schema is not migrated on open unless ``migrate=True``; an out-of-date
schema raises SchemaOutOfDate naming the command that fixes it. Run migrations with
an owner role and the application with a role that has only SELECT, INSERT, UPDATE and
DELETE on the tables (see the README).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..core.config import check_server_url, mask_url, url_scheme
from ..core.errors import BackendUnavailable, SchemaOutOfDate, StateStoreError, ValidationError
from ..core.hookspecs import BackendSpec, hookimpl
from .sql import migrate as migrations
from .sql.citus import APPEND_FUNCTION, HAS_CITUS, HAS_FUNCTIONS
from .sql.database import Tx
from .sql.normalized import NormalizedBackend

__all__ = ["PostgresBackend", "PostgresDatabase", "asyncpg_dsn"]

T = TypeVar("T")


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg takes for a ``postgresql://`` URL (driver suffix removed)."""
    if url_scheme(url) not in ("postgresql", "postgres"):
        raise ValidationError("url", "needs a postgresql:// URL")
    check_server_url(url)
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise BackendUnavailable(
            "the postgres backend needs asyncpg: pip install 'statestore[postgres]'"
        ) from None
    return asyncpg


def translate_error(exc: BaseException, url: str) -> StateStoreError | None:
    """The statestore error for a driver or network error, None if not one."""
    import asyncpg

    connection_errors = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.InternalClientError,  # a protocol left mid-way by a dropped socket
    )
    if isinstance(exc, connection_errors):
        return BackendUnavailable(
            f"PostgreSQL at {mask_url(url)} is unavailable: {type(exc).__name__}: {exc}"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return StateStoreError(f"PostgreSQL at {mask_url(url)}: {type(exc).__name__}: {exc}")
    return None


def is_dead_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (not a timeout, not an
    error in a statement)."""
    import asyncpg

    return not isinstance(exc, TimeoutError) and isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.InternalClientError,
    )


def never_sent(exc: BaseException) -> bool:
    """Whether the client refused to send a statement because it already knew the
    connection was broken: the server never saw it, so running it again cannot apply
    it twice. (A connection lost *during* a statement is not such a case: a write
    might have committed before the answer was lost.)"""
    import asyncpg

    return isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError)


# A call of the delegated append (Citus) writes too.
_WRITE_KEYWORD = re.compile(rf"\b(?:INSERT|UPDATE|DELETE|{APPEND_FUNCTION})\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _is_read(sql: str) -> bool:
    """Whether ``sql`` only reads: no INSERT, UPDATE or DELETE anywhere in it (a CTE
    included), nor a call of the delegated append. Values are bound parameters, never
    in the text, so only statestore's own SQL is searched; the texts repeat, hence the
    cache."""
    return _WRITE_KEYWORD.search(sql) is None


# asyncpg's executemany sends its first 128 KiB at once, then (like COPY) waits for
# the socket to drain between batches, a wait a dropped connection never ends unless
# command_timeout is set. Rows whose text could exceed that go one statement each.
_EXECUTEMANY_MAX_CHARS = 16_384  # at most 4 bytes a character: 64 KiB of text


def _small(rows: Sequence[Sequence[Any]]) -> bool:
    if len(rows) > 256:
        return False
    chars = 0
    for row in rows:
        for value in row:
            if isinstance(value, str):
                chars += len(value)
    return chars <= _EXECUTEMANY_MAX_CHARS


class _PgTx:
    """One pooled connection, with a note of whether anything but a read was sent
    on it (a read-only body may be run again after the connection dies)."""

    __slots__ = ("_conn", "wrote")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.wrote = False

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        if not _is_read(sql):
            self.wrote = True
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        if not _is_read(sql):
            self.wrote = True
        row: Sequence[Any] | None = await self._conn.fetchrow(sql, *args)
        return row

    async def execute(self, sql: str, *args: Any) -> int:
        self.wrote = True
        status: str = await self._conn.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.wrote = True
        if _small(rows):
            await self._conn.executemany(sql, rows)
        else:
            for row in rows:
                await self._conn.execute(sql, *row)

    async def copy_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # One statement with an array per column, not COPY: asyncpg's
        # copy_records_to_table waits for the socket to accept more data between
        # chunks, and a connection dropped during that wait never wakes it (the call
        # hung forever). A statement's reply waiter is failed when the connection drops.
        self.wrote = True
        await self._conn.execute(sql, *zip(*rows, strict=True))


def _transports(conn: Any) -> tuple[Any, Any]:
    """The transport of ``conn`` and, over TLS (Citus turns it on), the one under
    asyncio's TLS transport, which holds the socket."""
    transport = getattr(conn, "_transport", None)
    return transport, getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)


def _socket_open(conn: Any) -> bool:
    return any(getattr(layer, "_sock", None) is not None for layer in _transports(conn))


def _terminate(conn: Any) -> None:
    """Close a connection at once, without a round trip. One whose socket already
    closed may refuse (an asyncpg pool's proxy): nothing is left to do then.

    A transport takes the last step of closing (closing its socket) in a callback on
    its event loop. A loop that has closed never runs it: a sweep of a closed loop's
    connections, a call left pending when its application dropped the loop (closed
    later by the garbage collector), or a loop that closed right after the step that
    asked. That step is taken here for such a transport, so that the socket is closed
    now rather than by the garbage collector."""
    with contextlib.suppress(Exception):  # on a closed loop: "Event loop is closed"
        conn.terminate()
    for layer in _transports(conn):
        loop = getattr(layer, "_loop", None)
        finish = getattr(layer, "_call_connection_lost", None)
        if finish is not None and loop is not None and loop.is_closed() and _socket_open(conn):
            with contextlib.suppress(Exception):
                finish(None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# How long a connection being opened when its caller is cancelled may still take to
# open (then kept in the pool) before it is cancelled too.
_OPENING_GRACE = 0.25


async def _cut_short(opening: asyncio.Future[Any]) -> Any:
    """The connection ``opening`` gives if it opens within ``_OPENING_GRACE``, else
    None (its opening cancelled): its caller was cancelled (see ``ConnectionPool``)."""
    try:
        async with asyncio.timeout(_OPENING_GRACE):
            return await asyncio.shield(opening)
    except BaseException:
        opening.cancel()
        return None


class _PoolExhausted(Exception):
    """Every connection stayed busy for the whole wait."""


class _Waiter:
    """A caller waiting for a connection: its loop, the future it waits on, and
    whether a wake-up was sent to it (which it passes on if it leaves without
    looking)."""

    __slots__ = ("future", "loop", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.woken = False


class ConnectionPool:
    """The store's own pool: at most ``size`` asyncpg connections, opened when needed
    and reused, most recently used first, serving callers on any event loop and
    thread.

    An asyncpg connection belongs to the event loop that opened it, so the pool keeps
    the idle connections of each loop apart and hands a caller only one of its own
    loop, opening one on that loop when there is none. ``size`` counts every loop's
    connections together: a caller that finds none of its own and no room left takes
    the room of another loop's idle connection, which is closed (on its own loop, by a
    callback there). The connections of a loop that has closed are closed when the
    pool next meets a new loop, and when it needs their room. State shared across
    threads changes under one ``threading.Lock``, never held across an ``await``;
    a caller on the loop it used before takes and gives back a connection without
    yielding to the event loop and without any hop between threads.

    Not ``asyncpg.create_pool``: its release always runs in a shielded task, with a
    timer for the idle lifetime, on every call. What asyncpg's pool does on release
    that matters here is kept: a connection given back closed or still inside a
    transaction is terminated (the server rolls back), and its room opens a new one
    when needed.

    A call cancelled part-way (a timeout, its loop ending) leaves nothing to close
    later, since a loop may close right after it: a connection it was using is
    terminated at once (the server rolls back what it had), never left to asyncpg's
    CancelRequest, which opens a connection of its own; a connection it was opening
    may finish within ``_OPENING_GRACE`` and is kept, else its opening is cancelled.
    Over TLS (Citus turns it on) a connection cut short any other way closes its
    socket only once the server has answered, which a closed loop never sees.

    Nothing resets session state: statestore never
    changes it (no SET, LISTEN, cursors or session advisory locks). An application
    that wants asyncpg's pool (its ``init``/``setup`` hooks, an idle lifetime) passes
    its own: ``pool=``.
    """

    def __init__(
        self, connect: Callable[[], Coroutine[Any, Any, Any]], size: int, wait: float
    ) -> None:
        self._connect = connect
        self._wait = wait
        self.size = size
        self._guard = threading.Lock()
        self._open = 0  # connections open or being opened, every loop's together
        self._idle: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        # Every open connection: its loop, and the generation it was opened in (one
        # opened before the last expire() is terminated when it comes back).
        self._owners: dict[Any, tuple[asyncio.AbstractEventLoop, int]] = {}
        self._generation = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        # Connections dropped from another loop's thread, until their own loop
        # closes them (or, if it closes first, a sweep does).
        self._condemned: dict[Any, asyncio.AbstractEventLoop] = {}
        self._closed = False

    async def acquire(self) -> Any:
        """An open connection of the caller's event loop; ``_PoolExhausted`` if no
        room frees up within ``wait`` seconds (opening a connection has its own
        timeout)."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            conn: Any = None
            victim: tuple[Any, asyncio.AbstractEventLoop] | None = None
            waiter: _Waiter | None = None
            orphans: list[Any] = []
            wake: list[_Waiter | None] = []
            with self._guard:
                if self._closed:
                    raise StateStoreError("the store is closed")
                idle = self._idle.get(loop)
                if idle is None:  # a loop not seen before (or since it was swept)
                    self._idle[loop] = idle = []
                    orphans = self._sweep(loop)
                if idle:
                    conn = idle.pop()
                else:
                    if self._open >= self.size and not orphans:
                        orphans = self._sweep(loop)
                    if self._open < self.size:
                        self._open += 1
                    elif (victim := self._foreign_idle(loop)) is not None:
                        del self._owners[victim[0]]  # its room is ours now
                    else:
                        waiter = _Waiter(loop)
                        self._waiters.append(waiter)
                if orphans and self._waiters:
                    wake = [self._next_waiter(None) for _ in orphans]
            for orphan in orphans:
                _terminate(orphan)
            for other in wake:
                self._send(other)
            if conn is not None:
                if not conn.is_closed():
                    return conn
                self._forget(conn)  # killed while idle: dropped
                continue
            if waiter is None:
                if victim is not None:
                    self._drop(*victim)
                return await self._open_one(loop)
            if deadline is None:
                deadline = loop.time() + self._wait
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter.future
            except BaseException as exc:
                self._leave(waiter)
                if isinstance(exc, TimeoutError):
                    raise _PoolExhausted from None
                raise

    async def _open_one(self, loop: asyncio.AbstractEventLoop) -> Any:
        """A new connection in room already counted in ``_open``."""
        opening = asyncio.ensure_future(self._connect())
        try:
            conn = await asyncio.shield(opening)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and (conn := await _cut_short(opening)):
                with self._guard:
                    self._owners[conn] = (loop, self._generation)
                await self.release(conn)  # kept for the next caller
                raise
            with self._guard:
                self._open -= 1
                waiter = self._next_waiter(None)
            self._send(waiter)
            raise
        with self._guard:
            self._owners[conn] = (loop, self._generation)
        return conn

    async def release(self, conn: Any) -> None:
        """Give back a connection ``acquire`` returned (on the loop it was used on)."""
        waiter = None
        with self._guard:
            owner = self._owners.get(conn)
            if (
                owner is None
                or owner[1] != self._generation
                or self._closed
                or conn.is_closed()
                or conn.is_in_transaction()
            ):
                self._owners.pop(conn, None)
                self._open -= 1
                kept = None
            else:
                kept = owner[0]
                self._idle.setdefault(kept, []).append(conn)
            if self._waiters:
                waiter = self._next_waiter(kept)
        if kept is None:
            _terminate(conn)
        self._send(waiter)

    def _forget(self, conn: Any) -> None:
        """``conn`` is gone: free its room."""
        with self._guard:
            if self._owners.pop(conn, None) is None:
                return
            self._open -= 1
            waiter = self._next_waiter(None)
        self._send(waiter)

    def _sweep(self, current: asyncio.AbstractEventLoop) -> list[Any]:
        """Under the guard: forget every connection of a closed loop (idle ones, and
        in-use ones whose task died with its loop), returning them to be closed, and
        the records of loops that have closed or hold no idle connection."""
        dead = [conn for conn, (loop, _) in self._owners.items() if loop.is_closed()]
        for conn in dead:
            del self._owners[conn]
        self._open -= len(dead)
        condemned = [conn for conn, loop in self._condemned.items() if loop.is_closed()]
        for conn in [*condemned, *(c for c in self._condemned if not _socket_open(c))]:
            self._condemned.pop(conn, None)
        for loop in [
            loop
            for loop, idle in self._idle.items()
            if loop is not current and (not idle or loop.is_closed())
        ]:
            del self._idle[loop]
        return dead + condemned

    def _foreign_idle(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[Any, asyncio.AbstractEventLoop] | None:
        """Under the guard: an idle connection of another loop, taken out (the least
        recently used of the loop with the most), or None."""
        most: list[Any] = []
        owner = loop
        for other, idle in self._idle.items():
            if other is not loop and len(idle) > len(most):
                most, owner = idle, other
        return (most.pop(0), owner) if most else None

    def _drop(self, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Close ``conn``, a connection of ``loop`` whose room is already given up,
        from whichever thread: on its own loop at once; on another live loop by a
        callback there (a transport is not thread-safe), or by the next sweep if
        that loop closes before running it; on a closed loop at once (``_terminate``)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            _terminate(conn)
            return
        if not loop.is_closed():
            with self._guard:
                self._condemned[conn] = loop
            try:
                loop.call_soon_threadsafe(self._execute, conn)
                return
            except RuntimeError:  # closed since
                with self._guard:
                    self._condemned.pop(conn, None)
        _terminate(conn)

    def _execute(self, conn: Any) -> None:
        """On ``conn``'s loop: close a connection ``_drop`` condemned. It stays
        condemned until its socket is closed: should the loop close before the
        transport's last step, a sweep takes that step (``_terminate``)."""
        with self._guard:
            if conn not in self._condemned:
                return  # a sweep closed it already
        _terminate(conn)

    def _next_waiter(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """Under the guard: the waiter to wake (the first on ``loop`` if any, else the
        first), taken off the queue and marked woken."""
        waiters = self._waiters
        if not waiters:
            return None
        chosen = waiters[0]
        if loop is not None and chosen.loop is not loop:
            chosen = next((w for w in waiters if w.loop is loop), chosen)
        waiters.remove(chosen)
        chosen.woken = True
        return chosen

    def _send(self, waiter: _Waiter | None) -> None:
        """Wake ``waiter`` (it looks again); one whose loop has closed passes the
        wake-up on."""
        while waiter is not None:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if waiter.loop is running:
                _wake(waiter.future)
                return
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                return
            except RuntimeError:  # its loop closed: it will never look
                with self._guard:
                    waiter = self._next_waiter(None)

    def _leave(self, waiter: _Waiter) -> None:
        """``waiter`` stops waiting (timeout, cancellation): a wake-up sent to it is
        passed on."""
        passed_on = None
        with self._guard:
            if waiter.woken:
                passed_on = self._next_waiter(None)
            else:
                self._waiters.remove(waiter)
        self._send(passed_on)

    async def expire(self) -> None:
        """Terminate the idle connections now and those in use when they come back."""
        with self._guard:
            self._generation += 1
            idle = [(conn, loop) for loop, conns in self._idle.items() for conn in conns]
            for conns in self._idle.values():
                conns.clear()
            for conn, _ in idle:
                del self._owners[conn]
            self._open -= len(idle)
            waiters = [self._next_waiter(None) for _ in idle]
        for conn, loop in idle:
            self._drop(conn, loop)
        for waiter in waiters:
            self._send(waiter)

    async def close(self) -> None:
        """Close the idle connections; those in use are terminated as they come back.
        Callers waiting for a connection get an error."""
        loop = asyncio.get_running_loop()
        with self._guard:
            self._closed = True
            orphans = self._sweep(loop)
            idle = [(conn, owner) for owner, conns in self._idle.items() for conn in conns]
            self._idle.clear()
            for conn, _ in idle:
                del self._owners[conn]
            self._open -= len(idle)
            waiters = list(self._waiters)
            self._waiters.clear()
            for waiter in waiters:
                waiter.woken = True
        for waiter in waiters:
            self._send(waiter)
        for conn in orphans:
            _terminate(conn)
        for conn, owner in idle:
            if owner is loop:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
            else:
                self._drop(conn, owner)


class _ApplicationPool:
    """An application's ``asyncpg.Pool`` behind ``ConnectionPool``'s methods. The
    store never closes or expires it: it is the application's. Like its connections,
    it belongs to the event loop that created it: a call from any other loop is
    refused before it touches the pool."""

    def __init__(self, pool: Any, wait: float) -> None:
        self._pool = pool
        self._wait = wait
        self.size: int = pool.get_max_size()
        # asyncpg keeps the loop it was created on there (it has no public accessor).
        self._loop: asyncio.AbstractEventLoop | None = getattr(pool, "_loop", None)

    async def acquire(self) -> Any:
        pool = self._pool
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            raise StateStoreError(
                "this store uses the application's asyncpg pool (pool=), which belongs to "
                "the event loop that created it, and this call runs on another event loop "
                f"(thread {threading.current_thread().name!r}): make the call on the "
                "pool's loop (asyncio.run_coroutine_threadsafe), or open the store with "
                "url= instead of pool=, whose own pool serves every loop"
            )
        # acquire(timeout=...) runs through asyncio.wait_for, a task per call on
        # Python < 3.12: only a call that has to queue for a connection needs it.
        queue = pool.get_size() - pool.get_idle_size() >= pool.get_max_size()
        try:
            return await pool.acquire(timeout=self._wait if queue else None)
        except TimeoutError:
            if queue:
                raise _PoolExhausted from None
            raise

    async def release(self, conn: Any) -> None:
        # asyncpg's pool rolls back a transaction left open and resets the session; a
        # connection it cannot reset is terminated, never handed out again.
        with contextlib.suppress(Exception):
            await self._pool.release(conn, timeout=self._wait)

    async def expire(self) -> None:
        pass

    async def close(self) -> None:
        pass


class PostgresDatabase:
    """asyncpg connections from the store's own ``ConnectionPool``, or from the
    ``asyncpg.Pool`` the application passed in (``pool=``)."""

    engine = "postgresql"
    writers_take_turns = False
    statements_are_round_trips = True
    # An append as one statement (an INSERT in a WITH): false on Citus, which cannot
    # route a data-modifying INSERT CTE to one shard (set when the store opens).
    one_statement_append = True
    shards_by_conversation = False  # set when the store opens (Citus)
    delegates_calls = False  # set when the store opens (Citus, functions created)

    def __init__(
        self,
        url: str | None,
        *,
        pool: Any = None,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        command_timeout: float | None = 60.0,
    ) -> None:
        if pool is not None:
            asyncpg = _import_asyncpg()
            if not isinstance(pool, asyncpg.Pool):
                raise ValidationError(
                    "pool",
                    f"must be an asyncpg.Pool (asyncpg.create_pool), not {type(pool).__name__}",
                )
        elif url is None:
            raise ValidationError(
                "url", "the postgres backend needs a URL (argument or STATESTORE_URL) or pool="
            )
        if type(pool_size) is not int or pool_size < 1:
            raise ValidationError("pool_size", "must be an integer >= 1")
        for name, value in (("pool_timeout", pool_timeout), ("command_timeout", command_timeout)):
            if value is not None and (not isinstance(value, int | float) or not value > 0):
                raise ValidationError(name, "must be a number of seconds > 0")
        if pool_timeout is None:
            raise ValidationError("pool_timeout", "must be a number of seconds > 0")
        self._dsn = asyncpg_dsn(url) if url is not None else None
        self._raw_url = url
        self.url = mask_url(url) if url is not None else "the application's asyncpg pool"
        self._given_pool = pool
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.command_timeout = command_timeout
        self._pool: ConnectionPool | _ApplicationPool | None = None

    async def _open_connection(self) -> Any:
        asyncpg = _import_asyncpg()
        return await asyncpg.connect(
            self._dsn, timeout=self.pool_timeout, command_timeout=self.command_timeout
        )

    async def connect(self, migrate: bool | None) -> None:
        if self._pool is not None:
            return
        _import_asyncpg()  # a clear error now if the extra is missing
        if migrate:
            if self._raw_url is None:
                raise ValidationError("migrate", "migrate=True needs the database URL (url=)")
            await migrations.upgrade(self._raw_url)
        try:
            if self._given_pool is not None:
                self._pool = _ApplicationPool(self._given_pool, self.pool_timeout)
            else:
                self._pool = ConnectionPool(
                    self._open_connection, self.pool_size, self.pool_timeout
                )
            await self._check_revision()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception) and (translated := translate_error(exc, self.url)):
                raise translated from exc
            raise

    async def _check_revision(self) -> None:
        head = migrations.head_revision()

        async def body(tx: Tx) -> Any:
            citus = await tx.fetchrow(HAS_CITUS)
            self.shards_by_conversation = bool(citus and citus[0])
            self.one_statement_append = not self.shards_by_conversation
            if self.shards_by_conversation:
                functions = await tx.fetchrow(HAS_FUNCTIONS)
                self.delegates_calls = bool(functions and functions[0])
            row = await tx.fetchrow("SELECT to_regclass('alembic_version') IS NOT NULL")
            if row is None or not row[0]:
                return None
            row = await tx.fetchrow("SELECT version_num FROM alembic_version")
            return row[0] if row else None

        current = await self.run(body, write=False)
        if current != head:
            raise SchemaOutOfDate(
                f"{self.url} is at schema revision {current or 'none'}, this statestore needs "
                f"{head}: run `statestore migrate --backend postgres --url URL` (or open the "
                "store with migrate=True)"
            )

    async def close(self) -> None:
        """Close the store's own pool (an application's pool is left open)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _acquire(self) -> tuple[ConnectionPool | _ApplicationPool, Any]:
        """A pooled connection and the pool to give it back to, waiting up to
        ``pool_timeout`` for a free one."""
        pool = self._pool
        if pool is None:
            raise StateStoreError("the store is not open: use `async with open_store(...)`")
        try:
            return pool, await pool.acquire()
        except _PoolExhausted:
            raise BackendUnavailable(
                f"no free connection to PostgreSQL at {self.url}: all pool_size="
                f"{pool.size} connections stayed busy for pool_timeout="
                f"{self.pool_timeout}s; raise pool_size or pool_timeout"
            ) from None
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self.url} did not accept a connection within "
                f"pool_timeout={self.pool_timeout}s"
            ) from exc
        except Exception as exc:
            self._raise_translated(exc)

    async def _lost(self, pool: ConnectionPool | _ApplicationPool, conn: Any) -> None:
        """``conn`` died, or was left mid-operation by a dropped socket: terminate it
        so that it is never handed out again. Whatever killed it (a restart, a
        failover, sessions terminated by an administrator) most likely killed its idle
        siblings too, which cannot be known before using them: the store's own pool
        drops them all (``expire``), so a call run again gets a fresh connection. An
        application's pool is left to its owner."""
        _terminate(conn)
        await pool.expire()

    def _raise_translated(self, exc: Exception) -> NoReturn:
        translated = translate_error(exc, self.url)
        if translated is None:
            raise exc
        raise translated from exc

    async def _begin(self) -> tuple[Any, Any, Any]:
        """A connection with a transaction started on it. A pooled connection that
        turns out dead at BEGIN (killed while idle: server restart, terminated
        backend) is given back and another taken: nothing of the write was sent."""
        attempts = self.pool_size + 1
        while True:
            attempts -= 1
            pool, conn = await self._acquire()
            transaction = conn.transaction()
            try:
                await transaction.start()
            except Exception as exc:
                if is_dead_connection(exc):
                    await self._lost(pool, conn)
                await pool.release(conn)
                if attempts > 0 and is_dead_connection(exc):
                    continue
                self._raise_translated(exc)
            except BaseException:
                _terminate(conn)  # cancelled: see ConnectionPool
                await pool.release(conn)
                raise
            return pool, conn, transaction

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        pool, conn, transaction = await self._begin()
        try:
            yield _PgTx(conn)
        except BaseException as exc:
            # Gone or silent: the server rolls back what it has when the session ends,
            # and a ROLLBACK sent now would only wait again.
            if isinstance(exc, Exception) and is_dead_connection(exc):
                await self._lost(pool, conn)
            elif isinstance(exc, TimeoutError) or not isinstance(exc, Exception):
                _terminate(conn)  # silent, or cancelled: see ConnectionPool
            else:
                with contextlib.suppress(Exception):  # the connection may be gone
                    await transaction.rollback()
            if isinstance(exc, Exception):
                self._raise_translated(exc)
            raise
        else:
            try:
                await transaction.commit()
            except Exception as exc:
                if is_dead_connection(exc):
                    await self._lost(pool, conn)
                elif isinstance(exc, TimeoutError):
                    _terminate(conn)
                else:
                    self._raise_translated(exc)
                raise BackendUnavailable(
                    f"PostgreSQL at {self.url}: the connection was lost during COMMIT "
                    f"({type(exc).__name__}: {exc}); the write was applied wholly or not at "
                    "all, and which is unknown: load the conversation to see"
                ) from exc
        finally:
            await pool.release(conn)

    async def run(self, body: Callable[[Tx], Coroutine[Any, Any, T]], *, write: bool) -> T:
        if write:
            async with self.transaction() as tx:
                return await body(tx)
        # Outside a transaction: reads, and single statements that are writes atomic on
        # their own. A read that meets a dead connection runs once more, on a fresh
        # connection; a write only if the driver never sent it.
        retried = False
        while True:
            pool, conn = await self._acquire()
            tx = _PgTx(conn)
            try:
                return await body(tx)
            except Exception as exc:
                if is_dead_connection(exc):
                    await self._lost(pool, conn)
                if not retried and (never_sent(exc) or (not tx.wrote and is_dead_connection(exc))):
                    retried = True
                    continue
                self._raise_translated(exc)
            except BaseException:
                _terminate(conn)  # cancelled: see ConnectionPool
                raise
            finally:
                await pool.release(conn)

    def ts(self, value: datetime) -> datetime:
        return value

    def ts_many(self, values: Sequence[datetime]) -> list[datetime]:
        return list(values)

    def ts_out(self, value: Any) -> datetime:
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            # asyncpg stores datetime.min/max (in UTC) as -infinity/infinity and reads
            # those back naive: give them their UTC back, so they round trip.
            return value.replace(tzinfo=UTC)
        return value

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)


class PostgresBackend(NormalizedBackend):
    """The normalized layout on PostgreSQL (see the module docstring).

    ``PostgresBackend(url)`` keeps a pool of its own; ``PostgresBackend(pool=p)``
    (or ``open_store("postgres", pool=p)``) uses the application's ``asyncpg.Pool``
    and leaves it open on close."""

    name: ClassVar[str] = "postgres"

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        migrate: bool | None = None,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        command_timeout: float | None = 60.0,
    ) -> None:
        super().__init__(
            PostgresDatabase(
                url,
                pool=pool,
                pool_size=pool_size,
                pool_timeout=pool_timeout,
                command_timeout=command_timeout,
            ),
            migrate=migrate,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        return cls(url, **options)


def _factory(url: str | None, *, registry: object = None, **options: Any) -> PostgresBackend:
    return PostgresBackend(url, **options)


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="postgres",
            factory=_factory,
            description="normalized tables in PostgreSQL with JSONB (asyncpg); for production",
            url_schemes=("postgresql",),
        )
    ]
