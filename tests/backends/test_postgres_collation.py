"""Listing order does not depend on the database's locale: ids sort by code point on
PostgreSQL whatever its collation, as on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import statestore
from statestore import AgentState
from statestore.backends.sql import migrate
from statestore.testing.plugin import _admin, _server_url, _unavailable, _with_database

pytestmark = pytest.mark.postgres

# In en-US order these are a, B, _x, é; by code point B, _x, a, é.
IDS = ["a", "B", "_x", "é"]


@pytest.fixture
async def icu_postgres_url() -> AsyncIterator[str]:
    """A migrated database of this test's own whose default collation is ICU en-US."""
    server = _server_url()
    name = f"statestore_icu_{uuid.uuid4().hex[:12]}"
    try:
        await _admin(
            server,
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
            "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
        )
    except Exception as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
    url = _with_database(server, name)
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", ["postgres", "legacy-blob"])
async def test_listing_is_in_code_point_order_under_an_icu_collation(
    icu_postgres_url: str, backend: str
) -> None:
    """In an en-US database, listing and paging still go by code point."""
    async with statestore.open_store(backend, icu_postgres_url) as store:
        for cid in IDS:
            await store.save_state(cid, AgentState())
        listed = [c.conversation_id for c in await store.list_conversations()]
        assert listed == sorted(IDS)
        page = await store.list_conversations(after="_x", limit=10)
        assert [c.conversation_id for c in page] == ["a", "é"]
