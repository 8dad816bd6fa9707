"""PostgreSQL backend: the normalized layout through asyncpg, for production.

URL: ``postgresql://user:password@host:5432/dbname`` (``postgres://`` and
``postgresql+asyncpg://`` are accepted too). Needs the ``postgres`` extra:
``pip install 'statestore[postgres]'``.

JSON columns are JSONB. Statements are prepared once per connection (asyncpg's
statement cache). Options: ``pool_size`` (default 10 connections), ``pool_timeout``
(seconds a call waits for a free connection before BackendUnavailable, default 30),
``command_timeout`` (seconds, default none).

Caveats: the schema is not migrated on open unless ``migrate=True``; an out-of-date
schema raises SchemaOutOfDate naming the command that fixes it. Run migrations with
an owner role and the application with a role that has only SELECT, INSERT, UPDATE and
DELETE on the tables (see the README). A connection that drops is replaced on the next
call; the call that saw it drop raises BackendUnavailable and changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, TypeVar

from ..core.config import mask_url, url_scheme
from ..core.errors import BackendUnavailable, SchemaOutOfDate, StateStoreError, ValidationError
from ..core.hookspecs import BackendSpec, hookimpl
from ..core.observe import Observer
from .sql import migrate as migrations
from .sql.database import Tx
from .sql.normalized import NormalizedBackend

__all__ = ["PostgresBackend", "PostgresDatabase", "asyncpg_dsn"]

T = TypeVar("T")


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg takes for a ``postgresql://`` URL (driver suffix removed)."""
    if url_scheme(url) not in ("postgresql", "postgres"):
        raise ValidationError("url", "needs a postgresql:// URL")
    return "postgresql://" + url.split("://", 1)[1]


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


class _PgTx:
    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._conn.fetchrow(sql, *args)
        return row

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # COPY: the fastest bulk insert (executemany costs about a round trip per row).
        await self._conn.copy_records_to_table(table, columns=columns, records=rows)


class _PoolExhausted(Exception):
    """Every connection stayed busy for the whole wait."""


