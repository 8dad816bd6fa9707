"""The domain model: AgentState, Message, ContextItem.

``to_dict()``/``from_dict()`` read and write the legacy JSON document (the layout of
``memory_chunks.content``) unchanged, so old blobs load and the legacy backend stays
byte-compatible. Store-managed fields (``seq``, ``item_id``, ``conversation_id``,
``version``, ...) are never part of that document and never take part in ``==``, so
``loaded == saved`` and ``loaded.to_dict() == saved.to_dict()`` are round-trip checks.

Messages and context items are immutable values, validated when they are built; an
``AgentState`` is mutable and validated when it is saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from .errors import ValidationError
from .validation import (
    check_int,
    check_json,
    check_json_object,
    check_optional_text,
    check_score,
    check_str_list,
    check_text,
    check_timestamp,
)

__all__ = ["AgentState", "ContextItem", "Message", "ROLES"]

ROLES = frozenset({"user", "assistant", "tool", "system"})
"""The common roles. A message's role may be any other name of at most
``MAX_ROLE_LENGTH`` characters too (``developer``, ``function``, ``model``, ...)."""
MAX_ROLE_LENGTH = 32


def _now() -> datetime:
    return datetime.now(UTC)


# A legacy document without a timestamp reads as this instant, so that reading the same
# document twice gives equal states (copies can then be verified).
MISSING_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_timestamp(value: object, field: str) -> datetime:
    """Read a legacy ISO-8601 timestamp; a naive one is taken as UTC."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be an ISO-8601 string, not {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"is not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValidationError(field, f"is out of range in UTC: {value!r}") from None


