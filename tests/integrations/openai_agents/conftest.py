"""Fixtures of the OpenAI Agents adapter's tests: an open store on SQLite and on
PostgreSQL (the ``store`` fixture of ``statestore.testing.plugin``, narrowed to those
two backends), and session ids that no other test uses."""

from __future__ import annotations

import uuid

import pytest

from statestore.testing.plugin import BackendTarget

TARGETS = [
    pytest.param(BackendTarget("sqlite", "sqlite"), id="sqlite"),
    pytest.param(
        BackendTarget("postgres", "postgresql"), id="postgres", marks=pytest.mark.postgres
    ),
]


@pytest.fixture(params=TARGETS)
def backend_target(request: pytest.FixtureRequest) -> BackendTarget:
    """The SQLite and the PostgreSQL backend (the ``store`` fixture opens it)."""
    target: BackendTarget = request.param
    return target


@pytest.fixture
def session_id() -> str:
    """A session id of this test's own (the PostgreSQL database is shared)."""
    return f"agents-{uuid.uuid4().hex}"
