"""Fixtures for the ADK adapter's tests: a fresh store per test on SQLite (a new file)
and on PostgreSQL (a new database, cloned from one migrated once per run)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

import statestore
from statestore.testing.plugin import scratch_database

pytest.importorskip("google.adk", reason="needs the google-adk extra")

ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def adk_pg_template() -> Iterator[str]:
    """The name of a migrated PostgreSQL database each test's database copies."""
    with scratch_database("statestore_adk_template", migrated=True) as url:
        yield url.rpartition("/")[2]


def fresh_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL of an empty, migrated database of ``engine``, removed afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path}/adk.db"
        return
    template = request.getfixturevalue("adk_pg_template")
    with scratch_database("statestore_adk", create_options=f'TEMPLATE "{template}"') as url:
        yield url


@pytest.fixture(params=ENGINES)
def adk_engine(request: pytest.FixtureRequest) -> str:
    engine: str = request.param
    return engine


@pytest.fixture
def adk_url(adk_engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from fresh_url(adk_engine, tmp_path, request)


@pytest_asyncio.fixture(loop_scope="function")
async def adk_store(adk_engine: str, adk_url: str) -> AsyncIterator[statestore.Store]:
    """An open store on a database of its own."""
    async with statestore.open_store(adk_engine, url=adk_url) as store:
        yield store
