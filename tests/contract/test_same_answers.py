"""Invariant 7 across backends: one sequence of writes applied to every registered
backend leaves states that answer every LoadOptions the same way (content, seqs,
windows, versions; item ids where the backend has stable ones)."""

from pathlib import Path
from typing import Any

import pytest

from statestore import AgentState, Capability, LoadOptions, StatePatch, Store
from statestore.testing.contract._support import item, message, rich_state
from statestore.testing.contract.loading import CONTEXT_OPTIONS, MESSAGE_OPTIONS
from statestore.testing.plugin import backend_targets, open_target


async def _script(store: Store, cid: str) -> None:
    """Saves, patches, windowed and filtered edits, a removal and a replace."""
    await store.save_state(cid, rich_state())
    loaded = await store.load_state(cid)
    first_ids = [c.item_id for c in loaded.memory_context[:2]]
    await store.update_state(
        cid,
        StatePatch(
            remove_context=[i for i in first_ids if i is not None],
            add_context=[item(20, 0.8, context_type="code"), item(21, 0.7, source="rag")],
            append_messages=[
                message(30 + i, message_type="tool_call", tool_name="search") for i in range(3)
            ],
            set_metadata={"phase": 2},
        ),
    )
    window = await store.load_state(cid, LoadOptions(last_messages=5, min_relevance=0.7))
    window.conversation_history.append(message(40))
    window.memory_context.pop(0)
    window.memory_context.append(item(22, 0.95, context_type="plan"))
    window.focus_areas = ["code"]
    await store.save_state(cid, window)
    tail = await store.load_state(cid, LoadOptions(last_messages=3))
    tail.conversation_history[1] = message(41, content="edited")
    await store.save_state(cid, tail)
    filtered = await store.load_state(cid, LoadOptions(message_types=frozenset({"error"})))
    filtered.conversation_history.append(message(42, message_type="error"))
    filtered.metadata.pop("n")
    await store.save_state(cid, filtered)
    framework_items = [
        message(50 + i, role="developer", content="", payload={"i": i, "text": "a\x00b"})
        for i in range(3)
    ]
    await store.update_state(cid, StatePatch(append_messages=framework_items), create=True)
    await store.pop_messages(cid, 2)


def _answer(state: AgentState, stable_ids: bool) -> dict[str, Any]:
    answer = {
        "document": state.to_dict(),
        "seqs": [m.seq for m in state.conversation_history],
        "window": (state.history_start, state.history_total),
        "version": state.version,
    }
    if stable_ids:
        answer["item_ids"] = [c.item_id for c in state.memory_context]
    return answer


@pytest.mark.postgres
async def test_every_backend_gives_the_same_answers(postgres_url: str, tmp_path: Path) -> None:
    """The same writes on every backend, then every LoadOptions: equal answers."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for target in backend_targets():
        url = {
            "postgresql": postgres_url,
            "sqlite": f"sqlite:///{tmp_path}/{target.backend}.db",
            None: None,
        }[target.engine]
        async with open_target(target, url) as store:
            stable = Capability.STABLE_ITEM_IDS in store.capabilities
            cid = f"same-answers-{target.id}-{id(answers)}"
            await _script(store, cid)
            answers[target.id] = [
                _answer(await store.load_state(cid, options), stable)
                for options in MESSAGE_OPTIONS + CONTEXT_OPTIONS
            ]
    reference_id = "sqlite"
    reference = answers.pop(reference_id)
    *_, last_text, last = reference[0]["document"]["conversation_history"]
    assert last_text["content"] == "message 42"
    assert last["payload"] == {"i": 0, "text": "a\x00b"}  # two of three popped
    for target_id, got in answers.items():
        for options, mine, theirs in zip(
            MESSAGE_OPTIONS + CONTEXT_OPTIONS, got, reference, strict=True
        ):
            common = mine.keys() & theirs.keys()
            assert {k: mine[k] for k in common} == {k: theirs[k] for k in common}, (
                f"{target_id} differs from {reference_id} for {options}"
            )
