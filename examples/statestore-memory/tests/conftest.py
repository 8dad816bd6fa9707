"""Load statestore's fixtures (``store``, ``backend_target``, ...) and point them at
this package's backend."""

from typing import Any

import pytest

pytest_plugins = ["statestore.testing.plugin"]


@pytest.fixture
def backend_target() -> Any:
    """Run the contract suite against the memory backend only."""
    # Imported here, not at the top: pytest must import the plugin itself first, to
    # rewrite its assertions.
    from statestore.testing.plugin import BackendTarget

    return BackendTarget("memory", None)
