"""Faults on a real PostgreSQL: connections killed mid-save, the server restarted under
an open store, an exhausted pool, a statement failing half-way, corrupt stored rows.

The restart test stops the shared server for a moment; deselect it with
``-m "not pg_restart"`` (CI runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import statestore
from statestore import (
    AgentState,
    BackendUnavailable,
    ContextItem,
    ConversationNotFound,
    CorruptState,
    Message,
    StatePatch,
    StateStoreError,
)

pytestmark = pytest.mark.postgres


def new_id(prefix: str = "fault") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[Any]:
    """A separate session on the test database, for locks, kills and hand edits."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


async def lock_rows(admin: Any, table: str, cid: str) -> Any:
    """A transaction on ``admin`` holding the rows of ``cid`` in ``table`` (FOR
    UPDATE); roll it back to release them."""
    lock = admin.transaction()
    await lock.start()
    await admin.execute(f"SELECT 1 FROM {table} WHERE conversation_id = $1 FOR UPDATE", cid)
    return lock


async def wait_for_lock_waiter(admin: Any) -> int:
    """The pid of the other session of this database that waits on a lock (polls;
    the bound is only there so a broken test cannot hang)."""
    for _ in range(1000):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("the save never blocked on the lock")


def big_state(tag: str, n: int) -> AgentState:
    return AgentState(
        user_input=tag,
        step_count=n,
        conversation_history=[Message("user", f"{tag} {i}") for i in range(n)],
        memory_context=[ContextItem(f"{tag} item", relevance_score=0.5)],
        metadata={"k": tag},
    )


@pytest.mark.parametrize("kind", ["replacing", "appending"])
async def test_connection_killed_mid_save_leaves_old_state(
    postgres_url: str, admin: Any, kind: str
) -> None:
    """pg_terminate_backend on the connection of a large save that is half done (a
    replacing save after deleting the old rows, or an append after inserting 5,000
    messages): the caller gets BackendUnavailable, the stored state is wholly the old
    one, and the same store object then saves and loads normally."""
    cid = new_id()
    async with statestore.open_store("postgres", postgres_url) as store:
        await store.save_state(cid, big_state("old", 50))
        before = await store.load_state(cid)

        if kind == "replacing":
            new = big_state("new", 5_000)  # never loaded: replaces what is stored
        else:
            new = await store.load_state(cid)
            new.conversation_history += [Message("assistant", f"new {i}") for i in range(5_000)]
            new.metadata["k"] = "new"
        # Hold the metadata row: the save blocks on it after its first statements
        # (replacing: state row updated, messages deleted; appending: 5,000 inserted).
        lock = await lock_rows(admin, "memory_metadata", cid)
        save = asyncio.create_task(store.save_state(cid, new))
        try:
            pid = await wait_for_lock_waiter(admin)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(BackendUnavailable) as info:
                await save
        finally:
            await lock.rollback()
            if not save.done():
                save.cancel()
        assert "PostgreSQL" in str(info.value)

        after = await store.load_state(cid)
        assert after.version == before.version
        assert after.to_dict() == before.to_dict()

        # The same object, no reconnect by hand.
        replacement = big_state("third", 100)
        await store.save_state(cid, replacement)
        assert (await store.load_state(cid)).to_dict() == replacement.to_dict()


async def test_every_pooled_connection_killed_between_calls(postgres_url: str, admin: Any) -> None:
    """All of the store's connections terminated while idle (as in a failover): a
    connection found dead before anything was sent on it is replaced silently; one
    lost during a statement fails that call only, with BackendUnavailable (a write
    whose outcome is unknown is never repeated); the store recovers by itself."""
    cid = new_id()
    async with statestore.open_store("postgres", postgres_url, pool_size=4) as store:
        await asyncio.gather(*(store.save_state(f"{cid}-{i}", AgentState()) for i in range(4)))
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        failures = 0
        for i in range(8):
            try:
                await store.update_state(f"{cid}-{i % 4}", StatePatch(step_count=i))
            except BackendUnavailable:
                failures += 1
        assert failures <= killed
        for i in range(4):
            await store.save_state(f"{cid}-{i}", AgentState(user_input="after"))
            assert (await store.load_state(f"{cid}-{i}")).user_input == "after"


