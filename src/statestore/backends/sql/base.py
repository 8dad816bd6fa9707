"""What every backend over a ``Database`` adapter shares: opening and closing it, and
the key that names its data."""

from __future__ import annotations

from typing import ClassVar

from ...core.backend import Capability
from .database import Database
from .maintenance import SqlMaintenance
from .statements import statements_for

__all__ = ["DatabaseBackend"]


class DatabaseBackend(SqlMaintenance):
    """Base of the SQL backends (normalized and legacy-blob); each offers
    ``Maintenance`` for its database."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, db: Database, *, migrate: bool | None) -> None:
        self._db = db
        self._sql = statements_for(db.dialect)
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
