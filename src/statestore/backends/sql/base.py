"""What every backend over a ``Database`` adapter shares: opening and closing it, the
observer, and the key a loaded state's snapshot is tied to."""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Self

from ...core.observe import Observer
from .database import Database
from .maintenance import SqlMaintenance

__all__ = ["DatabaseBackend"]


class DatabaseBackend(SqlMaintenance):
    """Base of the SQL backends (normalized and legacy-blob); each offers
    ``Maintenance`` for its database."""

    name: ClassVar[str]

    def __init__(self, db: Database, *, migrate: bool | None, observer: Observer | None) -> None:
        self._db = db
        self._migrate = migrate
        self._observer = observer or Observer(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._db.url}>"

    @property
    def _store_key(self) -> str:
        """The data this store reads and writes (layout and database), which a loaded
        state's snapshot is tied to: another store object on the same database shares
        it, so a state may be saved through either incrementally."""
        return f"{self.name} {self._db.url}"

    async def __aenter__(self) -> Self:
        await self._db.connect(self._migrate)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the connections. Idempotent."""
        await self._db.close()