@pytest.mark.parametrize("backend", ["postgres", "legacy-blob"])
async def test_reads_after_idle_connections_were_killed(
    postgres_url: str, admin: Any, backend: str
) -> None:
    """Every pooled connection terminated while idle, and gone from the server: the
    next reads find them dead before sending anything and use new connections, so no
    read fails (legacy-blob's reads included)."""
    cid, owner = new_id(), new_id("owner")
    async with statestore.open_store(backend, postgres_url, pool_size=3) as store:
        await store.save_state(cid, big_state("kept", 5), user_id=owner)
        await asyncio.gather(*(store.load_state(cid) for _ in range(3)))
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for _ in range(100):
            if await _store_connections(admin) == 0:
                break
            await asyncio.sleep(0.02)
        assert await _store_connections(admin) == 0
        for _ in range(4):
            assert (await store.load_state(cid)).user_input == "kept"
            listed = await store.list_conversations(user_id=owner)
            assert [c.conversation_id for c in listed] == [cid]


async def test_pool_timeout_is_a_clear_backend_unavailable(postgres_url: str, admin: Any) -> None:
    """With every pooled connection busy, a call waits up to pool_timeout and then
    raises BackendUnavailable naming the pool settings; the busy call still
    completes, and the store works afterwards."""
    cid = new_id()
    async with statestore.open_store(
        "postgres", postgres_url, pool_size=1, pool_timeout=0.2
    ) as store:
        await store.save_state(cid, AgentState(step_count=0))
        lock = await lock_rows(admin, "conversation_states", cid)
        busy = asyncio.create_task(store.update_state(cid, StatePatch(step_count=1)))
        try:
            await wait_for_lock_waiter(admin)  # holds the only connection
            with pytest.raises(BackendUnavailable, match=r"pool_size=1.*pool_timeout=0\.2"):
                await store.load_state(cid)
        finally:
            await lock.rollback()
        assert (await busy).version == 2
        assert (await store.load_state(cid)).step_count == 1


async def test_callers_wait_for_a_connection_within_pool_timeout(postgres_url: str) -> None:
    """Fifty concurrent calls on a pool of two connections: callers queue for a
    connection instead of failing, and every write lands."""
    cid = new_id()
    async with statestore.open_store("postgres", postgres_url, pool_size=2) as store:
        await store.save_state(cid, AgentState())
        await asyncio.gather(
            *(
                store.update_state(cid, StatePatch(append_messages=[Message("user", str(i))]))
                for i in range(50)
            )
        )
        assert (await store.load_state(cid)).history_total == 50


