"""The backend is found through the entry point, like any installed plugin."""

import pytest

import statestore


def test_found_through_entry_points() -> None:
    """A fresh registry lists ``memory``, from this distribution."""
    info = statestore.Registry.from_entry_points().get("memory")
    assert info.package == "statestore-memory"
    assert info.spec.url_schemes == ()


@pytest.mark.asyncio
async def test_open_by_name() -> None:
    """open_store("memory") gives a working store."""
    async with statestore.open_store("memory") as store:
        await store.save_state("c", statestore.AgentState(user_input="hi"))
        assert (await store.load_state("c")).user_input == "hi"
