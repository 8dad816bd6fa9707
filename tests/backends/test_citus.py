"""statestore on Citus: the contract suite, one shard per conversation, one snapshot per read.

These run when ``STATESTORE_TEST_CITUS_URL`` points at a Citus coordinator (a user who
may create databases; its workers must accept the same user from this machine), and
skip, naming that variable, otherwise. Each session creates a database of its own on
the cluster, registers the coordinator's nodes in it, migrates it (which distributes the
tables) and drops it at the end.

The routing checks capture every statement a backend sends for one conversation
(asyncpg's ``Connection.add_query_logger``) and EXPLAIN it, with its parameters, on
the coordinator: each must be planned by Citus's router for a single shard.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import statestore
from statestore import AgentState, ContextItem, LoadOptions, Message, StatePatch
from statestore.backends.sql import citus, migrate
from statestore.testing.contract import *  # noqa: F403
from statestore.testing.plugin import BackendTarget, backend_targets

CITUS_ENV = "STATESTORE_TEST_CITUS_URL"
TABLES = (
    "conversation_states",
    "conversation_messages",
    "memory_context_items",
    "memory_metadata",
    "memory_chunks",
)

pytestmark = [
    pytest.mark.citus,
    pytest.mark.skipif(
        not os.environ.get(CITUS_ENV),
        reason=f"no Citus coordinator: set {CITUS_ENV}=postgresql://user@host:port/postgres "
        "to run the citus tests",
    ),
]


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _at(url: str, *, host: str | None = None, port: int | None = None, db: str) -> str:
    u = make_url(url)
    return u.set(host=host or u.host, port=port or u.port, database=db).render_as_string(
        hide_password=False
    )


async def _create_database(server: str, name: str) -> str:
    """A new database on the Citus cluster at ``server`` with the same nodes."""
    import asyncpg

    conn = await asyncpg.connect(server, timeout=30)
    try:
        if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'citus'"):
            pytest.skip(f"{CITUS_ENV} does not point at a Citus coordinator (no citus extension)")
        nodes = await conn.fetch(
            "SELECT nodename, nodeport, groupid FROM pg_dist_node "
            "WHERE noderole = 'primary' ORDER BY groupid"
        )
        await conn.execute("SET citus.enable_create_database_propagation TO on")
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _at(server, db=name)
    for host, port, group in nodes:
        if group != 0:  # a worker: the extension before the coordinator adds it
            worker = await asyncpg.connect(_at(server, host=host, port=port, db=name))
            try:
                await worker.execute("CREATE EXTENSION IF NOT EXISTS citus")
            finally:
                await worker.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        for host, port, group in nodes:
            if group == 0:
                await conn.execute("SELECT citus_set_coordinator_host($1, $2)", host, port)
            else:
                await conn.execute("SELECT citus_add_node($1, $2)", host, port)
    finally:
        await conn.close()
    return url


async def _drop_database(server: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server, timeout=30)
    try:
        await conn.execute("SET citus.enable_create_database_propagation TO on")
        for attempt in range(5):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.ObjectInUseError:
                # A worker's Citus maintenance daemon, which FORCE does not end, can
                # still be on the database for a moment: try again.
                if attempt == 4:
                    raise
                await asyncio.sleep(1)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def citus_url() -> Iterator[str]:
    """A fresh database on the Citus cluster, migrated (and so distributed), dropped at
    the end of the session."""
    server = os.environ.get(CITUS_ENV)
    if not server:
        pytest.skip(
            f"no Citus coordinator: set {CITUS_ENV}=postgresql://user@host:port/postgres "
            "to run the citus tests"
        )
    name = f"statestore_citus_{uuid.uuid4().hex[:12]}"
    url = _run(_create_database(server, name))
    try:
        _run(migrate.upgrade(url))
        yield url
    finally:
        _run(_drop_database(server, name))


# -- the contract suite on Citus ---------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url(citus_url: str) -> str:
    """The contract suite's PostgreSQL database is the Citus one here."""
    return citus_url


