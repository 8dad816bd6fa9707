"""A pytest plugin that runs openai-agents' own tests with ``SQLiteSession`` replaced by
``StatestoreSession`` over a statestore store (``test_sdk_suite.py`` starts it).

Loaded with ``-p statestore_sdk_plugin`` in a pytest run inside the extracted source
release (its own ``tests`` package and pytest settings). It:

- replaces ``agents.SQLiteSession`` and ``agents.memory.SQLiteSession`` before the tests
  are imported by ``SQLiteSession`` below: a ``StatestoreSession`` taking the SDK
  class's arguments, where each database (a ``db_path``, or each ``":memory:"``
  session) is a fresh statestore database of its own: a SQLite file, or a PostgreSQL
  database copied from a migrated template, dropped after the test;
- keeps the tests that use ``SQLiteSession`` (in their code, a fixture's or a
  module helper's they call) and deselects, with the reason, the ones in
  ``DESELECTED``;
- writes a JSON report: per test, its outcome and whether it made a session.

Settings come from the environment: ``STATESTORE_SDK_ENGINE`` (``sqlite`` or
``postgresql``), ``STATESTORE_SDK_WORKDIR`` (a directory for files and the report),
``STATESTORE_SDK_POSTGRES_TEMPLATE`` (the URL of a migrated database to copy).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import statestore
from statestore.integrations.openai_agents import StatestoreSession

ENGINE = os.environ.get("STATESTORE_SDK_ENGINE", "sqlite")
WORKDIR = Path(os.environ.get("STATESTORE_SDK_WORKDIR", "."))
TEMPLATE = os.environ.get("STATESTORE_SDK_POSTGRES_TEMPLATE", "")
REPORT = WORKDIR / "report.json"

# Tests about SQLiteSession's own machinery rather than about a session's behaviour:
# node id (without parameters) -> why it cannot apply to another session store.
_CONNECTIONS = (
    "SQLiteSession's sqlite3 connections per worker thread (_connections, _local), "
    "which a statestore store does not have"
)
_RAW_ROWS = (
    "writes corrupt rows into SQLiteSession's agent_messages table with sqlite3; a statestore "
    "store validates every value before it is written, so it holds no corrupt rows"
)
_LOCKS = "SQLiteSession's process-wide file locks (_file_locks, _file_lock_counts)"
_TABLES = (
    "drops SQLiteSession's tables or wraps its sqlite3 connection to make a statement fail "
    "and checks its rollback of that connection"
)
_CLOSE = (
    "SQLiteSession.close() and its closed state: StatestoreSession does not own its store "
    "(the application closes the store)"
)
_SNAPSHOT = (
    "relies on SQLiteSession's private _get_compaction_snapshot (an atomic replacement of "
    "the history's tail for OpenAIResponsesCompactionSession), which the SDK enables for "
    "the exact SQLiteSession type only: it fails the same way on a plain subclass "
    "`class S(SQLiteSession): pass`"
)
_VALIDATED_POP = (
    "relies on SQLiteSession's private _pop_item_with_validation (pop and decrypt in one "
    "sqlite3 transaction), which EncryptedSession uses with the SDK's SQLiteSession only"
)
_COMMIT = (
    "wraps SQLiteSession's sqlite3 connection (_connections_lock, _get_connection) to make "
    "its commit acknowledgement fail"
)
_INSERT = "patches SQLiteSession's private _insert_items(conn, items); " + _SNAPSHOT

_MEMORY = "tests/memory/"
_ENCRYPT = "tests/extensions/memory/test_encrypt_session.py::"
_COMPACTION = (
    _MEMORY + "test_openai_responses_compaction_session.py::TestOpenAIResponsesCompactionSession::"
)
# Its tests run on SQLiteSession ([sqlite-...]) and on AsyncSQLiteSession.
_SUFFIX = _MEMORY + "test_compaction_suffix.py::"
_VISIBILITY = _MEMORY + "test_compaction_model_visibility.py::"
_SESSION = _MEMORY + "test_session.py::"

# node id (a test's, or one parametrization's) -> why it cannot apply to another store.
DESELECTED: dict[str, str] = {
    _SESSION + "test_sqlite_session_close_closes_worker_thread_connections": _CONNECTIONS,
    _SESSION + "test_sqlite_session_reaps_connections_from_exited_worker_threads": _CONNECTIONS,
    _SESSION
    + "test_sqlite_session_closes_retired_connections_before_the_next_allocation": _CONNECTIONS,
    _SESSION + "test_sqlite_session_keeps_connections_of_live_worker_threads": _CONNECTIONS,
    _SESSION + "test_sqlite_session_closed_rejects_empty_add_items": _CLOSE,
    _SESSION + "test_sqlite_session_pop_item_skips_corrupt_most_recent": _RAW_ROWS,
    _SESSION + "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": (
        _RAW_ROWS
    ),
    _SESSION + "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _RAW_ROWS,
    _SESSION + "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": (
        _RAW_ROWS
    ),
    _SESSION + "test_sqlite_session_file_lock_is_shared_across_instances": _LOCKS,
    _SESSION + "test_sqlite_session_failed_add_items_releases_write_lock": _TABLES,
    _SESSION + "test_sqlite_session_failed_clear_session_rolls_back": _TABLES,
    _SESSION + "test_sqlite_session_failed_pop_item_releases_write_lock": _TABLES,
    _SESSION + "test_sqlite_session_rollback_failure_evicts_connection": _TABLES,
    _SESSION + "test_sqlite_session_close_retries_quarantined_connection": _TABLES,
    _SESSION + "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": (
        "pauses SQLiteSession's own sqlite3 connection inside its commit; the same "
        "behaviour (a cancelled write runs to its end, then the cancellation is raised) is "
        "tested on StatestoreSession in tests/integrations/openai_agents/test_session.py"
    ),
    "tests/test_run_impl_resume_paths.py::test_handoff_resume_after_cancelled_compaction_commits": (
        _INSERT
    ),
    _SUFFIX + "test_expired_prefix_does_not_block_full_live_window[sqlite": _SNAPSHOT,
    _SUFFIX + "test_suffix_transaction_rolls_back_failed_insert[sqlite": _SNAPSHOT,
    _SUFFIX + "test_new_backend_write_invalidates_snapshot[sqlite": _SNAPSHOT,
    _SUFFIX + "test_cancelled_suffix_transaction_settles_before_newer_append[sqlite": _SNAPSHOT,
    _SUFFIX
    + "test_failed_encrypted_suffix_transaction_preserves_original_tokens[sqlite": _SNAPSHOT,
    _SUFFIX + "test_repeated_ttl_bursts_do_not_accumulate_expired_rows[sqlite": _SNAPSHOT,
    _SUFFIX + "test_prefix_cleanup_stops_before_retained_history[sqlite": _SNAPSHOT,
    _SUFFIX + "test_partial_compaction_does_not_split_tool_call_and_output[sqlite": _SNAPSHOT,
    _SUFFIX + "test_unverifiable_rows_inside_snapshot_are_retained[sqlite": _SNAPSHOT,
    _SUFFIX + "test_partial_compaction_preserves_reasoning_and_its_follower[sqlite": _SNAPSHOT,
    _VISIBILITY + "test_backend_read_limit_cannot_hide_retained_history_from_compaction": (
        _SNAPSHOT
    ),
    _VISIBILITY + "test_automatic_compaction_does_not_reload_unbounded_hidden_history": _SNAPSHOT,
    _VISIBILITY + "test_expired_read_overhead_does_not_authorize_hidden_history": _SNAPSHOT,
    _COMPACTION + "test_automatic_compaction_rollback_budget[True]": _SNAPSHOT,
    _COMPACTION + "test_settled_pop_failure_invalidates_response_chain": _COMMIT,
    _COMPACTION + "test_settled_clear_failure_invalidates_response_chain": _COMMIT,
    _ENCRYPT + "test_encrypted_compaction_skips_unencrypted_stored_history": _SNAPSHOT,
    _ENCRYPT + "test_encrypted_pop_wrong_key_preserves_recoverable_history": _VALIDATED_POP,
    _ENCRYPT + "test_encrypted_pop_rechecks_authentication_after_expired_tail": _VALIDATED_POP,
    _ENCRYPT + "test_encrypted_pop_authentication_is_atomic_with_concurrent_mutations": (
        _VALIDATED_POP
    ),
    _ENCRYPT + "test_encrypted_pop_wrong_key_preserves_row_identity": _VALIDATED_POP,
    _ENCRYPT + "test_encrypted_pop_cancellation_waits_for_authentication_rollback": (
        _VALIDATED_POP
    ),
}


class SQLiteSession(StatestoreSession):
    """``StatestoreSession`` made with ``agents.SQLiteSession``'s arguments: each
    database is a fresh statestore database (see the module's docstring)."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        self.db_path = db_path
        self.sessions_table = sessions_table
        self.messages_table = messages_table
        if str(db_path) == ":memory:":
            key = f"memory-{uuid.uuid4().hex}"
        else:
            key = f"{Path(db_path).expanduser().resolve()}|{sessions_table}|{messages_table}"
        STORES.used = True
        super().__init__(session_id, STORES.store_for(key), session_settings=session_settings)

    def close(self) -> None:
        """Nothing to release: the stores close when the test ends."""


class _Stores:
    """One open store per database key, for the current test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, Any] = {}
        self._databases: list[str] = []
        self.used = False
        self._sqlite_template: Path | None = None

    def store_for(self, key: str) -> Any:
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = self._stores[key] = self._open()
            return store

    def _open(self) -> Any:
        if ENGINE == "sqlite":
            path = WORKDIR / "stores" / f"{uuid.uuid4().hex}.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._template(), path)
            return statestore.open_store_sync("sqlite", url=f"sqlite:///{path}")
        server, _, template = TEMPLATE.rpartition("/")
        name = f"statestore_sdk_{uuid.uuid4().hex[:16]}"
        _admin(f"{server}/postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self._databases.append(name)
        return statestore.open_store_sync("postgres", url=f"{server}/{name}")

    def _template(self) -> Path:
        if self._sqlite_template is None:
            from statestore.backends.sql import migrate

            path = WORKDIR / "template.db"
            _run(migrate.upgrade(f"sqlite:///{path}"))
            self._sqlite_template = path
        return self._sqlite_template

    def close_all(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
            databases, self._databases = self._databases, []
        for store in stores:
            store.close()
        server = TEMPLATE.rpartition("/")[0]
        for name in databases:
            _admin(f"{server}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for path in (WORKDIR / "stores").glob("*"):
            path.unlink()


STORES = _Stores()


def _run(coro: Any) -> Any:
    """Run ``coro`` on a loop of its own (callers may be inside a running loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _admin(url: str, sql: str) -> None:
    async def execute() -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(execute())


def pytest_configure(config: pytest.Config) -> None:
    import agents
    import agents.memory

    agents.SQLiteSession = SQLiteSession  # type: ignore[attr-defined,misc]
    agents.memory.SQLiteSession = SQLiteSession  # type: ignore[attr-defined,misc]
    config.stash[_RESULTS] = {}


_RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()


@functools.cache
def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _helpers_making_sessions(module: Any) -> list[str]:
    """Names of the module's functions (not tests) whose code makes a SQLiteSession."""
    return [
        name
        for name, obj in vars(module).items()
        if inspect.isfunction(obj)
        and not name.startswith("test")
        and getattr(obj, "__module__", None) == module.__name__
        and "SQLiteSession" in _source(obj)
    ]


def uses_sqlite_session(item: pytest.Item) -> bool:
    """Whether the test's code, a fixture's it uses, or a module helper's it calls makes
    or names a SQLiteSession."""
    if not isinstance(item, pytest.Function) or "[async-sqlite" in item.nodeid:
        return False  # test_compaction_suffix.py runs these on AsyncSQLiteSession
    code = _source(item.function)
    if "SQLiteSession" in code:
        return True
    for name in item.fixturenames:
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
            if "SQLiteSession" in _source(fixturedef.func):
                return True
    return any(f"{name}(" in code for name in _helpers_making_sessions(item.module))


def _matches(nodeid: str, key: str) -> bool:
    """Whether ``key`` of DESELECTED names the test ``nodeid``: a test's id names each
    of its parametrizations; one that ends in a partial parameter id (``...[sqlite``)
    names those starting with it."""
    return nodeid == key or nodeid.startswith(key if "[" in key else key + "[")


def _deselection(nodeid: str) -> str | None:
    """Why the test ``nodeid`` is deselected (None: it runs)."""
    return next((why for key, why in DESELECTED.items() if _matches(nodeid, key)), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, unrelated, deselected = [], [], []
    for item in items:
        if not uses_sqlite_session(item):
            unrelated.append(item)
        elif _deselection(item.nodeid) is not None:
            deselected.append(item)
        else:
            kept.append(item)
    if unrelated or deselected:
        config.hook.pytest_deselected(items=unrelated + deselected)
    items[:] = kept
    config.stash[_RESULTS]["__collection__"] = {
        "selected": [i.nodeid for i in kept],
        "deselected": {i.nodeid: _deselection(i.nodeid) for i in deselected},
        "unrelated": len(unrelated),
        "stale_deselections": sorted(
            key for key in DESELECTED if not any(_matches(i.nodeid, key) for i in deselected)
        ),
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    STORES.used = False
    try:
        return (yield)
    finally:
        STORES.close_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    results = item.config.stash[_RESULTS]
    entry = results.setdefault(item.nodeid, {"outcome": "passed", "used_session": False})
    entry["used_session"] = entry["used_session"] or STORES.used
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    REPORT.write_text(json.dumps(session.config.stash[_RESULTS], indent=1), encoding="utf-8")
