"""StatestoreSession under the SDK's Runner, with a scripted model (no network): an
agent remembers earlier turns, tool calls and reasoning round-trip, ``run``,
``run_streamed`` and ``run_sync`` all work, and sessions run side by side. Each
conversation is also run on the SDK's own SQLiteSession: the model must see the same
input and the session must hold the same items."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, SQLiteSession, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses import ResponseReasoningItem
from openai.types.responses.response_reasoning_item import Summary

import statestore
from statestore import LoadOptions, Store
from statestore.integrations.openai_agents import StatestoreSession


@function_tool
def get_weather(city: str) -> str:
    """The weather in ``city``."""
    return f"sunny in {city}"


def script() -> ScriptedModel:
    """Three turns: a greeting with reasoning, a tool call, a question about turn one."""
    return ScriptedModel(
        steps=[
            [
                ResponseReasoningItem(
                    id="rs_1",
                    type="reasoning",
                    summary=[Summary(text="The user introduced themself.", type="summary_text")],
                ),
                assistant_message("Hello Ada!", item_id="msg_1"),
            ],
            [function_call("get_weather", {"city": "Paris"}, call_id="call_1")],
            [assistant_message("It is sunny in Paris.", item_id="msg_2")],
            [assistant_message("Your name is Ada.", item_id="msg_3")],
        ]
    )


PROMPTS = ["My name is Ada.", "What is the weather in Paris?", "What is my name?"]


def run_sync(agent: Agent[Any], prompt: str, session: Any) -> Any:
    """Runner.run_sync on a thread with no running loop, as a synchronous application
    calls it. run_sync leaves the thread's default event loop open on purpose (the SDK
    reuses it from call to call): the application closes it when the thread is done
    with it, as the SDK's own tests do."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, prompt, session=session)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def run_turn(method: str, agent: Agent[Any], prompt: str, session: Any) -> Any:
    if method == "run":
        return await Runner.run(agent, prompt, session=session)
    if method == "run_streamed":
        result = Runner.run_streamed(agent, prompt, session=session)
        async for _ in result.stream_events():
            pass
        return result
    return await asyncio.to_thread(run_sync, agent, prompt, session)


async def converse(method: str, session: Any) -> tuple[ScriptedModel, list[Any]]:
    model = script()
    agent = Agent(name="assistant", model=model, tools=[get_weather])
    outputs = [(await run_turn(method, agent, p, session)).final_output for p in PROMPTS]
    assert outputs == ["Hello Ada!", "It is sunny in Paris.", "Your name is Ada."]
    return model, await session.get_items()


@pytest.mark.parametrize("method", ["run", "run_streamed", "run_sync"])
async def test_an_agent_remembers_and_sees_what_sqlite_session_would_show_it(
    store: Store, session_id: str, method: str
) -> None:
    model, items = await converse(method, StatestoreSession(session_id, store))
    # The last turn's input holds the first turn, the reasoning and the tool round trip.
    last_input = model.calls[-1].input
    assert isinstance(last_input, list)
    assert last_input[0] == {"role": "user", "content": "My name is Ada."}
    types = [item.get("type") for item in items]
    assert types == [
        None,  # the user's first message
        "reasoning",
        "message",
        None,
        "function_call",
        "function_call_output",
        "message",
        None,
        "message",
    ]
    assert items[5]["output"] == "sunny in Paris"  # type: ignore[typeddict-item]

    reference = SQLiteSession(f"reference-{method}")
    try:
        sdk_model, sdk_items = await converse(method, reference)
    finally:
        reference.close()
    assert items == sdk_items
    assert [c.input for c in model.calls] == [c.input for c in sdk_model.calls]


async def test_tool_calls_are_queryable_by_tool(store: Store, session_id: str) -> None:
    await converse("run", StatestoreSession(session_id, store, user_id="ada"))
    state = await store.load_state(session_id, LoadOptions(tool_name="get_weather"), user_id="ada")
    assert [(m.role, m.message_type) for m in state.conversation_history] == [
        ("assistant", "function_call"),
        ("tool", "function_call_output"),
    ]
    assert state.conversation_history[0].payload["call_id"] == "call_1"


async def test_history_survives_reopening_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/agents.db"
    async with statestore.open_store("sqlite", url=url) as store:
        model = ScriptedModel(steps=[[assistant_message("Hello Ada!")]])
        agent = Agent(name="assistant", model=model)
        await Runner.run(agent, "My name is Ada.", session=StatestoreSession("s", store))
    async with statestore.open_store("sqlite", url=url) as store:
        model = ScriptedModel(steps=[[assistant_message("Your name is Ada.")]])
        agent = Agent(name="assistant", model=model)
        await Runner.run(agent, "What is my name?", session=StatestoreSession("s", store))
    assert model.calls[0].input[0] == {"role": "user", "content": "My name is Ada."}  # type: ignore[index]
    assert len(model.calls[0].input) == 3


def test_a_synchronous_application(tmp_path: Path) -> None:
    """No event loop anywhere in the application: a SyncStore and Runner.run_sync."""
    with statestore.open_store_sync("sqlite", url=f"sqlite:///{tmp_path}/a.db") as store:
        session = StatestoreSession("sync", store)
        model = ScriptedModel(
            steps=[[assistant_message("Hello Ada!")], [assistant_message("Your name is Ada.")]]
        )
        agent = Agent(name="assistant", model=model)
        run_sync(agent, "My name is Ada.", session)
        result = run_sync(agent, "What is my name?", session)
        assert result.final_output == "Your name is Ada."
        assert model.calls[1].input[0] == {"role": "user", "content": "My name is Ada."}  # type: ignore[index]
        assert store.load_state("sync").history_total == 4


async def test_concurrent_sessions_keep_to_themselves(store: Store, session_id: str) -> None:
    """Sessions run at once, as tasks on one loop and with run_sync on threads: each
    remembers its own first turn only."""

    async def two_turns(n: int) -> None:
        model = ScriptedModel(
            steps=[[assistant_message(f"Hello {n}")], [assistant_message(f"You are {n}")]]
        )
        agent = Agent(name="assistant", model=model)
        session = StatestoreSession(f"{session_id}-{n}", store)
        for prompt in (f"I am user {n}.", "Who am I?"):
            if n % 2:
                await Runner.run(agent, prompt, session=session)
            else:
                await asyncio.to_thread(run_sync, agent, prompt, session)
        second_input = model.calls[1].input
        assert isinstance(second_input, list) and len(second_input) == 3
        assert second_input[0] == {"role": "user", "content": f"I am user {n}."}
        assert f"Hello {n}" in str(second_input[1])
        assert (await session.get_items())[0] == {"role": "user", "content": f"I am user {n}."}
        assert len(await session.get_items()) == 4

    await asyncio.gather(*(two_turns(n) for n in range(8)))
