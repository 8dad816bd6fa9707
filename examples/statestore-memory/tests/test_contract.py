"""statestore's contract suite, run against the memory backend."""

from statestore.testing.contract import *  # noqa: F403