class ConnectionPool:
    """At most ``size`` asyncpg connections, opened when needed and reused, most
    recently used first.

    Not asyncpg's pool: its acquire and release cost about 90 µs together (a
    ``wait_for`` timer and a shielded release task per call), more than a third of a
    windowed load. Here taking an idle connection and giving it back do not yield to
    the event loop. A connection given back closed or still inside a transaction is
    terminated, and its slot opens a new one when needed. Nothing resets session
    state on release: statestore never changes it (no SET, LISTEN, cursors or
    session advisory locks).
    """

    def __init__(
        self, connect: Callable[[], Coroutine[Any, Any, Any]], size: int, wait: float
    ) -> None:
        self._connect = connect
        self._wait = wait
        self._slots = asyncio.Semaphore(size)  # one per connection in use
        self._idle: list[Any] = []
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
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Any) -> None:
        """Give back a connection ``acquire`` returned."""
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
        else:
            self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        """Close the idle connections; those in use are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class PostgresDatabase:
    """asyncpg connections in a ``ConnectionPool``."""

    engine = "postgresql"
    statements_are_round_trips = True
    # An append as one statement (an INSERT in a WITH): false on Citus, which cannot
    # route a data-modifying INSERT CTE to one shard (set when the store opens).
    one_statement_append = True
    # $1 (the conversation id), not a correlated s.conversation_id: Citus routes a
    # statement to one shard only if every table reference names the id.
    metadata_agg = (
        "(SELECT json_agg(json_build_array(key, value::text))::text FROM memory_metadata m "
        "WHERE m.conversation_id = $1)"
    )

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        command_timeout: float | None = None,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._raw_url = url
        self.url = mask_url(url)
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.command_timeout = command_timeout
        self._pool: ConnectionPool | None = None

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
            await migrations.upgrade(self._raw_url)
        pool = ConnectionPool(self._open_connection, self.pool_size, self.pool_timeout)
        try:
            await self._check_revision(pool)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, Exception) and (translated := translate_error(exc, self._raw_url)):
                raise translated from exc
            raise
        self._pool = pool

    async def _check_revision(self, pool: ConnectionPool) -> None:
        head = migrations.head_revision()
        conn = await pool.acquire()
        try:
            exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
            current = (
                await conn.fetchval("SELECT version_num FROM alembic_version") if exists else None
            )
            self.one_statement_append = not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
            )
        finally:
            pool.release(conn)
        if current != head:
            raise SchemaOutOfDate(
                f"{self.url} is at schema revision {current or 'none'}, this statestore needs "
                f"{head}: run `statestore migrate --backend postgres --url URL` (or open the "
                "store with migrate=True)"
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _connection(self) -> tuple[ConnectionPool, Any]:
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
                f"{self.pool_size} connections stayed busy for pool_timeout="
                f"{self.pool_timeout}s; raise pool_size or pool_timeout"
            ) from None
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self.url} did not accept a connection within "
                f"pool_timeout={self.pool_timeout}s"
            ) from exc
        except Exception as exc:
            translated = translate_error(exc, self._raw_url)
            if translated is None:
                raise
            raise translated from exc

    def _raise_translated(self, exc: Exception) -> NoReturn:
        translated = translate_error(exc, self._raw_url)
        if translated is None:
            raise exc
        raise translated from exc

    async def _begin(self) -> tuple[ConnectionPool, Any, Any]:
        """A connection with a transaction started on it. A pooled connection that
        turns out dead at BEGIN (killed while idle: server restart, terminated
        backend) is dropped and another taken; nothing had been sent on it."""
        attempts = self.pool_size + 1
        while True:
            attempts -= 1
            pool, conn = await self._connection()
            transaction = conn.transaction()
            try:
                await transaction.start()
            except Exception as exc:
                pool.release(conn)
                if attempts > 0 and is_dead_connection(exc):
                    continue
                self._raise_translated(exc)
            return pool, conn, transaction

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        pool, conn, transaction = await self._begin()
        try:
            yield _PgTx(conn)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the connection may be gone
                await transaction.rollback()
            if isinstance(exc, Exception):
                self._raise_translated(exc)
            raise
        else:
            try:
                await transaction.commit()
            except Exception as exc:
                self._raise_translated(exc)
        finally:
            pool.release(conn)

    async def run(self, body: Callable[[Tx], Coroutine[Any, Any, T]], *, write: bool) -> T:
        if write:
            async with self.transaction() as tx:
                return await body(tx)
        # Outside a transaction (reads, single-statement writes): a statement the
        # client never sent, its pooled connection found dead (killed while idle), runs
        # again on another connection.
        attempts = self.pool_size + 1
        while True:
            attempts -= 1
            pool, conn = await self._connection()
            try:
                return await body(_PgTx(conn))
            except Exception as exc:
                if attempts > 0 and never_sent(exc):
                    continue
                self._raise_translated(exc)
            finally:
                pool.release(conn)

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

    def any_of(self, param: str) -> str:
        return f"= ANY({param})"

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)


class PostgresBackend(NormalizedBackend):
    """The normalized layout on PostgreSQL (see the module docstring)."""

    name: ClassVar[str] = "postgres"

    def __init__(
        self,
        url: str,
        *,
        migrate: bool | None = None,
        observer: Observer | None = None,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        command_timeout: float | None = None,
    ) -> None:
        super().__init__(
            PostgresDatabase(
                url,
                pool_size=pool_size,
                pool_timeout=pool_timeout,
                command_timeout=command_timeout,
            ),
            migrate=migrate,
            observer=observer,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        return cls(url, **options)


def _factory(url: str | None, *, registry: object = None, **options: Any) -> PostgresBackend:
    if url is None:
        raise ValidationError(
            "url", "the postgres backend needs a URL (argument or STATESTORE_URL)"
        )
    return PostgresBackend(url, **options)


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="postgres",
            factory=_factory,
            description="normalized tables in PostgreSQL with JSONB (asyncpg); for production",
            url_schemes=("postgresql",),
            capabilities=frozenset({"stable_item_ids", "incremental_writes", "persistent"}),
        )
    ]
