# tests/conftest.py
import pytest

from statestore.testing.plugin import BackendTarget

pytest_plugins = ["statestore.testing.plugin"]


@pytest.fixture
def backend_target() -> BackendTarget:
    """Run the contract suite against this package's backend only."""
    return BackendTarget("memory", None)  # its entry-point name; engine None: no URL
