"""The contract suite: every test a statestore backend must pass.

A backend package runs it with the fixtures of ``statestore.testing.plugin``::

    # conftest.py
    pytest_plugins = ["statestore.testing.plugin"]

    # test_contract.py
    from statestore.testing.contract import *  # noqa: F403

The ``store`` fixture is parametrized over every backend registered through the
``statestore`` entry points; override ``backend_target`` to run only your own. Tests
that need an optional ability (the backend's ``capabilities``) skip, visibly, on a
backend that does not declare it.
"""

from .access import *  # noqa: F403
from .concurrency import *  # noqa: F403
from .hostile import *  # noqa: F403
from .loading import *  # noqa: F403
from .loops import *  # noqa: F403
from .observe import *  # noqa: F403
from .roundtrip import *  # noqa: F403
from .sessions import *  # noqa: F403
from .versions import *  # noqa: F403
from .writes import *  # noqa: F403
