"""Run the contract suite over every backend registered through entry points."""

from statestore.testing.contract import *  # noqa: F403
