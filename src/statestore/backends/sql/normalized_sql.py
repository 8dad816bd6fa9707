"""The statements of the normalized backend (``normalized.py``), built from the tables
in ``tables.py``: each a function of the dialect and a shape, compiled once per
dialect and shape by ``statements.Statements`` (``get("normalized_sql.NAME", *shape)``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from ...core.backend import SCALARS
from . import tables
from .compile import any_of, cast_type, metadata_json, shared_json, upsert

_states = tables.conversation_states


def _owned_by(table: sa.Table) -> sa.ColumnElement[bool]:
    """The row has no owner or is the caller's (parameter ``user_id``)."""
    return sa.or_(table.c.user_id.is_(None), table.c.user_id == sa.bindparam("user_id"))


def delete_state(dialect: Dialect, owned: bool) -> sa.Delete:
    statement = sa.delete(_states).where(
        _states.c.conversation_id == sa.bindparam("conversation_id")
    )
    return statement.where(_owned_by(_states)) if owned else statement


def list_states(
    dialect: Dialect,
    by_user: bool,
    after: bool,
    by_prefix: bool,
    bounded: bool,
    order: str,
    with_metadata: bool,
) -> sa.Select[Any]:
    """One page of conversations: ids in ``[prefix, prefix_end)`` (no end unless
    ``bounded``), in id order or newest update first; after the conversation
    ``after``."""
    s = _states
    metadata: Any = metadata_json(s.c.conversation_id, dialect) if with_metadata else sa.null()
    statement = sa.select(
        s.c.conversation_id,
        s.c.user_id,
        s.c.version,
        s.c.message_count,
        s.c.created_at,
        s.c.updated_at,
        metadata,
    )
    if by_user:
        statement = statement.where(s.c.user_id == sa.bindparam("user_id"))
    if by_prefix:
        statement = statement.where(s.c.conversation_id >= sa.bindparam("prefix"))
        if bounded:
            statement = statement.where(s.c.conversation_id < sa.bindparam("prefix_end"))
    if order == "id":
        if after:
            statement = statement.where(s.c.conversation_id > sa.bindparam("after"))
        return statement.order_by(s.c.conversation_id).limit(sa.bindparam("limit"))
    if after:
        cursor = _states.alias("cursor")
        at = (
            sa.select(cursor.c.updated_at)
            .where(cursor.c.conversation_id == sa.bindparam("after"))
            .scalar_subquery()
        )
        statement = statement.where(
            sa.or_(
                s.c.updated_at < at,
                sa.and_(s.c.updated_at == at, s.c.conversation_id > sa.bindparam("after")),
            )
        )
    return statement.order_by(s.c.updated_at.desc(), s.c.conversation_id).limit(
        sa.bindparam("limit")
    )


_messages_table = tables.conversation_messages
_items = tables.memory_context_items
# A message row as loaded: every column but conversation_id (seq, role, ...).
MESSAGE_COLUMNS = tuple(_messages_table.c)[1:]
ITEM_COLUMNS = tuple(_items.c)[1:]
# The state row as loaded; the metadata aggregate follows it.
STATE_COLUMNS = tuple(
    _states.c[name]
    for name in (
        "user_id",
        "user_input",
        "focus_areas",
        "step_count",
        "last_tool_result",
        "version",
        "message_count",
        "created_at",
        "updated_at",
    )
)
# In the UNION of state_and_window a message row has NULL state columns, the state
# row NULL message columns.
_STATE_AT = len(MESSAGE_COLUMNS)


def state_select(dialect: Dialect, owned: bool, shared: bool) -> sa.Select[Any]:
    """The state row of conversation ``conversation_id``, its metadata and, if
    ``shared``, the shared state of the ``namespaces``."""
    conversation_id: sa.BindParameter[str] = sa.bindparam("conversation_id")
    columns = [*STATE_COLUMNS, metadata_json(conversation_id, dialect).label("metadata")]
    if shared:
        columns.append(shared_json(dialect).label("shared"))
    statement = sa.select(*columns).where(_states.c.conversation_id == conversation_id)
    return statement.where(_owned_by(_states)) if owned else statement


