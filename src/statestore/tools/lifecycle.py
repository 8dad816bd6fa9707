"""Looking after stored data through the public store API: export and import (JSON
lines), prune by age. (Engine-level upkeep, table sizes and VACUUM, is the backend's:
``statestore.core.maintenance``.)

The export format, one conversation a line (UTF-8 JSON, no header)::

    {"conversation_id": "c1", "user_id": "u1" | null, "version": 3,
     "created_at": "2026-01-02T03:04:05.000006+00:00", "updated_at": "...",
     "state": {<the legacy document: AgentState.to_dict()>}}

``state`` holds every content field (messages and context items with their timestamps
and metadata); ``import`` restores it and the owner exactly. ``version``,
``created_at`` and ``updated_at`` are informative: the importing store sets its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson

from ..core.backend import ConversationInfo
from ..core.errors import ConversationNotFound, CorruptState, ValidationError
from ..core.model import AgentState
from ..core.store import Store
from .copy import CopyStats, ProblemSink, Run, Tick, iter_conversations, store_verified

__all__ = [
    "export_conversations",
    "import_conversations",
    "parse_age",
    "prune_conversations",
]

EXPORT_KEYS = frozenset(
    {"conversation_id", "user_id", "version", "created_at", "updated_at", "state"}
)


# -- export / import ----------------------------------------------------------------------


async def export_conversations(
    store: Store,
    out: IO[bytes],
    *,
    user_id: str | None = None,
    batch_size: int = 200,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
) -> CopyStats:
    """Write every conversation (of ``user_id``) to ``out``, one JSON line each; a
    corrupt conversation goes to ``on_problem`` and is left out. ``read`` counts the
    lines written."""
    run = Run(on_problem, tick)
    async for page in iter_conversations(store, user_id=user_id, batch_size=batch_size):
        for info in page:
            try:
                state = await store.load_state(info.conversation_id)
            except ConversationNotFound:
                continue
            except CorruptState as exc:
                run.problem(info.conversation_id, "corrupt", exc.reason)
                run.tick()
                continue
            out.write(orjson.dumps(export_record(state)) + b"\n")
            run.stats.read += 1
            run.tick()
    return run.stats


def export_record(state: AgentState) -> dict[str, Any]:
    """One line of the export format."""
    return {
        "conversation_id": state.conversation_id,
        "user_id": state.user_id,
        "version": state.version,
        "created_at": state.created_at.isoformat() if state.created_at else None,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
        "state": state.to_dict(),
    }


def parse_record(line: bytes) -> tuple[str, str | None, AgentState]:
    """(conversation_id, user_id, state) of one export line; ValidationError if the
    line is not one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("line", f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValidationError("line", "must be a JSON object")
    unknown = record.keys() - EXPORT_KEYS
    if unknown:
        raise ValidationError("line", f"unknown keys {sorted(unknown)}")
    conversation_id = record.get("conversation_id")
    user_id = record.get("user_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise ValidationError("conversation_id", "must be a non-empty string")
    if user_id is not None and not isinstance(user_id, str):
        raise ValidationError("user_id", "must be a string or null")
    if "state" not in record:
        raise ValidationError("state", "is missing")
    return conversation_id, user_id, AgentState.from_dict(record["state"])


async def import_conversations(
    store: Store,
    lines: Iterable[bytes],
    *,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
) -> CopyStats:
    """Write each exported conversation to ``store`` unless it already holds the same
    owner and content, and verify it. A bad line is reported (``invalid``, named by its
    conversation id or line number) and skipped. Blank lines are ignored."""
    run = Run(on_problem, tick)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversation_id, user_id, state = parse_record(line)
        except ValidationError as exc:
            # A problem of the whole line names no field; one without an id is
            # named "line N" already, so the reason does not say it again.
            detail = exc.reason if exc.field == "line" else str(exc)
            name = _id_of(line)
            if name is None:
                run.problem(f"line {number}", "invalid", detail)
            else:
                run.problem(name, "invalid", f"line {number}: {detail}")
            run.tick()
            continue
        state.user_id = user_id
        run.stats.read += 1
        await store_verified(run, store, conversation_id, state)
        run.tick()
    return run.stats


def _id_of(line: bytes) -> str | None:
    """The conversation id of a bad line, if it has one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    cid = record.get("conversation_id") if isinstance(record, dict) else None
    return cid if isinstance(cid, str) and cid else None


# -- prune --------------------------------------------------------------------------------

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → a timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise ValidationError("older-than", f"must be a number and a unit s/m/h/d/w, got {text!r}")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValidationError(
            "older-than", f"is too long: {text!r} (at most {timedelta.max.days}d)"
        ) from None


async def prune_conversations(
    store: Store,
    older_than: timedelta,
    *,
    user_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    now: datetime | None = None,
    on_removed: Callable[[ConversationInfo], None] | None = None,
) -> int:
    """Delete the conversations (of ``user_id``) last updated before ``now -
    older_than``, a page at a time; ``dry_run`` only lists them. Returns how many
    were (or would be) removed; each one goes to ``on_removed``."""
    try:
        cutoff = (now or datetime.now(UTC)) - older_than
    except OverflowError:  # before year 1: nothing was updated that long ago
        return 0
    removed = 0
    async for page in iter_conversations(store, user_id=user_id, batch_size=batch_size):
        for info in page:
            if info.updated_at >= cutoff:
                continue
            if dry_run or await store.delete_state(info.conversation_id, user_id=user_id):
                removed += 1
                if on_removed is not None:
                    on_removed(info)
    return removed
