"""The StorageBackend protocol a backend implements, and every type it receives and
returns.

A user holds a ``Store`` (``core/store.py``); the Store validates input, plans each write
and keeps what a loaded state holds, then asks its backend to read a ``StoredView``
of one conversation, apply one ``WritePlan``, delete, list, read and write shared
state, and open/close. A third-party backend needs only the names exported from
``statestore``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from . import jsoncodec
from .model import AgentState, ContextItem, Message
from .query import LoadOptions

__all__ = [
    "Capability",
    "ConversationInfo",
    "SaveResult",
    "StorageBackend",
    "StoredView",
    "WritePlan",
    "WriteResult",
    "LIST_ORDERS",
]

SCALARS = ("user_input", "focus_areas", "step_count", "last_tool_result")
LIST_ORDERS = ("id", "updated")
"""``list_conversations`` orders: by id, or most recently updated first (ties by id)."""


class Capability(enum.StrEnum):
    """An optional ability a backend declares; contract tests that need one are
    skipped, visibly, on a backend without it."""

    STABLE_ITEM_IDS = "stable_item_ids"
    """Context item ids never change and are never reused within a conversation."""
    INCREMENTAL_WRITES = "incremental_writes"
    """A save of a loaded state writes only the rows that changed (O(new))."""
    PERSISTENT = "persistent"
    """Data outlives the store object: opening the same URL again finds it."""


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
    metadata: dict[str, Any] | None = None
    """The conversation's metadata when listed ``with_metadata``, else None."""


@dataclass(slots=True)
class WritePlan:
    """One write, as the Store planned it; a backend applies it in one transaction.

    ``replace``: the stored conversation becomes exactly this plan's content (what is
    stored beyond it is dropped), creating the conversation if needed; otherwise the
    changes apply to what is stored, and a missing conversation is
    ``ConversationNotFound``, unless ``create``: then it is created empty (owned by
    the caller) and the changes apply to it. The last ``pop_messages`` stored
    messages are removed (``WriteResult.popped``), then ``truncate_from`` applies,
    then messages are appended; they get seqs from the stored count on, added items
    ids from the backend's next unused id. Shared state changes in the same
    transaction.

    The backend raises, changing nothing:

    - ``ConversationNotFound`` if the conversation is missing (and the plan does not
      replace) or has an owner other than the ``user_id`` given with the plan;
    - ``VersionConflict`` if ``expected_version`` is set and is not the stored version
      (0: "must not exist yet"), or ``expected_count`` is set and is not the stored
      message count (the history was appended to since the state was loaded, so
      rewriting it from ``truncate_from`` would lose messages).
    """

    replace: bool
    scalars: dict[str, Any]
    """Content fields to set (``user_input``, ``focus_areas``, ``step_count``,
    ``last_tool_result``), as Python values."""
    append_messages: list[Message] = field(default_factory=list)
    truncate_from: int | None = None
    """Delete the stored messages with seq >= this before appending."""
    add_items: list[ContextItem] = field(default_factory=list)
    remove_item_ids: list[int] = field(default_factory=list)
    removed_items: list[ContextItem] = field(default_factory=list)
    """The items being removed, as the state loaded them (a save only), for a backend
    whose ids are positions to check they are still at those positions."""
    set_metadata: dict[str, str] = field(default_factory=dict)
    """Metadata keys to set, each value as JSON text."""
    delete_metadata: list[str] = field(default_factory=list)
    expected_version: int | None = None
    expected_count: int | None = None
    base_version: int = 0
    """The version the state was loaded (or last saved) at: the stale version a
    ``VersionConflict`` names when ``expected_count`` does not hold."""
    create: bool = False
    pop_messages: int = 0
    set_shared: dict[str, dict[str, str]] = field(default_factory=dict)
    """Shared state to set: ``{namespace: {key: value as JSON text}}``."""
    delete_shared: dict[str, list[str]] = field(default_factory=dict)
    operation: str = "save_state"
    """The Store method that planned it (``save_state``, ``update_state`` or
    ``pop_messages``), for a backend's own reports."""

    @property
    def rows(self) -> int:
        """Rows this plan writes or deletes (the observability hook's count)."""
        return (
            1
            + len(self.append_messages)
            + len(self.add_items)
            + len(self.remove_item_ids)
            + len(self.set_metadata)
            + len(self.delete_metadata)
            + self.pop_messages
            + sum(map(len, self.set_shared.values()))
            + sum(map(len, self.delete_shared.values()))
        )

    def apply_to(self, stored: AgentState | None, first_item_id: int) -> AgentState:
        """This plan applied in Python to a whole stored state (None: nothing stored),
        for a backend that keeps whole documents. Messages get seqs by position; added
        items ids from ``first_item_id`` on. ``stored`` is not modified."""
        if self.replace or stored is None:
            base = AgentState()
            history: list[Message] = []
            items: list[ContextItem] = []
            metadata: dict[str, Any] = {}
        else:
            base = stored
            history = list(stored.conversation_history)
            items = list(stored.memory_context)
            metadata = dict(stored.metadata)
        if self.pop_messages:
            del history[max(0, len(history) - self.pop_messages) :]
        if self.truncate_from is not None:
            del history[self.truncate_from :]
        start = len(history)
        history.extend(m.with_seq(start + i) for i, m in enumerate(self.append_messages))
        removed = set(self.remove_item_ids)
        items = [c for c in items if c.item_id not in removed]
        items.extend(c.with_id(first_item_id + i) for i, c in enumerate(self.add_items))
        for key in self.delete_metadata:
            metadata.pop(key, None)
        for key, encoded in self.set_metadata.items():
            metadata[key] = jsoncodec.loads(encoded)
        scalars = {name: getattr(base, name) for name in SCALARS}
        scalars.update(self.scalars)
        return AgentState(
            **scalars, conversation_history=history, memory_context=items, metadata=metadata
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a backend reports after applying a plan."""

    version: int
    message_count: int
    user_id: str | None
    """The conversation's owner (kept from the stored row, else the caller's)."""
    created_at: datetime
    updated_at: datetime
    first_seq: int
    """The seq given to the plan's first appended message."""
    first_item_id: int
    """The id given to the plan's first added item."""
    popped: list[Message] = field(default_factory=list)
    """The messages ``pop_messages`` removed, oldest first, with their seqs."""