def _messages_of(
    dialect: Dialect,
    count: sa.ColumnElement[Any],
    by_types: bool,
    by_tool: bool,
    since: bool,
    window: bool,
) -> sa.Select[Any]:
    """The messages among the first ``count`` of conversation ``conversation_id``
    that the options ask for: in seq order, or the window newest first."""
    m = _messages_table
    statement = sa.select(*MESSAGE_COLUMNS).where(
        m.c.conversation_id == sa.bindparam("conversation_id"), m.c.seq < count
    )
    if by_types:
        statement = statement.where(any_of(m.c.message_type, "message_types", dialect))
    if by_tool:
        statement = statement.where(m.c.tool_name == sa.bindparam("tool_name"))
    if since:
        statement = statement.where(m.c.created_at >= sa.bindparam("since"))
    if window:
        return statement.order_by(m.c.seq.desc()).limit(sa.bindparam("last_messages"))
    return statement.order_by(m.c.seq)


def messages_select(
    dialect: Dialect, by_types: bool, by_tool: bool, since: bool, window: bool
) -> sa.Select[Any]:
    count = sa.bindparam("message_count", type_=sa.BigInteger)
    return _messages_of(dialect, count, by_types, by_tool, since, window)


def state_and_window(
    dialect: Dialect, owned: bool, shared: bool, by_types: bool, by_tool: bool, since: bool
) -> ClauseElement:
    """The state row and a window of messages in one statement: a UNION ALL of the
    state row (message columns NULL) and the window's rows (state columns NULL), the
    window bounded by the state row's message_count. UNION ALL promises no order: the
    caller finds the state row (its seq is NULL) and sorts the window, cheaper on the
    client than a sort on the server."""
    state = state_select(dialect, owned, shared).cte("s")
    count = sa.select(state.c.message_count).scalar_subquery()
    window = _messages_of(dialect, count, by_types, by_tool, since, True).subquery("w")
    no_message = [sa.null()] * _STATE_AT
    no_state = [sa.null()] * len(state.c)
    return sa.union_all(sa.select(*no_message, *state.c), sa.select(*window.c, *no_state))


def items_select(
    dialect: Dialect,
    by_sources: bool,
    by_types: bool,
    focus_only: bool,
    by_relevance: bool,
    limited: bool,
) -> sa.Select[Any]:
    """The context items the options ask for: in id order, or the most relevant
    ``context_limit`` (the caller puts them back in id order)."""
    c = _items.c
    statement = sa.select(*ITEM_COLUMNS).where(c.conversation_id == sa.bindparam("conversation_id"))
    if by_sources:
        statement = statement.where(any_of(c.source, "context_sources", dialect))
    if by_types:
        statement = statement.where(any_of(c.context_type, "context_types", dialect))
    if focus_only:
        statement = statement.where(any_of(c.context_type, "focus_areas", dialect))
    if by_relevance:
        statement = statement.where(c.relevance_score >= sa.bindparam("min_relevance"))
    if not limited:
        return statement.order_by(c.item_id)
    return statement.order_by(c.relevance_score.desc(), c.item_id).limit(
        sa.bindparam("context_limit")
    )


_metadata = tables.memory_metadata
# What a write of the state row returns.
_STATE_RETURNING = tuple(
    _states.c[name]
    for name in ("version", "message_count", "next_item_id", "user_id", "created_at")
)


def _of_conversation(table: sa.Table) -> sa.ColumnElement[bool]:
    return table.c.conversation_id == sa.bindparam("conversation_id")


def insert_row(dialect: Dialect, table: str) -> sa.Insert:
    """An INSERT of one row of ``table``, its values in the table's column order (as
    the rows ``_write`` builds)."""
    return sa.insert(tables.metadata.tables[table])


def delete_all_of(dialect: Dialect, table: str) -> sa.Delete:
    """Parameters: conversation_id."""
    target = tables.metadata.tables[table]
    return sa.delete(target).where(_of_conversation(target))


def delete_messages_from(dialect: Dialect) -> sa.Delete:
    """Parameters: conversation_id, the first seq to delete."""
    m = _messages_table
    return sa.delete(m).where(_of_conversation(m), m.c.seq >= sa.bindparam("truncate_from"))


