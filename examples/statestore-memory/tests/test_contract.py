# tests/test_contract.py
from statestore.testing.contract import *  # noqa: F403
