"""ADK's Runner over StatestoreSessionService, with a scripted model (no network): an
agent that calls a tool, run over several turns and across a reopened store, remembers
what came before, and ADK's app:/user:/temp: state behaves as ADK defines it.
(The docs page's example runs in tests/test_readme.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.tools.tool_context import ToolContext
from google.genai import types
from pydantic import Field

import statestore
from statestore import LoadOptions
from statestore.integrations.google_adk import StatestoreSessionService


class ScriptedModel(BaseLlm):
    """Answers each request with the next scripted part; records the requests."""

    script: list[types.Part]
    requests: list[LlmRequest] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.requests.append(llm_request.model_copy(deep=True))
        part = self.script.pop(0)
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


def remember(fact: str, tool_context: ToolContext) -> dict[str, Any]:
    """Remember a fact about the user."""
    tool_context.state["user:facts"] = [*tool_context.state.get("user:facts", []), fact]
    tool_context.state["app:facts_told"] = tool_context.state.get("app:facts_told", 0) + 1
    tool_context.state["temp:scratch"] = "only for this invocation"
    return {"remembered": fact}


def _texts(request: LlmRequest) -> list[tuple[str, str]]:
    """(role, text) of each text part the model was given."""
    return [
        (content.role or "", part.text)
        for content in request.contents
        for part in content.parts or []
        if part.text
    ]


async def _turn(runner: Runner, user_id: str, session_id: str, text: str) -> list[str]:
    message = types.Content(role="user", parts=[types.Part(text=text)])
    return [
        part.text
        async for event in runner.run_async(
            user_id=user_id, session_id=session_id, new_message=message
        )
        if event.content
        for part in event.content.parts or []
        if part.text
    ]


async def test_an_agent_remembers_across_turns_and_a_reopened_store(
    adk_engine: str, adk_url: str
) -> None:
    model = ScriptedModel(
        model="scripted",
        script=[
            types.Part(function_call=types.FunctionCall(name="remember", args={"fact": "Ada"})),
            types.Part(text="Noted, Ada."),
            types.Part(text="You are Ada."),
            types.Part(text="Hello, other user."),
        ],
    )
    agent = LlmAgent(name="assistant", model=model, instruction="Be brief.", tools=[remember])

    async with statestore.open_store(adk_engine, url=adk_url) as store:
        service = StatestoreSessionService(store)
        runner = Runner(app_name="app", agent=agent, session_service=service)
        await service.create_session(app_name="app", user_id="ada", session_id="s1")
        assert await _turn(runner, "ada", "s1", "My name is Ada.") == ["Noted, Ada."]
        stored = await store.load_state("adk/app/ada/s1", LoadOptions(tool_name="remember"))
        # the function call and its response
        assert [m.role for m in stored.conversation_history] == ["agent", "agent"]

    # A new process: a new store, service and runner over the same database.
    async with statestore.open_store(adk_engine, url=adk_url) as store:
        service = StatestoreSessionService(store)
        runner = Runner(app_name="app", agent=agent, session_service=service)
        assert await _turn(runner, "ada", "s1", "Who am I?") == ["You are Ada."]
        # The model saw the whole first turn, tool call and answer included.
        seen = model.requests[2]
        assert _texts(seen) == [
            ("user", "My name is Ada."),
            ("model", "Noted, Ada."),
            ("user", "Who am I?"),
        ]
        parts = [part for content in seen.contents for part in content.parts or []]
        calls = [part.function_call.name for part in parts if part.function_call]
        assert calls == ["remember"]

        session = await service.get_session(app_name="app", user_id="ada", session_id="s1")
        assert session is not None
        assert len(session.events) == 6  # two user messages, call, response, two answers
        assert session.state == {"user:facts": ["Ada"], "app:facts_told": 1}
        for event in session.events:
            assert "temp:scratch" not in event.actions.state_delta

        # user: state reaches Ada's other sessions, app: state every user's.
        later = await service.create_session(app_name="app", user_id="ada", session_id="s2")
        assert later.state == {"user:facts": ["Ada"], "app:facts_told": 1}
        other = await service.create_session(app_name="app", user_id="bob", session_id="s1")
        assert other.state == {"app:facts_told": 1}
        assert await _turn(runner, "bob", "s1", "Hi") == ["Hello, other user."]
        assert _texts(model.requests[3]) == [("user", "Hi")]  # nothing of Ada's
        listed = await service.list_sessions(app_name="app")
        assert sorted((s.user_id, s.id) for s in listed.sessions) == [
            ("ada", "s1"),
            ("ada", "s2"),
            ("bob", "s1"),
        ]


def test_runner_run_sync(adk_engine: str, adk_url: str, request: pytest.FixtureRequest) -> None:
    """``Runner.run``, ADK's synchronous entry point, runs the agent on a thread and
    event loop of its own, not the one the store was opened on."""
    model = ScriptedModel(
        model="scripted", script=[types.Part(text="Hi Ada."), types.Part(text="Ada.")]
    )
    agent = LlmAgent(name="assistant", model=model, instruction="Be brief.")
    loop = asyncio.new_event_loop()
    store = statestore.open_store(adk_engine, url=adk_url)
    loop.run_until_complete(store.__aenter__())
    try:
        service = StatestoreSessionService(store)
        loop.run_until_complete(
            service.create_session(app_name="app", user_id="ada", session_id="s1")
        )
        runner = Runner(app_name="app", agent=agent, session_service=service)
        for text in ("I am Ada.", "Who am I?"):
            message = types.Content(role="user", parts=[types.Part(text=text)])
            events = list(runner.run(user_id="ada", session_id="s1", new_message=message))
            assert events and events[-1].is_final_response()
        assert _texts(model.requests[1]) == [
            ("user", "I am Ada."),
            ("model", "Hi Ada."),
            ("user", "Who am I?"),
        ]
    finally:
        loop.run_until_complete(store.close())
        loop.close()