@pytest.fixture(
    params=[pytest.param(t, id=t.id) for t in backend_targets() if t.engine == "postgresql"]
)
def backend_target(request: pytest.FixtureRequest) -> BackendTarget:
    """Only the backends that run on PostgreSQL (so on Citus)."""
    target: BackendTarget = request.param
    return target


# -- the schema ---------------------------------------------------------------------------


async def test_tables_are_distributed_and_colocated(citus_url: str) -> None:
    """Every statestore table is distributed by conversation_id in one co-location
    group, and alembic_version is a reference table."""
    import asyncpg

    conn = await asyncpg.connect(citus_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name::text, citus_table_type, distribution_column, colocation_id "
            "FROM citus_tables"
        )
    finally:
        await conn.close()
    found = {r[0]: (r[1], r[2], r[3]) for r in rows}
    assert found["alembic_version"][0] == "reference"
    groups = set()
    for table in TABLES:
        kind, column, group = found[table]
        assert (kind, column) == ("distributed", "conversation_id"), table
        groups.add(group)
    assert len(groups) == 1


async def test_migrate_again_changes_nothing(citus_url: str) -> None:
    """Migrating a distributed database again is a no-op (the distribution step only
    acts on tables not distributed yet)."""
    await migrate.upgrade(citus_url)
    await test_tables_are_distributed_and_colocated(citus_url)


async def test_a_new_table_gets_distributed(citus_url: str) -> None:
    """A statestore table that is still local (as one a later migration creates) is
    distributed by the next migrate, co-located with the others, its rows kept."""
    import asyncpg

    conn = await asyncpg.connect(citus_url)
    try:
        # memory_chunks: the one table no foreign key ties to the others.
        await conn.execute(
            "INSERT INTO memory_chunks (conversation_id, content, created_at) "
            "VALUES ('kept', '{}', now())"
        )
        await conn.execute("SELECT undistribute_table('memory_chunks')")
        assert not await conn.fetchval(
            "SELECT count(*) FROM citus_tables WHERE table_name = 'memory_chunks'::regclass"
        )
        await migrate.upgrade(citus_url)
        assert (
            await conn.fetchval("SELECT count(*) FROM memory_chunks WHERE conversation_id = 'kept'")
            == 1
        )
        await conn.execute("DELETE FROM memory_chunks WHERE conversation_id = 'kept'")
    finally:
        await conn.close()
    await migrate.upgrade(citus_url)
    await test_tables_are_distributed_and_colocated(citus_url)


# -- routing: one shard per statement -----------------------------------------------------

LoggedQuery = Any
FUNCTIONS = (citus.APPEND_FUNCTION, citus.LOAD_FUNCTION)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[LoggedQuery]:
    """Every statement sent on the asyncpg connections opened during the test."""
    import asyncpg

    logged: list[LoggedQuery] = []
    connect = asyncpg.connect

    async def logging_connect(*args: Any, **kwargs: Any) -> Any:
        conn = await connect(*args, **kwargs)
        conn.add_query_logger(logged.append)
        return conn

    monkeypatch.setattr(asyncpg, "connect", logging_connect)
    return logged


TASKS = re.compile(r"Task Count: (\d+)")
PARAM = re.compile(r"\$(\d+)")
NOT_EXPLAINED = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|COPY|SAVEPOINT|RELEASE)\b", re.I)


def _rows_from_parameters(plan: str) -> bool:
    """An INSERT ... SELECT unnest($n) (the bulk insert): the SELECT reads no table,
    Citus computes its rows on the coordinator and copies them to the shard of their
    conversation_id, one shard as they share it, like a COPY. Not a router plan, and
    accepted only while no distributed table is read (no Citus scan under it)."""
    return (
        "Custom Scan (Citus INSERT ... SELECT)" in plan
        and "pull to coordinator" in plan
        and "Citus Adaptive" not in plan
        and not TASKS.search(plan)
    )


