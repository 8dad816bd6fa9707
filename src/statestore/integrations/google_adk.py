"""Google ADK sessions kept in a statestore Store (the ``statestore[google-adk]`` extra).

``StatestoreSessionService(store)`` is an ADK ``BaseSessionService``: hand it to a
``google.adk.runners.Runner`` as ``session_service=``. It keeps ADK's semantics:
``app:`` state is shared by every session of an app, ``user:`` state by every session
of a user of that app, ``temp:`` state is never stored, the rest of the state belongs
to its session, and appending to a session object that storage has moved past raises
ADK's ``StaleSessionError``.

How a session is laid out in the store (public Store API only):

- one conversation per session, id ``adk/{app}/{user}/{session}``; each part has
  ``%``, ``/``, control characters and a leading or trailing white-space character
  written as ``%XX`` (UTF-8), so ids are unambiguous and readable. The conversation
  is owned by the (escaped) user id. The whole id must fit the store's 255
  characters, and so must the ``app:`` and ``user:`` namespaces below; else a call
  raises ``ValueError`` before it reads or writes anything.
- each event is one message: the event whole as ``payload``
  (``event.model_dump(mode="json", exclude_none=True)``, read back with
  ``Event.model_validate``), ``content=""``, ``role`` ``"user"`` for the user's events
  and ``"agent"`` for every other author, ``message_type="adk_event"``,
  ``tool_name`` the first function call's (else response's) name, and the event's
  timestamp as the message timestamp, so ``GetSessionConfig.after_timestamp`` and
  ``num_recent_events`` are answered by the database.
- the session's own state is the conversation's metadata, key for key, and the
  metadata key ``temp:last_update_time`` holds the session's ``last_update_time``
  (no state key starts with ``temp:``: ADK never stores those).
- ``app:`` state lives in the shared namespace ``adk:app/{app}``, ``user:`` state in
  ``adk:user/{app}/{user}``, written in the same transaction as the event.
- what ADK accepts and the store refuses as it is (NUL characters in metadata,
  integers beyond 64 bits, NaN and infinities, nesting deeper than the store's 64
  levels) is stored escaped, exactly and unambiguously: such a state value as
  ``{"$statestore.json": "<its JSON text>"}``, such a key as
  ``temp:json:<its JSON text>``, such an event as its JSON text (a string payload); a
  value or key that happens to look like an escape is escaped too. One exception:
  NaN and infinities inside an event come back as None, as from ADK's database
  service, since ADK's JSON form of the event (``mode="json"``) already holds null
  for them; in state they round-trip.

Each ``append_event`` reads the conversation's version and creation time, which must
be those the session object was read at (a session deleted and created again starts
again at version 1: its creation time tells it apart), then is one
``Store.update_state`` call: the event, the session state delta and the app and user
deltas in one transaction, with ``expected_version`` set to that version, so a writer
that got in first turns the later one into ``StaleSessionError``. Appends to one
session through one service run one at a time, so those racing on one session object
(ADK makes some from background tasks) all land, in order.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import unquote

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic_core import to_jsonable_python

from statestore import (
    ConversationInfo,
    ConversationNotFound,
    LoadOptions,
    Message,
    StatePatch,
    Store,
    SyncStore,
    ValidationError,
    VersionConflict,
)
from statestore.core.validation import MAX_ID_LENGTH, MAX_JSON_DEPTH

__all__ = ["StatestoreSessionService"]

MESSAGE_TYPE = "adk_event"
"""The ``message_type`` of the messages that hold ADK events."""

_UPDATE_TIME_KEY = "temp:last_update_time"
_ESCAPED_KEY_PREFIX = "temp:json:"
_ESCAPED_VALUE_KEY = "$statestore.json"
_MARKER_PREFIX = "statestore:"
_STALE_MESSAGE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)
_LIST_PAGE = 500

_LockKey = tuple[asyncio.AbstractEventLoop, str]


class StatestoreSessionService(BaseSessionService):
    """ADK's session service over a statestore ``Store``.

    ``store`` is an open Store (``statestore.open_store(...)``), or a ``SyncStore``
    (``statestore.open_store_sync()``), whose async Store is then used; the service
    does not open or close it. Every method is one or two Store calls; see the module
    docstring for the layout.
    """

    def __init__(self, store: Store | SyncStore) -> None:
        if isinstance(store, SyncStore):  # the async Store it runs, as the other adapters
            store = store.store
        if not isinstance(store, Store):  # checked now, not half-way through a call
            raise TypeError(
                f"store must be a statestore Store or SyncStore, not {type(store).__name__}"
            )
        self.store = store
        # One append at a time per session (and event loop: an asyncio.Lock serves
        # one); a lock goes once no append holds or awaits it.
        self._append_locks: weakref.WeakValueDictionary[_LockKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- BaseSessionService ---------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session (``AlreadyExistsError`` if the id is taken): its own
        state, ``app:`` and ``user:`` state in one transaction. A missing or blank
        ``session_id`` gets a generated one; a padded one is stripped, as ADK's own
        services do."""
        session_id = session_id.strip() if session_id and session_id.strip() else None
        session_id = session_id or str(uuid.uuid4())
        place = _place(app_name, user_id, session_id)
        app_delta, user_delta, session_state = _split(state or {})
        now = time.time()
        metadata = _encode_state(session_state)
        metadata[_UPDATE_TIME_KEY] = now
        patch = StatePatch(
            set_metadata=metadata,
            set_shared=_shared_patch(place, app_delta, user_delta),
        )
        try:
            saved = await self.store.update_state(
                place.conversation_id,
                patch,
                user_id=place.owner,
                expected_version=0,
                create=True,
            )
        except VersionConflict:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        # Read back for the creation time the session's marker needs, with the
        # shared state in the same snapshot.
        try:
            stored = await self.store.load_state(
                place.conversation_id,
                LoadOptions(
                    last_messages=0,
                    context_limit=0,
                    shared=frozenset({place.app_namespace, place.user_namespace}),
                ),
                user_id=place.owner,
            )
        except ConversationNotFound:
            raise SessionNotFoundError(
                f"Session {session_id} was deleted right after it was created."
            ) from None
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=_merge(
                stored.shared[place.app_namespace],
                stored.shared[place.user_namespace],
                session_state,
            ),
            last_update_time=now,
        )
        _set_marker(session, saved.version, stored.created_at)
        return session

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its events (``config`` selects the last N and/or those
        at or after a timestamp, in the database) and its merged state, read in one
        snapshot; None if there is no such session."""
        session_id = session_id.strip() if session_id else session_id
        place = _place(app_name, user_id, session_id)
        since = None
        if config is not None and config.after_timestamp:
            since = datetime.fromtimestamp(config.after_timestamp, UTC)
        options = LoadOptions(
            last_messages=config.num_recent_events if config is not None else None,
            messages_since=since,
            shared=frozenset({place.app_namespace, place.user_namespace}),
        )
        try:
            stored = await self.store.load_state(
                place.conversation_id, options, user_id=place.owner
            )
        except ConversationNotFound:
            return None
        session_state, update_time = _decode_metadata(stored.metadata)
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=_merge(
                stored.shared[place.app_namespace],
                stored.shared[place.user_namespace],
                session_state,
            ),
            events=[_event(message) for message in stored.conversation_history],
            last_update_time=_or_created(update_time, stored.created_at),
        )
        _set_marker(session, stored.version, stored.created_at)
        return session

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """The sessions of an app (of one user, or of every user when ``user_id`` is
        None), without events, oldest update first, each with its merged state. One
        listing query per page of conversations and one read of the shared state."""
        app_prefix = f"adk/{_escape(app_name)}/"
        prefix = app_prefix if user_id is None else f"{app_prefix}{_escape(user_id)}/"
        infos: list[tuple[str, str, ConversationInfo]] = []
        after: str | None = None
        while True:
            page = await self.store.list_conversations(
                prefix=prefix, with_metadata=True, limit=_LIST_PAGE, after=after
            )
            for info in page:
                parts = info.conversation_id.removeprefix(app_prefix).split("/")
                if len(parts) == 2:
                    infos.append((unquote(parts[0]), unquote(parts[1]), info))
            if len(page) < _LIST_PAGE:
                break
            after = page[-1].conversation_id
        app_ns = _app_namespace(app_name)
        user_namespaces = {owner: _user_namespace(app_name, owner) for owner, _, _ in infos}
        shared = await self.store.load_shared([app_ns, *user_namespaces.values()])
        sessions = []
        for owner, session_id, info in infos:
            session_state, update_time = _decode_metadata(info.metadata or {})
            session = Session(
                id=session_id,
                app_name=app_name,
                user_id=owner,
                state=_merge(shared[app_ns], shared[user_namespaces[owner]], session_state),
                last_update_time=_or_created(update_time, info.created_at),
            )
            _set_marker(session, info.version, info.created_at)
            sessions.append(session)
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events (nothing happens if there is none);
        ``app:`` and ``user:`` state stay."""
        session_id = session_id.strip() if session_id else session_id
        await self.store.delete_state(
            _conversation_id(app_name, user_id, session_id), user_id=_owner(user_id)
        )

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state of this app, keys without the prefix."""
        namespace = _user_namespace(app_name, user_id)
        return _decode_entries((await self.store.load_shared([namespace]))[namespace])

    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and its state delta in one transaction and apply them to
        ``session``. ``temp:`` state reaches ``session.state`` but is not stored;
        partial events are not stored, nor an event equal to one ``session``
        already holds. Raises ``StaleSessionError`` when storage
        has changed since ``session`` was read or last written through this
        service, ``SessionNotFoundError`` when the session does not exist.
        Appends to one session through this service run one at a time, so
        concurrent appends through one session object all land, in order."""
        if event.partial:
            return event
        place = _place(session.app_name, session.user_id, session.id)
        async with self._append_lock(place.conversation_id):
            return await self._append(session, event, place)

    async def _append(self, session: Session, event: Event, place: _Place) -> Event:
        # An equal event delivered again (a retried call) is stored once, as ADK's
        # in-memory service does; distinct events that share an id are both kept.
        if any(seen == event for seen in session.events if seen.id == event.id):
            return event
        expected, created_at = await self._revision(place, session)
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        delta = event.actions.state_delta if event.actions and event.actions.state_delta else {}
        app_delta, user_delta, session_delta = _split(delta)
        metadata = _encode_state(session_delta)
        metadata[_UPDATE_TIME_KEY] = event.timestamp
        patch = StatePatch(
            append_messages=[_message(event)],
            set_metadata=metadata,
            set_shared=_shared_patch(place, app_delta, user_delta),
        )
        try:
            saved = await self.store.update_state(
                place.conversation_id, patch, user_id=place.owner, expected_version=expected
            )
        except ConversationNotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        except VersionConflict:
            raise StaleSessionError(_STALE_MESSAGE) from None
        session.last_update_time = event.timestamp
        _set_marker(session, saved.version, created_at)
        return self._commit_event_to_session(session, event)

    @asynccontextmanager
    async def _append_lock(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the session's append lock, as ADK's database service does: ADK
        appends to an invocation's session object from background tasks too."""
        key = (asyncio.get_running_loop(), conversation_id)
        lock = self._append_locks.get(key)
        if lock is None:
            lock = self._append_locks[key] = asyncio.Lock()
        async with lock:
            yield

    async def _revision(self, place: _Place, session: Session) -> tuple[int, datetime | None]:
        """The version to write ``session``'s next event at and the conversation's
        creation time, read from storage; ``StaleSessionError`` unless ``session``
        is current. A marker this service set must name both: a session deleted and
        created again starts again at version 1, and its creation time tells it
        from the one before. A session object without one (built by hand, or by
        another service) is judged as ADK's database service judges it: stale only
        if storage was updated after it and holds a last event other than its own.
        (The write is conditional on the version only: a delete, a create and as
        many appends between this read and that write would go unseen.)"""
        marker = session._storage_update_marker
        ours = marker is not None and marker.startswith(_MARKER_PREFIX)
        try:
            stored = await self.store.load_state(
                place.conversation_id,
                LoadOptions(last_messages=0 if ours else 1, context_limit=0),
                user_id=place.owner,
            )
        except ConversationNotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        if ours:
            if marker != _marker(stored.version, stored.created_at):
                raise StaleSessionError(_STALE_MESSAGE)
            return stored.version, stored.created_at
        _, update_time = _decode_metadata(stored.metadata)
        if update_time is not None and update_time > session.last_update_time:
            history = stored.conversation_history
            stored_last = _event(history[-1]).id if history else None
            own_last = session.events[-1].id if session.events else None
            if stored_last != own_last:
                raise StaleSessionError(_STALE_MESSAGE)
            session.last_update_time = update_time
        return stored.version, stored.created_at


# -- ids and namespaces ------------------------------------------------------------------


def _escape(part: str) -> str:
    """``part`` with ``%``, ``/``, control characters and a leading or trailing
    white-space character written as %XX (UTF-8): no ``/`` left, invertible with
    ``unquote``, and a valid statestore id on its own (the owner is one)."""
    last = len(part) - 1
    escaped = []
    for i, char in enumerate(part):
        at_an_end = i in (0, last)
        if char in "%/" or char < " " or char == "\x7f" or (at_an_end and char.isspace()):
            escaped.append("".join(f"%{byte:02X}" for byte in char.encode()))
        else:
            escaped.append(char)
    return "".join(escaped)


class _Place(NamedTuple):
    """Where a session lives in the store."""

    conversation_id: str
    owner: str | None
    app_namespace: str
    user_namespace: str


def _place(app_name: str, user_id: str, session_id: str) -> _Place:
    """A session's ids in the store, each checked to fit the store's id length
    (``ValueError``) before a call reads or writes anything."""
    return _Place(
        _conversation_id(app_name, user_id, session_id),
        _owner(user_id),
        _app_namespace(app_name),
        _user_namespace(app_name, user_id),
    )


def _fitting(store_id: str, made: str) -> str:
    """``store_id``, or ValueError when it is longer than the store takes; ``made``
    says what makes it (``"the app name makes an app: state namespace"``)."""
    if len(store_id) > MAX_ID_LENGTH:
        raise ValueError(
            f"{made} of {len(store_id)} characters; statestore's limit is {MAX_ID_LENGTH}"
        )
    return store_id


def _conversation_id(app_name: str, user_id: str, session_id: str) -> str:
    conversation_id = f"adk/{_escape(app_name)}/{_escape(user_id)}/{_escape(session_id)}"
    return _fitting(conversation_id, "app name, user id and session id make a conversation id")


def _owner(user_id: str) -> str | None:
    """The store's owner id for an ADK user (None for an empty user id)."""
    return _escape(user_id) or None


def _app_namespace(app_name: str) -> str:
    namespace = f"adk:app/{_escape(app_name)}"
    return _fitting(namespace, "the app name makes an app: state namespace")


def _user_namespace(app_name: str, user_id: str) -> str:
    namespace = f"adk:user/{_escape(app_name)}/{_escape(user_id)}"
    return _fitting(namespace, "app name and user id make a user: state namespace")


# -- state ---------------------------------------------------------------------------


def _split(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(app, user, session) parts of an ADK state or state delta, app and user keys
    without their prefix, ``temp:`` keys dropped, values made JSON as ADK's
    database service makes them (what cannot be, becomes its repr)."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            own[key] = value
    jsonable: list[dict[str, Any]] = to_jsonable_python([app, user, own], serialize_unknown=True)
    return jsonable[0], jsonable[1], jsonable[2]


def _merge(
    app: Mapping[str, Any], user: Mapping[str, Any], own: Mapping[str, Any]
) -> dict[str, Any]:
    """A session's state: its own, and the stored app and user state under their
    prefixes."""
    merged = dict(own)
    merged.update({State.APP_PREFIX + key: value for key, value in _decode_entries(app).items()})
    merged.update({State.USER_PREFIX + key: value for key, value in _decode_entries(user).items()})
    return merged


def _shared_patch(
    place: _Place, app: dict[str, Any], user: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    patch = {}
    if app:
        patch[place.app_namespace] = _encode_entries(app, nul_ok=True)
    if user:
        patch[place.user_namespace] = _encode_entries(user, nul_ok=True)
    return patch


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _storable_text(text: str, nul_ok: bool) -> bool:
    return nul_ok or "\x00" not in text


def _storable(value: Any, nul_ok: bool, depth: int = 1) -> bool:
    """Whether the store keeps ``value``, a state value, as it is: it refuses NUL in
    metadata (``nul_ok`` False), integers beyond 64 bits, NaN or infinities and
    nesting deeper than its limit, all of which ADK state may hold. (Lone surrogates
    neither keeps: ADK cannot make them JSON.) ``depth``: the value's own, counted
    as in metadata, where the metadata object is the first level."""
    if isinstance(value, str):
        return _storable_text(value, nul_ok)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return depth < MAX_JSON_DEPTH and all(
            _storable_text(key, nul_ok) and _storable(item, nul_ok, depth + 1)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return depth < MAX_JSON_DEPTH and all(_storable(item, nul_ok, depth + 1) for item in value)
    return True  # not JSON: the store says what is wrong with it


def _dumps(value: Any) -> str:
    """JSON text: NUL becomes an escape, NaN and infinities their JavaScript names,
    so the store keeps it whatever it holds."""
    return json.dumps(value, separators=(",", ":"))


def _encode_entries(entries: Mapping[str, Any], *, nul_ok: bool) -> dict[str, Any]:
    """State entries as the store keeps them, one stored key per state key (so a
    write overwrites whatever form the key had before): a key the store cannot
    keep, or that starts with the escape prefix, becomes the prefix and its JSON
    text; a value it cannot keep, or shaped like the escape, becomes
    ``{"$statestore.json": <its JSON text>}``."""
    encoded = {}
    for key, value in entries.items():
        if key.startswith(_ESCAPED_KEY_PREFIX) or not _storable_text(key, nul_ok=False):
            key = _ESCAPED_KEY_PREFIX + _dumps(key)
        if not _storable(value, nul_ok) or (
            isinstance(value, dict) and list(value) == [_ESCAPED_VALUE_KEY]
        ):
            value = {_ESCAPED_VALUE_KEY: _dumps(value)}
        encoded[key] = value
    return encoded


def _decode_entries(entries: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``_encode_entries``."""
    decoded = {}
    for key, value in entries.items():
        if key.startswith(_ESCAPED_KEY_PREFIX):
            key = json.loads(key.removeprefix(_ESCAPED_KEY_PREFIX))
        if isinstance(value, dict) and list(value) == [_ESCAPED_VALUE_KEY]:
            value = json.loads(value[_ESCAPED_VALUE_KEY])
        decoded[key] = value
    return decoded


def _encode_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Session state as metadata entries."""
    return _encode_entries(state, nul_ok=False)


def _decode_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """(session state, last update time) from a conversation's metadata."""
    entries = dict(metadata)
    update_time = entries.pop(_UPDATE_TIME_KEY, None)
    return _decode_entries(entries), None if update_time is None else float(update_time)


def _or_created(update_time: float | None, created_at: datetime | None) -> float:
    """A session's last update time; for a conversation the adapter did not create,
    its creation time."""
    if update_time is not None:
        return update_time
    return created_at.timestamp() if created_at is not None else 0.0


# -- events --------------------------------------------------------------------------


def _message(event: Event) -> Message:
    """The message that keeps ``event``: the event's JSON form as payload, or, when
    the store cannot keep that (an integer beyond 64 bits, say), its JSON text. (That
    form has null for NaN and infinities: ADK's model config says so.)"""
    payload = event.model_dump(mode="json", exclude_none=True)
    fields: dict[str, Any] = {
        "role": "user" if event.author == "user" else "agent",
        "content": "",
        "message_type": MESSAGE_TYPE,
        "tool_name": _tool_name(event),
        "timestamp": datetime.fromtimestamp(event.timestamp, UTC),
    }
    try:
        return Message(**fields, payload=payload)
    except ValidationError:
        return Message(**fields, payload=_dumps(payload))


def _event(message: Message) -> Event:
    payload = message.payload
    return Event.model_validate(json.loads(payload) if isinstance(payload, str) else payload)


def _tool_name(event: Event) -> str | None:
    names: Iterable[str | None] = [
        *(call.name for call in event.get_function_calls()),
        *(response.name for response in event.get_function_responses()),
    ]
    for name in names:
        if name and _storable_text(name, nul_ok=False):
            return name
    return None


# -- the session's storage revision ---------------------------------------------------
# ADK's Session carries a private revision marker for exactly this purpose (its
# database service keeps its own there); copies of the session keep it.


def _marker(version: int, created_at: datetime | None) -> str:
    """The revision marker of a conversation at ``version``, created at ``created_at``."""
    created = created_at.isoformat() if created_at is not None else ""
    return f"{_MARKER_PREFIX}{version}@{created}"


def _set_marker(session: Session, version: int, created_at: datetime | None) -> None:
    session._storage_update_marker = _marker(version, created_at)
