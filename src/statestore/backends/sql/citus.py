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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...core.errors import StateStoreError
from .database import Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.expression import ClauseElement

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
# run on the local shards (Citus's local execution). ``statestore_append_v1`` is the
# append-only write of ``NormalizedBackend._append_in_one_statement`` (the state row's
# UPDATE, then the INSERT of the messages); ``statestore_load_v1`` the windowed read (the
# state row, its metadata, the window, the context items), STABLE so that its
# statements share the snapshot of the call. Their statements are the ones the backend
# sends elsewhere (``normalized_sql``), static: PL/pgSQL prepares each once per session
# with the function's arguments as its parameters, and each reads or writes one table
# with the conversation id compared to a parameter, which Citus plans without its
# distributed planner (a fast-path query) and can keep the plan of.
#
# Kept, that is, where Citus's local plan cache works. From Citus 13.2.1 (and in 14.0)
# it misses every time for a statement whose shard is chosen at execution: each call
# plans the statement for the shard again and adds the plan to the cache, which grows by
# a plan per call in the worker's session (a session the coordinator keeps open) until
# that session ends (``test_citus`` checks that it does not). The fix
# (citusdata/citus#8824) was merged after 14.0.1. So the functions run with custom plans
# (``_PLAN_CACHE_MODE``): Citus plans each statement at each call, as for dynamic SQL,
# and keeps nothing. On a Citus whose cache works, ``auto`` lets PL/pgSQL keep generic
# plans (docs/benchmarks.md#on-citus measures both).
#
# A new version of a function (other arguments or results) gets a new name (``_v2``), so
# a store keeps calling the one it knows; a new body under the same signature replaces
# the old one at the next ``migrate``.

_PLAN_CACHE_MODE = "force_custom_plan"

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


