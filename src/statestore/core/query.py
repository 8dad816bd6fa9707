"""What to load (LoadOptions) and what to change (StatePatch).

Both validate their values when built, so a bad option fails before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .model import ContextItem, Message
from .validation import (
    check_id,
    check_int,
    check_json,
    check_json_object,
    check_optional_int,
    check_optional_text,
    check_score,
    check_str_list,
    check_str_set,
    check_text,
    check_timestamp,
)

__all__ = ["LoadOptions", "StatePatch", "UNSET"]


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Which part of a conversation to load. The default loads everything, as saved.

    Messages: ``message_types``, ``tool_name`` and ``messages_since`` (timestamp at or
    after it) filter them, then ``last_messages`` keeps the last N of what is left
    (0: none). Messages come back in seq order.

    Context items: ``context_sources``, ``context_types``, ``min_relevance`` (a score
    >= the threshold) and ``focus_only`` (context_type among the state's focus_areas)
    filter them, then ``context_limit`` keeps the k most relevant (ties: the earlier
    item). Items come back in the order they were saved.

    ``shared``: namespaces of shared state to read with the conversation, in the same
    snapshot (``AgentState.shared``).
    """

    last_messages: int | None = None
    message_types: frozenset[str] | None = None
    tool_name: str | None = None
    min_relevance: float | None = None
    context_limit: int | None = None
    context_sources: frozenset[str] | None = None
    context_types: frozenset[str] | None = None
    focus_only: bool = False
    messages_since: datetime | None = None
    shared: frozenset[str] | None = None

    def __post_init__(self) -> None:
        check_optional_int(self.last_messages, "last_messages")
        if self.messages_since is not None:
            since = check_timestamp(self.messages_since, "messages_since")
            object.__setattr__(self, "messages_since", since)
        if self.shared is not None:
            object.__setattr__(self, "shared", check_namespaces(self.shared, "shared"))
        check_optional_int(self.context_limit, "context_limit")
        check_optional_text(self.tool_name, "tool_name")
        if self.min_relevance is not None:
            object.__setattr__(
                self, "min_relevance", check_score(self.min_relevance, "min_relevance")
            )
        for name in ("message_types", "context_sources", "context_types"):
            value = check_str_set(getattr(self, name), name)
            object.__setattr__(self, name, None if value is None else frozenset(value))
        if type(self.focus_only) is not bool:
            raise ValidationError("focus_only", "must be a bool")

    @classmethod
    def smart(cls, window: int = 20, context_limit: int = 10) -> LoadOptions:
        """What an agent reads each turn: the last ``window`` messages and the
        ``context_limit`` most relevant context items scoring at least 0.7."""
        return cls(last_messages=window, min_relevance=0.7, context_limit=context_limit)

    @property
    def filters_messages(self) -> bool:
        """True when the loaded messages may skip some stored ones in the middle."""
        return (
            self.message_types is not None
            or self.tool_name is not None
            or self.messages_since is not None
        )

    def select_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Apply the message options in Python (the legacy backend's way)."""
        since = self.messages_since
        chosen = [
            m
            for m in messages
            if (self.message_types is None or m.message_type in self.message_types)
            and (self.tool_name is None or m.tool_name == self.tool_name)
            and (since is None or m.timestamp >= since)
        ]
        if self.last_messages is not None:
            chosen = chosen[-self.last_messages :] if self.last_messages else []
        return chosen

    def select_context(
        self, items: Sequence[ContextItem], focus_areas: Sequence[str]
    ) -> list[ContextItem]:
        """Apply the context options in Python; ``items`` in saved order."""
        focus = set(focus_areas)
        chosen = [
            c
            for c in items
            if (self.context_sources is None or c.source in self.context_sources)
            and (self.context_types is None or c.context_type in self.context_types)
            and (self.min_relevance is None or c.relevance_score >= self.min_relevance)
            and (not self.focus_only or c.context_type in focus)
        ]
        if self.context_limit is not None and len(chosen) > self.context_limit:
            ranked = sorted(range(len(chosen)), key=lambda i: (-chosen[i].relevance_score, i))
            keep = sorted(ranked[: self.context_limit])
            chosen = [chosen[i] for i in keep]
        return chosen


def check_namespaces(value: Iterable[str], field: str) -> frozenset[str]:
    """A collection of shared-state namespaces (each follows the id rules)."""
    if isinstance(value, str):
        raise ValidationError(field, "must be a collection of namespaces, not a single string")
    try:
        items = list(value)
    except TypeError:
        raise ValidationError(
            field, f"must be a collection of namespaces, not {type(value).__name__}"
        ) from None
    return frozenset(check_id(item, f"{field}[{i}]") for i, item in enumerate(items))


def check_shared_values(value: object, field: str) -> dict[str, dict[str, Any]]:
    """``{namespace: {key: JSON value}}`` (values may hold NUL: see validation)."""
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be a dict of dicts, not {type(value).__name__}")
    checked: dict[str, dict[str, Any]] = {}
    for namespace, values in value.items():
        check_id(namespace, f"{field} namespace")
        if not isinstance(values, Mapping):
            raise ValidationError(
                f"{field}[{namespace!r}]", f"must be a dict, not {type(values).__name__}"
            )
        for key, item in values.items():
            check_text(key, f"{field}[{namespace!r}] key")
            check_json(item, f"{field}[{namespace!r}][{key!r}]", nul_ok=True)
        checked[namespace] = dict(values)
    return checked


def check_shared_keys(value: object, field: str) -> dict[str, tuple[str, ...]]:
    """``{namespace: [key, ...]}``."""
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be a dict of key lists, not {type(value).__name__}")
    checked: dict[str, tuple[str, ...]] = {}
    for namespace, keys in value.items():
        check_id(namespace, f"{field} namespace")
        checked[namespace] = check_str_set(keys, f"{field}[{namespace!r}]") or ()
    return checked


class _Unset:
    """Marker for a StatePatch field that was not given (None is a value)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def _is_empty_tuple(value: object) -> bool:
    return type(value) is tuple and not value


def _tuple_of(values: Iterable[Any], kind: type, name: str) -> tuple[Any, ...]:
    """``values`` (the field ``name``) as a tuple, each checked to be a ``kind``."""
    if isinstance(values, kind | str | bytes | Mapping) or not isinstance(values, Iterable):
        raise ValidationError(
            name, f"must be a collection of {kind.__name__}s, not {type(values).__name__}"
        )
    items = tuple(values)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise ValidationError(
                f"{name}[{i}]", f"must be a {kind.__name__}, not {type(item).__name__}"
            )
    return items


@dataclass(frozen=True, slots=True)
class StatePatch:
    """A partial update, applied in one transaction.

    Scalar fields are left alone unless given (``None`` is a value: it is written).
    ``append_messages`` extends the history, ``add_context`` adds items,
    ``remove_context`` removes items by ``item_id``, ``set_metadata`` sets keys and
    ``delete_metadata`` removes keys. ``set_shared`` (``{namespace: {key: value}}``)
    and ``delete_shared`` (``{namespace: [key, ...]}``) change state shared across
    conversations (see ``Store.load_shared``), in the same transaction.
    """

    user_input: Any = UNSET
    focus_areas: Any = UNSET
    step_count: Any = UNSET
    last_tool_result: Any = UNSET
    append_messages: Sequence[Message] = ()
    add_context: Sequence[ContextItem] = ()
    remove_context: Iterable[int] = ()
    set_metadata: dict[str, Any] = field(default_factory=dict)
    delete_metadata: Iterable[str] = ()
    set_shared: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    delete_shared: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Check every value, as when the patch was built. A patch keeps the lists and
        dicts it was given, which their owner may still change: ``update_state`` checks
        again before it writes."""
        if self.user_input is not UNSET and self.user_input is not None:
            check_text(self.user_input, "user_input")
        if self.focus_areas is not UNSET:
            object.__setattr__(self, "focus_areas", check_str_list(self.focus_areas, "focus_areas"))
        if self.step_count is not UNSET:
            check_int(self.step_count, "step_count")
        if self.last_tool_result is not UNSET:
            check_json(self.last_tool_result, "last_tool_result")
        # Most patches leave most fields at their defaults (an append, a scalar): those
        # are skipped, as a patch is built per turn.
        messages = _tuple_of(self.append_messages, Message, "append_messages")
        object.__setattr__(self, "append_messages", messages)
        if not _is_empty_tuple(self.add_context):
            items = _tuple_of(self.add_context, ContextItem, "add_context")
            object.__setattr__(self, "add_context", items)
        if not _is_empty_tuple(self.remove_context):
            if isinstance(self.remove_context, str | bytes) or not isinstance(
                self.remove_context, Iterable
            ):
                raise ValidationError(
                    "remove_context",
                    f"must be a collection of item ids, not {type(self.remove_context).__name__}",
                )
            remove = tuple(
                check_int(i, f"remove_context[{n}]") for n, i in enumerate(self.remove_context)
            )
            object.__setattr__(self, "remove_context", remove)
        if type(self.set_metadata) is not dict or self.set_metadata:
            check_json_object(self.set_metadata, "set_metadata")
        if not _is_empty_tuple(self.delete_metadata):
            delete = check_str_set(self.delete_metadata, "delete_metadata") or ()
            overlap = set(delete) & self.set_metadata.keys()
            if overlap:
                raise ValidationError(
                    "delete_metadata", f"keys also in set_metadata: {sorted(overlap)}"
                )
            object.__setattr__(self, "delete_metadata", delete)
        if type(self.set_shared) is not dict or self.set_shared:
            object.__setattr__(
                self, "set_shared", check_shared_values(self.set_shared, "set_shared")
            )
        if type(self.delete_shared) is not dict or self.delete_shared:
            delete_shared = check_shared_keys(self.delete_shared, "delete_shared")
            for namespace, keys in delete_shared.items():
                overlap = set(keys) & self.set_shared.get(namespace, {}).keys()
                if overlap:
                    raise ValidationError(
                        "delete_shared",
                        f"keys also in set_shared[{namespace!r}]: {sorted(overlap)}",
                    )
            object.__setattr__(self, "delete_shared", delete_shared)

    def scalars(self) -> dict[str, Any]:
        """The scalar fields that were given, by name."""
        return {
            name: value
            for name in ("user_input", "focus_areas", "step_count", "last_tool_result")
            if (value := getattr(self, name)) is not UNSET
        }
