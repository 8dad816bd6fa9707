from statestore import AgentState, Message, Store


async def test_round_trip(store: Store) -> None:
    """A saved state loads back equal (smoke test of the fixtures)."""
    state = AgentState(user_input="hi", conversation_history=[Message(role="user", content="hi")])
    await store.save_state("smoke", state)
    assert await store.load_state("smoke") == state
