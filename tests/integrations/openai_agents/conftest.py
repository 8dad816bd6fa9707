"""Fixtures of the OpenAI Agents adapter's tests: the ``store`` fixture of
``statestore.testing.plugin`` (an open store of every registered backend, on each
engine it accepts: SQLite and PostgreSQL, the legacy layout on both, dual), and session
ids that no other test uses."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def session_id() -> str:
    """A session id of this test's own (a PostgreSQL database is shared)."""
    return f"agents-{uuid.uuid4().hex}"