async def _explain_all(url: str, logged: list[LoggedQuery]) -> list[tuple[str, str]]:
    """(statement, why it is not a single-shard router plan) for each logged statement
    that touches a statestore table and is not one."""
    import asyncpg

    bad = []
    sent = list(logged)  # this connection's own EXPLAINs get logged too
    conn = await asyncpg.connect(url)
    try:
        for q in sent:
            sql = q.query
            if NOT_EXPLAINED.match(sql) or not any(t in sql for t in (*TABLES, *FUNCTIONS)):
                continue
            args = q.args
            params = max((int(n) for n in PARAM.findall(sql)), default=0)
            if len(args) != params and args and isinstance(args[0], tuple | list):
                args = args[0]  # executemany: the rows share one plan shape
            try:
                plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
            except asyncpg.PostgresError as exc:
                bad.append((sql, f"EXPLAIN failed: {exc}"))
                continue
            tasks = [int(n) for n in TASKS.findall(plan)]
            if _rows_from_parameters(plan):
                continue
            if tasks != [1]:
                bad.append((sql, f"Task Count {tasks}\n{plan}"))
            elif "Subplan" in plan or "intermediate" in plan.lower():
                bad.append((sql, f"a distributed subplan\n{plan}"))
    finally:
        await conn.close()
    return bad


def _state(n: int = 3) -> AgentState:
    return AgentState(
        user_input="hi",
        focus_areas=["weather"],
        step_count=1,
        conversation_history=[
            Message(
                role="user" if i % 2 == 0 else "tool",
                content=f"m{i}",
                message_type="text" if i % 2 == 0 else "tool_result",
                tool_name=None if i % 2 == 0 else "search",
            )
            for i in range(n)
        ],
        memory_context=[
            ContextItem(source="rag", content="c0", relevance_score=0.9, context_type="weather"),
            ContextItem(source="ltm", content="c1", relevance_score=0.2, context_type="misc"),
        ],
        metadata={"model": "m", "k": 1},
    )


Operation = Callable[[Any, str], Awaitable[Any]]


async def _load_and_append(store: Any, cid: str) -> None:
    state = await store.load_state(cid, LoadOptions(last_messages=2))
    state.conversation_history.append(Message(role="assistant", content="more"))
    await store.save_state(cid, state)


async def _load_and_rewrite_last(store: Any, cid: str) -> None:
    state = await store.load_state(cid, LoadOptions(last_messages=2))
    state.conversation_history[-1] = Message(role="assistant", content="rewritten")
    await store.save_state(cid, state)


async def _load_and_change_context(store: Any, cid: str) -> None:
    state = await store.load_state(cid)
    del state.memory_context[0]
    state.memory_context.append(ContextItem(source="rag", content="new", relevance_score=0.5))
    state.metadata["k"] = 2
    del state.metadata["model"]
    await store.save_state(cid, state)


