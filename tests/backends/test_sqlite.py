"""What only the SQLite backend has: connection pragmas, migration on open, the
schema check, foreign keys that really cascade, JSON kept as TEXT."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import statestore
from statestore import (
    AgentState,
    ContextItem,
    ConversationNotFound,
    Message,
    SchemaOutOfDate,
    StatePatch,
    StateStoreError,
    ValidationError,
)
from statestore.backends.sql import migrate
from statestore.backends.sqlite import SqliteBackend, sqlite_path

CHILD_TABLES = ("conversation_messages", "memory_context_items", "memory_metadata")


def _file(url: str) -> Path:
    return sqlite_path(url)


def _query(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows from a fresh sqlite3 connection, independent of the store's."""
    conn = sqlite3.connect(_file(url))
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def _state() -> AgentState:
    return AgentState(
        user_input="hello",
        conversation_history=[
            Message(role="user", content="hello"),
            Message(role="assistant", content="hi there"),
        ],
        memory_context=[ContextItem(content="likes tea", relevance_score=0.9)],
        metadata={"topic": "drinks", "n": 1},
    )


async def _pragma(store: object, name: str) -> object:
    row = await store.backend._db.run(  # type: ignore[attr-defined]
        lambda tx: tx.fetchrow(f"PRAGMA {name}"), write=False
    )
    assert row is not None
    return row[0]


@pytest.mark.parametrize("backend", ["sqlite", "legacy-blob"])
async def test_pragmas_on_the_store_connection(sqlite_url: str, backend: str) -> None:
    """The connection the store uses (legacy-blob on SQLite too) has WAL, foreign keys,
    NORMAL sync and a busy timeout set."""
    async with statestore.open_store(backend, sqlite_url) as store:
        assert await _pragma(store, "journal_mode") == "wal"
        assert await _pragma(store, "foreign_keys") == 1
        assert await _pragma(store, "synchronous") == 1  # NORMAL
        assert await _pragma(store, "busy_timeout") == 5000


async def test_busy_timeout_option(sqlite_url: str) -> None:
    """``busy_timeout`` (seconds) reaches the connection as milliseconds."""
    async with statestore.open_store("sqlite", sqlite_url, busy_timeout=2.5) as store:
        assert await _pragma(store, "busy_timeout") == 2500


