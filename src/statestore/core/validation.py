"""Checks shared by the model, the query objects and the backends.

The rules are the same for every backend, so that a value accepted by one is accepted
by all and comes back equal:

- text: any unicode except NUL (PostgreSQL cannot store it) and lone surrogates
  (not encodable as UTF-8);
- JSON values: dict with str keys, list, str, bool, None, int in the signed 64-bit
  range, finite float; at most ``MAX_JSON_DEPTH`` levels deep (which also rules out
  cycles). Strings follow the text rule, except in a message's ``payload`` and in
  shared state (``nul_ok``), which are stored as JSON text, where NUL is the escape
  ``\u0000``: a framework's item may hold any string it accepts;
- conversation and user ids: 1 to ``MAX_ID_LENGTH`` characters, no control
  characters, no leading or trailing white space. Quotes, semicolons and anything
  else are plain data: no SQL is ever built from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .errors import ValidationError

MAX_ID_LENGTH = 255
MAX_JSON_DEPTH = 64
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_text(value: object, field: str, *, allow_empty: bool = True) -> str:
    """Return ``value`` if it is storable text, else raise ValidationError."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise ValidationError(field, f"must be a string, not {type(value).__name__}")
        value = str(value)
    # ``isascii`` is O(1) in CPython: most text skips the regex scan.
    if "\x00" in value or not value.isascii():
        bad = _BAD_TEXT.search(value)
        if bad is not None:
            what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate"
            raise ValidationError(field, f"contains {what} at index {bad.start()}")
    if not allow_empty and not value:
        raise ValidationError(field, "must not be empty")
    return value


def check_optional_text(value: object, field: str) -> str | None:
    return None if value is None else check_text(value, field)


def check_id(value: object, field: str) -> str:
    """Validate a conversation id or user id."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(
            field, f"is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    check_text(value, field)
    if _CONTROL.search(value):
        raise ValidationError(field, "must not contain control characters")
    if value != value.strip():
        raise ValidationError(field, "must not start or end with white space")
    return value


def check_optional_id(value: object, field: str) -> str | None:
    return None if value is None else check_id(value, field)


def check_int(value: object, field: str, *, minimum: int = 0) -> int:
    if type(value) is not int:
        raise ValidationError(field, f"must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValidationError(field, f"must be >= {minimum}, got {value}")
    if value > _INT64_MAX:
        raise ValidationError(field, "exceeds the signed 64-bit range")
    return value


def check_optional_int(value: object, field: str, *, minimum: int = 0) -> int | None:
    return None if value is None else check_int(value, field, minimum=minimum)


def check_score(value: object, field: str) -> float:
    """A relevance score: a finite number in [0, 1], returned as float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"must be a number, not {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ValidationError(field, f"must be a finite number between 0 and 1, got {value!r}")
    return score


def check_timestamp(value: object, field: str) -> datetime:
    """An aware datetime, returned in UTC."""
    if not isinstance(value, datetime):
        raise ValidationError(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must be timezone-aware (e.g. datetime.now(UTC))")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. year 1 at UTC+5 is before datetime.min in UTC
        raise ValidationError(field, f"{value.isoformat()} is out of range in UTC") from None


def check_str_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list | tuple):
        raise ValidationError(field, f"must be a list of strings, not {type(value).__name__}")
    return [check_text(item, f"{field}[{i}]") for i, item in enumerate(value)]


def check_json(value: Any, field: str, *, nul_ok: bool = False) -> None:
    """Raise ValidationError unless ``value`` is a JSON value every backend stores
    exactly (see the module docstring); ``nul_ok``: strings may hold NUL."""
    if nul_ok:
        _check_json(value, field, 0, _SURROGATE)
    elif not is_valid_json(value, 0):
        _check_json(value, field, 0, _BAD_TEXT)  # finds what is wrong and says where


def is_valid_json(value: Any, depth: int = 0) -> bool:
    """``check_json``'s rules as a yes/no answer, without building the field names
    an error needs: the fast path, as every write checks its new rows' metadata
    (a full walk per message would dominate an append). Written out inline, as most metadata
    is a flat dict of short values."""
    kind = type(value)
    if kind is dict:
        if depth >= MAX_JSON_DEPTH:
            return False
        for key, item in value.items():
            if (
                type(key) is not str
                or "\x00" in key
                or not (key.isascii() or _BAD_TEXT.search(key) is None)
            ):
                return False
            kind = type(item)
            if kind is str:
                if "\x00" in item or not (item.isascii() or _BAD_TEXT.search(item) is None):
                    return False
            elif kind is int:
                if not _INT64_MIN <= item <= _INT64_MAX:
                    return False
            elif not (kind is bool or item is None or is_valid_json(item, depth + 1)):
                return False
        return True
    if kind is list:
        return depth < MAX_JSON_DEPTH and all(is_valid_json(item, depth + 1) for item in value)
    if kind is str:
        return "\x00" not in value and (value.isascii() or _BAD_TEXT.search(value) is None)
    if kind is int:
        return bool(_INT64_MIN <= value <= _INT64_MAX)
    if kind is float:
        return math.isfinite(value)
    return kind is bool or value is None


def _check_json(value: Any, field: str, depth: int, bad: re.Pattern[str] = _BAD_TEXT) -> None:
    kind = type(value)
    if kind is str:
        if bad.search(value):
            check_text(value, field)
    elif kind is bool or value is None:
        pass
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValidationError(field, f"integer {value} is outside the signed 64-bit range")
    elif kind is float:
        if not math.isfinite(value):
            raise ValidationError(field, f"{value!r} is not allowed in JSON (finite numbers only)")
    elif kind is dict or kind is list:
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(
                field, f"nested deeper than {MAX_JSON_DEPTH} levels (or contains a cycle)"
            )
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise ValidationError(field, f"object keys must be strings, got {key!r}")
                if bad.search(key):
                    check_text(key, f"{field} key")
                _check_json(item, f"{field}.{key}", depth + 1, bad)
        else:
            for i, item in enumerate(value):
                _check_json(item, f"{field}[{i}]", depth + 1, bad)
    else:
        raise ValidationError(field, f"{kind.__name__} is not a JSON value")


def check_json_object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a dict, not {type(value).__name__}")
    check_json(value, field)
    return value


def check_str_set(value: Iterable[str] | None, field: str) -> tuple[str, ...] | None:
    """Normalise an optional collection of names to a sorted tuple."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValidationError(field, "must be a collection of strings, not a single string")
    try:
        items = list(value)
    except TypeError:
        raise ValidationError(
            field, f"must be a collection of strings, not {type(value).__name__}"
        ) from None
    return tuple(sorted({check_text(item, f"{field}[{i}]") for i, item in enumerate(items)}))
