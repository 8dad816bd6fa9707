"""The one JSON codec of every JSON column (orjson).

Floats of 1e16 and more are written in plain digits with a ``.0`` (``4.5e+16`` becomes
``45000000000000000.0``): PostgreSQL's JSONB keeps a number's decimal scale but not its
exponent form, so ``4.5e+16`` would come back as the integer ``45000000000000000``
(another type, and for most such floats another value).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from .errors import ValidationError

__all__ = ["dumps", "loads"]

# A JSON string (skipped whole) or a number with a positive exponent.
_STRING_OR_EXP = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?e\+\d+')


def _plain(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    return format(Decimal(token), "f") + ".0"


def dumps(value: Any) -> str:
    """Encode a value that passed ``validation.check_json``.

    A value changed after it was validated (a message's metadata dict is mutable) can
    still fail here, half-way through a write: it is a ValidationError all the same,
    and the write's transaction rolls back."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise ValidationError("value", f"cannot be encoded as JSON: {exc}") from None
    if "e+" in text:  # rare: only then look for exponents outside strings
        text = _STRING_OR_EXP.sub(_plain, text)
    return text


loads = orjson.loads
