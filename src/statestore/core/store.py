"""The Store: the object users hold, over one StorageBackend.

It does, once for every backend, what is the same everywhere: validating every input
before any I/O, remembering what a loaded state holds so that saving it writes only
what changed (invariant 2), timing each operation for the
``statestore_operation_done`` hook, and logging. The backend only reads views and
applies write plans (``core/backend.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from . import jsoncodec
from .backend import (
    LIST_ORDERS,
    SCALARS,
    Capability,
    ConversationInfo,
    SaveResult,
    StorageBackend,
    StoredView,
    WritePlan,
    WriteResult,
)
from .errors import ConversationNotFound, ValidationError
from .model import AgentState, ContextItem, Message
from .query import LoadOptions, StatePatch, check_namespaces, check_shared_keys, check_shared_values
from .validation import (
    MAX_ID_LENGTH,
    check_id,
    check_int,
    check_json,
    check_optional_id,
    check_optional_int,
    check_text,
)

__all__ = ["Store"]

logger = logging.getLogger("statestore")

_DEFAULT_OPTIONS = LoadOptions()
# "backend" too: while it is not set yet (copy, unpickling), looking it up must not
# recurse.
_NOT_FORWARDED = frozenset(
    {
        "backend",
        "open",
        "read",
        "write",
        "delete",
        "list_conversations",
        "read_shared",
        "write_shared",
        "data_key",
    }
)


@dataclass(slots=True)
class _Snapshot:
    """What a loaded (or saved) state held when it last touched a store: what the
    next save of the same object compares against."""

    data_key: str
    conversation_id: str
    messages: tuple[Message, ...]
    # True when the messages are a contiguous run ending at the last stored message,
    # so an edited history can be rewritten from ``history_start`` on.
    contiguous_tail: bool
    items: dict[int, ContextItem]
    metadata_json: dict[str, str]


class Store:
    """Persist agent conversation state through one backend (what ``open_store()``
    returns; use it as ``async with``).

    Invariants (checked by ``statestore.testing``): round trip; appends are O(new);
    partial updates; atomic writes; versions with optimistic concurrency; ownership
    by user; the same answers for the same LoadOptions on every backend.
    """

    __slots__ = ("_hook", "backend", "name")

    def __init__(self, backend: StorageBackend, *, hook: Any = None) -> None:
        """``backend``: an unopened backend; ``hook``: a pluggy hook relay
        (``Registry.hook``) that ``statestore_operation_done`` is called on, or None."""
        self.backend = backend
        self.name: str = backend.name
        self._hook = hook

    def __repr__(self) -> str:
        return f"<Store {self.backend!r}>"

    def __getattr__(self, name: str) -> Any:
        """What a backend offers beyond the protocol, e.g. the dual backend's
        ``primary`` and ``shadow`` (each a Store of its own). The protocol's own
        methods are not forwarded: they would skip the Store's checks."""
        if name.startswith("_") or name in _NOT_FORWARDED:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.backend, name)

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The optional abilities of this store's backend."""
        return self.backend.capabilities

    async def __aenter__(self) -> Self:
        await self.backend.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the backend's connections. Idempotent."""
        await self.backend.close()

    # -- the public API ------------------------------------------------------------------

    async def save_state(
        self,
        conversation_id: str,
        state: AgentState,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> SaveResult:
        """Store ``state``. A state loaded from (or saved to) this conversation of this
        store's data writes only what changed; any other state replaces what is
        stored. ``expected_version`` 0 means "must not exist yet"; a stale one raises
        VersionConflict. After the save, ``state`` tracks what is stored (seqs, item
        ids, version)."""
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        expected_version = check_optional_int(expected_version, "expected_version")
        plan = self._plan_save(state, conversation_id)
        plan.expected_version = expected_version
        written = await self.backend.write(conversation_id, plan, user_id=user_id)
        self._after_save(state, conversation_id, plan, written)
        self._done("save_state", conversation_id, started, plan.rows)
        return SaveResult(
            conversation_id, written.version, written.message_count, written.updated_at
        )

    async def load_state(
        self,
        conversation_id: str,
        options: LoadOptions = _DEFAULT_OPTIONS,
        *,
        user_id: str | None = None,
    ) -> AgentState:
        """Load the parts ``options`` select; raise ConversationNotFound."""
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        if not isinstance(options, LoadOptions):
            raise ValidationError("options", f"must be LoadOptions, not {type(options).__name__}")
        view = await self.backend.read(conversation_id, options, user_id=user_id)
        if view is None:
            raise ConversationNotFound(conversation_id)
        state = self._state_of(conversation_id, view, options)
        self._done("load_state", conversation_id, started, 1 + len(view.messages) + len(view.items))
        return state

    async def update_state(
        self,
        conversation_id: str,
        patch: StatePatch,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
        create: bool = False,
    ) -> SaveResult:
        """Apply ``patch`` in one transaction. A missing conversation raises
        ConversationNotFound, unless ``create``: then it is created (empty, owned by
        ``user_id``) and the patch applied to it, atomically (``expected_version`` 0:
        it must not exist yet)."""
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        expected_version = check_optional_int(expected_version, "expected_version")
        if type(create) is not bool:
            raise ValidationError("create", "must be a bool")
        plan = _plan_patch(patch)
        plan.expected_version = expected_version
        plan.create = create
        written = await self.backend.write(conversation_id, plan, user_id=user_id)
        self._done("update_state", conversation_id, started, plan.rows)
        return SaveResult(
            conversation_id, written.version, written.message_count, written.updated_at
        )

    async def pop_messages(
        self,
        conversation_id: str,
        count: int = 1,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> list[Message]:
        """Remove the last ``count`` stored messages in one transaction and return
        them, oldest first (fewer if fewer are stored); raise ConversationNotFound."""
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        check_int(count, "count", minimum=1)
        expected_version = check_optional_int(expected_version, "expected_version")
        plan = WritePlan(
            replace=False,
            scalars={},
            pop_messages=count,
            expected_version=expected_version,
            operation="pop_messages",
        )
        written = await self.backend.write(conversation_id, plan, user_id=user_id)
        self._done("pop_messages", conversation_id, started, plan.rows)
        return written.popped

    async def load_shared(self, namespaces: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The state shared across conversations under each of ``namespaces``, read
        in one snapshot: ``{namespace: {key: value}}``, ``{}`` for a namespace with
        nothing stored. (``LoadOptions.shared`` reads it with a conversation.)"""
        started = time.perf_counter()
        wanted = check_namespaces(namespaces, "namespaces")
        shared = await self.backend.read_shared(wanted)
        self._done("load_shared", None, started, sum(map(len, shared.values())))
        return shared

    async def update_shared(
        self,
        namespace: str,
        set: Mapping[str, Any] | None = None,  # the patch's verb
        delete: Iterable[str] = (),
    ) -> None:
        """Set and delete keys of one namespace of shared state, in one transaction.
        (``StatePatch.set_shared`` does it in a conversation's transaction.)"""
        started = time.perf_counter()
        namespace = check_id(namespace, "namespace")
        values = check_shared_values({namespace: set or {}}, "set")
        keys = check_shared_keys({namespace: delete}, "delete")
        plan = _shared_plan(values, keys)
        await self.backend.write_shared(plan.set_shared, plan.delete_shared)
        self._done("update_shared", None, started, plan.rows - 1)

    async def delete_state(self, conversation_id: str, *, user_id: str | None = None) -> bool:
        """Delete a conversation; return whether one was deleted."""
        started = time.perf_counter()
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_optional_id(user_id, "user_id")
        deleted = await self.backend.delete(conversation_id, user_id=user_id)
        self._done("delete_state", conversation_id, started, int(deleted))
        return deleted

    async def list_conversations(
        self,
        *,
        user_id: str | None = None,
        prefix: str | None = None,
        order: str = "id",
        with_metadata: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ConversationInfo]:
        """Conversations, ``limit`` at a time, without loading them: of ``user_id``
        (if given), whose id starts with ``prefix`` (if given), ordered by id
        (``order="id"``) or most recently updated first (``"updated"``), each with its
        metadata if ``with_metadata``. ``after``: the id of the last conversation of the
        previous page."""
        started = time.perf_counter()
        user_id = check_optional_id(user_id, "user_id")
        if prefix is not None:
            check_text(prefix, "prefix", allow_empty=False)
            if len(prefix) > MAX_ID_LENGTH:
                raise ValidationError("prefix", f"is longer than {MAX_ID_LENGTH} characters")
        if order not in LIST_ORDERS:
            raise ValidationError("order", f"must be one of {list(LIST_ORDERS)}, got {order!r}")
        if type(with_metadata) is not bool:
            raise ValidationError("with_metadata", "must be a bool")
        check_int(limit, "limit", minimum=1)
        after = check_optional_id(after, "after")
        result = list(
            await self.backend.list_conversations(
                user_id=user_id,
                limit=limit,
                after=after,
                prefix=prefix,
                order=order,
                with_metadata=with_metadata,
            )
        )
        self._done("list_conversations", None, started, len(result))
        return result

    # -- reporting -----------------------------------------------------------------------

    def _done(self, operation: str, conversation_id: str | None, started: float, rows: int) -> None:
        seconds = time.perf_counter() - started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s conversation=%r rows=%d %.3f ms",
                self.name,
                operation,
                conversation_id,
                rows,
                seconds * 1000,
            )
        # Asked each time, as plugins may register later; calling a hook that no
        # plugin implements costs more than asking.
        hook = self._hook
        if hook is not None and hook.statestore_operation_done.get_hookimpls():
            hook.statestore_operation_done(
                backend=self.name,
                operation=operation,
                conversation_id=conversation_id,
                seconds=seconds,
                rows=rows,
            )

    # -- snapshots: what makes a save of a loaded state O(new) -------------------------

    def _state_of(self, conversation_id: str, view: StoredView, options: LoadOptions) -> AgentState:
        """The AgentState ``load_state`` returns for ``view``, with its snapshot."""
        messages = view.messages
        first = messages[0].seq if messages else None
        state = AgentState(
            user_input=view.user_input,
            focus_areas=view.focus_areas,
            step_count=view.step_count,
            last_tool_result=view.last_tool_result,
            conversation_history=messages,
            memory_context=view.items,
            metadata=view.metadata,
            conversation_id=conversation_id,
            user_id=view.user_id,
            version=view.version,
            created_at=view.created_at,
            updated_at=view.updated_at,
            history_start=view.message_count if first is None else first,
            history_total=view.message_count,
            shared=view.shared,
        )
        dumps = jsoncodec.dumps
        state._snapshot = _Snapshot(
            data_key=self.backend.data_key,
            conversation_id=conversation_id,
            messages=tuple(messages),
            contiguous_tail=not options.filters_messages,
            items={c.item_id: c for c in view.items if c.item_id is not None},
            metadata_json={k: dumps(v) for k, v in view.metadata.items()},
        )
        return state

    def _plan_save(self, state: AgentState, conversation_id: str) -> WritePlan:
        """Validate ``state`` and plan the smallest write that stores it: only a state
        loaded from (or saved to) the same conversation of the same data writes
        incrementally; any other is copied whole."""
        if not isinstance(state, AgentState):
            raise ValidationError("state", f"must be an AgentState, not {type(state).__name__}")
        state.validate()
        state.focus_areas = list(state.focus_areas)
        snap = state._snapshot
        if (
            not isinstance(snap, _Snapshot)
            or snap.conversation_id != conversation_id
            or snap.data_key != self.backend.data_key
        ):
            whole = WritePlan(
                replace=True,
                scalars=_scalars(state),
                append_messages=list(state.conversation_history),
                add_items=list(state.memory_context),
                set_metadata={k: jsoncodec.dumps(v) for k, v in state.metadata.items()},
            )
            return _recheck_new_rows(whole, "conversation_history", "memory_context")

        plan = WritePlan(replace=False, scalars=_scalars(state), base_version=state.version)
        history = state.conversation_history
        loaded = snap.messages
        n = len(loaded)
        if len(history) >= n and all(a is b for a, b in zip(history, loaded, strict=False)):
            plan.append_messages = history[n:]
        elif snap.contiguous_tail:
            plan.truncate_from = state.history_start
            plan.expected_count = state.history_total
            plan.append_messages = list(history)
        else:
            raise ValidationError(
                "conversation_history",
                "this state was loaded with a message filter (or saved alongside concurrent "
                "appends), so its loaded messages cannot be edited; append new ones only, "
                "or load it again without a filter",
            )

        current_ids = set()
        for item in state.memory_context:
            if item.item_id is not None and snap.items.get(item.item_id) is item:
                current_ids.add(item.item_id)
            else:
                plan.add_items.append(item)
        plan.remove_item_ids = sorted(snap.items.keys() - current_ids)
        plan.removed_items = [snap.items[i] for i in plan.remove_item_ids]

        for key, value in state.metadata.items():
            encoded = jsoncodec.dumps(value)
            if snap.metadata_json.get(key) != encoded:
                plan.set_metadata[key] = encoded
        plan.delete_metadata = sorted(snap.metadata_json.keys() - state.metadata.keys())
        return _recheck_new_rows(plan, "new messages", "new context items")

    def _after_save(
        self, state: AgentState, conversation_id: str, plan: WritePlan, written: WriteResult
    ) -> None:
        """Give new messages and items their seq and id, and remember what is stored,
        so the next save of the same object writes only what changed since."""
        first_seq = written.first_seq
        history = state.conversation_history
        n_new = len(plan.append_messages)
        base = len(history) - n_new
        for i in range(n_new):
            history[base + i] = history[base + i].with_seq(first_seq + i)
        new_items = {id(c): written.first_item_id + i for i, c in enumerate(plan.add_items)}
        context = state.memory_context
        for i, item in enumerate(context):
            new_id = new_items.get(id(item))
            if new_id is not None:
                context[i] = item.with_id(new_id)
        snap = state._snapshot
        if plan.replace or not isinstance(snap, _Snapshot):
            start = 0
            contiguous = True
        else:
            start = state.history_start
            # Concurrent appends may have landed between our loaded messages and our
            # new ones: then this object no longer holds a contiguous tail.
            expected_first = (
                start + base if plan.truncate_from is None else plan.truncate_from + base
            )
            contiguous = snap.contiguous_tail and first_seq == expected_first
        state._snapshot = _Snapshot(
            data_key=self.backend.data_key,
            conversation_id=conversation_id,
            messages=tuple(history),
            contiguous_tail=contiguous and first_seq + n_new == written.message_count,
            items={c.item_id: c for c in context if c.item_id is not None},
            metadata_json={k: jsoncodec.dumps(v) for k, v in state.metadata.items()},
        )
        state.conversation_id = conversation_id
        state.user_id = written.user_id
        state.version = written.version
        state.created_at = written.created_at
        state.updated_at = written.updated_at
        state.history_start = start
        state.history_total = written.message_count


def _scalars(state: AgentState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in SCALARS}


def _recheck_new_rows(plan: WritePlan, messages_field: str, items_field: str) -> WritePlan:
    """Messages and items are validated when built, but their metadata dicts stay
    mutable (a NaN put in later would be written as null): check again the rows this
    write adds, and only those, so the cost stays O(new)."""
    for i, message in enumerate(plan.append_messages):
        if message.metadata:
            check_json(message.metadata, f"{messages_field}[{i}].metadata")
        if message.payload is not None:
            check_json(message.payload, f"{messages_field}[{i}].payload", nul_ok=True)
    for i, item in enumerate(plan.add_items):
        if item.metadata:
            check_json(item.metadata, f"{items_field}[{i}].metadata")
    return plan


def _plan_patch(patch: StatePatch) -> WritePlan:
    if not isinstance(patch, StatePatch):
        raise ValidationError("patch", f"must be a StatePatch, not {type(patch).__name__}")
    patch.check()  # its dicts and lists may have changed since it was built
    plan = WritePlan(
        replace=False,
        scalars=patch.scalars(),
        append_messages=list(patch.append_messages),
        add_items=list(patch.add_context),
        remove_item_ids=sorted(set(patch.remove_context)),
        set_metadata={k: jsoncodec.dumps(v) for k, v in patch.set_metadata.items()},
        delete_metadata=list(patch.delete_metadata),
        operation="update_state",
    )
    if patch.set_shared or patch.delete_shared:
        shared = _shared_plan(patch.set_shared, patch.delete_shared)
        plan.set_shared = shared.set_shared
        plan.delete_shared = shared.delete_shared
    return _recheck_new_rows(plan, "append_messages", "add_context")


def _shared_plan(
    set_shared: Mapping[str, Mapping[str, Any]], delete_shared: Mapping[str, Iterable[str]]
) -> WritePlan:
    """A plan holding only shared-state changes (values as JSON text), of checked
    arguments; namespaces without a change are left out."""
    dumps = jsoncodec.dumps
    return WritePlan(
        replace=False,
        scalars={},
        set_shared={
            namespace: {key: dumps(value) for key, value in values.items()}
            for namespace, values in set_shared.items()
            if values
        },
        delete_shared={namespace: list(keys) for namespace, keys in delete_shared.items() if keys},
    )
