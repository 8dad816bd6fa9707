"""The one JSON codec of every JSON column (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> str:
    """Encode a value that passed ``validation.check_json``."""
    return orjson.dumps(value).decode()


loads = orjson.loads
