"""Comparing two copies of a conversation: what ``statestore copy`` verifies and what
the ``dual`` backend reports. Only what travels between stores is compared: the owner
and the content (``AgentState.to_dict()``); versions, item ids and the conversation's
own created_at and updated_at belong to each store."""

from __future__ import annotations

from typing import Any

import orjson

from .backend import StoredView
from .model import AgentState

__all__ = ["content_of", "describe_difference", "fresh_copy"]

_SORTED = orjson.OPT_SORT_KEYS


def content_of(state: AgentState | StoredView) -> dict[str, Any]:
    """What must be equal on both sides: the owner and the legacy document."""
    if isinstance(state, StoredView):
        document = AgentState(
            user_input=state.user_input,
            focus_areas=state.focus_areas,
            step_count=state.step_count,
            last_tool_result=state.last_tool_result,
            conversation_history=state.messages,
            memory_context=state.items,
            metadata=state.metadata,
        ).to_dict()
    else:
        document = state.to_dict()
    return {"user_id": state.user_id, "state": document}


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys(), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}: present on one side only"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    # 2 and 2.0 are the same JSON number (JSONB may print one as the other); True is not 1.
    numbers = {int, float}
    same_type = type(a) is type(b) or (type(a) in numbers and type(b) in numbers)
    if not same_type or a != b:
        return f"{path}: {_short(a)} against {_short(b)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_difference(a: AgentState | StoredView, b: AgentState | StoredView) -> str | None:
    """None when ``a`` and ``b`` hold the same owner and content, else the first
    difference, e.g. ``state.conversation_history[3].content: 'x' against 'y'``."""
    left, right = content_of(a), content_of(b)
    if orjson.dumps(left, option=_SORTED) == orjson.dumps(right, option=_SORTED):
        return None  # the fast path: byte-equal JSON
    found = _first_difference(left, right, "")
    return found[1:] if found else None


def fresh_copy(state: AgentState) -> AgentState:
    """The content of ``state`` as a state never loaded from any store, so that saving
    it replaces what another store holds under the same id."""
    return AgentState(
        user_input=state.user_input,
        focus_areas=list(state.focus_areas),
        step_count=state.step_count,
        last_tool_result=state.last_tool_result,
        conversation_history=list(state.conversation_history),
        memory_context=list(state.memory_context),
        metadata=dict(state.metadata),
    )