def pop_messages(dialect: Dialect) -> Any:
    """Parameters: conversation_id, the first seq to remove; RETURNING the removed
    messages as loaded."""
    m = _messages_table
    return (
        sa.delete(m)
        .where(_of_conversation(m), m.c.seq >= sa.bindparam("pop_from"))
        .returning(*MESSAGE_COLUMNS)
    )


def delete_items(dialect: Dialect) -> sa.Delete:
    """Parameters: conversation_id, the item ids (``list_param``)."""
    return sa.delete(_items).where(
        _of_conversation(_items), any_of(_items.c.item_id, "item_ids", dialect)
    )


def delete_metadata(dialect: Dialect) -> sa.Delete:
    """Parameters: conversation_id, the keys (``list_param``)."""
    return sa.delete(_metadata).where(
        _of_conversation(_metadata), any_of(_metadata.c.key, "keys", dialect)
    )


def upsert_metadata(dialect: Dialect) -> Any:
    """Parameters: conversation_id, key, value (the table's order)."""
    statement = upsert(dialect, _metadata)
    return statement.on_conflict_do_update(
        index_elements=[_metadata.c.conversation_id, _metadata.c.key],
        set_={"value": statement.excluded.value},
    )


def insert_state(dialect: Dialect) -> Any:
    """Create the state row of a replacing save, unless it exists; RETURNING it."""
    now: sa.BindParameter[Any] = sa.bindparam("now")
    values: dict[str, Any] = {name: sa.bindparam(name) for name in SCALARS}
    values.update(
        conversation_id=sa.bindparam("conversation_id"),
        user_id=sa.bindparam("user_id"),
        version=sa.literal_column("1"),
        message_count=sa.bindparam("message_count"),
        next_item_id=sa.bindparam("next_item_id"),
        created_at=now,
        updated_at=now,
    )
    statement = upsert(dialect, _states).values(values)
    return statement.on_conflict_do_nothing(index_elements=[_states.c.conversation_id]).returning(
        *_STATE_RETURNING
    )


def probe_state(dialect: Dialect) -> sa.Select[Any]:
    """Parameters: conversation_id."""
    return sa.select(_states.c.version, _states.c.user_id).where(_of_conversation(_states))


def update_state(
    dialect: Dialect,
    count: str,
    add_items: bool,
    scalars: tuple[str, ...],
    owned: bool,
    versioned: bool,
    counted: bool,
) -> sa.Update:
    """The UPDATE of a write's state row, RETURNING it: a new version, the message
    count set (``count == "set"``) or raised (``"add"``), item ids taken, the
    ``scalars`` set. ``owned``, ``versioned`` and ``counted`` add the conditions the
    write expects; no row matches when one fails."""
    s = _states
    one: sa.ColumnClause[Any] = sa.literal_column("1")
    values: dict[str, Any] = {
        "updated_at": sa.bindparam("set_updated_at"),
        "version": s.c.version + one,
    }
    if count == "set":
        values["message_count"] = sa.bindparam("set_message_count")
    elif count == "add":
        values["message_count"] = s.c.message_count + sa.bindparam("n_messages")
    elif count == "pop":
        n_pop = sa.bindparam("n_pop", type_=sa.BigInteger)
        kept = sa.case((s.c.message_count > n_pop, s.c.message_count - n_pop), else_=0)
        values["message_count"] = kept + sa.bindparam("n_messages", type_=sa.BigInteger)
    if add_items:
        values["next_item_id"] = s.c.next_item_id + sa.bindparam("n_items")
    for name in scalars:
        values[name] = sa.bindparam("set_" + name)
    statement = sa.update(s).values(values).where(_of_conversation(s))
    if owned:
        statement = statement.where(_owned_by(s))
    if versioned:
        statement = statement.where(s.c.version == sa.bindparam("expected_version"))
    if counted:
        # Rewriting from truncate_from must not delete messages appended since the
        # state was loaded: no row matches then, and the probe raises VersionConflict.
        statement = statement.where(s.c.message_count == sa.bindparam("expected_count"))
    return statement.returning(*_STATE_RETURNING)


