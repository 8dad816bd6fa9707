"""The normalized backend: one row per message, context item and metadata key.

A per-turn write costs O(new rows); loads turn ``LoadOptions`` into indexed SQL, with
nothing filtered after fetching. The SQL is shared by SQLite and PostgreSQL; where the
engines differ, the ``Database`` adapter says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa

from ...core import jsoncodec
from ...core.backend import Capability, ConversationInfo, StoredView, WritePlan, WriteResult
from ...core.errors import ConversationNotFound, CorruptState, VersionConflict
from ...core.model import ContextItem, Message
from ...core.query import LoadOptions
from . import tables
from .base import DatabaseBackend
from .database import Tx

__all__ = ["NormalizedBackend"]


def _columns(table: sa.Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.c)


def _insert_sql(table: sa.Table) -> str:
    """An INSERT of every column of ``table``, in the table's order."""
    columns = _columns(table)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({values})"


# Each column list once, from the table definitions (conversation_id first).
INSERT_MESSAGE = _insert_sql(tables.conversation_messages)
INSERT_ITEM = _insert_sql(tables.memory_context_items)
# Table and columns of each INSERT, for the bulk path (Tx.copy_rows).
_INSERT_TARGET = {
    INSERT_MESSAGE: ("conversation_messages", _columns(tables.conversation_messages)),
    INSERT_ITEM: ("memory_context_items", _columns(tables.memory_context_items)),
}
MSG_COLS = ", ".join(_columns(tables.conversation_messages)[1:])  # seq, role, ...
ITEM_COLS = ", ".join(_columns(tables.memory_context_items)[1:])  # item_id, source, ...
# The halves of a load's UNION (see _state_and_messages): a message row has NULL
# state columns, the state row NULL message columns.
_STATE_AT = len(tables.conversation_messages.c) - 1
_NO_MESSAGE = ", ".join(["NULL"] * _STATE_AT)
_NO_STATE = ", ".join(["NULL"] * 10)
UPSERT_METADATA = (
    "INSERT INTO memory_metadata (conversation_id, key, value) VALUES ($1, $2, $3) "
    "ON CONFLICT (conversation_id, key) DO UPDATE SET value = excluded.value"
)
INSERT_STATE = (
    "INSERT INTO conversation_states (conversation_id, user_id, user_input, focus_areas, "
    "step_count, last_tool_result, version, message_count, next_item_id, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $9) "
    "ON CONFLICT (conversation_id) DO NOTHING "
    "RETURNING version, message_count, next_item_id, user_id, created_at"
)
PROBE_STATE = "SELECT version, user_id FROM conversation_states WHERE conversation_id = $1"
OWNER = " AND (user_id IS NULL OR user_id = {})"


