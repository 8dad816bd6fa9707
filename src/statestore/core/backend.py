"""The StorageBackend protocol every backend implements, and its result types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Protocol, Self, runtime_checkable

from .model import AgentState
from .query import LoadOptions, StatePatch

__all__ = ["StorageBackend", "SaveResult", "ConversationInfo"]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a write left stored."""

    conversation_id: str
    version: int
    message_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One row of ``list_conversations``."""

    conversation_id: str
    user_id: str | None
    version: int
    message_count: int
    created_at: datetime
    updated_at: datetime


@runtime_checkable
class StorageBackend(Protocol):
    """Persist agent conversation state. Backends are async context managers: entering
    connects (and migrates, where that is the backend's default), leaving closes.

    Invariants (checked by ``statestore.testing``): round trip; appends are O(new);
    partial updates; atomic writes; versions with optimistic concurrency; ownership by
    user; the same answers for the same LoadOptions on every backend.
    """

    name: ClassVar[str]

    async def save_state(
        self,
        conversation_id: str,
        state: AgentState,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        """Store ``state``. A state loaded from (or saved to) this conversation writes
        only what changed; any other state replaces what is stored. ``expected_version``
        0 means "must not exist yet"; a stale one raises VersionConflict. After the
        save, ``state`` tracks what is stored (seqs, item ids, version)."""
        ...

    async def load_state(
        self,
        conversation_id: str,
        options: LoadOptions = LoadOptions(),  # noqa: B008  # frozen, shared safely
        *,
        user_id: str | None = None,
    ) -> AgentState:
        """Load the parts ``options`` select; raise ConversationNotFound."""
        ...

    async def update_state(
        self,
        conversation_id: str,
        patch: StatePatch,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        """Apply ``patch`` in one transaction; raise ConversationNotFound."""
        ...

    async def delete_state(self, conversation_id: str, *, user_id: str | None = None) -> bool:
        """Delete a conversation; return whether one was deleted."""
        ...

    async def list_conversations(
        self, *, user_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        """Conversations ordered by id, ``limit`` at a time, starting after ``after``."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