def _static(statement: ClauseElement, variables: Mapping[str, str]) -> str:
    """The text of ``statement`` (a SQLAlchemy statement of ``normalized_sql``) as a
    static statement of a PL/pgSQL body: each of its parameters replaced by the
    PL/pgSQL expression ``variables[name]``, which PL/pgSQL passes to the statement as
    a parameter (it parses the statement once per session). A parameter without an
    expression fails to compile (a statement with a value of its own renders it)."""
    import sqlalchemy as sa
    from sqlalchemy.sql.expression import ClauseElement
    from sqlalchemy.sql.visitors import ExternallyTraversible, replacement_traverse

    from .compile import dialect_for

    def variable(element: ExternallyTraversible, **kw: Any) -> ClauseElement | None:
        if isinstance(element, sa.BindParameter) and element.key in variables:
            return sa.literal_column(variables[element.key])
        return None

    static = replacement_traverse(statement, {}, variable)
    assert isinstance(static, ClauseElement)
    if isinstance(static, sa.Insert):
        # Its values are expressions now: SQLAlchemy would add a RETURNING of the key
        # they compute, a result the function has no use for.
        static = static.inline()
    dialect = dialect_for("postgresql")
    return str(static.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _by_shape(
    filters: tuple[str, ...],
    statement: Callable[..., Any],
    run: Callable[[str], str],
    variables: Mapping[str, str],
) -> str:
    """``IF ... ELSIF ... ELSE ... END IF``: a branch per shape, ``run`` of the static
    text of ``statement(*flags)``, a flag for each of ``filters`` whose argument is not
    NULL (the last shape is the one left for ``ELSE``). Each branch is a statement of
    its own, as each shape is on the statement path."""
    shapes = list(itertools.product((False, True), repeat=len(filters)))
    branches = []
    for i, flags in enumerate(shapes):
        test = " AND ".join(
            f"p_{name} IS {'NOT ' if on else ''}NULL"
            for name, on in zip(filters, flags, strict=True)
        )
        head = "ELSE" if i == len(shapes) - 1 else f"{'ELSIF' if i else 'IF'} {test} THEN"
        branches.append(f"{head}\n        {run(_static(statement(*flags), variables))}")
    return "\n    ".join(branches) + "\n    END IF;"


def _type(column: Any) -> str:
    """The SQL type of a function's argument or result for ``column``."""
    import sqlalchemy as sa

    from .compile import cast_type, dialect_for

    dialect = dialect_for("postgresql")
    return str(sa.types.to_instance(cast_type(column, dialect)).compile(dialect))


def function_definitions(schema: str) -> list[str]:
    """The CREATE OR REPLACE FUNCTION statements of the delegated functions, for the
    tables of ``schema`` (a quoted identifier). A function runs no statement of its
    own, only those of ``normalized_sql``, static (see ``_static``); it finds the
    tables in ``schema`` whatever the search_path of the worker's session that runs
    it."""
    import sqlalchemy as sa

    from . import normalized_sql, tables
    from .compile import dialect_for, metadata_json

    dialect = dialect_for("postgresql")
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
    # cheaper for Citus than the INSERT ... SELECT of arrays. The result columns are
    # named as the table's: in a statement a name is the column's.
    returned = ("version", "message_count", "next_item_id", "user_id", "created_at")
    variables = {name: f"p_{name}" for name in APPEND_ARGS}
    variables.update(n_messages="n_new", first_seq="first_seq", seq="first_seq")
    update = _static(normalized_sql.delegated_update(dialect), variables)
    many = _static(normalized_sql.delegated_insert(dialect), variables)
    table = tables.conversation_messages
    # The one-row INSERT's parameters are implicit (one per column): named here.
    one_row = normalized_sql.insert_row(dialect, table.name).values(
        {c.name: sa.bindparam(c.name) for c in table.c}
    )
    one = _static(one_row, {**variables, **{name: f"p_new_{name}[1]" for name in _NEW_MESSAGE}})
    append = f"""CREATE OR REPLACE FUNCTION {APPEND_FUNCTION}({arguments(APPEND_ARGS)})
RETURNS TABLE ({", ".join(f"{name} {_type(states[name])}" for name in returned)})
LANGUAGE plpgsql
SET search_path = {schema} SET plan_cache_mode = {_PLAN_CACHE_MODE} AS $fn$
#variable_conflict use_column
DECLARE
    n_new bigint := cardinality(p_new_role);
    first_seq bigint;
BEGIN
    {update}
    INTO {", ".join(returned)};
    IF version IS NULL THEN
        RETURN;
    END IF;
    first_seq := message_count - n_new;
    IF n_new = 1 THEN
        {one};
    ELSIF n_new > 1 THEN
        {many};
    END IF;
    RETURN NEXT;
END
$fn$"""

    # The load: the state row (none: missing or another user's), the window newest
    # first, the context items; STABLE, so the three share the call's snapshot. Its
    # columns are those the statements return elsewhere.
    message_columns = normalized_sql.MESSAGE_COLUMNS
    state_columns = normalized_sql.STATE_COLUMNS
    item_columns = normalized_sql.ITEM_COLUMNS
    message_out = [f"m_{c.name}" for c in message_columns]
    state_out = [f"s_{c.name}" for c in state_columns] + ["s_metadata"]
    items_out = [f"i_{c.name}" for c in item_columns]
    result = [f"m_{c.name} {_type(c)}" for c in message_columns]
    result += [f"s_{c.name} {_type(c)}" for c in state_columns]
    result.append("s_metadata text")
    result += [f"i_{c.name} {_type(c)}" for c in item_columns]
    variables = {name: f"p_{name}" for name in LOAD_ARGS}
    variables["message_count"] = "state_count"

    def rows_into(out: list[str], inner: str = "RETURN NEXT;") -> Callable[[str], str]:
        def run(select: str) -> str:
            return f"FOR {', '.join(out)} IN {select} LOOP\n        {inner}\n    END LOOP;"

        return run

    # The state row, then its metadata (one row: an aggregate): two statements where
    # the statement path has one (``state_select``), each on one table, which Citus
    # plans once for the session with the conversation id a parameter, where it would
    # plan a statement with a subquery again at every call. STABLE: one snapshot.
    metadata = metadata_json(sa.bindparam("conversation_id"), dialect).element
    with_metadata = rows_into(["s_metadata"])(_static(metadata, variables))
    state = _by_shape(
        ("user_id",),
        lambda owned: normalized_sql.state_select(dialect, owned, False).with_only_columns(
            *state_columns
        ),
        rows_into(state_out[:-1], with_metadata),
        variables,
    )
    window = _by_shape(
        _MESSAGE_FILTERS[1:],
        lambda by_types, by_tool, since: normalized_sql.messages_select(
            dialect, by_types, by_tool, since, True
        ),
        rows_into(message_out),
        variables,
    )
    chosen = _by_shape(
        _ITEM_FILTERS,
        lambda sources, kinds, relevance, limited: normalized_sql.items_select(
            dialect, sources, kinds, False, relevance, limited
        ),
        rows_into(items_out),
        variables,
    )
    load = f"""CREATE OR REPLACE FUNCTION {LOAD_FUNCTION}({arguments(LOAD_ARGS)})
RETURNS TABLE ({", ".join(result)})
LANGUAGE plpgsql STABLE
SET search_path = {schema} SET plan_cache_mode = {_PLAN_CACHE_MODE} AS $fn$
DECLARE
    state_count bigint;
BEGIN
    {state}
    IF s_version IS NULL THEN
        RETURN;
    END IF;
    state_count := s_message_count;
    {" ".join(f"{name} := NULL;" for name in state_out)}
    IF p_last_messages <> 0 THEN
    {window}
    END IF;
    {" ".join(f"{name} := NULL;" for name in message_out)}
    IF p_context_limit IS DISTINCT FROM 0 THEN
    {chosen}
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
