"""The contract suite every statestore backend must pass, ours and third-party.

Fixtures live in ``statestore.testing.plugin``; the tests in
``statestore.testing.contract``.
"""