async def test_wal_persists_in_the_file(sqlite_url: str) -> None:
    """WAL is a property of the file: another connection sees it too."""
    async with statestore.open_store("sqlite", sqlite_url):
        pass
    assert _query(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


async def test_migrates_itself_on_open(sqlite_url: str) -> None:
    """Opening a new file creates the schema at the head revision."""
    assert not _file(sqlite_url).exists()
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", _state())
    assert _query(sqlite_url, "SELECT version_num FROM alembic_version") == [
        (migrate.head_revision(),)
    ]


async def test_migrates_an_outdated_file_on_open(sqlite_url: str) -> None:
    """A file whose schema was downgraded to base is brought back to head on open."""
    await migrate.upgrade(sqlite_url)
    await migrate.downgrade(sqlite_url, "base")
    assert _query(sqlite_url, "SELECT count(*) FROM alembic_version") == [(0,)]
    state = _state()
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", state)
        assert (await store.load_state("c1")).to_dict() == state.to_dict()


async def test_migrate_false_on_empty_file_raises(sqlite_url: str) -> None:
    """With migrate=False an empty file is not touched: SchemaOutOfDate names the fix."""
    _file(sqlite_url).touch()
    with pytest.raises(SchemaOutOfDate, match="statestore migrate") as caught:
        async with statestore.open_store("sqlite", sqlite_url, migrate=False):
            pass
    assert "none" in str(caught.value)
    tables = _query(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert tables == []


async def test_migrate_false_on_migrated_file_opens(sqlite_url: str) -> None:
    """With migrate=False a file already at head opens and works."""
    await migrate.upgrade(sqlite_url)
    async with statestore.open_store("sqlite", sqlite_url, migrate=False) as store:
        result = await store.save_state("c1", _state())
    assert result.version == 1


async def test_delete_cascades_to_child_rows(sqlite_url: str) -> None:
    """Deleting a conversation row removes its messages, items and metadata through
    ON DELETE CASCADE, and leaves other conversations alone."""
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("gone", _state())
        await store.save_state("kept", _state())
        for table in CHILD_TABLES:
            counts = _query(
                sqlite_url, f"SELECT count(*) FROM {table} WHERE conversation_id = ?", "gone"
            )
            assert counts[0][0] > 0, table
        assert await store.delete_state("gone") is True
    for table in CHILD_TABLES:
        remaining = _query(sqlite_url, f"SELECT DISTINCT conversation_id FROM {table}")
        assert remaining == [("kept",)], table


async def test_cascade_is_in_the_schema(sqlite_url: str) -> None:
    """The foreign keys themselves say ON DELETE CASCADE (not emulated in Python)."""
    await migrate.upgrade(sqlite_url)
    for table in CHILD_TABLES:
        fks = _query(sqlite_url, f"PRAGMA foreign_key_list({table})")
        assert [(fk[2], fk[3], fk[6]) for fk in fks] == [
            ("conversation_states", "conversation_id", "CASCADE")
        ], table


async def test_json_columns_are_text(sqlite_url: str) -> None:
    """JSON is stored as TEXT (no JSON affinity turning "123" into a number)."""
    state = _state()
    state.metadata = {"digits": "123"}
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("c1", state)
        loaded = await store.load_state("c1")
    assert loaded.metadata == {"digits": "123"}
    assert _query(sqlite_url, "SELECT typeof(value), value FROM memory_metadata") == [
        ("text", '"123"')
    ]
    columns = {
        row[1]: row[2] for row in _query(sqlite_url, "PRAGMA table_info(conversation_states)")
    }
    assert columns["focus_areas"] == "TEXT"
    assert columns["last_tool_result"] == "TEXT"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory"])
def test_in_memory_urls_are_refused(url: str) -> None:
    """In-memory databases are refused up front (migrations would see another one)."""
    with pytest.raises(ValidationError, match="in-memory"):
        SqliteBackend(url)


@pytest.mark.parametrize("url", ["sqlite:///x.db?mode=ro", "sqlite:///x.db?cache=shared"])
def test_url_options_are_refused_not_ignored(url: str, tmp_path: Path) -> None:
    """A SQLite URL's query is not read: refused, so that ``?mode=ro`` does not
    silently open (and create) a writable file."""
    with pytest.raises(ValidationError, match="takes no options"):
        SqliteBackend(url)


async def test_opening_creates_the_directory_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a store whose directory does not exist yet creates it on the backend's
    own thread, never on the caller's event loop."""
    threads: list[int] = []
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.get_ident())
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    url = f"sqlite:///{tmp_path}/new/dir/state.db"
    async with statestore.open_store("sqlite", url) as store:
        await store.save_state("c1", _state())
    assert (tmp_path / "new" / "dir" / "state.db").exists()
    assert threads and threading.get_ident() not in threads


async def test_cancelled_calls_are_whole_or_absent(sqlite_url: str) -> None:
    """Appends of two messages and deletes (write transactions), cancelled at many
    moments (waiting for their turn, running, committing): each is applied wholly or
    not at all, every call that returned is stored exactly once, and the same store
    serves the next calls."""
    cid = "cancelled"
    outcomes: dict[str, bool] = {}  # turn -> whether its call returned
    async with asyncio.timeout(120):  # a leaked lock would hang: fail instead
        async with statestore.open_store("sqlite", sqlite_url) as store:
            await store.save_state(cid, AgentState())
            for r in range(60):
                await store.save_state(f"other-{r}", AgentState())
                turns = [f"{r}:{k}" for k in range(4)]
                tasks = [
                    asyncio.create_task(
                        store.update_state(
                            cid,
                            StatePatch(
                                append_messages=[
                                    Message("user", f"{turn}:a"),
                                    Message("assistant", f"{turn}:b"),
                                ]
                            ),
                        )
                    )
                    for turn in turns
                ]
                delete = asyncio.create_task(store.delete_state(f"other-{r}"))
                for _ in range(r % 6):
                    await asyncio.sleep(0)
                for task in [*tasks, delete][r % 2 :: 2]:
                    task.cancel()
                results = await asyncio.gather(*tasks, delete, return_exceptions=True)
                for turn, result in zip(turns, results, strict=False):
                    assert not isinstance(result, Exception), result
                    outcomes[turn] = not isinstance(result, asyncio.CancelledError)
                if not isinstance(results[-1], asyncio.CancelledError):
                    assert results[-1] is True
                    with pytest.raises(ConversationNotFound):
                        await store.load_state(f"other-{r}")
            state = await store.load_state(cid)
            await store.update_state(cid, StatePatch(step_count=1))
    contents = [m.content for m in state.conversation_history]
    assert [m.seq for m in state.conversation_history] == list(range(len(contents)))
    assert len(contents) % 2 == 0
    stored = []
    for first, second in zip(contents[::2], contents[1::2], strict=True):
        turn = first.removesuffix(":a")
        assert first == f"{turn}:a" and second == f"{turn}:b"  # never one of the two
        stored.append(turn)
    assert len(stored) == len(set(stored))  # none twice
    assert {t for t, returned in outcomes.items() if returned} <= set(stored)
    assert any(not returned for returned in outcomes.values())  # cancels did land


async def test_calls_from_other_threads_and_event_loops(sqlite_url: str) -> None:
    """A store opened on one loop serves, at the same time, calls from other threads
    that each run an event loop of their own: every append kept, in each caller's
    order."""
    cid = "threads"

    async def appends(store: Any, tag: str) -> None:
        for i in range(20):
            await store.update_state(
                cid, StatePatch(append_messages=[Message("user", f"{tag}:{i}")])
            )

    async with asyncio.timeout(120), statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state(cid, AgentState())
        await asyncio.gather(
            appends(store, "main"),
            *(asyncio.to_thread(asyncio.run, appends(store, f"t{n}")) for n in range(2)),
        )
        history = (await store.load_state(cid)).conversation_history
    for tag in ("main", "t0", "t1"):
        mine = [m.content for m in history if m.content.startswith(f"{tag}:")]
        assert mine == [f"{tag}:{i}" for i in range(20)]
    assert len(history) == 60


def _backend_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("statestore-sqlite")}


