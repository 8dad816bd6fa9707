"""Stands in for ADK's own ``tests/unittests/sessions/_conformance.py`` when ADK's
session-service tests run against ``StatestoreSessionService``.

``test_adk_conformance.py`` copies ADK's ``test_session_service.py`` into a
temporary package next to this file (as ``_conformance.py``) and runs pytest there
in a subprocess, once per engine (``STATESTORE_ADK_ENGINE``: ``sqlite`` or
``postgres``). Here:

- ``session_service``: the fixture ADK's contract tests take, a
  ``StatestoreSessionService`` over a store on a database of its own (a new SQLite
  file, or a new PostgreSQL database copied from ``STATESTORE_ADK_PG_TEMPLATE``);
- ``BACKENDS``: the registry ADK's tests read, this service alone, no divergences;
- ``substitute_services``: ADK tests that build their service through the module's
  ``get_session_service()`` (and, in ADK versions whose module defines the
  ``session_service`` fixture itself, that fixture too) get this service instead of
  ADK's;
- ``pytest_collection_modifyitems``: deselects the tests that exercise another
  service (ADK's database, SQLite, in-memory or Vertex AI services, constructed by
  hand) and the few that state what only ADK's database services do, each with its
  reason, written to ``STATESTORE_ADK_REPORT`` for the caller to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.adk.sessions.base_session_service import BaseSessionService

import statestore
from statestore.integrations.google_adk import StatestoreSessionService

ENGINE = os.environ.get("STATESTORE_ADK_ENGINE", "sqlite")
_SERVER = os.environ.get(
    "STATESTORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_CREATED: list[str] = []


@dataclasses.dataclass(frozen=True)
class _Backend:
    name: str
    divergences: dict[str, str] = dataclasses.field(default_factory=dict)


BACKENDS = [_Backend(f"statestore-{ENGINE}")]


def _admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(_SERVER, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def fresh_url() -> str:
    """A URL of an empty, migrated database of ``ENGINE``."""
    if ENGINE == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='adk-conformance-')}/state.db"
    template = os.environ["STATESTORE_ADK_PG_TEMPLATE"]
    name = f"statestore_adk_up_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _CREATED.append(name)
    return f"{_SERVER.rpartition('/')[0]}/{name}"


def drop_databases() -> None:
    while _CREATED:
        _admin(f'DROP DATABASE IF EXISTS "{_CREATED.pop()}" WITH (FORCE)')


@pytest.fixture
async def session_service() -> AsyncIterator[StatestoreSessionService]:
    """The service under test, over a store of its own."""
    async with statestore.open_store(ENGINE, url=fresh_url()) as store:
        yield StatestoreSessionService(store)


class _OpenedOnFirstUse(StatestoreSessionService):
    """What ``get_session_service()`` returns: ADK's tests call it outside any event
    loop's reach, so the store opens on first use (and closes on ``async with``
    exit or when the test's database is dropped)."""

    def __init__(self) -> None:
        super().__init__(statestore.open_store(ENGINE, url=fresh_url()))
        self._opened = False

    async def _ready(self) -> None:
        if not self._opened:
            self._opened = True
            await self.store.__aenter__()

    async def __aenter__(self) -> _OpenedOnFirstUse:
        await self._ready()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.store.close()

    async def create_session(self, **kwargs: Any) -> Any:
        await self._ready()
        return await super().create_session(**kwargs)

    async def get_session(self, **kwargs: Any) -> Any:
        await self._ready()
        return await super().get_session(**kwargs)

    async def list_sessions(self, **kwargs: Any) -> Any:
        await self._ready()
        return await super().list_sessions(**kwargs)

    async def delete_session(self, **kwargs: Any) -> None:
        await self._ready()
        await super().delete_session(**kwargs)

    async def get_user_state(self, **kwargs: Any) -> Any:
        await self._ready()
        return await super().get_user_state(**kwargs)

    async def append_event(self, session: Any, event: Any) -> Any:
        await self._ready()
        return await super().append_event(session, event)


@pytest.fixture(autouse=True)
def substitute_services(request: pytest.FixtureRequest) -> Iterator[None]:
    """ADK tests that get their service from ``get_session_service()`` get this one."""
    module = request.module
    if not hasattr(module, "get_session_service"):
        yield
        return
    made: list[_OpenedOnFirstUse] = []

    def get_session_service(*args: object, **kwargs: object) -> _OpenedOnFirstUse:
        made.append(_OpenedOnFirstUse())
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "get_session_service", get_session_service)
        yield
    for service in made:
        if service._opened:
            with contextlib.suppress(Exception):
                asyncio.run(service.store.close())
    drop_databases()


# Tests that take the service from get_session_service() but state what ADK's
# database and SQLite services do beyond the contract its in-memory service keeps.
_DIVERGENT = {
    (
        "test_get_session_orders_tied_timestamps_by_id",
        "append_ids_in_reverse=True",
    ): "orders events that share a timestamp by event id, as ADK's database and SQLite "
    "services do; this service returns events in the order they were appended, as ADK's "
    "in-memory service does",
}


def _reason_to_deselect(item: pytest.Item) -> str | None:
    function = getattr(item, "function", None)
    if function is None:
        return "not a test function"
    params = getattr(getattr(item, "callspec", None), "params", {})
    for (name, param), reason in _DIVERGENT.items():
        key, _, value = param.partition("=")
        if item.originalname == name and str(params.get(key)) == value:  # type: ignore[attr-defined]
            return reason
    if isinstance(params.get("session_service"), BaseSessionService):
        return "parametrized with one of ADK's services itself instead of the shared fixture"
    if "session_service" in getattr(item, "fixturenames", ()):
        return None
    source = inspect.getsource(function)
    if "get_session_service(" in source:
        return None
    for service in ("DatabaseSessionService", "SqliteSessionService", "InMemorySessionService"):
        if service in source:
            return f"builds ADK's {service} itself and checks that service"
    if "VertexAiSessionService" in source:
        return "checks ADK's VertexAiSessionService"
    return None  # no session service at all: ADK's own classes, or this registry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, deselected, report = [], [], []
    for item in items:
        reason = _reason_to_deselect(item)
        if reason is None:
            kept.append(item)
        else:
            deselected.append(item)
            report.append({"test": item.nodeid.split("::", 1)[1], "reason": reason})
    items[:] = kept
    config.hook.pytest_deselected(items=deselected)
    out = os.environ.get("STATESTORE_ADK_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1), encoding="utf-8")
