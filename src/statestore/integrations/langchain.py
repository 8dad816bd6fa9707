"""LangChain chat message history kept in a statestore Store (``statestore[langchain]``).

    from statestore.integrations.langchain import StatestoreChatMessageHistory

    history = StatestoreChatMessageHistory("session-1", store, user_id="u1")
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    assert await history.aget_messages() == [HumanMessage("hi"), AIMessage("hello")]

One conversation per ``session_id``. Each LangChain message is one statestore
``Message`` whose ``payload`` is the message serialized whole (LangChain's own
``message_to_dict``), so it comes back equal and of the same class: tool calls, usage
metadata, artifacts, ids, names and the ``*Chunk`` classes included. ``content`` stays
empty (the text lives in the payload, never stored twice); ``role``, ``message_type``
and ``tool_name`` are set so the conversation can be queried with ``LoadOptions``:

=================  ===================  =========================================
LangChain class    role                 message_type / tool_name
=================  ===================  =========================================
HumanMessage       ``user``             ``human``
AIMessage          ``assistant``        ``ai``; the tool it calls, when all its
                                        tool calls call one tool
ToolMessage        ``tool``             ``tool``; its ``name``
SystemMessage      ``system``           ``system``
FunctionMessage    ``function``         ``function``; its ``name``
ChatMessage        its ``role`` (else   ``chat``
                   ``chat`` when the
                   role is not a valid
                   statestore role)
RemoveMessage      ``remove``           ``remove``
=================  ===================  =========================================

The ``*Chunk`` classes map like their message class, with LangChain's chunk type
(``AIMessageChunk``, ...) as ``message_type``. Whatever a message holds must be JSON
(statestore's rules: finite floats, 64-bit integers, no lone surrogates; NUL characters
are fine), else adding it raises ``statestore.ValidationError`` and nothing is written.
A message of a class of your own (a subclass) is refused as well, as it could not come
back as itself. A message nested deeper than the store's limit is kept as its JSON
text (a string payload).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_to_dict,
    messages_from_dict,
)

from statestore import (
    AgentState,
    ConversationNotFound,
    CorruptState,
    Message,
    StatePatch,
    Store,
    SyncStore,
    ValidationError,
)
from statestore.core.validation import check_id, check_optional_id

from ._deep import json_text_if_too_deep

__all__ = ["StatestoreChatMessageHistory"]

T = TypeVar("T")


# The role each LangChain class is stored under (ChatMessage: its own role).
_ROLES: dict[type[BaseMessage], str] = {
    HumanMessage: "user",
    HumanMessageChunk: "user",
    AIMessage: "assistant",
    AIMessageChunk: "assistant",
    ToolMessage: "tool",
    ToolMessageChunk: "tool",
    SystemMessage: "system",
    SystemMessageChunk: "system",
    FunctionMessage: "function",
    FunctionMessageChunk: "function",
    ChatMessage: "chat",
    ChatMessageChunk: "chat",
    RemoveMessage: "remove",
}

# What a message stored without a payload (written by other code) reads back as.
_PLAIN: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}


class StatestoreChatMessageHistory(BaseChatMessageHistory):
    """LangChain's ``BaseChatMessageHistory`` over a statestore store: the messages of
    conversation ``session_id``, owned by ``user_id`` when given. Both follow
    statestore's id rules: another id raises ``statestore.ValidationError`` here.

    ``store`` is an open ``statestore.Store`` (``open_store()``) or ``SyncStore``
    (``open_store_sync()``); either serves both the async methods (``aget_messages``,
    ``aadd_messages``, ``aclear``) and the sync ones (``messages``, ``add_messages``,
    ``clear``), from any thread and event loop. ``aadd_messages`` is one atomic write
    that creates the conversation if it does not exist yet; reading a missing
    conversation gives ``[]``; ``aclear`` deletes the conversation.
    """

    def __init__(
        self, session_id: str, store: Store | SyncStore, *, user_id: str | None = None
    ) -> None:
        super().__init__()
        if isinstance(store, Store):
            self._sync: SyncStore | None = None
            self._store: Store = store
        elif isinstance(store, SyncStore):
            self._sync = store
            self._store = store.store
        else:
            raise TypeError(
                f"store must be a statestore Store or SyncStore, not {type(store).__name__}"
            )
        self.session_id = check_id(session_id, "session_id")
        self.user_id = check_optional_id(user_id, "user_id")
        self.store = store

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, store={self.store!r}, "
            f"user_id={self.user_id!r})"
        )

    # -- async: the native implementation -------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The conversation's messages, oldest first ([] when it does not exist)."""
        try:
            state = await self._store.load_state(self.session_id, user_id=self.user_id)
        except ConversationNotFound:
            return []
        return self._messages_of(state)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one transaction, creating the conversation if needed."""
        patch = _patch(messages)
        if patch is not None:
            await self._store.update_state(
                self.session_id, patch, user_id=self.user_id, create=True
            )

    async def aclear(self) -> None:
        """Delete the conversation (a missing one is left as it is)."""
        await self._store.delete_state(self.session_id, user_id=self.user_id)

    # -- sync: through the SyncStore, or the async store run to completion ----------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The conversation's messages, oldest first ([] when it does not exist).
        Read only: LangChain's ``RunnableWithMessageHistory`` only reads it."""
        if self._sync is None:
            return _run(self.aget_messages())
        try:
            state = self._sync.load_state(self.session_id, user_id=self.user_id)
        except ConversationNotFound:
            return []
        return self._messages_of(state)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one transaction, creating the conversation if needed."""
        if self._sync is None:
            _run(self.aadd_messages(messages))
            return
        patch = _patch(messages)
        if patch is not None:
            self._sync.update_state(self.session_id, patch, user_id=self.user_id, create=True)

    def clear(self) -> None:
        """Delete the conversation (a missing one is left as it is)."""
        if self._sync is None:
            _run(self.aclear())
        else:
            self._sync.delete_state(self.session_id, user_id=self.user_id)

    # -- conversion ------------------------------------------------------------------

    def _messages_of(self, state: AgentState) -> list[BaseMessage]:
        return [self._message_of(stored) for stored in state.conversation_history]

    def _message_of(self, stored: Message) -> BaseMessage:
        payload = stored.payload
        if isinstance(payload, str):  # a message too deep for the store, as its JSON text
            try:
                payload = json.loads(payload)
            except ValueError:
                raise CorruptState(
                    self.session_id, f"message {stored.seq} does not hold a LangChain message"
                ) from None
        if payload is None:
            plain = _PLAIN.get(stored.role)
            if plain is not None:
                return plain(content=stored.content)
            return ChatMessage(content=stored.content, role=stored.role)
        if not (isinstance(payload, dict) and "type" in payload and "data" in payload):
            raise CorruptState(
                self.session_id, f"message {stored.seq} does not hold a LangChain message"
            )
        try:
            return messages_from_dict([payload])[0]
        except (ValueError, TypeError) as exc:
            raise CorruptState(
                self.session_id, f"message {stored.seq} is not a LangChain message: {exc}"
            ) from None


def _patch(messages: Sequence[BaseMessage]) -> StatePatch | None:
    """The patch appending ``messages`` (None for none); refuses what cannot come back."""
    stored = [_stored(message, f"messages[{i}]") for i, message in enumerate(messages)]
    return StatePatch(append_messages=stored) if stored else None


def _stored(message: BaseMessage, field: str) -> Message:
    """``message`` as a statestore Message carrying it whole as its payload."""
    role = _ROLES.get(type(message))
    if role is None:
        raise ValidationError(
            field,
            f"{type(message).__name__} is not one of LangChain's message classes, so it "
            "could not be read back as itself",
        )
    if isinstance(message, ChatMessage | ChatMessageChunk) and _accepted(role=message.role):
        role = message.role
    tool_name = _tool_name(message)
    if tool_name is not None and not _accepted(tool_name=tool_name):
        tool_name = None  # e.g. a NUL in it: the payload keeps it, the column cannot
    payload = message_to_dict(message)
    fields: dict[str, Any] = {
        "role": role,
        "content": "",
        "message_type": message.type,
        "tool_name": tool_name,
    }
    try:
        try:
            return Message(**fields, payload=payload)
        except ValidationError:
            # Nested deeper than the store keeps (LangChain takes any depth): its
            # JSON text instead.
            text = json_text_if_too_deep(payload)
            if text is None:
                raise
            return Message(**fields, payload=text)
    except ValidationError as exc:
        raise ValidationError(f"{field}.{exc.field}", exc.reason) from None


def _accepted(**fields: Any) -> bool:
    """Whether a statestore Message accepts these values (role, tool_name)."""
    try:
        Message(**{"role": "user", "content": "", **fields})
    except ValidationError:
        return False
    return True


def _tool_name(message: BaseMessage) -> str | None:
    """The tool a message is about, when it is about one tool."""
    if isinstance(message, ToolMessage | FunctionMessage):
        return message.name
    if isinstance(message, AIMessage) and message.tool_calls:
        names = {call["name"] for call in message.tool_calls}
        return names.pop() if len(names) == 1 else None
    return None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code: on a new event loop of its own, in a
    thread of its own when this thread already runs one (sync code called from async
    code blocks that loop until done, as any sync I/O would)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="statestore-langchain") as pool:
        return pool.submit(asyncio.run, coro).result()
