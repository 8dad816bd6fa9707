"""The adapter's own tests run on every registered backend (the ``store`` fixture of
statestore.testing.plugin: SQLite, PostgreSQL, legacy-blob and dual on both, the
example memory backend), with the store handed over as an async ``Store`` and as a
``SyncStore``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import statestore
from statestore.testing.plugin import BackendTarget


@pytest.fixture
def sync_store(
    backend_target: BackendTarget, store_url: str | None
) -> Iterator[statestore.SyncStore]:
    """An open SyncStore on ``backend_target`` (a fresh database)."""
    with statestore.open_store_sync(backend_target.backend, url=store_url) as opened:
        yield opened