def _check_keys(data: object, allowed: frozenset[str], field: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(field, f"must be a JSON object, not {type(data).__name__}")
    unknown = data.keys() - allowed
    if unknown:
        # Refuse rather than drop: copying a document must never lose a field silently.
        raise ValidationError(field, f"unknown keys {sorted(map(str, unknown))}")
    return data


# A default argument that tells "not given" from an explicit None (which is refused).
_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """One entry of the conversation history. ``seq`` is its 0-based position, given
    by the store; it is None on a message not yet saved.

    ``payload``: any JSON value kept whole and returned exactly (None: none), for an
    item of a framework that is not role + text (a tool call, a reasoning item, an
    event). Its strings may hold NUL. Put the text in ``content`` or in the payload,
    not both; ``role``, ``message_type`` and ``tool_name`` stay queryable either way.

    Every value is checked when the message is built (``ValidationError``), unless
    ``validated=True`` says they were checked already: a backend reading back what it
    stored, or a copy of a message with another ``seq``."""

    role: str
    content: str
    message_type: str = "text"
    tool_name: str | None = None
    timestamp: datetime = field(default_factory=_now)
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int | None = field(default=None, compare=False)
    payload: Any = None

    KEYS: ClassVar[frozenset[str]] = frozenset(
        {"role", "content", "message_type", "tool_name", "timestamp", "metadata", "payload"}
    )

    def __init__(
        self,
        role: str,
        content: str,
        message_type: str = "text",
        tool_name: str | None = None,
        timestamp: datetime = _DEFAULT,
        metadata: dict[str, Any] = _DEFAULT,
        seq: int | None = None,
        validated: bool = False,
        payload: Any = None,
    ) -> None:
        # Written by hand (the dataclass's generated __init__ of a frozen class goes
        # through object.__setattr__ per field), as a load builds one per stored row;
        # backends pass ``validated`` positionally there, as keywords cost a dict.
        if timestamp is _DEFAULT:
            timestamp = _now()
        if metadata is _DEFAULT:
            metadata = {}
        if not validated:
            if type(role) is not str or role not in ROLES:
                check_text(role, "role", allow_empty=False)
                if len(role) > MAX_ROLE_LENGTH:
                    raise ValidationError(
                        "role", f"is {len(role)} characters long; the limit is {MAX_ROLE_LENGTH}"
                    )
            check_text(content, "content")
            check_text(message_type, "message_type", allow_empty=False)
            check_optional_text(tool_name, "tool_name")
            timestamp = check_timestamp(timestamp, "timestamp")
            check_json_object(metadata, "metadata")
            if payload is not None:
                check_json(payload, "payload", nul_ok=True)
        s_role, s_content, s_type, s_tool, s_time, s_meta, s_seq, s_payload = _MESSAGE_SLOTS
        s_role(self, role)
        s_content(self, content)
        s_type(self, message_type)
        s_tool(self, tool_name)
        s_time(self, timestamp)
        s_meta(self, metadata)
        s_seq(self, seq)
        s_payload(self, payload)

    def with_seq(self, seq: int) -> Message:
        """This message at position ``seq``."""
        return Message(
            self.role,
            self.content,
            self.message_type,
            self.tool_name,
            self.timestamp,
            self.metadata,
            seq,
            True,  # validated
            self.payload,
        )

    def to_dict(self) -> dict[str, Any]:
        """The legacy document's form; ``payload`` only when there is one, so a
        message without stays byte-for-byte what the legacy layout wrote."""
        data = {
            "role": self.role,
            "content": self.content,
            "message_type": self.message_type,
            "tool_name": self.tool_name,
            "timestamp": self.timestamp.isoformat(),
            "metadata": self.metadata,
        }
        if self.payload is not None:
            data["payload"] = self.payload
        return data

    @classmethod
    def from_dict(cls, data: object, *, seq: int | None = None) -> Message:
        d = _check_keys(data, cls.KEYS, "message")
        msg = cls(
            role=d.get("role"),  # type: ignore[arg-type]  # checked in __post_init__
            content=d.get("content"),  # type: ignore[arg-type]
            message_type=d.get("message_type", "text"),
            tool_name=d.get("tool_name"),
            timestamp=_parse_timestamp(d["timestamp"], "timestamp")
            if "timestamp" in d
            else MISSING_TIMESTAMP,
            metadata=d.get("metadata", {}),
            seq=seq,
            payload=d.get("payload"),
        )
        return msg


# The slots' own setters, which the frozen class's __init__ assigns through.
_MESSAGE_SLOTS = tuple(
    Message.__dict__[name].__set__
    for name in (
        "role",
        "content",
        "message_type",
        "tool_name",
        "timestamp",
        "metadata",
        "seq",
        "payload",
    )
)


@dataclass(frozen=True, slots=True, init=False)
class ContextItem:
    """One memory-context item (long-term memory, RAG hit, focus note, ...).
    ``item_id`` is given by the store and never reused within a conversation.

    Values are checked when the item is built, unless ``validated=True`` (see
    ``Message``)."""

    content: str
    source: str = "ltm"
    relevance_score: float = 0.0
    context_type: str = "general"
    timestamp: datetime = field(default_factory=_now)
    metadata: dict[str, Any] = field(default_factory=dict)
    item_id: int | None = field(default=None, compare=False)

    KEYS: ClassVar[frozenset[str]] = frozenset(
        {"source", "content", "relevance_score", "context_type", "timestamp", "metadata"}
    )

    def __init__(
        self,
        content: str,
        source: str = "ltm",
        relevance_score: float = 0.0,
        context_type: str = "general",
        timestamp: datetime = _DEFAULT,
        metadata: dict[str, Any] = _DEFAULT,
        item_id: int | None = None,
        validated: bool = False,
    ) -> None:
        # Written by hand, like Message.__init__.
        if timestamp is _DEFAULT:
            timestamp = _now()
        if metadata is _DEFAULT:
            metadata = {}
        if not validated:
            check_text(content, "content")
            check_text(source, "source", allow_empty=False)
            relevance_score = check_score(relevance_score, "relevance_score")
            check_text(context_type, "context_type", allow_empty=False)
            timestamp = check_timestamp(timestamp, "timestamp")
            check_json_object(metadata, "metadata")
        s_content, s_source, s_score, s_type, s_time, s_meta, s_id = _ITEM_SLOTS
        s_content(self, content)
        s_source(self, source)
        s_score(self, relevance_score)
        s_type(self, context_type)
        s_time(self, timestamp)
        s_meta(self, metadata)
        s_id(self, item_id)

    def with_id(self, item_id: int) -> ContextItem:
        """This item under the id ``item_id``."""
        return ContextItem(
            self.content,
            self.source,
            self.relevance_score,
            self.context_type,
            self.timestamp,
            self.metadata,
            item_id,
            True,  # validated
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "content": self.content,
            "relevance_score": self.relevance_score,
            "context_type": self.context_type,
            "timestamp": self.timestamp.isoformat(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: object, *, item_id: int | None = None) -> ContextItem:
        d = _check_keys(data, cls.KEYS, "context item")
        item = cls(
            content=d.get("content"),  # type: ignore[arg-type]  # checked in __post_init__
            source=d.get("source", "ltm"),
            relevance_score=d.get("relevance_score", 0.0),
            context_type=d.get("context_type", "general"),
            timestamp=_parse_timestamp(d["timestamp"], "timestamp")
            if "timestamp" in d
            else MISSING_TIMESTAMP,
            metadata=d.get("metadata", {}),
            item_id=item_id,
        )
        return item


_ITEM_SLOTS = tuple(
    ContextItem.__dict__[name].__set__
    for name in (
        "content",
        "source",
        "relevance_score",
        "context_type",
        "timestamp",
        "metadata",
        "item_id",
    )
)


@dataclass(slots=True)
class AgentState:
    """The state of one agent conversation.

    Content fields are set by the user. The fields after them are filled by the store
    on load and save: which conversation and owner, the version, timestamps, and which
    part of the history this object holds (``history_start``: seq of its first message;
    ``history_total``: messages stored in all).
    """

    user_input: str | None = ""
    focus_areas: list[str] = field(default_factory=list)
    step_count: int = 0
    last_tool_result: Any = None
    conversation_history: list[Message] = field(default_factory=list)
    memory_context: list[ContextItem] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    conversation_id: str | None = field(default=None, compare=False)
    user_id: str | None = field(default=None, compare=False)
    version: int = field(default=0, compare=False)
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)
    history_start: int = field(default=0, compare=False)
    history_total: int = field(default=0, compare=False)
    shared: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    """State shared across conversations, by namespace: what ``LoadOptions.shared``
    asked for, read with the conversation. ``save_state`` never writes it; change it
    with ``StatePatch.set_shared`` or ``Store.update_shared``."""
    # What the state held when it last touched a store, kept by the Store
    # (core/store.py) so that its next save writes only what changed.
    _snapshot: object = field(default=None, compare=False, repr=False)

    DOCUMENT_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "user_input",
            "focus_areas",
            "step_count",
            "last_tool_result",
            "conversation_history",
            "memory_context",
            "metadata",
        }
    )

    def validate(self) -> None:
        """Check every content field; raise ValidationError naming the first bad one."""
        if self.user_input is not None:
            check_text(self.user_input, "user_input")
        check_str_list(self.focus_areas, "focus_areas")
        check_int(self.step_count, "step_count")
        check_json(self.last_tool_result, "last_tool_result")
        if not isinstance(self.conversation_history, list):
            raise ValidationError("conversation_history", "must be a list of Message")
        for i, msg in enumerate(self.conversation_history):
            if not isinstance(msg, Message):
                raise ValidationError(
                    f"conversation_history[{i}]", f"must be a Message, not {type(msg).__name__}"
                )
        if not isinstance(self.memory_context, list):
            raise ValidationError("memory_context", "must be a list of ContextItem")
        for i, item in enumerate(self.memory_context):
            if not isinstance(item, ContextItem):
                raise ValidationError(
                    f"memory_context[{i}]", f"must be a ContextItem, not {type(item).__name__}"
                )
        check_json_object(self.metadata, "metadata")

    def to_dict(self) -> dict[str, Any]:
        """The legacy JSON document: content fields only."""
        return {
            "user_input": self.user_input,
            "focus_areas": list(self.focus_areas),
            "step_count": self.step_count,
            "last_tool_result": self.last_tool_result,
            "conversation_history": [m.to_dict() for m in self.conversation_history],
            "memory_context": [c.to_dict() for c in self.memory_context],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: object) -> AgentState:
        """Read a legacy JSON document; raise ValidationError if it is not one."""
        d = _check_keys(data, cls.DOCUMENT_KEYS, "state")
        history = d.get("conversation_history", [])
        context = d.get("memory_context", [])
        if not isinstance(history, list):
            raise ValidationError("conversation_history", "must be a list")
        if not isinstance(context, list):
            raise ValidationError("memory_context", "must be a list")
        messages = []
        for i, m in enumerate(history):
            try:
                messages.append(Message.from_dict(m, seq=i))
            except ValidationError as exc:
                raise ValidationError(
                    f"conversation_history[{i}].{exc.field}", exc.reason
                ) from None
        items = []
        for i, c in enumerate(context):
            try:
                items.append(ContextItem.from_dict(c, item_id=i))
            except ValidationError as exc:
                raise ValidationError(f"memory_context[{i}].{exc.field}", exc.reason) from None
        state = cls(
            user_input=d.get("user_input", ""),
            focus_areas=d.get("focus_areas", []),
            step_count=d.get("step_count", 0),
            last_tool_result=d.get("last_tool_result"),
            conversation_history=messages,
            memory_context=items,
            metadata=d.get("metadata", {}),
        )
        state.validate()
        state.history_total = len(messages)
        return state