OPERATIONS: dict[str, Operation] = {
    "save_new": lambda s, c: s.save_state(c + "-new", _state(), user_id="u1"),
    "save_replace": lambda s, c: s.save_state(c, _state(4)),
    "save_expected_version": lambda s, c: s.save_state(c, _state(2), expected_version=1),
    "save_loaded_append": _load_and_append,
    "save_loaded_rewrite": _load_and_rewrite_last,
    "save_loaded_context": _load_and_change_context,
    "append_one": lambda s, c: s.update_state(
        c, StatePatch(append_messages=[Message(role="user", content="x")], step_count=2)
    ),
    "append_many": lambda s, c: s.update_state(
        c,
        StatePatch(append_messages=[Message(role="user", content=str(i)) for i in range(3)]),
        user_id="u1",
    ),
    "update_scalars_only": lambda s, c: s.update_state(
        c, StatePatch(user_input="new", focus_areas=["a"]), expected_version=1
    ),
    "update_everything": lambda s, c: s.update_state(
        c,
        StatePatch(
            append_messages=[Message(role="user", content="x")],
            add_context=[ContextItem(source="rag", content="n", relevance_score=0.8)],
            remove_context=[1],
            set_metadata={"a": [1, 2]},
            delete_metadata=["k"],
            last_tool_result={"ok": True},
        ),
    ),
    "load_default": lambda s, c: s.load_state(c),
    "load_owner": lambda s, c: s.load_state(c, user_id="u1"),
    "load_window": lambda s, c: s.load_state(c, LoadOptions(last_messages=2)),
    "load_window_owner": lambda s, c: s.load_state(c, LoadOptions(last_messages=2), user_id="u1"),
    "load_no_messages": lambda s, c: s.load_state(c, LoadOptions(last_messages=0)),
    "load_smart": lambda s, c: s.load_state(c, LoadOptions.smart()),
    "load_message_types": lambda s, c: s.load_state(c, LoadOptions(message_types=["tool_result"])),
    "load_tool_name": lambda s, c: s.load_state(
        c, LoadOptions(tool_name="search", last_messages=5)
    ),
    "load_context_filters": lambda s, c: s.load_state(
        c,
        LoadOptions(
            min_relevance=0.1,
            context_limit=1,
            context_sources=["rag"],
            context_types=["weather"],
        ),
    ),
    "load_focus_only": lambda s, c: s.load_state(c, LoadOptions(focus_only=True)),
    "load_no_context": lambda s, c: s.load_state(c, LoadOptions(context_limit=0)),
    "load_missing": lambda s, c: _missing(s.load_state(c + "-missing")),
    "append_or_create_existing": lambda s, c: s.update_state(
        c, StatePatch(append_messages=[Message(role="user", content="x")]), create=True
    ),
    "append_or_create_new": lambda s, c: s.update_state(
        c + "-new", StatePatch(append_messages=[Message(role="user", content="x")]), create=True
    ),
    "pop_messages": lambda s, c: s.pop_messages(c, 2),
    "load_since": lambda s, c: s.load_state(
        c, LoadOptions(messages_since=datetime(2024, 1, 1, tzinfo=UTC), last_messages=2)
    ),
    "load_with_shared": lambda s, c: s.load_state(
        c, LoadOptions(shared=frozenset({"app:a", "user:u1"}), last_messages=2)
    ),
    "update_with_shared": lambda s, c: s.update_state(
        c,
        StatePatch(
            append_messages=[Message(role="user", content="x")],
            set_shared={"app:a": {"k": 1}},
            delete_shared={"user:u1": ["gone"]},
        ),
    ),
    "delete": lambda s, c: s.delete_state(c),
    "delete_owner": lambda s, c: s.delete_state(c, user_id="u1"),
    "delete_missing": lambda s, c: s.delete_state(c + "-missing"),
}


async def _missing(load: Awaitable[Any]) -> None:
    with pytest.raises(statestore.ConversationNotFound):
        await load


ROUTED_BACKENDS = ("postgres", "legacy-blob", "dual")


@pytest.mark.parametrize("backend", ROUTED_BACKENDS)
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_statements_are_routed_to_one_shard(
    citus_url: str, statements: list[LoggedQuery], backend: str, operation: str
) -> None:
    """Every statement of one per-conversation operation is planned by Citus's router
    for a single shard (no fan-out to every shard, no distributed subplan)."""
    cid = f"route-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store(backend, url=citus_url) as store:
        await store.save_state(cid, _state(), user_id="u1")
        statements.clear()
        await OPERATIONS[operation](store, cid)
    sent = [q for q in statements if any(t in q.query for t in (*TABLES, *FUNCTIONS))]
    assert sent, "no statement was captured"
    bad = await _explain_all(citus_url, statements)
    assert not bad, "\n\n".join(f"{sql}\n-> {why}" for sql, why in bad)


# -- one snapshot per read ----------------------------------------------------------------


