"""An in-memory statestore backend, written as a model of how to write one.

URL: none (``open_store("memory")``); every store object holds its own data, which is
gone when it is dropped: for tests and examples, not production.

What a backend has to do, and what statestore gives it to do so:

- validate every argument before any work (``statestore.core.validation``);
- turn a save or a patch into a ``WritePlan`` (``statestore.core.changes.plan_save`` /
  ``plan_patch``), execute it atomically (here: ``apply_plan`` on a copy, under a lock),
  then ``after_save`` so the caller's state tracks what is stored;
- answer ``LoadOptions`` exactly like every other backend (``select_messages`` /
  ``select_context``), and record a ``Snapshot`` so the next save writes only changes;
- raise ``ConversationNotFound`` / ``VersionConflict`` / ``ValidationError`` as the
  protocol says, and report each operation to the observer (metrics hook).

Each conversation is kept as its JSON document (``AgentState.to_dict()``), so a caller
mutating a loaded state can never change what is stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

from statestore import (
    AgentState,
    BackendSpec,
    ConversationInfo,
    ConversationNotFound,
    LoadOptions,
    SaveResult,
    StatePatch,
    ValidationError,
    VersionConflict,
    hookimpl,
)
from statestore.core import jsoncodec
from statestore.core.changes import (
    WritePlan,
    after_save,
    apply_plan,
    check_truncate,
    plan_patch,
    plan_save,
    view_of,
)
from statestore.core.observe import Observer
from statestore.core.validation import check_id, check_int, check_optional_id, check_optional_int

__all__ = ["MemoryBackend"]

_ALL = LoadOptions()


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
        whole = AgentState.from_dict(jsoncodec.loads(self.document))
        whole.memory_context = [
            c.with_id(i) for c, i in zip(whole.memory_context, self.item_ids, strict=True)
        ]
        return whole


class MemoryBackend:
    """Conversations in a dict, one asyncio.Lock for writes."""

    name: ClassVar[str] = "memory"

    def __init__(self, *, observer: Observer | None = None) -> None:
        self._data: dict[str, _Record] = {}
        self._lock = asyncio.Lock()
        self._observer = observer or Observer(self.name)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release."""

    def _visible(self, conversation_id: str, user_id: str | None) -> _Record | None:
        record = self._data.get(conversation_id)
        if record is None or (record.owner not in (None, user_id) and user_id is not None):
            return None
        return record

    async def load_state(
        self, conversation_id: str, options: LoadOptions = _ALL, *, user_id: str | None = None
    ) -> AgentState:
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        if not isinstance(options, LoadOptions):
            raise ValidationError("options", f"must be LoadOptions, not {type(options).__name__}")
        record = self._visible(conversation_id, user_id)
        if record is None:
            raise ConversationNotFound(conversation_id)
        state = view_of(
            record.state(),
            options,
            conversation_id=conversation_id,
            user_id=record.owner,
            version=record.version,
            created_at=record.created_at,
            updated_at=record.updated_at,
            store=self,
        )
        self._observer.done("load_state", conversation_id, started, 1)
        return state

    async def save_state(
        self,
        conversation_id: str,
        state: AgentState,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        expected_version = check_optional_int(expected_version, "expected_version")
        plan = plan_save(state, conversation_id, self)
        record, first_item_id = await self._write(conversation_id, plan, user_id, expected_version)
        message_count = record.message_count
        after_save(
            state,
            conversation_id,
            plan,
            first_seq=message_count - len(plan.append_messages),
            first_item_id=first_item_id,
            version=record.version,
            message_count=message_count,
            user_id=record.owner,
            created_at=record.created_at,
            updated_at=record.updated_at,
            store=self,
        )
        self._observer.done("save_state", conversation_id, started, plan.rows)
        return SaveResult(conversation_id, record.version, message_count, record.updated_at)

    async def update_state(
        self,
        conversation_id: str,
        patch: StatePatch,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        expected_version = check_optional_int(expected_version, "expected_version")
        plan = plan_patch(patch)
        record, _ = await self._write(conversation_id, plan, user_id, expected_version)
        self._observer.done("update_state", conversation_id, started, plan.rows)
        return SaveResult(conversation_id, record.version, record.message_count, record.updated_at)

    async def _write(
        self, conversation_id: str, plan: WritePlan, user_id: str | None, expected: int | None
    ) -> tuple[_Record, int]:
        """Apply ``plan`` atomically: build the new record aside, then swap it in.
        Returns the record and the id given to the first added item."""
        async with self._lock:
            now = datetime.now(UTC)
            old = self._data.get(conversation_id)
            if old is None:
                if not plan.replace or expected not in (None, 0):
                    raise ConversationNotFound(conversation_id)
                stored, owner, version, created_at, first_id = None, user_id, 0, now, 0
            else:
                if old.owner is not None and user_id not in (None, old.owner):
                    raise ConversationNotFound(conversation_id)
                if expected is not None and expected != old.version:
                    raise VersionConflict(conversation_id, expected, old.version)
                # An edited history from a copy others appended to since: refuse.
                check_truncate(plan, conversation_id, old.message_count, old.version)
                stored, owner, version = old.state(), old.owner, old.version
                created_at, first_id = old.created_at, old.next_item_id
            new = apply_plan(stored, plan, first_item_id=first_id)
            record = _Record(
                owner=owner,
                document=jsoncodec.dumps(new.to_dict()),
                item_ids=[c.item_id for c in new.memory_context if c.item_id is not None],
                message_count=len(new.conversation_history),
                next_item_id=first_id + len(plan.add_items),
                version=version + 1,
                created_at=created_at,
                updated_at=now,
            )
            self._data[conversation_id] = record
        return record, first_id

    async def delete_state(self, conversation_id: str, *, user_id: str | None = None) -> bool:
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        async with self._lock:
            deleted = self._visible(conversation_id, user_id) is not None
            if deleted:
                del self._data[conversation_id]
        self._observer.done("delete_state", conversation_id, started, int(deleted))
        return deleted

    async def list_conversations(
        self, *, user_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        started = time.perf_counter()
        user_id = check_optional_id(user_id, "user_id")
        check_int(limit, "limit", minimum=1)
        after = check_optional_id(after, "after")
        result = []
        for cid in sorted(self._data):
            record = self._data[cid]
            if (after is not None and cid <= after) or (user_id and record.owner != user_id):
                continue
            result.append(
                ConversationInfo(
                    cid,
                    record.owner,
                    record.version,
                    record.message_count,
                    record.created_at,
                    record.updated_at,
                )
            )
            if len(result) == limit:
                break
        self._observer.done("list_conversations", None, started, len(result))
        return result


def _factory(url: str | None, *, observer: Observer | None = None, **options: Any) -> MemoryBackend:
    # ``migrate`` and ``registry`` are passed to every factory; nothing to migrate here.
    options.pop("migrate", None)
    options.pop("registry", None)
    if url is not None or options:
        raise ValidationError("url", "the memory backend takes no URL and no options")
    return MemoryBackend(observer=observer)


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    """Offer the ``memory`` backend (found through this package's entry point)."""
    return [
        BackendSpec(
            name="memory",
            factory=_factory,
            description="in-process dicts, gone when the store is dropped (tests, examples)",
            url_schemes=(),
            capabilities=frozenset({"stable_item_ids"}),
        )
    ]
