"""What every backend over a ``Database`` adapter shares: opening and closing it, the
key that names its data, and state shared across conversations (one table,
``shared_state``, the same for every layout)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from ...core import jsoncodec
from ...core.backend import Capability
from .database import Database, Tx
from .maintenance import SqlMaintenance
from .statements import statements_for

__all__ = ["DatabaseBackend", "shared_of"]


class DatabaseBackend(SqlMaintenance):
    """Base of the SQL backends (normalized and legacy-blob); each offers
    ``Maintenance`` for its database."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, db: Database, *, migrate: bool | None) -> None:
        self._db = db
        self._sql = statements_for(db.engine)
        self._migrate = migrate

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._db.url}>"

    @property
    def data_key(self) -> str:
        """The layout and the database (masked URL): another backend object on the
        same database has the same key."""
        return f"{self.name} {self._db.url}"

    async def open(self) -> None:
        """Connect, migrating where that is the backend's default."""
        await self._db.connect(self._migrate)

    async def close(self) -> None:
        """Release the connections. Idempotent."""
        await self._db.close()

    # -- shared state ----------------------------------------------------------------

    async def read_shared(self, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        """The shared state of each namespace, in one statement."""
        return await self._db.run(lambda tx: self._read_shared(tx, namespaces), write=False)

    async def write_shared(
        self, set_shared: dict[str, dict[str, str]], delete_shared: dict[str, list[str]]
    ) -> None:
        """Set and delete shared state keys in one transaction."""
        now = datetime.now(UTC)

        async def body(tx: Tx) -> None:
            await self._write_shared(tx, set_shared, delete_shared, now)

        await self._db.run(body, write=True)

    async def _read_shared(self, tx: Tx, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        statement = self._sql.get("compile.select_shared")
        rows = await tx.fetch(statement.sql, self._db.list_param(sorted(namespaces)))
        return shared_of(rows, namespaces)

    async def _write_shared(
        self,
        tx: Tx,
        set_shared: dict[str, dict[str, str]],
        delete_shared: dict[str, list[str]],
        now: datetime,
    ) -> None:
        """A write plan's shared-state changes, in the caller's transaction."""
        db = self._db
        for namespace, keys in delete_shared.items():
            await tx.execute(
                self._sql.get("compile.delete_shared").sql, namespace, db.list_param(sorted(keys))
            )
        if set_shared:
            stamp = db.ts(now)
            await tx.executemany(
                self._sql.get("compile.upsert_shared").sql,
                [
                    (namespace, key, value, stamp)
                    for namespace, values in set_shared.items()
                    for key, value in values.items()
                ],
            )


def shared_of(
    rows: Iterable[Sequence[Any]], namespaces: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """``{namespace: {key: value}}`` of (namespace, key, value JSON text) rows, with
    every namespace asked for."""
    shared: dict[str, dict[str, Any]] = {namespace: {} for namespace in sorted(namespaces)}
    loads = jsoncodec.loads
    for namespace, key, value in rows:
        shared[namespace][key] = loads(value)
    return shared
