"""Legacy-blob backend: the old layout, one JSON document per save in
``memory_chunks.content``, the newest row read back.

URL: a ``sqlite:///file.db`` or a ``postgresql://`` URL (same drivers, options and
migrations as the ``sqlite`` and ``postgres`` backends).

It exists to read, compare and copy existing data without loss, and as the baseline
the benchmarks beat. Every write parses the newest document, applies the change in
Python and inserts a whole new document (O(history) per write, and every snapshot
stays on disk); loads parse the whole document and filter in Python, giving the same
answers as the normalized backends. Differences that the old layout forces: versions
count the stored snapshots; context item ids are positions in the document, so they
shift after a removal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from ..core import jsoncodec
from ..core.backend import Capability, ConversationInfo, StoredView, WritePlan, WriteResult
from ..core.config import backend_for_url
from ..core.errors import ConversationNotFound, CorruptState, VersionConflict
from ..core.hookspecs import BackendSpec, hookimpl
from ..core.model import AgentState, Message
from ..core.query import LoadOptions
from .sql.base import DatabaseBackend
from .sql.database import Database, Tx
from .sql.statements import prefix_end

__all__ = ["LegacyBlobBackend"]


def open_database(url: str, **options: Any) -> Database:
    """The SQLite or PostgreSQL adapter for ``url``."""
    if backend_for_url(url) == "postgres":
        from .postgres import PostgresDatabase

        return PostgresDatabase(url, **options)
    from .sqlite import SqliteDatabase

    return SqliteDatabase(url, **options)


def parse_document(conversation_id: str, content: str) -> AgentState:
    """A stored document as a whole state; CorruptState if it is not one."""
    try:
        return AgentState.from_dict(jsoncodec.loads(content))
    except (ValueError, TypeError) as exc:  # orjson's JSONDecodeError and ValidationError
        raise CorruptState(conversation_id, str(exc)) from exc


class LegacyBlobBackend(DatabaseBackend):
    """The one-JSON-document-per-save layout (see the module docstring)."""

    name: ClassVar[str] = "legacy-blob"
    # Not stable item ids (they are positions), not incremental (a whole document per
    # write).
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.PERSISTENT})

    def __init__(self, url: str, *, migrate: bool | None = None, **options: Any) -> None:
        super().__init__(open_database(url, **options), migrate=migrate)

    async def _newest(
        self, tx: Tx, conversation_id: str, user_id: str | None
    ) -> tuple[str | None, AgentState, datetime, int, datetime] | None:
        """(owner, whole state, updated_at, version, created_at) or None."""
        statement = self._sql.get("legacy_sql.newest", user_id is not None)
        values = {"conversation_id": conversation_id, "user_id": user_id}
        row = await tx.fetchrow(statement.sql, *statement.args(values))
        if row is None:
            return None
        owner, content, updated_at, count, first_at = row
        state = parse_document(conversation_id, content)
        return owner, state, self._ts(updated_at), count, self._ts(first_at)

    def _ts(self, value: Any) -> datetime:
        """A row's ``created_at``, aware: the old system may have written naive times
        (SQLite's CURRENT_TIMESTAMP), read as UTC like a document's."""
        at = self._db.ts_out(value)
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """The newest document, filtered in Python as ``options`` say (and the shared
        state asked for, in the same operation)."""
        namespaces = options.shared

        async def body(tx: Tx) -> tuple[Any, dict[str, dict[str, Any]] | None]:
            newest = await self._newest(tx, conversation_id, user_id)
            if newest is None or namespaces is None:
                return newest, None
            return newest, await self._read_shared(tx, namespaces)

        newest, shared = await self._db.run(body, write=False)
        if newest is None:
            return None
        owner, whole, updated_at, version, created_at = newest
        return StoredView.select(
            whole,
            options,
            user_id=owner,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            shared=shared,
        )

    async def write(
        self, conversation_id: str, plan: WritePlan, *, user_id: str | None
    ) -> WriteResult:
        """Read the newest document, apply ``plan`` to it, insert the result."""
        new, owner, version, created_at, now, popped = await self._write(
            conversation_id, plan, user_id
        )
        n_messages = len(new.conversation_history)
        return WriteResult(
            version=version,
            message_count=n_messages,
            user_id=owner,
            created_at=created_at,
            updated_at=now,
            first_seq=n_messages - len(plan.append_messages),
            first_item_id=len(new.memory_context) - len(plan.add_items),
            popped=popped,
        )

    async def _write(
        self,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
    ) -> tuple[AgentState, str | None, int, datetime, datetime, list[Message]]:
        db = self._db
        expected_version = plan.expected_version
        now = datetime.now(UTC)

        # A closure run by db.run (SQLite runs it whole in its connection's thread).
        async def body(tx: Tx) -> tuple[AgentState, str | None, int, datetime, list[Message]]:
            if not db.writers_take_turns:
                # Serialise writers of one conversation: read-modify-write of a document.
                await tx.fetchrow(
                    self._sql.get("legacy_sql.lock_conversation").sql, conversation_id
                )
            newest = await self._newest(tx, conversation_id, None)
            popped: list[Message] = []
            if newest is None:
                if not (plan.replace or plan.create) or expected_version not in (None, 0):
                    raise ConversationNotFound(conversation_id)
                stored, owner, version, created_at = None, user_id, 0, now
            else:
                owner, stored, _, version, created_at = newest
                if owner is not None and user_id is not None and owner != user_id:
                    raise ConversationNotFound(conversation_id)
                if expected_version is not None and expected_version != version:
                    raise VersionConflict(conversation_id, expected_version, version)
                if plan.expected_count not in (None, len(stored.conversation_history)):
                    raise VersionConflict(conversation_id, plan.base_version, version)
                # Ids are positions: a removal by another writer since this state was
                # loaded shifts them, and removing by id would drop the wrong item.
                items = stored.memory_context
                for i, loaded in zip(plan.remove_item_ids, plan.removed_items, strict=False):
                    if i >= len(items) or items[i] != loaded:
                        raise VersionConflict(conversation_id, plan.base_version, version)
                if plan.pop_messages:
                    history = stored.conversation_history
                    popped = history[max(0, len(history) - plan.pop_messages) :]
            new = plan.apply_to(stored, first_item_id=0)
            # Item ids are positions in the document.
            new.memory_context = [c.with_id(i) for i, c in enumerate(new.memory_context)]
            insert = self._sql.get("legacy_sql.insert")
            values = {
                "conversation_id": conversation_id,
                "owner": owner,
                "content": jsoncodec.dumps(new.to_dict()),
                "now": db.ts(now),
            }
            await tx.execute(insert.sql, *insert.args(values))
            if plan.set_shared or plan.delete_shared:
                await self._write_shared(tx, plan.set_shared, plan.delete_shared, now)
            return new, owner, version, created_at, popped

        new, owner, version, created_at, popped = await db.run(body, write=True)
        return new, owner, version + 1, created_at, now, popped

    async def delete(self, conversation_id: str, *, user_id: str | None) -> bool:
        """Delete every stored document of the conversation."""
        statement = self._sql.get("legacy_sql.delete", user_id is not None)
        args = statement.args({"conversation_id": conversation_id, "user_id": user_id})
        deleted = await self._db.run(lambda tx: tx.execute(statement.sql, *args), write=True)
        return deleted > 0

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
        """The newest document of each conversation. In id order the database pages;
        newest first, every conversation that matches is read and sorted in Python
        (the old layout has no column to sort by)."""
        by_id = order == "id"
        end = None if prefix is None else prefix_end(prefix)
        statement = self._sql.get(
            "legacy_sql.list",
            user_id is not None,
            after is not None and by_id,
            prefix is not None,
            end is not None,
            by_id,
        )
        values = {"user_id": user_id, "after": after, "limit": limit, "prefix": prefix}
        values["prefix_end"] = end
        args = statement.args(values)
        rows = await self._db.run(lambda tx: tx.fetch(statement.sql, *args), write=False)
        ts_out = self._ts
        result = []
        for cid, owner, content, updated_at, count, first_at in rows:
            metadata: dict[str, Any] | None = None
            try:
                document = jsoncodec.loads(content)
                message_count = len(document.get("conversation_history", []))
                if with_metadata:
                    metadata = dict(document.get("metadata", {}))
            except (ValueError, AttributeError, TypeError):
                message_count = 0  # corrupt: listed, and load_state says why
                metadata = {} if with_metadata else None
            result.append(
                ConversationInfo(
                    cid,
                    owner,
                    count,
                    message_count,
                    ts_out(first_at),
                    ts_out(updated_at),
                    metadata,
                )
            )
        if by_id:
            return result
        result.sort(key=lambda c: c.conversation_id)
        result.sort(key=lambda c: c.updated_at, reverse=True)
        if after is not None:
            at = next((i for i, c in enumerate(result) if c.conversation_id == after), None)
            result = [] if at is None else result[at + 1 :]
        return result[:limit]


def _factory(url: str | None, *, registry: object = None, **options: Any) -> LegacyBlobBackend:
    from ..core.config import DEFAULT_SQLITE_URL

    return LegacyBlobBackend(url or DEFAULT_SQLITE_URL, **options)


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="legacy-blob",
            factory=_factory,
            description="the old layout: one JSON document per save in memory_chunks "
            "(SQLite or PostgreSQL URL); for reading, comparing and copying old data",
            url_schemes=("sqlite", "postgresql"),
        )
    ]
