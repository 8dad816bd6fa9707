"""What the contract tests share: fresh ids, sample data, capability gates.

Tests need the ``store`` and ``backend_target`` fixtures of
``statestore.testing.plugin``. A test that needs an optional ability is decorated with
``@requires(Capability.STABLE_ITEM_IDS)``; on a backend whose ``capabilities`` lack
it, the test is skipped with a message that says so, never passed silently.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from ...core.backend import Capability
from ...core.model import AgentState, ContextItem, Message
from ..plugin import BackendTarget, open_target

__all__ = [
    "CAPABILITIES",
    "ContractTest",
    "T0",
    "item",
    "message",
    "new_id",
    "requires",
    "rich_state",
]

# The abilities contract tests may require (see StorageBackend.capabilities).
CAPABILITIES = frozenset(Capability)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

F = TypeVar("F", bound=Callable[..., Any])


def requires(*capabilities: Capability | str) -> Callable[[F], F]:
    """Run the decorated test only on backends that declare every one of
    ``capabilities`` (``Capability`` members or their values); skip it visibly
    elsewhere."""
    unknown = {str(c) for c in capabilities} - CAPABILITIES
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")

    def mark(test: F) -> F:
        needed = frozenset(Capability(c) for c in capabilities)
        test.__statestore_requires__ = needed  # type: ignore[attr-defined]
        return test

    return mark


def backend_capabilities(target: BackendTarget, url: str | None) -> frozenset[Capability]:
    """The capabilities ``target``'s backend declares, opened on ``url`` (the backend
    is built, not opened: no I/O)."""
    return open_target(target, url).capabilities


class ContractTest:
    """Base of every contract test class: applies ``@requires`` gates."""

    @pytest.fixture(autouse=True)
    def _check_capabilities(
        self, request: pytest.FixtureRequest, backend_target: BackendTarget
    ) -> None:
        needed: frozenset[Capability] = getattr(
            request.function, "__statestore_requires__", frozenset()
        )
        if not needed:
            return
        url = request.getfixturevalue("store_url")
        missing = needed - backend_capabilities(backend_target, url)
        if missing:
            pytest.skip(f"backend {backend_target.backend!r} lacks {', '.join(sorted(missing))}")


def new_id(prefix: str = "conv") -> str:
    """A conversation (or user) id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def message(i: int, **fields: Any) -> Message:
    """The ``i``-th message of a sample history (role alternates, timestamps ascend)."""
    values: dict[str, Any] = {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"message {i}",
        "timestamp": T0 + timedelta(seconds=i),
    }
    values.update(fields)
    return Message(**values)


def item(i: int, score: float = 0.5, **fields: Any) -> ContextItem:
    """The ``i``-th context item of a sample memory context."""
    values: dict[str, Any] = {
        "content": f"item {i}",
        "relevance_score": score,
        "timestamp": T0 + timedelta(minutes=i),
    }
    values.update(fields)
    return ContextItem(**values)


def rich_state() -> AgentState:
    """A state with every field set: varied message types and tool names, context
    items of several sources, types and scores (ties included), nested metadata."""
    kinds = [
        ("text", None),
        ("tool_call", "search"),
        ("tool_result", "search"),
        ("tool_call", "calculator"),
        ("tool_result", "calculator"),
        ("error", None),
    ]
    history = []
    for i in range(24):
        message_type, tool_name = kinds[i % len(kinds)]
        role = "tool" if message_type == "tool_result" else ("user" if i % 2 else "assistant")
        history.append(
            message(
                i,
                role=role,
                message_type=message_type,
                tool_name=tool_name,
                metadata={"i": i} if i % 3 == 0 else {},
            )
        )
    sources = ["ltm", "rag", "focus"]
    types = ["general", "code", "plan"]
    scores = [0.9, 0.3, 0.7, 0.7, 1.0, 0.0, 0.75, 0.69999, 0.7, 0.5, 0.95, 0.7]
    context = [
        item(
            i, score, source=sources[i % 3], context_type=types[(i // 3) % 3], metadata={"rank": i}
        )
        for i, score in enumerate(scores)
    ]
    return AgentState(
        user_input="plan the trip",
        focus_areas=["code", "plan"],
        step_count=7,
        last_tool_result={"ok": True, "rows": [1, 2.5, None, "x"], "nested": {"a": {"b": []}}},
        conversation_history=history,
        memory_context=context,
        metadata={"session": {"lang": "en", "tags": ["a", "b"]}, "n": 3, "none": None},
    )
