"""The benchmark workload: deterministic conversations of a given size.

Messages are ~400 characters with small metadata, alternating user and assistant with
an occasional tool call; 50 context items of mixed relevance (about a third score at
least 0.7). The same seed gives the same data on every backend.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ..core.model import AgentState, ContextItem, Message

__all__ = ["CONTEXT_ITEMS", "MESSAGE_CHARS", "make_context", "make_messages", "make_state"]

MESSAGE_CHARS = 400
CONTEXT_ITEMS = 50
_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
_WORDS = [
    "agent",
    "state",
    "memory",
    "context",
    "tool",
    "result",
    "window",
    "relevance",
    "message",
    "history",
    "turn",
    "database",
    "index",
    "query",
    "append",
    "load",
    "save",
    "user",
    "assistant",
    "plan",
    "step",
    "focus",
    "answer",
]


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


def make_messages(count: int, *, start: int = 0, seed: int = 1) -> list[Message]:
    """``count`` messages numbered from ``start`` (the numbering only varies the data)."""
    rng = random.Random(seed * 1_000_003 + start)
    messages = []
    for i in range(start, start + count):
        tool = i % 10 == 9
        messages.append(
            Message(
                role="tool" if tool else ("user" if i % 2 == 0 else "assistant"),
                content=_text(rng, MESSAGE_CHARS),
                message_type="tool_result" if tool else "text",
                tool_name="search" if tool else None,
                timestamp=_BASE_TIME + timedelta(seconds=i),
                metadata={"tokens": rng.randint(50, 150), "turn": i // 2},
            )
        )
    return messages


def make_context(count: int = CONTEXT_ITEMS, *, seed: int = 1) -> list[ContextItem]:
    """``count`` context items with relevance scores spread over 0..1."""
    rng = random.Random(seed)
    sources = ("ltm", "rag", "focus")
    return [
        ContextItem(
            content=_text(rng, 200),
            source=sources[i % 3],
            relevance_score=round(rng.random(), 3),
            context_type="task" if i % 4 == 0 else "general",
            timestamp=_BASE_TIME + timedelta(minutes=i),
            metadata={"doc": f"d{i}"},
        )
        for i in range(count)
    ]


def make_state(size: int, *, seed: int = 1) -> AgentState:
    """A new (never saved) state with ``size`` messages and the standard context."""
    return AgentState(
        user_input="what did we decide about the schema?",
        focus_areas=["task"],
        step_count=size // 2,
        last_tool_result={"ok": True, "rows": 3},
        conversation_history=make_messages(size, seed=seed),
        memory_context=make_context(seed=seed),
        metadata={"model": "gpt-x", "temperature": 0.2},
    )
