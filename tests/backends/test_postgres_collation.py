"""Listing order does not depend on the database's locale: ids sort by code point on
PostgreSQL whatever its collation, as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import statestore
from statestore import AgentState
from statestore.testing.plugin import scratch_database

pytestmark = pytest.mark.postgres

# In en-US order these are a, B, _x, é; by code point B, _x, a, é.
IDS = ["a", "B", "_x", "é"]


@pytest.fixture
def icu_postgres_url() -> Iterator[str]:
    """A migrated database of this test's own whose default collation is ICU en-US."""
    with scratch_database(
        "statestore_icu",
        create_options="TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
        migrated=True,
    ) as url:
        yield url


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
