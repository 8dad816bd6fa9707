"""An in-memory statestore backend, written as a model of how to write one.

URL: none (``open_store("memory")``); every store object holds its own data, which is
gone when it is dropped: for tests and examples, not production.

A backend implements ``statestore.StorageBackend`` and nothing else; the ``Store``
users hold over it validates every argument, plans each write (only what changed, for
a state it loaded) and reports each operation. What is left here:

- ``read``: the ``StoredView`` a ``LoadOptions`` selects of one conversation, or None
  (``StoredView.select`` answers the options in Python for a backend that keeps whole
  states);
- ``write``: apply a ``WritePlan`` atomically (``WritePlan.apply_to`` does it on a whole
  state), raising ``ConversationNotFound`` / ``VersionConflict`` as ``WritePlan`` says,
  and return a ``WriteResult``;
- ``delete``, ``list_conversations``, ``read_shared``/``write_shared`` (state shared
  across conversations, written in a plan's transaction too), ``open``, ``close``, and
  the ``capabilities`` it has.

Every name it uses is exported from ``statestore``. Each conversation is kept as its
JSON document (``AgentState.to_dict()``), so a caller mutating a loaded state can never
change what is stored.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from statestore import (
    AgentState,
    BackendSpec,
    Capability,
    ConversationInfo,
    ConversationNotFound,
    LoadOptions,
    StoredView,
    ValidationError,
    VersionConflict,
    WritePlan,
    WriteResult,
    hookimpl,
)

__all__ = ["MemoryBackend"]


@dataclass
class _Record:
    owner: str | None
    document: str  # AgentState.to_dict() as JSON
    item_ids: list[int]  # ids of memory_context, in order
    message_count: int
    next_item_id: int  # ids are never reused
    version: int
    created_at: datetime
    updated_at: datetime

    def state(self) -> AgentState:
        """A fresh copy of the whole stored state (messages carry their seq)."""
        whole = AgentState.from_dict(json.loads(self.document))
        whole.memory_context = [
            c.with_id(i) for c, i in zip(whole.memory_context, self.item_ids, strict=True)
        ]
        return whole


class MemoryBackend:
    """Conversations in a dict, behind one lock.

    A store serves callers on any event loop and thread (``asyncio.run`` in a
    synchronous method, worker threads with loops of their own), so the lock is a
    ``threading.Lock``, held only by code that never awaits: an ``asyncio.Lock``
    belongs to one loop, and a waiter on another would never be woken."""

    name: ClassVar[str] = "memory"
    # Ids are kept apart from positions, so they are stable; not persistent (the data
    # lives in this object) and not incremental (each write re-encodes the document).
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.STABLE_ITEM_IDS})

    def __init__(self) -> None:
        self._data: dict[str, _Record] = {}
        self._shared: dict[str, dict[str, str]] = {}  # values as JSON text
        self._lock = threading.Lock()

    @property
    def data_key(self) -> str:
        """This object's own data: no other backend holds it."""
        return f"memory {id(self)}"

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    def _visible(self, conversation_id: str, user_id: str | None) -> _Record | None:
        record = self._data.get(conversation_id)
        if record is None or (record.owner not in (None, user_id) and user_id is not None):
            return None
        return record

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """The part ``options`` select of the stored document."""
        with self._lock:  # the record and the shared state of one moment
            record = self._visible(conversation_id, user_id)
            if record is None:
                return None
            shared = None if options.shared is None else self._read_shared(options.shared)
        return StoredView.select(
            record.state(),
            options,
            user_id=record.owner,
            version=record.version,
            created_at=record.created_at,
            updated_at=record.updated_at,
            shared=shared,
        )

    async def write(
        self, conversation_id: str, plan: WritePlan, *, user_id: str | None
    ) -> WriteResult:
        """Apply ``plan`` atomically: build the new record aside, then swap it in."""
        with self._lock:
            now = datetime.now(UTC)
            old = self._data.get(conversation_id)
            expected = plan.expected_version
            popped = []
            if old is None:
                if not (plan.replace or plan.create) or expected not in (None, 0):
                    raise ConversationNotFound(conversation_id)
                stored, owner, version, created_at, first_id = None, user_id, 0, now, 0
            else:
                if old.owner is not None and user_id not in (None, old.owner):
                    raise ConversationNotFound(conversation_id)
                if expected is not None and expected != old.version:
                    raise VersionConflict(conversation_id, expected, old.version)
                # An edited history from a copy others appended to since: refuse.
                if plan.expected_count not in (None, old.message_count):
                    raise VersionConflict(conversation_id, plan.base_version, old.version)
                stored, owner, version = old.state(), old.owner, old.version
                created_at, first_id = old.created_at, old.next_item_id
                if plan.pop_messages:
                    history = stored.conversation_history
                    popped = history[max(0, len(history) - plan.pop_messages) :]
            new = plan.apply_to(stored, first_item_id=first_id)
            record = _Record(
                owner=owner,
                document=json.dumps(new.to_dict()),
                item_ids=[c.item_id for c in new.memory_context if c.item_id is not None],
                message_count=len(new.conversation_history),
                next_item_id=first_id + len(plan.add_items),
                version=version + 1,
                created_at=created_at,
                updated_at=now,
            )
            self._data[conversation_id] = record
            self._write_shared(plan.set_shared, plan.delete_shared)
        return WriteResult(
            version=record.version,
            message_count=record.message_count,
            user_id=record.owner,
            created_at=record.created_at,
            updated_at=record.updated_at,
            first_seq=record.message_count - len(plan.append_messages),
            first_item_id=first_id,
            popped=popped,
        )

    async def delete(self, conversation_id: str, *, user_id: str | None) -> bool:
        """Forget a conversation."""
        with self._lock:
            deleted = self._visible(conversation_id, user_id) is not None
            if deleted:
                del self._data[conversation_id]
        return deleted

    async def list_conversations(
        self,
        *,
        user_id: str | None,
        limit: int,
        after: str | None,
        prefix: str | None,
        order: str,
        with_metadata: bool,
    ) -> list[ConversationInfo]:
        """Conversations in id order, or most recently updated first."""
        with self._lock:
            records = sorted(self._data.items())
        found = [
            ConversationInfo(
                cid,
                record.owner,
                record.version,
                record.message_count,
                record.created_at,
                record.updated_at,
                json.loads(record.document)["metadata"] if with_metadata else None,
            )
            for cid, record in records
            if (user_id is None or record.owner == user_id)
            and (prefix is None or cid.startswith(prefix))
        ]
        if order == "updated":
            found.sort(key=lambda c: c.updated_at, reverse=True)  # stable: ties by id
        if after is not None:
            if order == "id":
                found = [c for c in found if c.conversation_id > after]
            else:
                ids = [c.conversation_id for c in found]
                found = found[ids.index(after) + 1 :] if after in ids else []
        return found[:limit]

    async def read_shared(self, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        """The shared state of each namespace."""
        with self._lock:
            return self._read_shared(namespaces)

    async def write_shared(
        self, set_shared: dict[str, dict[str, str]], delete_shared: dict[str, list[str]]
    ) -> None:
        """Set and delete shared keys, at once."""
        with self._lock:
            self._write_shared(set_shared, delete_shared)

    def _read_shared(self, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        return {
            ns: {key: json.loads(value) for key, value in self._shared.get(ns, {}).items()}
            for ns in namespaces
        }

    def _write_shared(
        self, set_shared: dict[str, dict[str, str]], delete_shared: dict[str, list[str]]
    ) -> None:
        for namespace, keys in delete_shared.items():
            values = self._shared.get(namespace, {})
            for key in keys:
                values.pop(key, None)
        for namespace, new in set_shared.items():
            self._shared.setdefault(namespace, {}).update(new)


def _factory(url: str | None, **options: Any) -> MemoryBackend:
    # ``migrate`` and ``registry`` are passed to every factory; nothing to migrate here.
    options.pop("migrate", None)
    options.pop("registry", None)
    if url is not None or options:
        raise ValidationError("url", "the memory backend takes no URL and no options")
    return MemoryBackend()


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    """Offer the ``memory`` backend (found through this package's entry point)."""
    return [
        BackendSpec(
            name="memory",
            factory=_factory,
            description="in-process dicts, gone when the store is dropped (tests, examples)",
            url_schemes=(),
        )
    ]