class _Params:
    """Numbered placeholders for a statement being built."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


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
        row, first_seq, first_item = await self._write(
            conversation_id, plan, user_id, plan.expected_version
        )
        version, message_count, _, owner, created_at, updated_at = row
        return WriteResult(
            version, message_count, owner, created_at, updated_at, first_seq, first_item
        )

    async def _write(
        self,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
    ) -> tuple[tuple[Any, ...], int, int]:
        """Run ``plan`` in one transaction. Returns (version, message_count,
        next_item_id, owner, created_at, updated_at), the seq of the first appended
        message and the id of the first added item."""
        db = self._db
        now = datetime.now(UTC)
        n_msgs = len(plan.append_messages)
        n_items = len(plan.add_items)
        if (
            db.engine == "postgresql"
            # Not on Citus: it routes the UPDATE and the INSERT each to one shard, but
            # not an INSERT inside a WITH (it would run in two steps on the coordinator).
            and getattr(db, "one_statement_append", False)
            and not plan.replace
            and plan.truncate_from is None
            and not (plan.add_items or plan.remove_item_ids)
            and not (plan.set_metadata or plan.delete_metadata)
        ):
            fast = await db.run(
                lambda tx: self._append_in_one_statement(
                    tx, conversation_id, plan, user_id, expected_version, now
                ),
                write=False,  # one statement: atomic on its own
            )
            if fast is not None:
                version, message_count, next_item_id, owner, created_at = fast
                return (
                    (version, message_count, next_item_id, owner, db.ts_out(created_at), now),
                    message_count - n_msgs,
                    next_item_id,
                )
            # No row matched: the transaction below finds out why and raises.

        # A closure run by db.run (SQLite runs it whole in its connection's thread).
        async def body(tx: Tx) -> tuple[tuple[Any, ...], int, int]:
            row, created = await self._claim_state_row(
                tx, conversation_id, plan, user_id, expected_version, now
            )
            version, message_count, next_item_id, owner, created_at = row
            first_seq = message_count - n_msgs
            first_item = next_item_id - n_items
            if plan.replace and not created:
                for table in ("conversation_messages", "memory_context_items", "memory_metadata"):
                    await tx.execute(
                        f"DELETE FROM {table} WHERE conversation_id = $1",
                        conversation_id,
                    )
            elif plan.truncate_from is not None:
                await tx.execute(
                    "DELETE FROM conversation_messages WHERE conversation_id = $1 AND seq >= $2",
                    conversation_id,
                    plan.truncate_from,
                )
            if plan.append_messages:
                stamps = db.ts_many([m.timestamp for m in plan.append_messages])
                dumps = jsoncodec.dumps
                await self._insert(
                    tx,
                    INSERT_MESSAGE,
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
                        )
                        for i, m in enumerate(plan.append_messages)
                    ],
                )
            if plan.remove_item_ids:
                await tx.execute(
                    "DELETE FROM memory_context_items WHERE conversation_id = $1 "
                    f"AND item_id {db.any_of('$2')}",  # placeholders only
                    conversation_id,
                    db.list_param(plan.remove_item_ids),
                )
            if plan.add_items:
                stamps = db.ts_many([c.timestamp for c in plan.add_items])
                await self._insert(
                    tx,
                    INSERT_ITEM,
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
                    "DELETE FROM memory_metadata WHERE conversation_id = $1 "
                    f"AND key {db.any_of('$2')}",  # placeholders only
                    conversation_id,
                    db.list_param(plan.delete_metadata),
                )
            if plan.set_metadata:
                await tx.executemany(
                    UPSERT_METADATA,
                    [(conversation_id, key, value) for key, value in plan.set_metadata.items()],
                )
            return (version, message_count, next_item_id, owner, created_at), first_seq, first_item

        result, first_seq, first_item = await db.run(body, write=True)
        version, message_count, next_item_id, owner, created_at = result
        return (
            (version, message_count, next_item_id, owner, db.ts_out(created_at), now),
            first_seq,
            first_item,
        )

    async def _insert(self, tx: Tx, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` with ``sql`` (INSERT_MESSAGE or INSERT_ITEM)."""
        if len(rows) > 1:
            # The adapter's bulk path (PostgreSQL: COPY, far cheaper than a row each).
            table, columns = _INSERT_TARGET[sql]
            await tx.copy_rows(table, columns, rows)
        else:
            await tx.executemany(sql, rows)

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
        # probe, INSERT take three). A second pass happens only when a concurrent writer
        # created or deleted the row between our statements.
        can_create = plan.replace and expected_version in (None, 0)
        version = 0
        for _ in range(2):
            if can_create:
                row = await tx.fetchrow(
                    INSERT_STATE,
                    conversation_id,
                    user_id,
                    *self._scalar_values(plan),
                    len(plan.append_messages),
                    len(plan.add_items),
                    self._db.ts(now),
                )
                if row is not None:
                    return row, True
            row = await self._update_state_row(
                tx, conversation_id, plan, user_id, expected_version, now
            )
            if row is not None:
                return row, False
            probe = await tx.fetchrow(PROBE_STATE, conversation_id)
            if probe is None:
                if can_create:
                    continue  # deleted since our INSERT found it: create it again
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
        s = plan.scalars
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
        p = _Params(conversation_id)
        sql = self._update_sql(p, plan, user_id, expected_version, now)
        return await tx.fetchrow(sql, *p.values)

    def _update_sql(
        self,
        p: _Params,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> str:
        """The UPDATE of the state row (``$1``: the conversation id), RETURNING
        version, message_count, next_item_id, user_id, created_at."""
        sets = [f"updated_at = {p.add(self._db.ts(now))}", "version = version + 1"]
        n_msgs = len(plan.append_messages)
        if plan.replace:
            sets.append(f"message_count = {p.add(n_msgs)}")
        elif plan.truncate_from is not None:
            sets.append(f"message_count = {p.add(plan.truncate_from + n_msgs)}")
        elif n_msgs:
            sets.append(f"message_count = message_count + {p.add(n_msgs)}")
        if plan.add_items:
            sets.append(f"next_item_id = next_item_id + {p.add(len(plan.add_items))}")
        for name, value in plan.scalars.items():
            if name in ("focus_areas", "last_tool_result"):
                value = jsoncodec.dumps(value)
            sets.append(f"{name} = {p.add(value)}")
        sql = f"UPDATE conversation_states SET {', '.join(sets)} WHERE conversation_id = $1"
        if user_id is not None:
            sql += OWNER.format(p.add(user_id))
        if expected_version is not None:
            sql += f" AND version = {p.add(expected_version)}"
        if plan.expected_count is not None:
            # Rewriting from truncate_from must not delete messages appended since the
            # state was loaded: no row matches then, and the probe raises VersionConflict.
            sql += f" AND message_count = {p.add(plan.expected_count)}"
        return sql + " RETURNING version, message_count, next_item_id, user_id, created_at"

    async def _append_in_one_statement(
        self,
        tx: Tx,
        conversation_id: str,
        plan: WritePlan,
        user_id: str | None,
        expected_version: int | None,
        now: datetime,
    ) -> Sequence[Any] | None:
        """PostgreSQL: an append-only plan as one statement, the UPDATE's RETURNING
        feeding the INSERT, so it needs no BEGIN/COMMIT: one round trip instead of four
        (the per-turn append). None when the UPDATE matched no row."""
        p = _Params(conversation_id)
        update = self._update_sql(p, plan, user_id, expected_version, now)
        if not plan.append_messages:
            return await tx.fetchrow(update, *p.values)
        msgs = plan.append_messages
        dumps = jsoncodec.dumps
        n = p.add(len(msgs))
        metadata = [dumps(m.metadata) if m.metadata else "{}" for m in msgs]
        if len(msgs) == 1:
            # The per-turn case: plain parameters, cheaper for the server than arrays.
            m = msgs[0]
            rows = (
                f"(VALUES ({p.add(m.role)}::text, {p.add(m.content)}::text, "
                f"{p.add(m.message_type)}::text, {p.add(m.tool_name)}::text, "
                f"{p.add(m.timestamp)}::timestamptz, {p.add(metadata[0])}::jsonb, 1::bigint))"
            )
        else:
            rows = (
                f"unnest({p.add([m.role for m in msgs])}::text[], "
                f"{p.add([m.content for m in msgs])}::text[], "
                f"{p.add([m.message_type for m in msgs])}::text[], "
                f"{p.add([m.tool_name for m in msgs])}::text[], "
                f"{p.add([m.timestamp for m in msgs])}::timestamptz[], "
                f"{p.add(metadata)}::jsonb[]) WITH ORDINALITY"
            )
        sql = (
            f"WITH s AS ({update}), m AS (INSERT INTO conversation_messages (conversation_id, "
            "seq, role, content, message_type, tool_name, created_at, metadata) "
            f"SELECT $1, s.message_count - {n} + t.i - 1, t.role, t.content, t.message_type, "
            f"t.tool_name, t.created_at, t.metadata FROM s, {rows} "
            "AS t(role, content, message_type, tool_name, created_at, metadata, i)) "
            "SELECT * FROM s"
        )
        return await tx.fetchrow(sql, *p.values)

    def _in(self, p: _Params, values: Any) -> str:
        """SQL testing membership in ``values``, bound as one parameter."""
        return self._db.any_of(p.add(self._db.list_param(sorted(values))))

    # -- reads -----------------------------------------------------------------------

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """What ``options`` select of one conversation (see ``StorageBackend.read``)."""

        async def body(tx: Tx) -> StoredView | None:
            found = await self._state_and_messages(tx, conversation_id, user_id, options)
            if found is None:
                return None
            row, message_rows = found
            try:
                focus_areas = jsoncodec.loads(row[2])
                messages = self._messages(message_rows)
                items = await self._load_items(tx, conversation_id, options, focus_areas)
                return self._view(row, focus_areas, messages, items)
            except (ValueError, TypeError, KeyError) as exc:
                raise CorruptState(conversation_id, str(exc)) from exc

        return await self._db.run(body, write=False)

    def _view(
        self,
        row: Sequence[Any],
        focus_areas: Any,
        messages: list[Message],
        items: list[ContextItem],
    ) -> StoredView:
        db = self._db
        metadata = {key: jsoncodec.loads(value) for key, value in jsoncodec.loads(row[9] or "[]")}
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
        )

    async def _state_and_messages(
        self, tx: Tx, conversation_id: str, user_id: str | None, options: LoadOptions
    ) -> tuple[Sequence[Any], list[Sequence[Any]]] | None:
        """The state row and the message rows ``options`` asks for, in seq order (None:
        no such conversation, or another user's).

        The messages are bounded by the state row's ``message_count``, so an append
        cannot show up half-way. A window, where a statement costs a round trip
        (``Database.statements_are_round_trips``), comes with the state row in one
        statement: a UNION of the state row (message columns NULL, sorted first) and
        the window's rows (state columns NULL). Not a whole history: sorting it would
        spill to disk past ``work_mem`` on a long history, for a round
        trip that is nothing next to its transfer. In process (SQLite) two plain
        statements are faster than the UNION's sort."""
        db = self._db
        p = _Params(conversation_id)
        state_sql = (
            "SELECT user_id, user_input, focus_areas, step_count, last_tool_result, version, "
            f"message_count, created_at, updated_at, {db.metadata_agg} AS metadata "
            "FROM conversation_states s WHERE conversation_id = $1"
        )
        if user_id is not None:
            state_sql += OWNER.format(p.add(user_id))
        if not (db.statements_are_round_trips and options.last_messages is not None):
            row = await tx.fetchrow(state_sql, *p.values)
            if row is None:
                return None
            if options.last_messages == 0:
                return row, []
            p = _Params(conversation_id, row[6])
            rows = await tx.fetch(self._messages_sql(p, "$2", options), *p.values)
            if options.last_messages is not None:
                rows.reverse()  # the window came newest first
            return row, rows
        sql = f"WITH s AS ({state_sql}) SELECT {_NO_MESSAGE}, s.* FROM s"
        if options.last_messages != 0:
            messages_sql = self._messages_sql(p, "(SELECT message_count FROM s)", options)
            sql += (
                f" UNION ALL SELECT w.*, {_NO_STATE} FROM ({messages_sql}) w ORDER BY 1 NULLS FIRST"
            )
        rows = await tx.fetch(sql, *p.values)
        if not rows:
            return None
        return rows[0][_STATE_AT:], rows[1:]

    def _messages_sql(self, p: _Params, count: str, options: LoadOptions) -> str:
        """The SELECT of the messages ``options`` asks for among the first ``count``
        (SQL) of conversation ``$1``: in seq order, or newest first for a window."""
        where = f"conversation_id = $1 AND seq < {count}"
        if options.message_types is not None:
            where += f" AND message_type {self._in(p, options.message_types)}"
        if options.tool_name is not None:
            where += f" AND tool_name = {p.add(options.tool_name)}"
        order = "ORDER BY seq"
        if options.last_messages is not None:
            order = f"ORDER BY seq DESC LIMIT {p.add(options.last_messages)}"
        return f"SELECT {MSG_COLS} FROM conversation_messages WHERE {where} {order}"

    def _messages(self, rows: list[Sequence[Any]]) -> list[Message]:
        ts_out = self._db.ts_out
        loads = jsoncodec.loads
        messages = []
        for row in rows:
            seq, role, content, message_type, tool_name, created_at, meta = row[:_STATE_AT]
            metadata = {} if meta == "{}" else loads(meta)
            if type(metadata) is not dict:
                raise ValueError(f"message {seq}: metadata is not a JSON object")
            messages.append(
                Message(
                    role,
                    content,
                    message_type,
                    tool_name,
                    ts_out(created_at),
                    metadata,
                    seq,
                    True,  # validated: checked when it was saved
                )
            )
        return messages

    async def _load_items(
        self, tx: Tx, conversation_id: str, options: LoadOptions, focus_areas: list[str]
    ) -> list[ContextItem]:
        if options.context_limit == 0:
            return []
        db = self._db
        p = _Params(conversation_id)
        where = "conversation_id = $1"
        if options.context_sources is not None:
            where += f" AND source {self._in(p, options.context_sources)}"
        if options.context_types is not None:
            where += f" AND context_type {self._in(p, options.context_types)}"
        if options.focus_only:
            where += f" AND context_type {self._in(p, set(focus_areas))}"
        if options.min_relevance is not None:
            where += f" AND relevance_score >= {p.add(options.min_relevance)}"
        if options.context_limit is None:
            order = "ORDER BY item_id"
        else:
            order = f"ORDER BY relevance_score DESC, item_id LIMIT {p.add(options.context_limit)}"
        rows = await tx.fetch(
            f"SELECT {ITEM_COLS} FROM memory_context_items WHERE {where} {order}",
            *p.values,
        )
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
        p = _Params(conversation_id)
        sql = "DELETE FROM conversation_states WHERE conversation_id = $1"
        if user_id is not None:
            sql += OWNER.format(p.add(user_id))
        async with self._db.transaction() as tx:
            deleted = await tx.execute(sql, *p.values)
        return deleted > 0

    async def list_conversations(
        self, *, user_id: str | None, limit: int, after: str | None
    ) -> list[ConversationInfo]:
        """Conversations ordered by id (see ``StorageBackend.list_conversations``)."""
        p = _Params()
        where = []
        if user_id is not None:
            where.append(f"user_id = {p.add(user_id)}")
        if after is not None:
            where.append(f"conversation_id > {p.add(after)}")
        sql = (
            "SELECT conversation_id, user_id, version, message_count, created_at, updated_at "
            "FROM conversation_states"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY conversation_id LIMIT {p.add(limit)}"
        rows = await self._db.run(lambda tx: tx.fetch(sql, *p.values), write=False)
        ts_out = self._db.ts_out
        return [ConversationInfo(r[0], r[1], r[2], r[3], ts_out(r[4]), ts_out(r[5])) for r in rows]