async def _store_connections(admin: Any) -> int:
    """How many sessions other than ``admin`` the test database has."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return count


async def test_pool_opens_at_most_pool_size_connections(postgres_url: str, admin: Any) -> None:
    """Two hundred concurrent calls on pool_size=3 never hold more than three
    connections, and closing the store closes all of them."""
    cid = new_id()
    async with statestore.open_store("postgres", postgres_url, pool_size=3) as store:
        await store.save_state(cid, AgentState())
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await _store_connections(admin))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(
                *(
                    store.update_state(cid, StatePatch(append_messages=[Message("user", str(i))]))
                    if i % 2
                    else store.load_state(cid)
                    for i in range(200)
                )
            )
        finally:
            watcher.cancel()
        assert 1 <= peak <= 3
        assert (await store.load_state(cid)).history_total == 100
    for _ in range(100):  # the server notices closed sessions a moment later
        if await _store_connections(admin) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _store_connections(admin) == 0


async def test_cancelled_call_gives_its_connection_back(postgres_url: str, admin: Any) -> None:
    """A write cancelled while it waits on a lock, on a pool of one connection: it is
    applied whole or not at all (the server may finish it before the cancel request
    lands), and the next calls get a working connection at once (the slot is not
    lost, no "another operation is in progress")."""
    cid = new_id()
    async with statestore.open_store(
        "postgres", postgres_url, pool_size=1, pool_timeout=2
    ) as store:
        await store.save_state(cid, AgentState(step_count=0))
        lock = await lock_rows(admin, "conversation_states", cid)
        write = asyncio.create_task(
            store.update_state(
                cid, StatePatch(step_count=1, append_messages=[Message("user", "cancelled")])
            )
        )
        try:
            await wait_for_lock_waiter(admin)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
        finally:
            await lock.rollback()
        seen = set()
        for _ in range(3):
            loaded = await store.load_state(cid)
            seen.add((loaded.version, loaded.step_count, loaded.history_total))
        assert seen in ({(1, 0, 0)}, {(2, 1, 1)})
        await store.update_state(cid, StatePatch(step_count=2))
        assert (await store.load_state(cid)).step_count == 2


async def test_statement_failing_half_way_rolls_back(postgres_url: str, admin: Any) -> None:
    """A database error raised inside a save after its first statements (a trigger
    refusing one context item) reaches the caller as a StateStoreError, not a driver
    error, and nothing of the save remains: scalars, messages, metadata."""
    cid = new_id()
    fn, trigger = f"refuse_{uuid.uuid4().hex[:8]}", f"trg_{uuid.uuid4().hex[:8]}"
    await admin.execute(
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.content = 'refuse me' THEN RAISE EXCEPTION 'refused by trigger'; END IF; "
        "RETURN NEW; END $$"
    )
    await admin.execute(
        f"CREATE TRIGGER {trigger} BEFORE INSERT ON memory_context_items "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
    )
    try:
        async with statestore.open_store("postgres", postgres_url) as store:
            await store.save_state(cid, big_state("old", 10))
            before = await store.load_state(cid)
            state = await store.load_state(cid)
            state.user_input = "new"
            state.metadata["k"] = "new"
            state.conversation_history += [Message("user", f"new {i}") for i in range(500)]
            state.memory_context.append(ContextItem("refuse me"))
            with pytest.raises(StateStoreError, match="refused by trigger") as info:
                await store.save_state(cid, state)
            assert not isinstance(info.value, asyncpg.PostgresError)
            after = await store.load_state(cid)
            assert after.version == before.version
            assert after.to_dict() == before.to_dict()
    finally:
        await admin.execute(f"DROP TRIGGER {trigger} ON memory_context_items")
        await admin.execute(f"DROP FUNCTION {fn}()")


CORRUPTIONS = {
    "focus_areas not a list": "UPDATE conversation_states SET focus_areas = '{\"a\": 1}' "
    "WHERE conversation_id = $1",
    "focus_areas of numbers": "UPDATE conversation_states SET focus_areas = '[1, 2]' "
    "WHERE conversation_id = $1",
    "message metadata a list": "UPDATE conversation_messages SET metadata = '[1]' "
    "WHERE conversation_id = $1",
    "item metadata a string": "UPDATE memory_context_items SET metadata = '\"x\"' "
    "WHERE conversation_id = $1",
}


@pytest.mark.parametrize("edit", sorted(CORRUPTIONS))
async def test_hand_edited_json_is_corrupt_state(postgres_url: str, admin: Any, edit: str) -> None:
    """A JSONB column edited by hand to the wrong shape: load_state raises CorruptState
    naming the conversation (no driver or decode error), other conversations load."""
    cid, neighbour = new_id("corrupt"), new_id("neighbour")
    async with statestore.open_store("postgres", postgres_url) as store:
        await store.save_state(cid, big_state("x", 3))
        await store.save_state(neighbour, big_state("y", 3))
        await admin.execute(CORRUPTIONS[edit], cid)
        with pytest.raises(CorruptState) as info:
            await store.load_state(cid)
        assert info.value.conversation_id == cid and cid in str(info.value)
        assert (await store.load_state(neighbour)).user_input == "y"


@pytest.mark.parametrize(
    "content",
    ["not json at all", '{"conversation_history": "nope"}', "[1, 2]", '{"step_count": -5}'],
)
async def test_corrupt_legacy_blob_is_corrupt_state(
    postgres_url: str, admin: Any, content: str
) -> None:
    """A legacy memory_chunks row that is not JSON, or not a state: CorruptState naming
    the conversation; listing and other conversations are unaffected."""
    cid, neighbour = new_id("blob"), new_id("neighbour")
    async with statestore.open_store("legacy-blob", postgres_url) as store:
        await store.save_state(neighbour, AgentState(user_input="fine"))
        await admin.execute(
            "INSERT INTO memory_chunks (conversation_id, content, created_at) "
            "VALUES ($1, $2, now())",
            cid,
            content,
        )
        with pytest.raises(CorruptState) as info:
            await store.load_state(cid)
        assert cid in str(info.value)
        listed = {c.conversation_id for c in await store.list_conversations(limit=10_000)}
        assert {cid, neighbour} <= listed
        assert (await store.load_state(neighbour)).user_input == "fine"
        assert await store.delete_state(cid)
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid)


# -- every call returns, wherever its connection is lost (issue 9) --------------------

# Only the detector of a hang, far above what any call here takes: a call that has
# not returned by then has hung (before the fix, a save killed during COPY sat for
# minutes with nothing left to wake it).
HANG = 120.0
BIG_TEXT = "x" * 3_000
N_ROWS = 2_000


async def returns(call: Coroutine[Any, Any, Any]) -> Any:
    """``await call``, failing the test if it does not return within HANG seconds."""
    try:
        return await asyncio.wait_for(call, HANG)
    except TimeoutError:
        raise AssertionError(f"the call did not return within {HANG}s: it hung") from None


@contextlib.asynccontextmanager
async def sleeping_trigger(
    admin: Any, table: str, when: str, *, at_commit: bool = False
) -> AsyncIterator[None]:
    """A trigger on ``table`` that sleeps for the rows matching ``when`` (SQL on
    NEW), so that a test can terminate the backend at exactly that moment: before
    such a row is inserted, or, ``at_commit``, during the COMMIT (where a deferred
    constraint trigger runs)."""
    tag = uuid.uuid4().hex[:8]
    fn, trigger = f"sleep_{tag}", f"trg_sleep_{tag}"
    await admin.execute(
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_sleep(60); RETURN NEW; END $$"
    )
    if at_commit:
        await admin.execute(
            f"CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT OR UPDATE ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {fn}()"
        )
    else:
        await admin.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} FOR EACH ROW WHEN ({when}) "
            f"EXECUTE FUNCTION {fn}()"
        )
    try:
        yield
    finally:
        await admin.execute(f"DROP TRIGGER {trigger} ON {table}")
        await admin.execute(f"DROP FUNCTION {fn}()")


async def terminate_sleeper(admin: Any) -> str:
    """Terminate the session of this database that sleeps in a trigger; its query."""
    for _ in range(3000):  # polls; the bound only keeps a broken test from hanging
        row = await admin.fetchrow(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event = 'PgSleep' AND pid <> pg_backend_pid() LIMIT 1"
        )
        if row is not None:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", row["pid"])
            return str(row["query"])
        await asyncio.sleep(0.01)
    raise AssertionError("the call never reached the trigger")


async def terminate_all(admin: Any) -> int:
    """Terminate every other session of this database (the store's); how many."""
    killed: int = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return killed


def history(tag: str, n: int) -> list[Message]:
    return [Message("user", f"{tag} {i} {BIG_TEXT}") for i in range(n)]


def contents(state: AgentState) -> tuple[Any, ...]:
    """What a write changes, comparable across loads (no timestamps)."""
    return (
        state.user_input,
        [m.content for m in state.conversation_history],
        [c.content for c in state.memory_context],
        state.metadata,
    )


# Each write: (the call, not started; what it stores if applied; the table of its
# bulk insert; SQL on NEW matching its first and its last row there).
Write = tuple[Coroutine[Any, Any, Any], tuple[Any, ...], str, str, str]


def content_is(prefix: str) -> str:
    return f"NEW.content LIKE '{prefix} %'"


async def _whole_save(store: Any, cid: str) -> Write:
    await store.save_state(
        cid, AgentState(user_input="old", conversation_history=history("old", 9))
    )
    new = AgentState(user_input="new", conversation_history=history("new", N_ROWS))
    return (
        store.save_state(cid, new),
        contents(new),
        "conversation_messages",
        content_is("new 0"),
        content_is(f"new {N_ROWS - 1}"),
    )


async def _history_rewrite(store: Any, cid: str) -> Write:
    old = AgentState(user_input="old", conversation_history=history("old", N_ROWS + 500))
    await store.save_state(cid, old)
    state = await store.load_state(cid, statestore.LoadOptions(last_messages=N_ROWS))
    state.conversation_history = history("rew", N_ROWS)  # the loaded tail, rewritten
    state.user_input = "new"
    new = AgentState(
        user_input="new",
        conversation_history=old.conversation_history[:500] + history("rew", N_ROWS),
    )
    return (
        store.save_state(cid, state),
        contents(new),
        "conversation_messages",
        content_is("rew 0"),
        content_is(f"rew {N_ROWS - 1}"),
    )


async def _many_items(store: Any, cid: str) -> Write:
    await store.save_state(cid, AgentState(user_input="old", memory_context=[ContextItem("old")]))
    items = [ContextItem(f"item {i} {BIG_TEXT}", relevance_score=0.5) for i in range(N_ROWS)]
    new = AgentState(user_input="new", memory_context=[ContextItem("old"), *items])
    call = store.update_state(cid, StatePatch(add_context=items, user_input="new"))
    table = "memory_context_items"
    return call, contents(new), table, content_is("item 0"), content_is(f"item {N_ROWS - 1}")


async def _many_metadata_keys(store: Any, cid: str) -> Write:
    """Metadata too big for one batch of asyncpg's executemany (which, like COPY,
    waits for the socket to drain between batches)."""
    await store.save_state(cid, AgentState(user_input="old", metadata={"k0": "old"}))
    metadata = {f"k{i}": f"{i} {BIG_TEXT}" for i in range(300)}
    new = AgentState(user_input="new", metadata=metadata)
    call = store.update_state(cid, StatePatch(set_metadata=metadata, user_input="new"))
    return call, contents(new), "memory_metadata", "NEW.key = 'k0'", "NEW.key = 'k299'"


WRITES = {
    "whole save": _whole_save,
    "history rewrite": _history_rewrite,
    "many items": _many_items,
    "many metadata keys": _many_metadata_keys,
}


@pytest.mark.parametrize("moment", ["idle", "first row", "last row", "commit"])
@pytest.mark.parametrize("write", sorted(WRITES))
async def test_every_write_returns_wherever_the_connection_dies(
    postgres_url: str, admin: Any, write: str, moment: str
) -> None:
    """A large write whose backend is terminated while idle just before it, before the
    first or the last row of its bulk insert, or during its COMMIT: the call returns
    (success, or BackendUnavailable naming the lost connection), the conversation is
    wholly old or wholly new, and the same store serves the next calls on the first
    try. Killed while idle, nothing of the write had been sent, so it succeeds."""
    cid = new_id("returns")
    async with statestore.open_store("postgres", postgres_url, pool_size=2) as store:
        call, new, table, first, last = await WRITES[write](store, cid)
        old = contents(await store.load_state(cid))
        if moment == "idle":
            assert await terminate_all(admin) >= 1
            await returns(call)
            assert contents(await store.load_state(cid)) == new
        else:
            if moment == "commit":
                trigger = sleeping_trigger(
                    admin, "conversation_states", f"NEW.conversation_id = '{cid}'", at_commit=True
                )
            else:
                trigger = sleeping_trigger(admin, table, first if moment == "first row" else last)
            async with trigger:
                task = asyncio.create_task(returns(call))
                query = await terminate_sleeper(admin)
                with pytest.raises(BackendUnavailable) as info:
                    await task
            message = str(info.value)
            assert "PostgreSQL" in message and ("connection" in message or "terminat" in message)
            if moment == "commit":
                assert query.rstrip(";") == "COMMIT" and "during COMMIT" in message
            after = contents(await store.load_state(cid))  # the first try
            assert after in (old, new)
            if moment != "commit":
                assert after == old  # killed before its COMMIT: nothing of it remains
        await store.update_state(cid, StatePatch(step_count=7))  # the first try
        assert (await store.load_state(cid)).step_count == 7


async def test_big_save_killed_early_returns(postgres_url: str, admin: Any) -> None:
    """Issue 9 as reported: a save of 20,000 messages of 3,000 characters (60 MB) whose
    backend is terminated 0.05-0.15 s after the call started, several times: every
    call returns (it used to hang forever inside COPY in about one try of four),
    the conversation is wholly old or wholly new, and the store goes on."""
    cid = new_id("big")
    big = AgentState(user_input="new", conversation_history=[Message("user", BIG_TEXT)] * 20_000)
    async with statestore.open_store("postgres", postgres_url) as store:
        await store.save_state(cid, AgentState(user_input="old"))
        for attempt in range(4):
            window = statestore.LoadOptions(last_messages=1)
            before = await store.load_state(cid, window)
            task = asyncio.create_task(returns(store.save_state(cid, big)))
            await asyncio.sleep(0.05 + 0.1 * attempt / 3)
            await terminate_all(admin)
            try:
                await task
            except BackendUnavailable as exc:
                assert "PostgreSQL" in str(exc)
            after = await store.load_state(cid, window)  # the first try
            assert (after.user_input, after.history_total) in (
                (before.user_input, before.history_total),
                ("new", 20_000),
            )


async def test_reads_return_wherever_the_connection_dies(postgres_url: str, admin: Any) -> None:
    """Loads of a large conversation whose backend is terminated while idle or at
    moments during the transfer: each call returns, and returns the whole stored
    state or BackendUnavailable (a read that met a dead connection ran once more on
    another, so it almost always succeeds); the next call succeeds on the first try."""
    cid = new_id("reads")
    saved = AgentState(user_input="kept", conversation_history=history("m", 5_000))
    async with statestore.open_store("postgres", postgres_url, pool_size=2) as store:
        await store.save_state(cid, saved)
        await store.load_state(cid)
        assert await terminate_all(admin) >= 1  # killed while idle: never surfaces
        assert contents(await returns(store.load_state(cid))) == contents(saved)
        outcomes = []
        for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2):
            task = asyncio.create_task(returns(store.load_state(cid)))
            await asyncio.sleep(delay)
            await terminate_all(admin)
            try:
                loaded = await task
            except BackendUnavailable as exc:
                assert "PostgreSQL" in str(exc)
                outcomes.append("unavailable")
            else:
                assert contents(loaded) == contents(saved)
                outcomes.append("ok")
            assert contents(await store.load_state(cid)) == contents(saved)  # the first try
            listed = await store.list_conversations(limit=10_000)
            assert cid in {c.conversation_id for c in listed}
        assert "ok" in outcomes


