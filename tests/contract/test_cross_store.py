"""A state loaded from one store and saved to another is copied whole there: the
"write only what changed" bookkeeping belongs to the store it was loaded from."""

from pathlib import Path

import pytest

from statestore import AgentState, LoadOptions, Store
from statestore.testing.contract._support import item, message, rich_state
from statestore.testing.plugin import BackendTarget, backend_targets, open_target


def _sqlite_or_memory() -> list[BackendTarget]:
    return [t for t in backend_targets() if t.engine in ("sqlite", None)]


@pytest.mark.parametrize("target", _sqlite_or_memory(), ids=lambda t: t.id)
async def test_state_from_another_store_is_copied_whole(
    target: BackendTarget, tmp_path: Path
) -> None:
    """Load from store A, append, save to store B under the same id: B holds the whole
    state (not only the appended message), whether B had the conversation or not."""
    urls = (
        [None, None]
        if target.engine is None
        else [
            f"sqlite:///{tmp_path}/a.db",
            f"sqlite:///{tmp_path}/b.db",
        ]
    )
    async with open_target(target, urls[0]) as a, open_target(target, urls[1]) as b:
        stores: tuple[Store, Store] = (a, b)
        await stores[0].save_state("c", rich_state())
        state = await stores[0].load_state("c")
        state.conversation_history.append(message(99))
        await stores[1].save_state("c", state)
        assert (await stores[1].load_state("c")).to_dict() == state.to_dict()

        # B already has an older, different version of the conversation.
        await stores[1].save_state("d", AgentState(memory_context=[item(0), item(1)]))
        await stores[0].save_state("d", rich_state())
        window = await stores[0].load_state("d", LoadOptions(last_messages=2))
        window.memory_context.pop(0)
        await stores[1].save_state("d", window)
        assert (await stores[1].load_state("d")).to_dict() == window.to_dict()


@pytest.mark.parametrize(
    "target", [t for t in _sqlite_or_memory() if t.engine is not None], ids=lambda t: t.id
)
async def test_another_store_object_on_the_same_database_is_the_same_store(
    target: BackendTarget, tmp_path: Path
) -> None:
    """A windowed state loaded through one store object and saved through another one
    opened on the same URL (a store per request) writes incrementally: the messages it
    did not load are kept."""
    url = f"sqlite:///{tmp_path}/same.db"
    async with open_target(target, url) as first:
        await first.save_state(
            "c", AgentState(conversation_history=[message(i) for i in range(10)])
        )
        window = await first.load_state("c", LoadOptions(last_messages=2))
    window.conversation_history.append(message(10))
    async with open_target(target, url) as second:
        await second.save_state("c", window)
        loaded = await second.load_state("c")
    assert [m.content for m in loaded.conversation_history] == [f"message {i}" for i in range(11)]
