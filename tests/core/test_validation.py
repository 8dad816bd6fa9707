"""The JSON check's fast path (``is_valid_json``) and the walk that names what is
wrong (``_check_json``) accept exactly the same values."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore import ContextItem, Message, StatePatch, ValidationError
from statestore.core.validation import MAX_JSON_DEPTH, _check_json, check_json, is_valid_json

# Mostly valid values, so that one bad part deep inside is what decides.
good_texts = st.text(st.sampled_from(["a", "é", "😀", "\\", '"']), max_size=4)
texts = st.one_of(
    good_texts,
    good_texts,
    good_texts,
    st.text(st.sampled_from(["a", "\x00", "\ud800", "\udfff"]), min_size=1, max_size=3),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**63, -(2**63) - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    texts,
    st.sampled_from([(), b"x", 1j, {1, 2}]),  # not JSON types
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(good_texts, texts, st.integers(0, 3)), inner, max_size=4)
    ),
    max_leaves=20,
)


def _walk_accepts(value: Any) -> bool:
    try:
        _check_json(value, "v", 0)
    except ValidationError:
        return False
    return True


@settings(max_examples=500)
@given(values)
def test_fast_path_agrees_with_the_walk(value: Any) -> None:
    assert is_valid_json(value, 0) == _walk_accepts(value)


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ({"tokens": 75, "turn": 3}, True),
        ("é😀", True),
        ("x\x00", False),
        ("é\ud800", False),
        (2**63, False),
        ([1.5, math.nan], False),
        ({"a": {"b": "\udfff"}}, False),
        ({"a": "x\x00"}, False),
        ({"a\ud800": 1}, False),
        ({"a": 2**63}, False),
        ({"a": -(2**63)}, True),
        ({"a": math.nan}, False),
        ({"a": [math.inf]}, False),
        ({"a": (1,)}, False),
        ({1: "a"}, False),
        (_nested(MAX_JSON_DEPTH), True),
        (_nested(MAX_JSON_DEPTH + 1), False),
    ],
)
def test_edges(value: Any, accepted: bool) -> None:
    assert is_valid_json(value, 0) is accepted
    if accepted:
        check_json(value, "metadata")
    else:
        with pytest.raises(ValidationError, match="metadata"):
            check_json(value, "metadata")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"append_messages": None}, "append_messages"),
        ({"append_messages": Message("user", "x")}, "append_messages"),
        ({"append_messages": "hello"}, "append_messages"),
        ({"add_context": ContextItem("x")}, "add_context"),
        ({"add_context": {"content": "x"}}, "add_context"),
        ({"remove_context": None}, "remove_context"),
        ({"remove_context": 3}, "remove_context"),
    ],
)
def test_a_patch_collection_that_is_not_one_names_its_field(
    fields: dict[str, Any], named: str
) -> None:
    """None or a single object where a patch takes a collection is a ValidationError
    naming the field, not the TypeError of iterating it."""
    with pytest.raises(ValidationError, match=f"^{named}: must be a collection"):
        StatePatch(**fields)
