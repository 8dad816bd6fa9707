"""Load statestore's fixtures (``store``, ``backend_target``, ...) and point them at
this package's backend."""

import pytest

from statestore.testing.plugin import BackendTarget

pytest_plugins = ["statestore.testing.plugin"]


@pytest.fixture
def backend_target() -> BackendTarget:
    """Run the contract suite against the memory backend only."""
    return BackendTarget("memory", None)
