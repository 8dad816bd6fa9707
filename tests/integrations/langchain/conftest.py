"""The adapter's own tests run on a fresh SQLite file and a fresh PostgreSQL database
(the ``store`` fixture of statestore.testing.plugin, narrowed to these two), with the
store handed over as an async ``Store`` and as a ``SyncStore``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import statestore
from statestore.testing.plugin import BackendTarget

from .pending import skip_without_any_loop


@pytest.fixture(
    params=[
        pytest.param(BackendTarget("sqlite", "sqlite"), id="sqlite"),
        pytest.param(
            BackendTarget("postgres", "postgresql"), id="postgres", marks=pytest.mark.postgres
        ),
    ]
)
def backend_target(request: pytest.FixtureRequest) -> BackendTarget:
    target: BackendTarget = request.param
    return target


@pytest.fixture
def sync_store(
    backend_target: BackendTarget, store_url: str | None
) -> Iterator[statestore.SyncStore]:
    """An open SyncStore on ``backend_target`` (a fresh database)."""
    skip_without_any_loop()
    with statestore.open_store_sync(backend_target.backend, url=store_url) as opened:
        yield opened
