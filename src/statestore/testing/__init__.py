"""Testing statestore backends: pytest fixtures (``statestore.testing.plugin``) and the
contract suite every backend must pass (``statestore.testing.contract``).

A backend package runs the suite with::

    # conftest.py
    pytest_plugins = ["statestore.testing.plugin"]

    # test_contract.py
    from statestore.testing.contract import *  # noqa: F403
"""

import pytest

# The suite lives in an installed package, which pytest does not rewrite by default:
# without this its failures would be bare AssertionErrors. Registering the plugin too
# lets a conftest import from it before naming it in ``pytest_plugins``.
pytest.register_assert_rewrite("statestore.testing.contract", "statestore.testing.plugin")
