"""Backends are found through the ``statestore_register_backends`` hook: the built-in
ones and a third-party package (examples/statestore-memory) through entry points, a
plugin object registered by hand, and the contract suite runs over all of them."""

from typing import Any

import pytest

import statestore
from statestore.testing.contract._support import CAPABILITIES
from statestore.testing.plugin import backend_targets, open_target


class OneBackend:
    """A plugin object offering one backend, as a third party would."""

    def __init__(self, name: str) -> None:
        self.name = name

    @statestore.hookimpl
    def statestore_register_backends(self) -> list[statestore.BackendSpec]:
        def factory(url: str | None, **options: Any) -> Any:
            return statestore.Registry.from_entry_points().open_backend("memory")

        return [statestore.BackendSpec(name=self.name, factory=factory, description="test")]


def test_third_party_package_is_found() -> None:
    """The installed statestore-memory distribution offers `memory`, with no URL."""
    info = statestore.Registry.from_entry_points().get("memory")
    assert info.package == "statestore-memory"
    assert info.spec.url_schemes == ()
    store = statestore.Registry.from_entry_points().open_store("memory")
    assert statestore.Capability.STABLE_ITEM_IDS in store.capabilities


def test_built_in_backends_come_from_entry_points() -> None:
    """sqlite, postgres and legacy-blob are registered by statestore's own entry points."""
    backends = statestore.Registry.from_entry_points().backends()
    for name in ("sqlite", "postgres", "legacy-blob"):
        assert backends[name].package == "statestore"


def test_contract_targets_cover_every_backend() -> None:
    """The contract suite runs every registered backend once per engine, and the memory
    backend (no URL) once."""
    ids = {t.id for t in backend_targets()}
    assert {"sqlite", "postgres", "legacy-blob[sqlite]", "legacy-blob[postgresql]"} <= ids
    assert "memory" in ids


def test_declared_capabilities_are_known() -> None:
    """Every capability a registered backend declares is one the suite knows, so a typo
    cannot silently skip tests."""
    for target in backend_targets():
        url = {"sqlite": "sqlite:///unused.db", "postgresql": "postgresql://h/db", None: None}
        store = open_target(target, url[target.engine])  # built, never opened
        assert store.capabilities <= CAPABILITIES, target.id


async def test_plugin_registered_by_hand() -> None:
    """A plugin object registered on a registry adds its backend, which opens by name."""
    registry = statestore.Registry.from_entry_points()
    registry.register(OneBackend("by-hand"))
    assert registry.get("by-hand").description == "test"
    async with registry.open_store("by-hand") as store:
        await store.save_state("c", statestore.AgentState(user_input="x"))
        assert (await store.load_state("c")).user_input == "x"


def test_duplicate_backend_names_fail_loudly() -> None:
    """Two plugins offering one name raise StateStoreError naming it."""
    registry = statestore.Registry.from_entry_points()
    registry.register(OneBackend("memory"))
    with pytest.raises(statestore.StateStoreError, match="'memory'"):
        registry.backends()


def test_unknown_backend_lists_the_known_ones() -> None:
    """An unknown name raises BackendNotFound listing what was found."""
    with pytest.raises(statestore.BackendNotFound) as raised:
        statestore.Registry.from_entry_points().get("no-such-backend")
    assert "memory" in str(raised.value) and "sqlite" in raised.value.known


def test_example_plugin_imports_only_public_names() -> None:
    """The example third-party backend needs nothing private: every statestore import
    it makes is a name exported from the package root."""
    import ast
    from pathlib import Path

    import statestore_memory

    tree = ast.parse(Path(statestore_memory.__file__).read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("statestore"):
            assert node.module == "statestore", node.module
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("statestore.") for a in node.names)
    assert imported and set(imported) <= set(statestore.__all__)