async def test_windowed_loads_are_never_torn(citus_url: str) -> None:
    """With one writer rewriting the last message again and again, no windowed load
    returns one write's state row with another write's messages."""
    cid = f"torn-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url, pool_size=6) as store:
        state = _state(5)
        state.step_count = 0
        state.conversation_history[-1] = Message(role="assistant", content="0")
        await store.save_state(cid, state)
        stop = asyncio.Event()
        writes = 0

        async def writer() -> None:
            nonlocal writes
            while not stop.is_set():
                loaded = await store.load_state(cid, LoadOptions(last_messages=1))
                n = loaded.step_count + 1
                # The step count and the last message's content always change together.
                loaded.step_count = n
                loaded.conversation_history[-1] = Message(role="assistant", content=str(n))
                await store.save_state(cid, loaded)
                writes += 1

        torn: list[tuple[int, str]] = []
        loads = 0

        async def reader() -> None:
            nonlocal loads
            while writes < 150:
                view = await store.load_state(cid, LoadOptions(last_messages=2))
                loads += 1
                last = view.conversation_history[-1].content
                if last != str(view.step_count):
                    torn.append((view.step_count, last))

        writing = asyncio.create_task(writer())
        try:
            await asyncio.gather(*(reader() for _ in range(4)))
        finally:
            stop.set()
            await writing
    assert writes >= 150 and loads > writes
    assert not torn, f"{len(torn)} of {loads} loads were torn, e.g. {torn[:5]}"


# -- stats --------------------------------------------------------------------------------


async def test_stats_report_the_shards_sizes(citus_url: str) -> None:
    """`statestore stats` counts the bytes in the workers' shards, not the coordinator's
    empty shell tables, and lists the largest conversations (a query that fans out)."""
    import asyncpg

    from statestore.core.maintenance import maintenance_of

    cid = f"stats-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url) as store:
        await store.save_state(cid, _state(50))
        stats = await maintenance_of(store).storage_stats(top=100)
    conn = await asyncpg.connect(citus_url)
    try:
        shell = await conn.fetchval("SELECT pg_total_relation_size('conversation_messages')")
        shards = await conn.fetchval("SELECT citus_total_relation_size('conversation_messages')")
    finally:
        await conn.close()
    assert stats.bytes["conversation_messages"] == shards > shell
    assert stats.rows["conversation_messages"] >= 50
    assert (cid, 50, 2) in [row[:3] for row in stats.largest]


# -- delegated calls: an append and a windowed load in one round trip ---------------------


async def test_functions_are_distributed_by_the_conversation(citus_url: str) -> None:
    """migrate distributes the delegated functions by their first argument (the
    conversation id), co-located with conversation_states."""
    import asyncpg

    conn = await asyncpg.connect(citus_url)
    try:
        rows = await conn.fetch(
            "SELECT p.proname::text, o.distribution_argument_index, o.colocationid "
            "FROM pg_dist_object o JOIN pg_proc p ON p.oid = o.objid "
            "WHERE o.classid = 'pg_proc'::regclass"
        )
        anchor = await conn.fetchval(
            "SELECT colocationid FROM pg_dist_partition "
            "WHERE logicalrelid = 'conversation_states'::regclass"
        )
    finally:
        await conn.close()
    found = {r[0]: (r[1], r[2]) for r in rows}
    for name in FUNCTIONS:
        assert found[name] == (0, anchor), name


