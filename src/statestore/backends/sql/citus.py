"""Citus: statestore's tables distributed by ``conversation_id``, and their true sizes.

On a Citus coordinator the ``postgres`` and ``legacy-blob`` backends run unchanged once
the tables are distributed: every table statestore defines (``tables.metadata``) is
distributed by ``conversation_id`` in one co-location group (that of
``conversation_states``), so the rows of one conversation, in every table, live in one
shard group on one worker; ``alembic_version`` becomes a reference table (a copy on
every node), so a store opened on any node sees the schema revision.

``distribute_tables`` does it and is idempotent: it distributes what is not distributed
yet. ``migrate.upgrade`` runs it after the migrations, in their transaction, so
``statestore migrate`` turns a Citus database into a statestore database and keeps a
table added by a later migration distributed too. On a database without the ``citus``
extension (plain PostgreSQL, SQLite) it does nothing.

``create_functions`` then (``migrate.upgrade``, in a transaction of its own once the
tables are distributed) creates the two functions Citus delegates a per-turn append and
a windowed load to, so that each is one round trip (see below); a store opened on
Citus uses them when they are there (``PostgresDatabase.delegates_calls``).
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import TYPE_CHECKING, Any

from ...core.errors import StateStoreError
from .database import Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .statements import Compiled

__all__ = [
    "ANCHOR",
    "APPEND_ARGS",
    "APPEND_CALL",
    "APPEND_FUNCTION",
    "DISTRIBUTION_COLUMN",
    "HAS_CITUS",
    "HAS_FUNCTIONS",
    "LOAD_ARGS",
    "LOAD_CALL",
    "LOAD_FUNCTION",
    "REFERENCE_TABLES",
    "create_functions",
    "distribute_tables",
    "function_definitions",
    "is_citus",
    "relation_size",
]

log = logging.getLogger("statestore")

DISTRIBUTION_COLUMN = "conversation_id"
# The table the others are co-located with (distributed first: the others' foreign keys
# point at it).
ANCHOR = "conversation_states"
REFERENCE_TABLES = ("alembic_version",)
# Tables keyed by something else than a conversation, each distributed by its own key in
# a co-location group of its own.
OWN_DISTRIBUTION = {"shared_state": "namespace"}

HAS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
# The Citus tables of the current schema: 'h' hash-distributed, anything else
# (reference, or a local table Citus tracks) not distributed by conversation.
_CITUS_TABLES = (
    "SELECT c.relname, p.partmethod FROM pg_dist_partition p "
    "JOIN pg_class c ON c.oid = p.logicalrelid "
    "WHERE c.relnamespace = current_schema()::regnamespace"
)


def is_citus(connection: Connection) -> bool:
    """Whether ``connection`` (PostgreSQL) is to a database with Citus installed."""
    return bool(connection.exec_driver_sql(HAS_CITUS).scalar())


def distribute_tables(connection: Connection) -> list[str]:
    """Distribute what is not distributed yet (see the module docstring), in the
    caller's transaction; returns one line per table it changed. Nothing on a
    database without Citus (or not PostgreSQL)."""
    if connection.dialect.name != "postgresql" or not is_citus(connection):
        return []
    import sqlalchemy as sa  # only here: a migration, not opening a store

    from .tables import metadata

    known = {name for name, _ in connection.exec_driver_sql(_CITUS_TABLES)}
    present = set(sa.inspect(connection).get_table_names())
    done = []
    # The anchor first, then the rest in the metadata's (dependency) order.
    tables = [ANCHOR] + [t.name for t in metadata.sorted_tables if t.name != ANCHOR]
    for name in tables:
        if name in known or name not in present:
            continue
        column = OWN_DISTRIBUTION.get(name, DISTRIBUTION_COLUMN)
        if column not in metadata.tables[name].c:
            raise StateStoreError(f"cannot distribute {name}: it has no {column} column")
        colocate = "none" if name == ANCHOR or name in OWN_DISTRIBUTION else ANCHOR
        connection.execute(
            sa.text("SELECT create_distributed_table(:table, :column, colocate_with => :colocate)"),
            {"table": name, "column": column, "colocate": colocate},
        )
        with_whom = "alone" if colocate == "none" and name != ANCHOR else f"with {ANCHOR}"
        done.append(f"{name}: distributed by {column}, co-located {with_whom}")
    for name in REFERENCE_TABLES:
        if name in known or name not in present:
            continue
        connection.execute(sa.text("SELECT create_reference_table(:table)"), {"table": name})
        done.append(f"{name}: reference table")
    for line in done:
        name = line.split(":", 1)[0]
        # Rows the table had are now in its shards; Citus keeps the local copy until
        # told, where it would only take space.
        connection.execute(
            sa.text("SELECT truncate_local_data_after_distributing_table(:table)"),
            {"table": name},
        )
        log.info("citus: %s", line)
    return done


async def relation_size(tx: Tx, table: str) -> int:
    """Bytes ``table`` takes with its indexes: on Citus the sum over its shards on every
    node (the coordinator's own relation of a distributed table is an empty shell),
    else ``pg_total_relation_size``."""
    size = "pg_total_relation_size($1)"
    has_citus = await tx.fetchrow(HAS_CITUS)
    if has_citus is not None and has_citus[0]:
        size = (
            "CASE WHEN EXISTS (SELECT 1 FROM pg_dist_partition "
            "WHERE logicalrelid = to_regclass($1)) "
            "THEN citus_total_relation_size($1) ELSE pg_total_relation_size($1) END"
        )
    row = await tx.fetchrow(f"SELECT {size}", table)
    assert row is not None
    return int(row[0])


# -- delegated functions: an append and a windowed load in one round trip ----------------
#
# Through the coordinator, every statement is a round trip from the client to the
# coordinator and another from there to the worker holding the shard. A function
# distributed by its conversation id and co-located with ``conversation_states`` is
# delegated: the coordinator sends the whole call to that worker, where its statements
# run on the local shards. ``statestore_append_v1`` is the append-only write of
# ``NormalizedBackend._append_in_one_statement`` (the state row's UPDATE, then the
# INSERT of the messages); ``statestore_load_v1`` the windowed read (the state row and
# the window in one statement, then the context items), STABLE so that its statements
# share the snapshot of the call. Their statements are the ones the backend sends
# elsewhere (``normalized_sql``), run with the conversation id as a literal: Citus then
# plans each one for the local shard at once (a parameter sends it through its
# distributed planner again). A new version of a function gets a new name (``_v2``),
# so a store keeps calling the one it knows.

APPEND_FUNCTION = "statestore_append_v1"
LOAD_FUNCTION = "statestore_load_v1"
# Whether the database has both functions (a database migrated by an older statestore
# has not).
HAS_FUNCTIONS = (
    "SELECT count(DISTINCT proname) = 2 FROM pg_proc "
    f"WHERE proname IN ('{APPEND_FUNCTION}', '{LOAD_FUNCTION}') "
    "AND pronamespace = current_schema()::regnamespace"
)

_SCALARS = ("user_input", "focus_areas", "step_count", "last_tool_result")
_NEW_MESSAGE = (
    "role",
    "content",
    "message_type",
    "tool_name",
    "created_at",
    "metadata",
    "payload",
)
# The arguments of the append, in order: the parameters of ``delegated_update`` and
# ``delegated_insert`` but the two the function computes (``n_messages``, ``first_seq``).
APPEND_ARGS = (
    "conversation_id",
    "user_id",
    "expected_version",
    "expected_count",
    "set_updated_at",
    "scalars",
    *(f"set_{name}" for name in _SCALARS),
    *(f"new_{name}" for name in _NEW_MESSAGE),
)
# The arguments of the load: the parameters of ``state_and_window`` (without shared
# state) and ``items_select`` (without ``focus_only``); NULL leaves a filter out.
_MESSAGE_FILTERS = ("user_id", "message_types", "tool_name", "since")
_ITEM_FILTERS = ("context_sources", "context_types", "min_relevance", "context_limit")
LOAD_ARGS = ("conversation_id", *_MESSAGE_FILTERS, "last_messages", *_ITEM_FILTERS)


def _call(function: str, args: tuple[str, ...]) -> str:
    # SELECT * FROM f(...): a form Citus delegates, one column per result column.
    return f"SELECT * FROM {function}({', '.join(f'${i}' for i in range(1, len(args) + 1))})"


APPEND_CALL = _call(APPEND_FUNCTION, APPEND_ARGS)
"""Returns the state row as ``update_state`` does, or no row when the UPDATE matched
none (the caller's transaction then finds out why)."""
LOAD_CALL = _call(LOAD_FUNCTION, LOAD_ARGS)
"""Returns rows of the message columns, the state row's (with its metadata) and the
context item columns, each row one of them, the others NULL: the state row
(``state_select``), the window newest first (``messages_select``), the context items
(``items_select``); no row when the conversation is missing or another user's."""

_PARAM = re.compile(r"\$(\d+)")


def _execute(compiled: Compiled, order: tuple[str, ...], values: dict[str, str]) -> str:
    """``format('<sql>', ...)``: the text of ``compiled`` with every parameter as a
    literal (``%n$L``, n its place in ``order``), from the PL/pgSQL expressions
    ``values``."""
    names = compiled.names

    def literal(match: re.Match[str]) -> str:
        return f"%{order.index(names[int(match.group(1)) - 1]) + 1}$L"

    sql = _PARAM.sub(literal, compiled.sql.replace("%", "%%"))
    text = "'" + sql.replace("'", "''") + "'"
    return f"format({text}, {', '.join(values[name] for name in order)})"


def _by_shape(
    builder: str,
    filters: tuple[str, ...],
    shape: Any,
    order: tuple[str, ...],
    values: dict[str, str],
) -> str:
    """``CASE ... END`` choosing the text of ``builder`` for the shape
    ``shape(*flags)``, a flag for each of ``filters`` that is not NULL."""
    from .statements import statements_for

    statements = statements_for("postgresql")
    cases = []
    for flags in itertools.product((False, True), repeat=len(filters)):
        test = " AND ".join(
            f"p_{name} IS {'NOT ' if on else ''}NULL"
            for name, on in zip(filters, flags, strict=True)
        )
        text = _execute(statements.get(builder, *shape(*flags)), order, values)
        cases.append(f"WHEN {test} THEN {text}")
    return f"CASE {' '.join(cases)} END"


def _type(column: Any) -> str:
    """The SQL type of a function's argument or result for ``column``."""
    import sqlalchemy as sa

    from .compile import cast_type, dialect_for

    dialect = dialect_for("postgresql")
    return str(sa.types.to_instance(cast_type(column, dialect)).compile(dialect))


def function_definitions(schema: str) -> list[str]:
    """The CREATE OR REPLACE FUNCTION statements of the delegated functions, for the
    tables of ``schema`` (a quoted identifier). A function runs no statement of its
    own, only those of ``normalized_sql``; it finds the tables in ``schema`` whatever
    the search_path of the worker's session that runs it."""
    from . import tables
    from .statements import statements_for

    statements = statements_for("postgresql")
    states = tables.conversation_states.c
    messages = tables.conversation_messages.c
    items = tables.memory_context_items.c
    types = {
        "conversation_id": "text",
        "user_id": "text",
        "expected_version": "bigint",
        "expected_count": "bigint",
        "set_updated_at": _type(states.updated_at),
        "scalars": "text[]",
        **{f"set_{name}": _type(states[name]) for name in _SCALARS},
        **{f"new_{name}": _type(messages[name]) + "[]" for name in _NEW_MESSAGE},
        "message_types": "text[]",
        "tool_name": "text",
        "since": _type(messages.created_at),
        "last_messages": "bigint",
        "context_sources": "text[]",
        "context_types": "text[]",
        "min_relevance": _type(items.relevance_score),
        "context_limit": "bigint",
    }

    def arguments(names: tuple[str, ...]) -> str:
        return ", ".join(f"p_{name} {types[name]}" for name in names)

    # The append: the UPDATE's row into the result columns (no row: nothing matched),
    # then the INSERT of the messages: one message (a turn) as the one-row INSERT,
    # cheaper for Citus than the INSERT ... SELECT of arrays.
    returned = ("version", "message_count", "next_item_id", "user_id", "created_at")
    count = "cardinality(p_new_role)"
    first = f"message_count - {count}"
    order = (*APPEND_ARGS, "n_messages", "first_seq", "seq", *_NEW_MESSAGE)
    values = {name: f"p_{name}" for name in APPEND_ARGS}
    values.update(n_messages=count, first_seq=first, seq=first)
    values.update({name: f"p_new_{name}[1]" for name in _NEW_MESSAGE})
    update = _execute(statements.get("normalized_sql.delegated_update"), order, values)
    many = _execute(statements.get("normalized_sql.delegated_insert"), order, values)
    one = _execute(
        statements.get("normalized_sql.insert_row", "conversation_messages"), order, values
    )
    append = f"""CREATE OR REPLACE FUNCTION {APPEND_FUNCTION}({arguments(APPEND_ARGS)})
RETURNS TABLE ({", ".join(f"{name} {_type(states[name])}" for name in returned)})
LANGUAGE plpgsql SET search_path = {schema} AS $fn$
BEGIN
    EXECUTE {update} INTO {", ".join(returned)};
    IF version IS NULL THEN
        RETURN;
    END IF;
    IF {count} = 1 THEN
        EXECUTE {one};
    ELSIF {count} > 1 THEN
        EXECUTE {many};
    END IF;
    RETURN NEXT;
END
$fn$"""

    # The load: the state row (none: missing or another user's), the window newest
    # first, the context items; STABLE, so the three share the call's snapshot. Its
    # columns are those the statements return elsewhere.
    from .normalized_sql import ITEM_COLUMNS as item_columns
    from .normalized_sql import MESSAGE_COLUMNS as message_columns
    from .normalized_sql import STATE_COLUMNS as state_columns

    message_out = [f"m_{c.name}" for c in message_columns]
    state_out = [f"s_{c.name}" for c in state_columns] + ["s_metadata"]
    items_out = [f"i_{c.name}" for c in item_columns]
    result = [f"m_{c.name} {_type(c)}" for c in message_columns]
    result += [f"s_{c.name} {_type(c)}" for c in state_columns]
    result.append("s_metadata text")
    result += [f"i_{c.name} {_type(c)}" for c in item_columns]
    order = (*LOAD_ARGS, "message_count")
    values = {name: f"p_{name}" for name in LOAD_ARGS}
    values["message_count"] = "state_count"
    state = _by_shape(
        "normalized_sql.state_select", ("user_id",), lambda owned: (owned, False), order, values
    )
    window = _by_shape(
        "normalized_sql.messages_select",
        _MESSAGE_FILTERS[1:],
        lambda types, tool, since: (types, tool, since, True),
        order,
        values,
    )
    chosen = _by_shape(
        "normalized_sql.items_select",
        _ITEM_FILTERS,
        lambda sources, types, relevance, limited: (sources, types, False, relevance, limited),
        order,
        values,
    )
    clear = " ".join(f"{name} := NULL;" for name in state_out)
    load = f"""CREATE OR REPLACE FUNCTION {LOAD_FUNCTION}({arguments(LOAD_ARGS)})
RETURNS TABLE ({", ".join(result)})
LANGUAGE plpgsql STABLE SET search_path = {schema} AS $fn$
DECLARE
    state_count bigint;
BEGIN
    EXECUTE {state} INTO {", ".join(state_out)};
    IF s_version IS NULL THEN
        RETURN;
    END IF;
    RETURN NEXT;
    state_count := s_message_count;
    {clear}
    IF p_last_messages <> 0 THEN
        FOR {", ".join(message_out)} IN EXECUTE {window} LOOP
            RETURN NEXT;
        END LOOP;
    END IF;
    {" ".join(f"{name} := NULL;" for name in message_out)}
    IF p_context_limit IS DISTINCT FROM 0 THEN
        FOR {", ".join(items_out)} IN EXECUTE {chosen} LOOP
            RETURN NEXT;
        END LOOP;
    END IF;
END
$fn$"""
    return [append, load]


_SIGNATURE = "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = :name"
# Citus propagates a new function to the workers by itself (a row here without a
# distribution argument); a delegated one has its distribution argument.
_DISTRIBUTED = (
    "SELECT EXISTS (SELECT 1 FROM pg_dist_object "
    "WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure(:signature) "
    "AND distribution_argument_index IS NOT NULL)"
)


def create_functions(connection: Connection) -> list[str]:
    """Create (or replace) the delegated functions and distribute them by their first
    argument, co-located with ``conversation_states``, in the caller's transaction
    (one after the tables' distribution is committed). Nothing without Citus."""
    if connection.dialect.name != "postgresql" or not is_citus(connection):
        return []
    import sqlalchemy as sa

    done = []
    schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    for definition in function_definitions(quoted):
        connection.exec_driver_sql(definition)
    for name in (APPEND_FUNCTION, LOAD_FUNCTION):
        signature = connection.execute(sa.text(_SIGNATURE), {"name": name}).scalar_one()
        if connection.execute(sa.text(_DISTRIBUTED), {"signature": signature}).scalar():
            continue
        connection.execute(
            sa.text(
                "SELECT create_distributed_function(:signature, '$1', colocate_with => :anchor)"
            ),
            {"signature": signature, "anchor": ANCHOR},
        )
        done.append(f"{name}: distributed by its conversation id, co-located with {ANCHOR}")
        log.info("citus: %s", done[-1])
    return done