# -- the server restarted under an open store ----------------------------------------


def _cluster() -> list[str]:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return [versions[-1], "main"]


def _pg_ctl(action: str, *, check: bool = True) -> None:
    subprocess.run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            *_cluster(),
            action,
            *(["-m", "fast"] if action in ("stop", "restart") else []),
        ],
        check=check,
        capture_output=True,
        timeout=60,
    )


@contextlib.contextmanager
def _one_restart_at_a_time() -> Iterator[None]:
    """Sessions sharing the server take turns to stop it (a lock file in /tmp)."""
    with open("/tmp/statestore-pg-restart.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _wait_until_up(url: str) -> None:
    for _ in range(300):
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.1)
            continue
        await conn.close()
        return
    raise AssertionError("PostgreSQL did not come back")


def _can_control_server() -> bool:
    return shutil.which("pg_ctlcluster") is not None and Path("/etc/postgresql").is_dir()


@pytest.mark.pg_restart
@pytest.mark.skipif(not _can_control_server(), reason="needs pg_ctlcluster on this machine")
async def test_server_restart_under_an_open_store(postgres_url: str) -> None:
    """The server stops while a store is open: calls raise BackendUnavailable during
    the outage; once it is back the same store object works with no manual step, and
    nothing committed before was lost."""
    cid = new_id("restart")
    with _one_restart_at_a_time():
        await _wait_until_up(postgres_url)
        await _restart_under_an_open_store(postgres_url, cid)


async def _restart_under_an_open_store(postgres_url: str, cid: str) -> None:
    async with statestore.open_store("postgres", postgres_url, pool_size=3) as store:
        saved = big_state("before", 20)
        await store.save_state(cid, saved)
        try:
            await asyncio.to_thread(_pg_ctl, "stop")
            with pytest.raises(BackendUnavailable) as info:
                await store.load_state(cid)
            assert "unavailable" in str(info.value)
            with pytest.raises(BackendUnavailable):
                await store.update_state(cid, StatePatch(step_count=1))
        finally:
            # Whatever happened, the shared server is up again before going on.
            await asyncio.to_thread(_pg_ctl, "start", check=False)
            await _wait_until_up(postgres_url)
        loaded = await store.load_state(cid)
        assert loaded.to_dict() == saved.to_dict()
        await store.update_state(cid, StatePatch(append_messages=[Message("user", "after")]))
        assert (await store.load_state(cid)).history_total == 21
