"""OpenAI Agents SDK sessions kept in a statestore Store (``statestore[openai-agents]``).

    from agents import Agent, Runner
    from statestore.integrations.openai_agents import StatestoreSession

    session = StatestoreSession("chat-1", store, user_id="alice")
    result = await Runner.run(agent, "hello", session=session)

A session is one conversation of the store (its id is the session id). Each item the
SDK hands over becomes one message whose ``payload`` is the item itself, returned
exactly as added; its ``content`` stays empty (the text is not stored twice) and its
``role``, ``message_type`` and ``tool_name`` are set so the conversation can be queried
with ``LoadOptions`` like any other:

- ``role``: the item's own role (``user``, ``assistant``, ``system``, ``developer``);
  for items without one, ``tool`` for a tool's result (a type ending in ``_output``),
  ``user`` for an MCP approval response, ``assistant`` for what the model produces
  (tool calls, reasoning, compaction, MCP listings and approval requests), else
  ``event``;
- ``message_type``: the item's ``type`` (``message`` when it has none, as a plain
  ``{"role": ..., "content": ...}`` message has not);
- ``tool_name``: the called tool's name on calls, and on a function's (or custom
  tool's) output the name of the call it answers.

An item nested deeper than the store's limit is kept as its JSON text (a string
payload). A message stored without a payload (written by other code into the same
conversation) reads back as ``{"role": role, "content": content}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from statestore import (
    ConversationNotFound,
    LoadOptions,
    Message,
    StatePatch,
    Store,
    ValidationError,
)
from statestore.core.validation import check_id, check_optional_id

from ._deep import json_text_if_too_deep

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["StatestoreSession"]

T = TypeVar("T")

# The longest role a message may have.
_MAX_ROLE = 32
# Items without a role that the model produces (besides every ``*_call``).
_MODEL_ITEMS = frozenset(
    {"reasoning", "compaction", "program", "mcp_list_tools", "mcp_approval_request"}
)
# Tool results that carry only the call's id: the call's type, by the output's.
_NAMED_CALL_OF_OUTPUT = {
    "function_call_output": "function_call",
    "custom_tool_call_output": "custom_tool_call",
}


class StatestoreSession:
    """The OpenAI Agents SDK ``Session`` protocol over a statestore ``Store``.

    ``session_id`` is the conversation id; ``user_id``, when given, owns the
    conversation (it is created for that user, and another user's conversation of the
    same id is not visible). Both follow statestore's id rules (1 to 255 characters,
    no control characters, no white space at either end): another id raises
    ``statestore.ValidationError`` here. ``store`` is an open ``Store``, or a
    ``SyncStore`` (``statestore.open_store_sync()``), whose async ``Store`` is then
    used. The session does not own the store: close the store, not the session.

    ``session_settings`` (a ``SessionSettings`` or a dict of its fields) gives the
    default ``limit`` of ``get_items``, as for the SDK's ``SQLiteSession``.

    Every method is one call to the store, so one atomic step on every backend;
    ``add_items`` creates the conversation when it does not exist yet. A write whose
    caller is cancelled still runs to its end (its outcome is then known), and the
    cancellation is raised after it.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: Any,
        *,
        user_id: str | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.session_id = check_id(session_id, "session_id")
        self.user_id = check_optional_id(user_id, "user_id")
        self.store = _async_store(store)
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )

    def __repr__(self) -> str:
        return f"<StatestoreSession {self.session_id!r} user={self.user_id!r} on {self.store!r}>"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first: the last ``limit`` of them (the
        ``session_settings`` limit when None; all of them when both are None).
        A session with nothing stored has no items."""
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is not None and limit < 0:
            limit = None  # what a negative LIMIT means to SQLiteSession: no limit
        try:
            state = await self.store.load_state(
                self.session_id, _window(limit), user_id=self.user_id
            )
        except ConversationNotFound:
            return []
        return [_item_of(message) for message in state.conversation_history]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one transaction, creating the conversation if needed.
        An item that is not a dict raises ``ValidationError``, before anything is
        written."""
        if not items:
            return
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValidationError(
                    f"items[{i}]",
                    f"must be a dict, as the SDK's input items are, not {type(item).__name__}",
                )
        messages = await self._messages_of(items)
        patch = StatePatch(append_messages=messages)
        await _finish(
            self.store.update_state(self.session_id, patch, user_id=self.user_id, create=True)
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the most recent item and return it (None when there is none)."""
        try:
            popped = await _finish(
                self.store.pop_messages(self.session_id, 1, user_id=self.user_id)
            )
        except ConversationNotFound:
            return None
        return _item_of(popped[-1]) if popped else None

    async def clear_session(self) -> None:
        """Delete the session's conversation and everything in it."""
        await _finish(self.store.delete_state(self.session_id, user_id=self.user_id))

    async def _messages_of(self, items: list[TResponseInputItem]) -> list[Message]:
        """One message per item; the outputs whose call is not among ``items`` take
        their tool's name from the stored call."""
        names: dict[str, str] = {}
        missing: dict[str, set[str]] = {}
        for raw in items:
            item = cast(dict[str, Any], raw)
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                continue
            name = None if item.get("type") in (None, "message") else _text(item.get("name"))
            if name is not None:
                names[call_id] = name
            elif call_id not in names and item.get("type") in _NAMED_CALL_OF_OUTPUT:
                missing.setdefault(_NAMED_CALL_OF_OUTPUT[item["type"]], set()).add(call_id)
        for call_type, call_ids in missing.items():
            await self._find_call_names(call_type, call_ids - names.keys(), names)
        return [
            _message_of(cast(dict[str, Any], item), names, f"items[{i}]")
            for i, item in enumerate(items)
        ]

    async def _find_call_names(
        self, call_type: str, call_ids: Iterable[str], names: dict[str, str]
    ) -> None:
        wanted = set(call_ids)
        if not wanted:
            return
        try:
            state = await self.store.load_state(
                self.session_id,
                LoadOptions(message_types=frozenset({call_type}), context_limit=0),
                user_id=self.user_id,
            )
        except ConversationNotFound:
            return
        for message in state.conversation_history:
            payload = message.payload
            if isinstance(payload, dict) and payload.get("call_id") in wanted:
                name = message.tool_name or _text(payload.get("name"))
                if name is not None:
                    names[payload["call_id"]] = name


@functools.lru_cache(maxsize=64)
def _window(limit: int | None) -> LoadOptions:
    """What get_items loads: the last ``limit`` messages (all: None), no context items
    (built once per limit: a turn reads the same window each time)."""
    return LoadOptions(last_messages=limit, context_limit=0)


def _async_store(store: Any) -> Store:
    if isinstance(store, Store):
        return store
    inner = getattr(store, "store", None)
    if isinstance(inner, Store):  # a SyncStore
        return inner
    raise TypeError(f"store must be a statestore Store or SyncStore, not {type(store).__name__}")


def _text(value: object) -> str | None:
    """``value`` if it is non-empty text a message field can hold, else None."""
    if isinstance(value, str) and value and "\x00" not in value:
        return value
    return None


def _role_of(item: dict[str, Any], kind: str | None) -> str:
    role = _text(item.get("role"))
    if role is not None and len(role) <= _MAX_ROLE:
        return role
    if kind is None:
        return "event"
    if kind.endswith("_output"):
        return "tool"
    if kind == "mcp_approval_response":
        return "user"
    if kind.endswith("_call") or kind in _MODEL_ITEMS:
        return "assistant"
    return "event"


def _message_of(item: dict[str, Any], names: dict[str, str], field: str) -> Message:
    """The message keeping ``item`` as its payload: the item itself, or, nested
    deeper than the store keeps, its JSON text (the SDK takes any depth). A value
    the store refuses raises ValidationError naming the item (``field``)."""
    kind = _text(item.get("type"))
    tool_name = None if kind in (None, "message") else _text(item.get("name"))
    if tool_name is None and kind in _NAMED_CALL_OF_OUTPUT:
        call_id = item.get("call_id")
        tool_name = names.get(call_id) if isinstance(call_id, str) else None
    role, message_type = _role_of(item, kind), kind or "message"
    try:
        try:
            return Message(role, "", message_type, tool_name, payload=item)
        except ValidationError:
            text = json_text_if_too_deep(item)
            if text is None:
                raise
            return Message(role, "", message_type, tool_name, payload=text)
    except ValidationError as exc:
        raise ValidationError(f"{field}.{exc.field}", exc.reason) from None


def _item_of(message: Message) -> TResponseInputItem:
    payload = message.payload
    if payload is None:
        return cast("TResponseInputItem", {"role": message.role, "content": message.content})
    if isinstance(payload, str):  # an item too deep for the store, as its JSON text
        return cast("TResponseInputItem", json.loads(payload))
    return cast("TResponseInputItem", payload)


async def _finish(awaitable: Awaitable[T]) -> T:
    """Await a write to its end even when the caller is cancelled meanwhile, then
    raise the cancellation: a write cut short would leave its outcome unknown."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise cancelled
    return task.result()
