"""One LangChain message of every kind, with what the adapter stores it as."""

from __future__ import annotations

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.messages.tool import tool_call_chunk

# (message, role, message_type, tool_name) as stored.
KINDS: list[tuple[BaseMessage, str, str, str | None]] = [
    (SystemMessage("You are terse.", id="s1"), "system", "system", None),
    (
        HumanMessage(
            "NUL \x00 inside, unicode é 🦜",
            id="h1",
            name="ada",
            additional_kwargs={"nested": {"list": [1, 2.5, None, True, "x\x00y"]}},
        ),
        "user",
        "human",
        None,
    ),
    (
        HumanMessage(
            [
                {"type": "text", "text": "look"},
                {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
            ]
        ),
        "user",
        "human",
        None,
    ),
    (
        AIMessage(
            "",
            id="a1",
            name="helper",
            tool_calls=[
                {"name": "search", "args": {"q": "trains", "max": 3}, "id": "call-1"},
                {"name": "search", "args": {"q": "buses"}, "id": "call-2"},
            ],
            invalid_tool_calls=[
                {
                    "name": "book",
                    "args": "{not json",
                    "id": "call-3",
                    "error": "bad arguments",
                    "type": "invalid_tool_call",
                }
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 5,
                "total_tokens": 17,
                "input_token_details": {"cache_read": 4},
            },
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None},
        ),
        "assistant",
        "ai",
        "search",
    ),
    (
        AIMessage(
            [{"type": "reasoning", "reasoning": "hmm"}, {"type": "text", "text": "done"}],
            tool_calls=[
                {"name": "search", "args": {}, "id": "c4"},
                {"name": "book", "args": {}, "id": "c5"},
            ],
            response_metadata={"output_version": "v1"},
        ),
        "assistant",
        "ai",
        None,
    ),
    (
        ToolMessage(
            "3 trains",
            tool_call_id="call-1",
            name="search",
            artifact={"rows": [{"id": 1}, {"id": 2}]},
            status="error",
            id="t1",
        ),
        "tool",
        "tool",
        "search",
    ),
    (ToolMessage([{"type": "text", "text": "ok"}], tool_call_id="call-2"), "tool", "tool", None),
    (FunctionMessage("42", name="answer"), "function", "function", "answer"),
    (ChatMessage("a critique", role="critic"), "critic", "chat", None),
    (ChatMessage("no role", role=""), "chat", "chat", None),
    (ChatMessage("long role", role="r" * 40), "chat", "chat", None),
    (ChatMessage("NUL role", role="a\x00b"), "chat", "chat", None),
    (
        AIMessageChunk(
            "partial",
            tool_call_chunks=[tool_call_chunk(name="search", args='{"q": ', id="c9", index=0)],
        ),
        "assistant",
        "AIMessageChunk",
        "search",
    ),
    (
        AIMessageChunk(
            "whole",
            tool_call_chunks=[tool_call_chunk(name="search", args='{"q": 1}', id="c9", index=0)],
            chunk_position="last",
        ),
        "assistant",
        "AIMessageChunk",
        "search",
    ),
    (HumanMessageChunk("h"), "user", "HumanMessageChunk", None),
    (SystemMessageChunk("s"), "system", "SystemMessageChunk", None),
    (FunctionMessageChunk("f", name="fn"), "function", "FunctionMessageChunk", "fn"),
    (ToolMessageChunk("t", tool_call_id="c1"), "tool", "ToolMessageChunk", None),
    (ChatMessageChunk("c", role="judge"), "judge", "ChatMessageChunk", None),
    (RemoveMessage(id="h1"), "remove", "remove", None),
    # A NUL in the tool's name: kept in the payload, left out of the tool_name column.
    (ToolMessage("x", tool_call_id="c1", name="a\x00b"), "tool", "tool", None),
]

MESSAGES = [message for message, *_ in KINDS]
