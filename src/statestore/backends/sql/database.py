"""The small driver interface the SQL backends are written against.

The SQL comes from ``statements.py``, compiled for the adapter's ``engine``. Each
adapter says how its engine differs in what the driver takes: timestamps, list
parameters, bulk inserts.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

__all__ = ["Database", "Tx"]

Row = Sequence[Any]
T = TypeVar("T")


class Tx(Protocol):
    """One connection, inside or outside a transaction."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def copy_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows by the engine's fastest bulk path: ``sql`` is
        ``statements.bulk_insert`` of their table."""
        ...


class Database(Protocol):
    """A connected database of one engine."""

    engine: str
    """``sqlite`` or ``postgresql``: what the statements are compiled for."""
    url: str  # masked: safe to show
    statements_are_round_trips: bool
    """Whether each statement costs a round trip to a server (so reads are worth
    merging into one statement) or runs in process."""
    writers_take_turns: bool
    """Whether a write transaction excludes every other writer (SQLite's BEGIN
    IMMEDIATE), so a read-modify-write needs no lock of its own."""
    shards_by_conversation: bool
    """Whether the database keeps each conversation's rows in a shard of their own and
    the shared state in others (Citus): a statement reading both would not be routed
    to one shard, so shared state is read by a statement of its own."""
    one_statement_append: bool
    """Whether an append-only write runs as one statement (a data-modifying WITH,
    ``normalized._append_messages``): PostgreSQL, but not Citus, which cannot route
    an INSERT inside a WITH to one shard (it would run in two steps on the
    coordinator)."""
    delegates_calls: bool
    """Whether an append-only write and a windowed load run as one call of a function
    the database runs where the conversation's shard is (Citus: ``citus.APPEND_CALL``
    and ``citus.LOAD_CALL``), one round trip instead of one per statement."""

    async def connect(self, migrate: bool | None) -> None: ...

    async def close(self) -> None: ...

    async def run(self, body: Callable[[Tx], Coroutine[Any, Any, T]], *, write: bool) -> T:
        """``body(tx)`` in one write transaction when ``write`` (committed when it
        returns, rolled back when it raises), else on a connection outside any
        transaction (a read the adapter may run again on a connection found dead or a
        file found busy). The only way the backends reach the database. ``body`` does
        its I/O through ``tx`` only, so an adapter may run it whole elsewhere (SQLite:
        in the connection's thread, one hop per operation)."""
        ...

    def ts(self, value: datetime) -> Any:
        """A timestamp as this engine's parameter."""
        ...

    def ts_many(self, values: Sequence[datetime]) -> list[Any]:
        """``ts`` of each value (one call for the rows of a bulk insert)."""
        ...

    def ts_out(self, value: Any) -> datetime:
        """A timestamp column value as an aware UTC datetime."""
        ...

    def list_param(self, values: Sequence[Any]) -> Any:
        """A list as the parameter ``statements.any_of`` expects."""
        ...
