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


@pytest.mark.parametrize(
    ("backend", "options", "named"),
    [
        ("sqlite", {"busy_timeout": "5"}, "busy_timeout"),
        ("sqlite", {"busy_timeout": -1}, "busy_timeout"),
        ("sqlite", {"busy_timeout": float("nan")}, "busy_timeout"),
        ("sqlite", {"retries": "3"}, "retries"),
        ("sqlite", {"retries": -1}, "retries"),
        ("legacy-blob", {"retries": 1.5}, "retries"),
        ("sqlite", {"busytimeout": 3}, "options"),
        ("legacy-blob", {"pool_size": 3}, "options"),
    ],
)
def test_bad_or_unknown_backend_options_name_themselves(
    backend: str, options: dict[str, object], named: str
) -> None:
    """A backend option of the wrong type or range, or one the backend does not take
    (a misspelling), is a ValidationError naming it when the store is built, not a
    TypeError from a constructor or a failure later on the backend's thread."""
    with pytest.raises(statestore.ValidationError, match=f"^{named}: ") as raised:
        statestore.open_store(backend, "sqlite:///never-opened.db", **options)
    if named == "options":
        assert next(iter(options)) in str(raised.value)
