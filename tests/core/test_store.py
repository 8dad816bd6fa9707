"""The Store over its backend: what it lets through and what it keeps to itself."""

from __future__ import annotations

import pytest

import statestore


def test_store_does_not_pass_the_protocol_through() -> None:
    """A Store is not a StorageBackend: the backend's read/write are not reachable on
    it (they would skip validation), while a backend's extras are (dual's sides)."""
    store = statestore.open_store("sqlite", "sqlite:///never-opened.db")
    assert not isinstance(store, statestore.StorageBackend)
    assert isinstance(store.backend, statestore.StorageBackend)
    with pytest.raises(AttributeError):
        store.write  # noqa: B018
    dual = statestore.open_store("dual", "sqlite:///never-opened.db")
    assert isinstance(dual.shadow, statestore.Store) and dual.shadow.name == "legacy-blob"