def _ended(threads: set[threading.Thread]) -> bool:
    """Whether these backend threads all end (a closed store's thread returns at once)."""
    for thread in threads:
        thread.join(timeout=30)  # a hang guard, not a measure
    return not any(t.is_alive() for t in threads)


async def test_closing_ends_the_backend_thread_even_after_a_cancelled_open(
    sqlite_url: str,
) -> None:
    """Each store's thread ends when it closes, and an open cancelled at any moment
    (creating the file, migrating it) leaves no thread behind: the next open works."""
    before = _backend_threads()
    for steps in range(0, 40, 4):
        opening = asyncio.create_task(statestore.open_store("sqlite", sqlite_url).__aenter__())
        for _ in range(steps):
            await asyncio.sleep(0)
        opening.cancel()
        try:
            store = await opening
        except asyncio.CancelledError:
            pass
        else:
            await store.close()
        assert _ended(_backend_threads() - before)
    async with statestore.open_store("sqlite", sqlite_url) as store:
        mine = _backend_threads() - before
        assert len(mine) == 1
        await store.save_state("c1", _state())
    assert _ended(mine)


async def test_calls_racing_close_all_get_an_answer(sqlite_url: str) -> None:
    """Calls made while the store closes each get an answer, never a hang: the result,
    or a StateStoreError saying the store is closed; never a CancelledError they did
    not ask for."""
    async with asyncio.timeout(60):  # a hang guard
        for round_ in range(20):
            store = await statestore.open_store("sqlite", sqlite_url).__aenter__()
            calls = [
                asyncio.create_task(store.save_state(f"c{round_}-{i}", _state())) for i in range(10)
            ]
            for _ in range(round_ % 5):
                await asyncio.sleep(0)
            await store.close()
            for result in await asyncio.gather(*calls, return_exceptions=True):
                assert not isinstance(result, asyncio.CancelledError)
                if isinstance(result, BaseException):
                    assert isinstance(result, StateStoreError), repr(result)
                    assert "not open" in str(result) or "closed" in str(result)