@dataclass(slots=True)
class StoredView:
    """The part of one stored conversation a ``LoadOptions`` selects, with what the
    store manages about it. ``messages`` carry their seq, in seq order; ``items``
    their id, in saved order; ``message_count``: messages stored in all."""

    user_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    message_count: int
    user_input: str | None
    focus_areas: list[str]
    step_count: int
    last_tool_result: Any
    messages: list[Message]
    items: list[ContextItem]
    metadata: dict[str, Any]
    shared: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The shared state of each namespace ``options.shared`` names ({} if none)."""

    @classmethod
    def select(
        cls,
        whole: AgentState,
        options: LoadOptions,
        *,
        user_id: str | None,
        version: int,
        created_at: datetime,
        updated_at: datetime,
        shared: dict[str, dict[str, Any]] | None = None,
    ) -> StoredView:
        """The view ``options`` select of a whole stored state (messages with their
        seq, items with their id), answered in Python, for a backend that keeps whole
        documents. ``whole`` is not modified."""
        return cls(
            user_id=user_id,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            message_count=len(whole.conversation_history),
            user_input=whole.user_input,
            focus_areas=list(whole.focus_areas),
            step_count=whole.step_count,
            last_tool_result=whole.last_tool_result,
            messages=options.select_messages(whole.conversation_history),
            items=options.select_context(whole.memory_context, whole.focus_areas),
            metadata=dict(whole.metadata),
            shared=shared or {},
        )


@runtime_checkable
class StorageBackend(Protocol):
    """What a backend implements; users hold a ``Store`` over it.

    The Store has validated every argument (ids are non-empty strings, ``options`` a
    ``LoadOptions``, ``limit`` >= 1) before it calls the backend, and calls ``open``
    once before anything else. Errors: ``ConversationNotFound``, ``VersionConflict``
    (see ``WritePlan``), ``CorruptState`` for stored data that cannot be read,
    ``BackendUnavailable`` when the database cannot be reached.
    """

    @property
    def name(self) -> str:
        """The backend's registered name (what the operation hook reports)."""
        ...

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The optional abilities this backend has."""
        ...

    @property
    def data_key(self) -> str:
        """Names the data this backend reads and writes (layout and database): a state
        loaded through one backend is saved incrementally through any backend with the
        same key, and copied whole into any other."""
        ...

    async def open(self) -> None:
        """Connect (and migrate, where that is the backend's default)."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """What ``options`` select of one conversation, with the shared state of
        ``options.shared``, from one snapshot; None if it does not exist or belongs to
        another user than ``user_id``."""
        ...

    async def write(
        self, conversation_id: str, plan: WritePlan, *, user_id: str | None
    ) -> WriteResult:
        """Apply ``plan`` atomically (see ``WritePlan``). A new conversation is owned
        by ``user_id``."""
        ...

    async def delete(self, conversation_id: str, *, user_id: str | None) -> bool:
        """Delete a conversation (not one owned by another user); whether one was."""
        ...

    async def list_conversations(
        self,
        *,
        user_id: str | None,
        limit: int,
        after: str | None,
        prefix: str | None,
        order: str,
        with_metadata: bool,
    ) -> Sequence[ConversationInfo]:
        """At most ``limit`` conversations (of ``user_id``, if given; whose id starts
        with ``prefix``, if given) in ``order`` (one of ``LIST_ORDERS``), starting after
        the conversation ``after`` (the last of the previous page), each with its
        metadata if ``with_metadata``."""
        ...

    async def read_shared(self, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        """The shared state of each namespace, one snapshot ({} for one with none)."""
        ...

    async def write_shared(
        self, set_shared: dict[str, dict[str, str]], delete_shared: dict[str, list[str]]
    ) -> None:
        """Set (values as JSON text) and delete shared state keys, in one
        transaction."""
        ...
