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
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..core.config import mask_url, url_scheme
from ..core.errors import BackendUnavailable, SchemaOutOfDate, StateStoreError, ValidationError
from ..core.hookspecs import BackendSpec, hookimpl
from .sql import migrate as migrations
from .sql.citus import HAS_CITUS
from .sql.database import Tx
from .sql.normalized import NormalizedBackend

__all__ = ["PostgresBackend", "PostgresDatabase", "asyncpg_dsn"]

T = TypeVar("T")


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg takes for a ``postgresql://`` URL (driver suffix removed)."""
    if url_scheme(url) not in ("postgresql", "postgres"):
        raise ValidationError("url", "needs a postgresql:// URL")
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


_WRITE_KEYWORD = re.compile(r"\b(?:INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _is_read(sql: str) -> bool:
    """Whether ``sql`` only reads: no INSERT, UPDATE or DELETE anywhere in it (a CTE
    included). Values are bound parameters, never in the text, so only statestore's
    own SQL is searched; the texts repeat, hence the cache."""
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


def _terminate(conn: Any) -> None:
    """Close a connection at once, without a round trip. One whose socket already
    closed may refuse (an asyncpg pool's proxy): nothing is left to do then."""
    with contextlib.suppress(Exception):
        conn.terminate()


class _PoolExhausted(Exception):
    """Every connection stayed busy for the whole wait."""


class ConnectionPool:
    """The store's own pool: at most ``size`` asyncpg connections, opened when needed
    and reused, most recently used first.

    Not ``asyncpg.create_pool``: its release always runs in a shielded task, with a
    timer for the idle lifetime, on every call; taking an idle
    connection here and giving it back do not yield to the event loop. What asyncpg's
    pool does on release that matters here is kept: a connection given back closed
    or still inside a transaction is terminated (the server rolls back), and its slot
    opens a new one when needed. A pending cancellation is waited for by asyncpg's
    protocol before the connection's next statement. Nothing resets session state:
    statestore never changes it (no SET, LISTEN, cursors or session advisory locks).
    An application that wants asyncpg's pool (its ``init``/``setup`` hooks, an idle
    lifetime) passes its own: ``pool=``.
    """

    def __init__(
        self, connect: Callable[[], Coroutine[Any, Any, Any]], size: int, wait: float
    ) -> None:
        self._connect = connect
        self._wait = wait
        self.size = size
        self._slots = asyncio.Semaphore(size)  # one per connection in use
        self._idle: list[Any] = []
        self._current: set[Any] = set()  # opened since the last expire()
        self._closed = False

    async def acquire(self) -> Any:
        """An open connection; ``_PoolExhausted`` if no slot frees up within ``wait``
        seconds (opening a connection has its own timeout)."""
        if self._closed:
            raise StateStoreError("the store is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise _PoolExhausted from None
        else:
            await self._slots.acquire()  # a free slot: returns without waiting
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():  # one killed while idle is dropped
                    return conn
                self._current.discard(conn)
            conn = await self._connect()
            self._current.add(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    async def release(self, conn: Any) -> None:
        """Give back a connection ``acquire`` returned."""
        if (
            self._closed
            or conn not in self._current
            or conn.is_closed()
            or conn.is_in_transaction()
        ):
            self._current.discard(conn)
            _terminate(conn)
        else:
            self._idle.append(conn)
        self._slots.release()

    async def expire(self) -> None:
        """Terminate the idle connections now and those in use when they come back."""
        idle, self._idle = self._idle, []
        self._current.clear()
        for conn in idle:
            _terminate(conn)

    async def close(self) -> None:
        """Close the idle connections; those in use are terminated as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class _ApplicationPool:
    """An application's ``asyncpg.Pool`` behind ``ConnectionPool``'s methods. The
    store never closes or expires it: it is the application's."""

    def __init__(self, pool: Any, wait: float) -> None:
        self._pool = pool
        self._wait = wait
        self.size: int = pool.get_max_size()

    async def acquire(self) -> Any:
        pool = self._pool
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
            elif isinstance(exc, TimeoutError):
                _terminate(conn)
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