async def test_delegated_calls_run_on_the_shards_worker(citus_url: str) -> None:
    """The coordinator sends each call whole to the one worker holding the
    conversation's shard (one task, the function scanned there)."""
    import asyncpg

    cid = f"delegated-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url) as store:
        await store.save_state(cid, _state())
    now = datetime.now(UTC)
    append = dict.fromkeys(citus.APPEND_ARGS)
    append.update(conversation_id=cid, set_updated_at=now, scalars=[])
    append.update({f"new_{name}": [] for name in ("role", "content", "message_type")})
    append.update({f"new_{name}": [] for name in ("tool_name", "metadata", "payload")})
    append["new_created_at"] = []
    load = dict.fromkeys(citus.LOAD_ARGS)
    load.update(conversation_id=cid, last_messages=2)
    conn = await asyncpg.connect(citus_url)
    try:
        worker = await conn.fetchval(
            "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = "
            "get_shard_id_for_distribution_column('conversation_states', $1::text)",
            cid,
        )
        for call, args in ((citus.APPEND_CALL, append), (citus.LOAD_CALL, load)):
            names = citus.APPEND_ARGS if call == citus.APPEND_CALL else citus.LOAD_ARGS
            plan = "\n".join(
                r[0] for r in await conn.fetch(f"EXPLAIN {call}", *(args[n] for n in names))
            )
            assert TASKS.findall(plan) == ["1"], plan
            assert f"port={worker} " in plan, plan
            assert "Function Scan on statestore_" in plan, plan
    finally:
        await conn.close()


async def test_an_append_and_a_smart_load_are_one_round_trip(
    citus_url: str, statements: list[LoggedQuery]
) -> None:
    """A turn's append and a smart load each send one statement, the delegated call."""
    cid = f"one-trip-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url) as store:
        await store.save_state(cid, _state())
        for operation, call in (
            (
                lambda: store.update_state(cid, StatePatch(append_messages=[Message("user", "x")])),
                citus.APPEND_CALL,
            ),
            (lambda: store.load_state(cid, LoadOptions.smart()), citus.LOAD_CALL),
        ):
            await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon after
            statements.clear()
            await operation()
            await asyncio.sleep(0.05)
            assert [q.query for q in statements] == [call]


def test_an_append_call_counts_as_a_write() -> None:
    """A call of the delegated append is a write (never run again on a dead
    connection); the delegated load is a read."""
    from statestore.backends.postgres import _is_read

    assert not _is_read(citus.APPEND_CALL)
    assert _is_read(citus.LOAD_CALL)


LOADS = {
    "window": LoadOptions(last_messages=2),
    "smart": LoadOptions.smart(),
    "no_messages": LoadOptions(last_messages=0),
    "no_context": LoadOptions(last_messages=3, context_limit=0),
    "filters": LoadOptions(
        last_messages=5,
        message_types=frozenset({"tool_result"}),
        tool_name="search",
        messages_since=datetime(2020, 1, 1, tzinfo=UTC),
        context_sources=frozenset({"rag", "ltm"}),
        context_types=frozenset({"weather"}),
        min_relevance=0.1,
        context_limit=1,
    ),
}


def _loaded(view: AgentState) -> tuple[Any, ...]:
    return (
        view.to_dict(),
        view.version,
        view.user_id,
        view.created_at,
        view.updated_at,
        [m.seq for m in view.conversation_history],
        [c.item_id for c in view.memory_context],
    )


@pytest.mark.parametrize("options", list(LOADS))
async def test_a_delegated_load_gives_what_the_statements_give(
    citus_url: str, options: str
) -> None:
    """The delegated load returns what the statements it replaces return, for every
    option it takes, for the owner, another user (not found) and a missing id."""
    cid = f"same-load-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url) as store:
        db = store.backend._db
        assert db.delegates_calls
        await store.save_state(cid, _state(7), user_id="u1")
        results = []
        for delegated in (True, False):
            db.delegates_calls = delegated
            view = await store.load_state(cid, LOADS[options], user_id="u1")
            outcomes = []
            for other, user in ((cid, "u2"), (cid + "-missing", None)):
                with pytest.raises(statestore.ConversationNotFound):
                    await store.load_state(other, LOADS[options], user_id=user)
                outcomes.append("not found")
            results.append((_loaded(view), outcomes))
        db.delegates_calls = True
    assert results[0] == results[1]


