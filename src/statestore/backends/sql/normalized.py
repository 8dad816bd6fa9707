"""The normalized backend: one row per message, context item and metadata key.

A per-turn write costs O(new rows); loads turn ``LoadOptions`` into indexed SQL, with
nothing filtered after fetching. The SQL is shared by SQLite and PostgreSQL; where the
engines differ, the ``Database`` adapter says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from ...core import jsoncodec
from ...core.backend import (
    SCALARS,
    Capability,
    ConversationInfo,
    StoredView,
    WritePlan,
    WriteResult,
)
from ...core.errors import ConversationNotFound, CorruptState, VersionConflict
from ...core.model import AgentState, ContextItem, Message
from ...core.query import LoadOptions
from .base import DatabaseBackend, shared_of
from .citus import APPEND_ARGS, APPEND_CALL, LOAD_ARGS, LOAD_CALL
from .database import Tx
from .statements import prefix_end

__all__ = ["NormalizedBackend"]

# The tables a replacing save empties (the state row stays).
_TABLES_OF_A_CONVERSATION = ("conversation_messages", "memory_context_items", "memory_metadata")
# A message row as loaded has this many columns (seq ... payload), then in the UNION of
# ``normalized_sql.state_and_window`` the state row's (a test checks it against the
# table).
_STATE_AT = 8
# In the state row: the metadata aggregate, then the shared state when read with it.
_SHARED_AT = 10
# In a row of the delegated load (``citus.LOAD_CALL``): the item columns, after the
# message columns and the state row's (without shared state).
_ITEMS_AT = _STATE_AT + _SHARED_AT


def _seq_or_first(row: Sequence[Any]) -> int:
    seq: int | None = row[0]
    return -1 if seq is None else seq


def _split_state_and_window(
    rows: list[Sequence[Any]],
) -> tuple[Sequence[Any], list[Sequence[Any]]]:
    """The state row and the window's rows in seq order (each of its own columns),
    from the rows of ``normalized_sql.state_and_window`` in whatever order its UNION
    ALL gave them: only the state row has no seq."""
    rows.sort(key=_seq_or_first)
    return rows[0][_STATE_AT:], [r[:_STATE_AT] for r in rows[1:]]


# The scalars of a conversation a write creates (``WritePlan.create``) before its own.
_NEW_SCALARS = {name: getattr(AgentState(), name) for name in SCALARS}


def _new_message_arrays(msgs: Sequence[Message]) -> dict[str, list[Any]]:
    """The ``new_<column>`` array parameters of appended messages (the bulk append
    and Citus's delegated one)."""
    dumps = jsoncodec.dumps
    return {
        "new_role": [m.role for m in msgs],
        "new_content": [m.content for m in msgs],
        "new_message_type": [m.message_type for m in msgs],
        "new_tool_name": [m.tool_name for m in msgs],
        "new_created_at": [m.timestamp for m in msgs],
        "new_metadata": [dumps(m.metadata) if m.metadata else "{}" for m in msgs],
        "new_payload": [None if m.payload is None else dumps(m.payload) for m in msgs],
    }


class NormalizedBackend(DatabaseBackend):
    """The normalized layout over a ``Database`` adapter (see ``sqlite`` and
    ``postgres`` for the backends users open)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.STABLE_ITEM_IDS, Capability.INCREMENTAL_WRITES, Capability.PERSISTENT}
    )

    # -- writes ----------------------------------------------------------------------

    async def write(
        self, conversation_id: str, plan: WritePlan, *, user_id: str | None
    ) -> WriteResult:
        """Apply ``plan`` in one transaction (see ``WritePlan``)."""
        row, first_seq, first_item, popped = await self._write(
            conversation_id, plan, user_id, plan.expected_version
        )
        version, message_count, _, owner, created_at, updated_at = row
        return WriteResult(
            version, message_count, owner, created_at, updated_at, first_seq, first_item, popped
        )

    async def _write(
        self,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
    ) -> tuple[tuple[Any, ...], int, int, list[Message]]:
        """Run ``plan`` in one transaction. Returns (version, message_count,
        next_item_id, owner, created_at, updated_at), the seq of the first appended
        message, the id of the first added item and the popped messages."""
        db = self._db
        now = datetime.now(UTC)
        n_msgs = len(plan.append_messages)
        n_items = len(plan.add_items)
        if (
            (db.one_statement_append or db.delegates_calls)
            and not plan.replace
            and plan.truncate_from is None
            and not (plan.add_items or plan.remove_item_ids)
            and not (plan.set_metadata or plan.delete_metadata)
            and not (plan.pop_messages or plan.set_shared or plan.delete_shared)
        ):
            append = (
                self._append_in_one_statement
                if db.one_statement_append
                else self._append_in_one_call
            )
            fast = await db.run(
                lambda tx: append(tx, conversation_id, plan, user_id, expected_version, now),
                write=False,  # one statement: atomic on its own
            )
            if fast is not None:
                version, message_count, next_item_id, owner, created_at = fast
                return (
                    (version, message_count, next_item_id, owner, db.ts_out(created_at), now),
                    message_count - n_msgs,
                    next_item_id,
                    [],
                )
            # No row matched: the transaction below finds out why (and creates the
            # conversation, or raises).

        # A closure run by db.run (SQLite runs it whole in its connection's thread).
        async def body(tx: Tx) -> tuple[tuple[Any, ...], int, int, list[Message]]:
            row, created = await self._claim_state_row(
                tx, conversation_id, plan, user_id, expected_version, now
            )
            version, message_count, next_item_id, owner, created_at = row
            first_seq = message_count - n_msgs
            first_item = next_item_id - n_items
            sql = self._sql
            popped: list[Message] = []
            if plan.replace and not created:
                for table in _TABLES_OF_A_CONVERSATION:
                    await tx.execute(
                        sql.get("normalized_sql.delete_all_of", table).sql, conversation_id
                    )
            elif plan.truncate_from is not None:
                await tx.execute(
                    sql.get("normalized_sql.delete_messages_from").sql,
                    conversation_id,
                    plan.truncate_from,
                )
            elif plan.pop_messages and not created:
                rows = await tx.fetch(
                    sql.get("normalized_sql.pop_messages").sql, conversation_id, first_seq
                )
                popped = self._messages(sorted(rows, key=lambda r: r[0]))
            if plan.append_messages:
                stamps = db.ts_many([m.timestamp for m in plan.append_messages])
                dumps = jsoncodec.dumps
                await self._insert(
                    tx,
                    "conversation_messages",
                    [
                        (
                            conversation_id,
                            first_seq + i,
                            m.role,
                            m.content,
                            m.message_type,
                            m.tool_name,
                            stamps[i],
                            dumps(m.metadata) if m.metadata else "{}",
                            None if m.payload is None else dumps(m.payload),
                        )
                        for i, m in enumerate(plan.append_messages)
                    ],
                )
            if plan.remove_item_ids:
                await tx.execute(
                    sql.get("normalized_sql.delete_items").sql,
                    conversation_id,
                    db.list_param(plan.remove_item_ids),
                )
            if plan.add_items:
                stamps = db.ts_many([c.timestamp for c in plan.add_items])
                await self._insert(
                    tx,
                    "memory_context_items",
                    [
                        (
                            conversation_id,
                            first_item + i,
                            c.source,
                            c.content,
                            c.relevance_score,
                            c.context_type,
                            stamps[i],
                            jsoncodec.dumps(c.metadata),
                        )
                        for i, c in enumerate(plan.add_items)
                    ],
                )
            if plan.delete_metadata:
                await tx.execute(
                    sql.get("normalized_sql.delete_metadata").sql,
                    conversation_id,
                    db.list_param(plan.delete_metadata),
                )
            if plan.set_metadata:
                await tx.executemany(
                    sql.get("normalized_sql.upsert_metadata").sql,
                    [(conversation_id, key, value) for key, value in plan.set_metadata.items()],
                )
            if plan.set_shared or plan.delete_shared:
                await self._write_shared(tx, plan.set_shared, plan.delete_shared, now)
            row = (version, message_count, next_item_id, owner, created_at)
            return row, first_seq, first_item, popped

        result, first_seq, first_item, popped = await db.run(body, write=True)
        version, message_count, next_item_id, owner, created_at = result
        return (
            (version, message_count, next_item_id, owner, db.ts_out(created_at), now),
            first_seq,
            first_item,
            popped,
        )

    async def _insert(self, tx: Tx, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (values in the table's column order) into ``table``."""
        if len(rows) > 1:
            # The adapter's bulk path (PostgreSQL: one INSERT of arrays).
            await tx.copy_rows(self._sql.get("compile.bulk_insert", table).sql, rows)
        else:
            await tx.execute(self._sql.get("normalized_sql.insert_row", table).sql, *rows[0])

    async def _claim_state_row(
        self,
        tx: Tx,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> tuple[Sequence[Any], bool]:
        """Create or update the state row; return it (version, message_count,
        next_item_id, owner, created_at) and whether it was created. Raises
        ConversationNotFound or VersionConflict, which roll the transaction back."""
        # Most replacing saves create: try that first (one statement where UPDATE-miss,
        # probe, INSERT take three). Most writes that may create (``plan.create``) find
        # the conversation: they try the UPDATE first. Another pass happens only when a
        # concurrent writer created or deleted the row between our statements.
        can_create = (plan.replace or plan.create) and expected_version in (None, 0)
        insert_first = can_create and plan.replace
        version = 0
        for _ in range(3):
            if insert_first:
                insert = self._sql.get("normalized_sql.insert_state")
                values = dict(
                    zip(SCALARS, self._scalar_values(plan), strict=True),
                    conversation_id=conversation_id,
                    user_id=user_id,
                    message_count=len(plan.append_messages),
                    next_item_id=len(plan.add_items),
                    now=self._db.ts(now),
                )
                row = await tx.fetchrow(insert.sql, *insert.args(values))
                if row is not None:
                    return row, True
            row = await self._update_state_row(
                tx, conversation_id, plan, user_id, expected_version, now
            )
            if row is not None:
                return row, False
            probe = await tx.fetchrow(
                self._sql.get("normalized_sql.probe_state").sql, conversation_id
            )
            if probe is None:
                if can_create:
                    insert_first = True  # missing (or deleted since our INSERT found it)
                    continue
                raise ConversationNotFound(conversation_id)
            version, owner = probe
            if owner is not None and user_id is not None and owner != user_id:
                raise ConversationNotFound(conversation_id)
            if expected_version is not None or plan.expected_count is not None:
                break
            # Only a row created by a concurrent writer since our UPDATE makes it miss:
            # update that row, as if we had come second.
        stale = expected_version if expected_version is not None else plan.base_version
        raise VersionConflict(conversation_id, stale, version)

    def _scalar_values(self, plan: WritePlan) -> list[Any]:
        """The scalars of a state row the plan creates."""
        s = plan.scalars if plan.replace else {**_NEW_SCALARS, **plan.scalars}
        return [
            s["user_input"],
            jsoncodec.dumps(s["focus_areas"]),
            s["step_count"],
            jsoncodec.dumps(s["last_tool_result"]),
        ]

    async def _update_state_row(
        self,
        tx: Tx,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> Sequence[Any] | None:
        shape, values = self._update(conversation_id, plan, user_id, expected_version, now)
        statement = self._sql.get("normalized_sql.update_state", *shape)
        return await tx.fetchrow(statement.sql, *statement.args(values))

    def _update(
        self,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The shape of the UPDATE of the state row for ``plan`` (the arguments of
        ``_update_state``) and its parameter values."""
        n_msgs = len(plan.append_messages)
        values: dict[str, Any] = {
            "conversation_id": conversation_id,
            "set_updated_at": self._db.ts(now),
            "user_id": user_id,
            "expected_version": expected_version,
            "expected_count": plan.expected_count,
            "n_items": len(plan.add_items),
        }
        if plan.replace:
            count = "set"
            values["set_message_count"] = n_msgs
        elif plan.truncate_from is not None:
            count = "set"
            values["set_message_count"] = plan.truncate_from + n_msgs
        elif plan.pop_messages:
            count = "pop"
            values["n_pop"] = plan.pop_messages
            values["n_messages"] = n_msgs
        elif n_msgs:
            count = "add"
            values["n_messages"] = n_msgs
        else:
            count = ""
        for name, value in plan.scalars.items():
            if name in ("focus_areas", "last_tool_result"):
                value = jsoncodec.dumps(value)
            values["set_" + name] = value
        shape = (
            count,
            bool(plan.add_items),
            tuple(plan.scalars),
            user_id is not None,
            expected_version is not None,
            plan.expected_count is not None,
        )
        return shape, values

    async def _append_in_one_statement(
        self,
        tx: Tx,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> Sequence[Any] | None:
        """An append-only plan as one statement, the UPDATE's RETURNING feeding the
        INSERT, so it needs no BEGIN/COMMIT: one round trip instead of four (the
        per-turn append). None when the UPDATE matched no row."""
        shape, values = self._update(conversation_id, plan, user_id, expected_version, now)
        msgs = plan.append_messages
        if not msgs:
            update = self._sql.get("normalized_sql.update_state", *shape)
            return await tx.fetchrow(update.sql, *update.args(values))
        one = len(msgs) == 1
        if one:
            # The per-turn case: plain parameters, cheaper for the server than arrays.
            m = msgs[0]
            dumps = jsoncodec.dumps
            values.update(
                new_role=m.role,
                new_content=m.content,
                new_message_type=m.message_type,
                new_tool_name=m.tool_name,
                new_created_at=m.timestamp,
                new_metadata=dumps(m.metadata) if m.metadata else "{}",
                new_payload=None if m.payload is None else dumps(m.payload),
            )
        else:
            values.update(_new_message_arrays(msgs))
        statement = self._sql.get("normalized_sql.append_messages", one, *shape)
        return await tx.fetchrow(statement.sql, *statement.args(values))

    async def _append_in_one_call(
        self,
        tx: Tx,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> Sequence[Any] | None:
        """``_append_in_one_statement`` as one call of the delegated append (Citus,
        ``citus.APPEND_CALL``): the same UPDATE and INSERT, run where the conversation's
        shard is. None when the UPDATE matched no row."""
        _, values = self._update(conversation_id, plan, user_id, expected_version, now)
        values["scalars"] = list(plan.scalars)
        for name in SCALARS:
            values.setdefault("set_" + name, None)
        values.update(_new_message_arrays(plan.append_messages))
        return await tx.fetchrow(APPEND_CALL, *(values[name] for name in APPEND_ARGS))

    # -- reads -----------------------------------------------------------------------

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """What ``options`` select of one conversation (see ``StorageBackend.read``)."""
        if (
            self._db.delegates_calls
            and options.last_messages is not None
            and options.shared is None
            and not options.focus_only
        ):
            return await self._read_in_one_call(conversation_id, options, user_id)

        async def body(tx: Tx) -> StoredView | None:
            found = await self._state_and_messages(tx, conversation_id, user_id, options)
            if found is None:
                return None
            row, message_rows = found
            try:
                focus_areas = jsoncodec.loads(row[2])
                messages = self._messages(message_rows)
                items = await self._load_items(tx, conversation_id, options, focus_areas)
                view = self._view(row, focus_areas, messages, items, options.shared)
            except (ValueError, TypeError, KeyError) as exc:
                raise CorruptState(conversation_id, str(exc)) from exc
            if options.shared is not None and self._db.shards_by_conversation:
                view.shared = await self._read_shared(tx, options.shared)
            return view

        return await self._db.run(body, write=False)

    async def _read_in_one_call(
        self, conversation_id: str, options: LoadOptions, user_id: str | None
    ) -> StoredView | None:
        """A windowed read as one call of the delegated load (Citus, ``citus.LOAD_CALL``):
        the statements of the other path, run where the conversation's shard is, in one
        snapshot."""
        db = self._db

        def listed(values: frozenset[str] | None) -> Any:
            return None if values is None else db.list_param(sorted(values))

        since = options.messages_since
        values = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "message_types": listed(options.message_types),
            "tool_name": options.tool_name,
            "since": None if since is None else db.ts(since),
            "last_messages": options.last_messages,
            "context_sources": listed(options.context_sources),
            "context_types": listed(options.context_types),
            "min_relevance": options.min_relevance,
            "context_limit": options.context_limit,
        }
        args = [values[name] for name in LOAD_ARGS]
        rows = await db.run(lambda tx: tx.fetch(LOAD_CALL, *args), write=False)
        if not rows:
            return None
        row = rows[0][_STATE_AT:_ITEMS_AT]
        message_rows = [r[:_STATE_AT] for r in rows[1:] if r[0] is not None]
        message_rows.reverse()  # the window came newest first
        item_rows = [r[_ITEMS_AT:] for r in rows[1:] if r[_ITEMS_AT] is not None]
        try:
            focus_areas = jsoncodec.loads(row[2])
            messages = self._messages(message_rows)
            items = self._items(item_rows, options)
            return self._view(row, focus_areas, messages, items, None)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptState(conversation_id, str(exc)) from exc

    def _view(
        self,
        row: Sequence[Any],
        focus_areas: Any,
        messages: list[Message],
        items: list[ContextItem],
        namespaces: frozenset[str] | None,
    ) -> StoredView:
        db = self._db
        loads = jsoncodec.loads
        metadata = {key: loads(value) for key, value in loads(row[9] or "[]")}
        # The shared state, when it came in this row (see _state_and_messages).
        shared = {}
        if namespaces is not None and len(row) > _SHARED_AT:
            shared = shared_of(loads(row[_SHARED_AT] or "[]"), namespaces)
        # Shapes a hand edit could break: checked, so the error names the conversation.
        if not isinstance(focus_areas, list) or not all(isinstance(f, str) for f in focus_areas):
            raise ValueError("focus_areas is not a list of strings")
        if type(row[3]) is not int:  # SQLite keeps whatever type an edit wrote
            raise ValueError(f"step_count is not an integer: {row[3]!r}")
        return StoredView(
            user_id=row[0],
            version=row[5],
            created_at=db.ts_out(row[7]),
            updated_at=db.ts_out(row[8]),
            message_count=row[6],
            user_input=row[1],
            focus_areas=focus_areas,
            step_count=row[3],
            last_tool_result=jsoncodec.loads(row[4]),
            messages=messages,
            items=items,
            metadata=metadata,
            shared=shared,
        )

    async def _state_and_messages(
        self, tx: Tx, conversation_id: str, user_id: str | None, options: LoadOptions
    ) -> tuple[Sequence[Any], list[Sequence[Any]]] | None:
        """The state row and the message rows ``options`` asks for, in seq order (None:
        no such conversation, or another user's).

        The messages are bounded by the state row's ``message_count``, so an append
        cannot show up half-way. A window, where a statement costs a round trip
        (``Database.statements_are_round_trips``), comes with the state row in one
        statement (see ``_state_and_window``). Not a whole history: sorting it would
        spill to disk past ``work_mem`` on a long history, for a round
        trip that is nothing next to its transfer. In process (SQLite) two plain
        statements are faster than the UNION's sort."""
        db = self._db
        owned = user_id is not None
        # Shared state comes in the state row's statement, one snapshot, unless the
        # database shards it apart from the conversation (then ``read`` reads it).
        shared = options.shared is not None and not db.shards_by_conversation
        by_types = options.message_types is not None
        by_tool = options.tool_name is not None
        since = options.messages_since is not None
        values: dict[str, Any] = {"conversation_id": conversation_id, "user_id": user_id}
        if shared:
            values["namespaces"] = db.list_param(sorted(options.shared or ()))
        if since:
            values["since"] = db.ts(options.messages_since)  # type: ignore[arg-type]
        if by_types:
            values["message_types"] = db.list_param(sorted(options.message_types or ()))
        values["tool_name"] = options.tool_name
        values["last_messages"] = options.last_messages
        if not (db.statements_are_round_trips and options.last_messages is not None):
            statement = self._sql.get("normalized_sql.state_select", owned, shared)
            row = await tx.fetchrow(statement.sql, *statement.args(values))
            if row is None:
                return None
            if options.last_messages == 0:
                return row, []
            values["message_count"] = row[6]
            window = options.last_messages is not None
            statement = self._sql.get(
                "normalized_sql.messages_select", by_types, by_tool, since, window
            )
            rows = await tx.fetch(statement.sql, *statement.args(values))
            if window:
                rows.reverse()  # the window came newest first
            return row, rows
        if options.last_messages == 0:
            statement = self._sql.get("normalized_sql.state_select", owned, shared)
            row = await tx.fetchrow(statement.sql, *statement.args(values))
            return None if row is None else (row, [])
        statement = self._sql.get(
            "normalized_sql.state_and_window", owned, shared, by_types, by_tool, since
        )
        rows = await tx.fetch(statement.sql, *statement.args(values))
        if not rows:
            return None
        return _split_state_and_window(rows)

    def _messages(self, rows: list[Sequence[Any]]) -> list[Message]:
        """The messages of ``rows``, each of the message columns only."""
        ts_out = self._db.ts_out
        loads = jsoncodec.loads
        messages: list[Message] = []
        append = messages.append  # once per stored row: the loop is a full load's cost
        for seq, role, content, message_type, tool_name, created_at, meta, payload in rows:
            metadata = {} if meta == "{}" else loads(meta)
            if type(metadata) is not dict:
                raise ValueError(f"message {seq}: metadata is not a JSON object")
            append(
                Message(
                    role,
                    content,
                    message_type,
                    tool_name,
                    ts_out(created_at),
                    metadata,
                    seq,
                    True,  # validated: checked when it was saved
                    None if payload is None else loads(payload),
                )
            )
        return messages

    async def _load_items(
        self, tx: Tx, conversation_id: str, options: LoadOptions, focus_areas: list[str]
    ) -> list[ContextItem]:
        if options.context_limit == 0:
            return []
        db = self._db
        values: dict[str, Any] = {
            "conversation_id": conversation_id,
            "min_relevance": options.min_relevance,
            "context_limit": options.context_limit,
        }
        if options.context_sources is not None:
            values["context_sources"] = db.list_param(sorted(options.context_sources))
        if options.context_types is not None:
            values["context_types"] = db.list_param(sorted(options.context_types))
        if options.focus_only:
            values["focus_areas"] = db.list_param(sorted(set(focus_areas)))
        statement = self._sql.get(
            "normalized_sql.items_select",
            options.context_sources is not None,
            options.context_types is not None,
            options.focus_only,
            options.min_relevance is not None,
            options.context_limit is not None,
        )
        rows = await tx.fetch(statement.sql, *statement.args(values))
        return self._items(rows, options)

    def _items(self, rows: list[Sequence[Any]], options: LoadOptions) -> list[ContextItem]:
        """The context items of ``rows`` (``items_select``'s), in saved order."""
        db = self._db
        if options.context_limit is not None:
            rows.sort(key=lambda r: r[0])
        items = []
        for item_id, source, content, score, context_type, created_at, meta in rows:
            metadata = jsoncodec.loads(meta)
            if type(metadata) is not dict:
                raise ValueError(f"context item {item_id}: metadata is not a JSON object")
            items.append(
                ContextItem(
                    content,
                    source,
                    score,
                    context_type,
                    db.ts_out(created_at),
                    metadata,
                    item_id,
                    True,  # validated: checked when it was saved
                )
            )
        return items

    async def delete(self, conversation_id: str, *, user_id: str | None) -> bool:
        """Delete a conversation (its rows go with it: ON DELETE CASCADE)."""
        statement = self._sql.get("normalized_sql.delete_state", user_id is not None)
        values = {"conversation_id": conversation_id, "user_id": user_id}
        args = statement.args(values)
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
        """One page of conversations (see ``StorageBackend.list_conversations``), in
        one statement."""
        end = None if prefix is None else prefix_end(prefix)
        statement = self._sql.get(
            "normalized_sql.list_states",
            user_id is not None,
            after is not None,
            prefix is not None,
            end is not None,
            order,
            with_metadata,
        )
        values = {"user_id": user_id, "after": after, "limit": limit, "prefix": prefix}
        values["prefix_end"] = end
        args = statement.args(values)
        rows = await self._db.run(lambda tx: tx.fetch(statement.sql, *args), write=False)
        ts_out = self._db.ts_out
        loads = jsoncodec.loads
        return [
            ConversationInfo(
                r[0],
                r[1],
                r[2],
                r[3],
                ts_out(r[4]),
                ts_out(r[5]),
                {key: loads(value) for key, value in loads(r[6] or "[]")}
                if with_metadata
                else None,
            )
            for r in rows
        ]
