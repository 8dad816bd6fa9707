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
from collections.abc import AsyncIterator, Iterator
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