async def test_a_delegated_append_gives_what_the_statements_give(citus_url: str) -> None:
    """The delegated append stores, returns and refuses (version, count, owner) as the
    statements it replaces do, scalars included."""
    async with statestore.open_store("postgres", url=citus_url) as store:
        db = store.backend._db
        results = []
        for delegated in (True, False):
            db.delegates_calls = delegated
            cid = f"same-append-{uuid.uuid4().hex[:8]}"
            await store.save_state(cid, _state(), user_id="u1")
            outcome: list[Any] = []
            saved = await store.update_state(
                cid,
                StatePatch(
                    append_messages=[Message("user", "a"), Message("tool", "b", "tool_result")],
                    step_count=5,
                    user_input=None,
                    focus_areas=["x"],
                    last_tool_result={"ok": [1]},
                ),
                user_id="u1",
                expected_version=1,
            )
            outcome.append((saved.version, saved.message_count))
            one = await store.update_state(cid, StatePatch(append_messages=[Message("user", "c")]))
            outcome.append((one.version, one.message_count))
            for kwargs in ({"expected_version": 1}, {"user_id": "u2"}):
                try:
                    await store.update_state(
                        cid, StatePatch(append_messages=[Message("user", "no")]), **kwargs
                    )
                except statestore.StateStoreError as exc:
                    outcome.append(str(exc).replace(cid, "<cid>"))
            view = await store.load_state(cid, user_id="u1")
            kept = view.to_dict()
            for message in kept.pop("conversation_history"):
                del message["timestamp"]  # each run saves its own
                outcome.append(message)
            del kept["memory_context"]
            outcome.append(kept)
            outcome.append([m.seq for m in view.conversation_history])
            results.append(outcome)
        db.delegates_calls = True
    assert results[0] == results[1]
    assert "expected version 1, stored version is 3" in results[0][2]
    assert "not found" in results[0][3]


async def test_delegated_calls_leave_no_memory_behind(citus_url: str) -> None:
    """Calls one after the other in one session on the shard's worker (as the
    coordinator's session there makes them) do not grow its memory. On Citus 13.2.1 to
    14.0.1 a generic plan of a function's statement would add a local plan to Citus's
    cache at every call (100 KB and more each): the functions use custom plans."""
    import asyncpg

    cid = f"memory-{uuid.uuid4().hex[:8]}"
    async with statestore.open_store("postgres", url=citus_url) as store:
        await store.save_state(cid, _state(30))
    conn = await asyncpg.connect(citus_url)
    try:
        host, port = await conn.fetchrow(
            "SELECT nodename, nodeport FROM pg_dist_shard_placement WHERE shardid = "
            "get_shard_id_for_distribution_column('conversation_states', $1::text)",
            cid,
        )
    finally:
        await conn.close()
    now = datetime.now(UTC)
    append = dict.fromkeys(citus.APPEND_ARGS)
    append.update(conversation_id=cid, set_updated_at=now, scalars=[])
    append.update(new_role=["user"], new_content=["x"], new_message_type=["text"])
    append.update(new_tool_name=[None], new_created_at=[now], new_metadata=["{}"])
    append["new_payload"] = [None]
    load = dict.fromkeys(citus.LOAD_ARGS)
    load.update(conversation_id=cid, last_messages=20, min_relevance=0.7, context_limit=10)
    calls = (
        (citus.APPEND_CALL, [append[name] for name in citus.APPEND_ARGS]),
        (citus.LOAD_CALL, [load[name] for name in citus.LOAD_ARGS]),
    )
    worker = await asyncpg.connect(
        _at(citus_url, host=host, port=port, db=make_url(citus_url).database)
    )
    try:
        memory = "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"
        for call, args in calls:
            statement = await worker.prepare(call)
            for _ in range(20):  # past the 5 custom plans PostgreSQL makes first
                await statement.fetch(*args)
            before = await worker.fetchval(memory)
            for _ in range(200):
                await statement.fetch(*args)
            grown = await worker.fetchval(memory) - before
            assert grown < 2_000_000, f"{call}: {grown} bytes more after 200 calls"
    finally:
        await worker.close()
