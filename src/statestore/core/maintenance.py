"""Engine-level upkeep a backend may offer: table sizes, reclaiming space.

``Maintenance`` is optional (a backend without a database of its own, such as one
that wraps others, has nothing to offer); ``statestore stats`` and ``statestore prune
--vacuum`` ask the backend for it with ``maintenance_of(store)``, so each engine
answers its own way (SQLite's dbstat, PostgreSQL's ``pg_total_relation_size``, a
distributed engine's shard sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import StateStoreError

__all__ = ["Maintenance", "StoreStats", "maintenance_of"]


@dataclass(slots=True)
class StoreStats:
    """Rows and bytes per table and the largest conversations of one database."""

    engine: str
    rows: dict[str, int] = field(default_factory=dict)
    """Rows per statestore table present in the database (normalized and legacy)."""
    bytes: dict[str, int] = field(default_factory=dict)
    """Bytes per table, indexes included, where the engine can tell."""
    conversations: int = 0
    legacy_conversations: int = 0
    largest: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(conversation_id, messages, context items, content bytes of its messages)."""
    largest_legacy: list[tuple[str, int, int]] = field(default_factory=list)
    """(conversation_id, snapshots, bytes of all its snapshots) of the legacy layout."""

    def as_json(self) -> dict[str, Any]:
        """What ``statestore stats --json`` prints."""
        return {
            "engine": self.engine,
            "conversations": self.conversations,
            "legacy_conversations": self.legacy_conversations,
            "tables": {t: {"rows": self.rows[t], "bytes": self.bytes.get(t)} for t in self.rows},
            "largest": [
                {"conversation_id": c, "messages": m, "context_items": i, "content_bytes": b}
                for c, m, i, b in self.largest
            ],
            "largest_legacy": [
                {"conversation_id": c, "snapshots": n, "bytes": b}
                for c, n, b in self.largest_legacy
            ],
        }


@runtime_checkable
class Maintenance(Protocol):
    """What an open backend can say about, and do to, the database it stores in."""

    async def storage_stats(self, *, top: int = 10) -> StoreStats:
        """Rows and bytes per table, conversation counts and the ``top`` largest
        conversations of both layouts."""
        ...

    def vacuum_advice(self) -> str:
        """How freed space is reused on this engine, and what ``vacuum()`` would do."""
        ...

    async def vacuum(self) -> str:
        """Reclaim space and refresh the planner's statistics now; says what was done."""
        ...


def maintenance_of(store: object) -> Maintenance:
    """The ``Maintenance`` of an open store (or of the backend it holds as
    ``backend``), or a StateStoreError naming the backend."""
    for candidate in (store, getattr(store, "backend", None)):
        if isinstance(candidate, Maintenance):
            return candidate
    name = getattr(store, "name", type(store).__name__)
    raise StateStoreError(f"the {name} backend offers no table statistics or vacuum")
