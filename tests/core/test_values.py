"""Messages and context items: checked when built, unless the values come back from a
store (``validated=True``), and immutable either way."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from statestore import ContextItem, Message, ValidationError

T = datetime(2024, 1, 1, tzinfo=UTC)


def test_values_are_checked_when_built() -> None:
    """A bad role or score raises ValidationError naming the field. A role is any
    name of at most 32 characters (frameworks have ``developer``, ``function``, ...)."""
    for role in ("", "r" * 33, 7, "a\x00b"):
        with pytest.raises(ValidationError, match="role"):
            Message(role=role, content="x")  # type: ignore[arg-type]
    assert Message(role="developer", content="x").role == "developer"
    with pytest.raises(ValidationError, match="relevance_score"):
        ContextItem(content="x", relevance_score=2.0)


def test_stored_values_are_not_checked_again_and_stay_frozen() -> None:
    """validated=True skips the checks (a backend reading its own rows) and builds
    the same immutable value as the checked constructor."""
    checked = Message("user", "hi", "text", None, T, {"a": 1}, 3)
    stored = Message("user", "hi", "text", None, T, {"a": 1}, 3, validated=True)
    assert stored == checked and stored.seq == 3
    assert Message("robot", "x", validated=True).role == "robot"  # not checked again
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.content = "changed"  # type: ignore[misc]
    item = ContextItem("note", "rag", 0.5, "general", T, {}, 7, validated=True)
    assert item.item_id == 7 and item == ContextItem("note", "rag", 0.5, "general", T, {})


def test_with_seq_and_with_id_keep_the_value() -> None:
    """A copy at another position or under another id is equal, with the new seq/id."""
    message = Message(role="user", content="hi", timestamp=T)
    assert message.with_seq(5) == message and message.with_seq(5).seq == 5
    item = ContextItem(content="note", timestamp=T)
    assert item.with_id(2) == item and item.with_id(2).item_id == 2


def test_from_dict_gives_seq_and_id() -> None:
    """Reading a legacy document sets seq and item_id through the constructor."""
    message = Message.from_dict({"role": "user", "content": "x"}, seq=4)
    assert message.seq == 4
    item = ContextItem.from_dict({"content": "x"}, item_id=1)
    assert item.item_id == 1