# The columns of an appended message that come from parameters (new_<name>): all but
# its key, which the statement computes.
_NEW_MESSAGE = tuple(c.name for c in _messages_table.c if not c.primary_key)


def append_messages(dialect: Dialect, one: bool, *update: Any) -> sa.Select[Any]:
    """PostgreSQL: ``update_state`` and the INSERT of the appended messages in one
    statement, the UPDATE's RETURNING giving their seqs (a data-modifying WITH)."""
    m = _messages_table
    state = update_state(dialect, *update).cte("s")
    new: Any
    if one:
        new = sa.select(
            *(
                sa.cast(sa.bindparam("new_" + name), cast_type(m.c[name], dialect)).label(name)
                for name in _NEW_MESSAGE
            ),
            sa.literal_column("1").label("i"),
        ).subquery("t")
    else:
        new = _new_messages(dialect)
    first = state.c.message_count - sa.bindparam("n_messages", type_=sa.BigInteger)
    rows = _appended_rows(first, new).select_from(state, new)
    insert = sa.insert(m).from_select([c.name for c in m.c], rows).cte("m")
    return sa.select(*state.c).add_cte(insert)


def _new_messages(dialect: Dialect) -> Any:
    """The appended messages from one array parameter per column (``new_<name>``), with
    their ordinality ``i`` (1-based)."""
    m = _messages_table
    return (
        sa.func.unnest(
            *(
                sa.cast(
                    sa.bindparam("new_" + name), postgresql.ARRAY(cast_type(m.c[name], dialect))
                )
                for name in _NEW_MESSAGE
            )
        )
        .table_valued(*_NEW_MESSAGE, with_ordinality="i")
        .render_derived(name="t")
    )


def _appended_rows(first: sa.ColumnElement[Any], new: Any) -> sa.Select[Any]:
    """The rows of the appended messages ``new``, in the table's column order, the
    first at seq ``first``."""
    return sa.select(
        sa.bindparam("conversation_id"),
        first + new.c.i - sa.literal_column("1"),
        *(new.c[name] for name in _NEW_MESSAGE),
    )


# -- Citus: the statements of the delegated functions (``citus.function_definitions``) --
#
# A function has one body for every call, so where ``update_state`` has a shape, the
# delegated append's UPDATE decides each optional part by its parameters.


def delegated_update(dialect: Dialect) -> sa.Update:
    """``update_state`` of an append (the count raised by ``n_messages``) in one text:
    a scalar is set if its name is in the array ``scalars`` (to ``set_<name>``), and
    ``user_id``, ``expected_version`` and ``expected_count`` are checked unless NULL."""
    s = _states
    one: sa.ColumnClause[Any] = sa.literal_column("1")
    chosen = sa.bindparam("scalars", type_=postgresql.ARRAY(sa.Text))
    values: dict[str, Any] = {
        "updated_at": sa.bindparam("set_updated_at"),
        "version": s.c.version + one,
        "message_count": s.c.message_count + sa.bindparam("n_messages"),
    }
    for name in SCALARS:
        picked = sa.literal_column(f"'{name}'") == sa.any_(chosen)
        values[name] = sa.case((picked, sa.bindparam("set_" + name)), else_=s.c[name])
    optional = (
        ("user_id", _owned_by(s)),
        ("expected_version", s.c.version == sa.bindparam("expected_version")),
        ("expected_count", s.c.message_count == sa.bindparam("expected_count")),
    )
    return (
        sa.update(s)
        .values(values)
        .where(
            _of_conversation(s),
            *(sa.or_(sa.bindparam(name).is_(None), check) for name, check in optional),
        )
        .returning(*_STATE_RETURNING)
    )


def delegated_insert(dialect: Dialect) -> sa.Insert:
    """The INSERT of the appended messages (arrays ``new_<name>``), the first at seq
    ``first_seq``."""
    m = _messages_table
    new = _new_messages(dialect)
    first = sa.bindparam("first_seq", type_=sa.BigInteger)
    rows = _appended_rows(first, new).select_from(new)
    return sa.insert(m).from_select([c.name for c in m.c], rows)
