"""What a benchmark runs against: a registered backend through the public API
(``StoreSubject``). The repository's ``benchmarks/`` adds the raw-driver baseline, a
subject of its own on the same schema.

Subjects offer the same few operations, so each scenario is written once. A subject
also empties its database (``reset``) and measures what it stores
(``storage_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.maintenance import maintenance_of
from ..core.model import AgentState, Message
from ..core.query import LoadOptions, StatePatch
from ..core.registry import default_registry
from ..core.store import Store

__all__ = ["Storage", "StoreSubject", "Subject", "Target", "make_subject"]


@dataclass(frozen=True, slots=True)
class Target:
    """One backend on one engine."""

    backend: str
    engine: str  # "sqlite" or "postgresql"

    @property
    def id(self) -> str:
        """``sqlite``, ``postgres``, ``legacy-blob[sqlite]``, ... (the ids of the test
        suite's ``backend_target``); a name no backend has (``raw``) gets its engine."""
        backends = default_registry().backends()
        if self.backend in backends and len(backends[self.backend].spec.url_schemes) == 1:
            return self.backend
        return f"{self.backend}[{self.engine}]"

    @property
    def is_legacy(self) -> bool:
        return self.backend == "legacy-blob"


class Subject(Protocol):
    """The operations the scenarios time, plus set-up and measurement."""

    target: Target

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None:
        """Empty every table (storage measured from here on is this run's only)."""
        ...

    async def storage_bytes(self) -> int:
        """Bytes the tables take beyond the emptied schema."""
        ...

    async def save_new(self, conversation_id: str, state: AgentState) -> None:
        """Save a never-saved state as a new conversation."""
        ...

    async def append(
        self, conversation_id: str, messages: Sequence[Message], step_count: int | None = None
    ) -> None:
        """Append messages (and set step_count) without loading."""
        ...

    async def set_step(self, conversation_id: str, step_count: int) -> None: ...

    async def load(self, conversation_id: str, options: LoadOptions) -> object: ...

    def counts(self, loaded: object) -> tuple[int, int]:
        """(messages, context items) in what ``load`` returned."""
        ...

    async def load_for_save(self, conversation_id: str) -> AgentState | None:
        """The whole state, loaded to be extended and saved (``save_turn``)."""
        ...

    async def save_turn(
        self, conversation_id: str, state: AgentState | None, new: Sequence[Message]
    ) -> None:
        """Save ``state`` (from ``load_for_save``) with the messages ``new`` added."""
        ...

    async def message_count(self, conversation_id: str) -> int: ...


class Storage(Protocol):
    """Another way to empty a subject's database and measure it (``benchmarks/``
    measures every subject, the raw baseline included, with the same one)."""

    async def reset(self) -> None:
        """Empty every table."""
        ...

    async def size(self) -> int:
        """Bytes the database takes."""
        ...


class StoreSubject:
    """A registered backend, opened with ``open_store`` and used as an application
    would. Emptied through the public API (every conversation deleted, then the
    backend's ``Maintenance.vacuum``), its storage measured by the backend
    (``Maintenance.storage_stats``), unless a ``Storage`` is given."""

    def __init__(
        self, target: Target, url: str, *, storage: Storage | None = None, **options: Any
    ) -> None:
        self.target = target
        self.url = url
        self._options = options
        self._storage = storage
        self._store: Store | None = None
        self._empty = 0

    @property
    def store(self) -> Store:
        assert self._store is not None, "open() first"
        return self._store

    async def open(self) -> None:
        if self._store is None:
            store = default_registry().open_store(self.target.backend, self.url, **self._options)
            await store.__aenter__()
            self._store = store
        await self.reset()

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def reset(self) -> None:
        if self._storage is not None:
            await self._storage.reset()
            self._empty = await self._storage.size()
            return
        while page := await self.store.list_conversations(limit=500):
            for info in page:
                await self.store.delete_state(info.conversation_id)
        await maintenance_of(self.store).vacuum()
        self._empty = await self._size()

    async def storage_bytes(self) -> int:
        return await self._size() - self._empty

    async def _size(self) -> int:
        if self._storage is not None:
            return await self._storage.size()
        stats = await maintenance_of(self.store).storage_stats(top=0)
        return sum(stats.bytes.values())

    async def save_new(self, conversation_id: str, state: AgentState) -> None:
        await self.store.save_state(conversation_id, state)

    async def append(
        self, conversation_id: str, messages: Sequence[Message], step_count: int | None = None
    ) -> None:
        if step_count is None:
            patch = StatePatch(append_messages=list(messages))
        else:
            patch = StatePatch(append_messages=list(messages), step_count=step_count)
        await self.store.update_state(conversation_id, patch)

    async def set_step(self, conversation_id: str, step_count: int) -> None:
        await self.store.update_state(conversation_id, StatePatch(step_count=step_count))

    async def load(self, conversation_id: str, options: LoadOptions) -> object:
        return await self.store.load_state(conversation_id, options)

    def counts(self, loaded: object) -> tuple[int, int]:
        assert isinstance(loaded, AgentState), type(loaded).__name__
        return len(loaded.conversation_history), len(loaded.memory_context)

    async def load_for_save(self, conversation_id: str) -> AgentState | None:
        return await self.store.load_state(conversation_id)

    async def save_turn(
        self, conversation_id: str, state: AgentState | None, new: Sequence[Message]
    ) -> None:
        assert state is not None
        state.conversation_history.extend(new)
        await self.store.save_state(conversation_id, state)

    async def message_count(self, conversation_id: str) -> int:
        state = await self.store.load_state(conversation_id, LoadOptions(last_messages=0))
        return state.history_total


def make_subject(target: Target, url: str, **options: Any) -> Subject:
    """The subject for ``target`` on the database at ``url`` (not yet open)."""
    return StoreSubject(target, url, **options)
