"""Payloads nested deeper than the store keeps, for the adapters that store a
framework's item whole as a message's payload (OpenAI Agents, LangChain): the
frameworks accept any depth, so such an item is kept as its JSON text instead."""

from __future__ import annotations

import json
from typing import Any

from statestore.core.validation import MAX_JSON_DEPTH

__all__ = ["json_text_if_too_deep"]


def json_text_if_too_deep(value: Any) -> str | None:
    """``value``'s JSON text, when ``value`` nests lists and dicts deeper than the
    store keeps and that text reads back equal to it; else None, and the store's own
    check says what is wrong with ``value``."""
    if not _deeper_than(value, MAX_JSON_DEPTH):
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON, a NaN, a cycle
        return None
    return text if json.loads(text) == value else None


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` lists and dicts (the store
    counts as this does); looks no deeper, so a cycle ends."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels <= 0 or any(_deeper_than(child, levels - 1) for child in children)
