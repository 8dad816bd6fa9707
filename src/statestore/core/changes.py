"""What a write changes: one plan for both ``save_state`` and ``update_state``.

``plan_save`` compares a state with the snapshot it was loaded (or last saved) with and
keeps only what changed, so that a per-turn save writes O(new rows) (invariant 2);
``plan_patch`` turns a StatePatch into the same kind of plan. Backends execute plans;
the legacy backend applies them to a document in Python with ``apply_plan``, which
gives every backend the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import jsoncodec
from .errors import ValidationError, VersionConflict
from .model import AgentState, ContextItem, Message, Snapshot
from .query import LoadOptions, StatePatch
from .validation import check_json, is_valid_json

__all__ = [
    "remember_loaded",
    "view_of",
    "WritePlan",
    "plan_save",
    "plan_patch",
    "apply_plan",
    "after_save",
    "check_truncate",
]

SCALARS = ("user_input", "focus_areas", "step_count", "last_tool_result")


@dataclass(slots=True)
class WritePlan:
    """One write. ``replace``: the stored conversation becomes exactly this plan's
    content (everything else is dropped); otherwise the changes apply to what is stored.
    A replace plan may create the conversation; an incremental one never does."""

    replace: bool
    scalars: dict[str, Any]
    append_messages: list[Message] = field(default_factory=list)
    truncate_from: int | None = None  # delete stored messages with seq >= this first
    # With truncate_from: how many messages the state saw stored. If others appended
    # since, rewriting from truncate_from would delete messages it never loaded, so the
    # backend raises VersionConflict instead (see ``check_truncate``).
    truncate_expects: int | None = None
    base_version: int = 0  # the version the state was loaded (or last saved) at
    add_items: list[ContextItem] = field(default_factory=list)
    remove_item_ids: list[int] = field(default_factory=list)
    # plan_save only: the items being removed, as the state loaded them, for a backend
    # whose ids are positions (legacy-blob) to check they are still at those positions.
    removed_items: list[ContextItem] = field(default_factory=list)
    set_metadata: dict[str, str] = field(default_factory=dict)  # key -> encoded JSON
    delete_metadata: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows this plan writes or deletes, for the observability hook."""
        return (
            1
            + len(self.append_messages)
            + len(self.add_items)
            + len(self.remove_item_ids)
            + len(self.set_metadata)
            + len(self.delete_metadata)
        )


def _scalars(state: AgentState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in SCALARS}


def _recheck_new_rows(plan: WritePlan, messages_field: str, items_field: str) -> WritePlan:
    """Messages and items are validated when built, but their metadata dicts stay
    mutable (a NaN put in later would be written as null): check again the rows this
    write adds, and only those, so the cost stays O(new)."""
    for i, message in enumerate(plan.append_messages):
        if message.metadata and not is_valid_json(message.metadata):
            check_json(message.metadata, f"{messages_field}[{i}].metadata")
    for i, item in enumerate(plan.add_items):
        if item.metadata and not is_valid_json(item.metadata):
            check_json(item.metadata, f"{items_field}[{i}].metadata")
    return plan


def plan_save(state: AgentState, conversation_id: str, store: object = None) -> WritePlan:
    """Validate ``state`` and plan the smallest write that stores it in ``store`` (a key
    naming the data the saving backend holds, e.g. its layout and database URL): only
    a state loaded from (or saved to) the same conversation of the same store writes
    incrementally; any other is copied whole."""
    if not isinstance(state, AgentState):
        raise ValidationError("state", f"must be an AgentState, not {type(state).__name__}")
    state.validate()
    state.focus_areas = list(state.focus_areas)
    snap = state._snapshot
    if snap is None or snap.conversation_id != conversation_id or snap.store != store:
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
        plan.truncate_expects = state.history_total
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


def check_truncate(plan: WritePlan, conversation_id: str, stored: int, version: int) -> None:
    """Raise VersionConflict if ``plan`` rewrites the history from a position while
    ``stored`` (the messages stored now) differs from what the state saw: messages were
    appended (or removed) since, and rewriting would lose or misplace them."""
    if plan.truncate_expects is not None and plan.truncate_expects != stored:
        raise VersionConflict(conversation_id, plan.base_version, version)


def plan_patch(patch: StatePatch) -> WritePlan:
    if not isinstance(patch, StatePatch):
        raise ValidationError("patch", f"must be a StatePatch, not {type(patch).__name__}")
    plan = WritePlan(
        replace=False,
        scalars=patch.scalars(),
        append_messages=list(patch.append_messages),
        add_items=list(patch.add_context),
        remove_item_ids=sorted(set(patch.remove_context)),
        set_metadata={k: jsoncodec.dumps(v) for k, v in patch.set_metadata.items()},
        delete_metadata=list(patch.delete_metadata),
    )
    return _recheck_new_rows(plan, "append_messages", "add_context")


def apply_plan(stored: AgentState | None, plan: WritePlan, first_item_id: int) -> AgentState:
    """Apply ``plan`` in Python to a whole stored state (None: nothing stored yet).

    Messages get seqs by position; new items get ids from ``first_item_id`` on.
    Returns the new whole state (``stored`` is not modified).
    """
    if plan.replace or stored is None:
        base = AgentState()
        history: list[Message] = []
        items: list[ContextItem] = []
        metadata: dict[str, Any] = {}
    else:
        base = stored
        history = list(stored.conversation_history)
        items = list(stored.memory_context)
        metadata = dict(stored.metadata)
    if plan.truncate_from is not None:
        del history[plan.truncate_from :]
    start = len(history)
    history.extend(m.with_seq(start + i) for i, m in enumerate(plan.append_messages))
    removed = set(plan.remove_item_ids)
    items = [c for c in items if c.item_id not in removed]
    items.extend(c.with_id(first_item_id + i) for i, c in enumerate(plan.add_items))
    for key in plan.delete_metadata:
        metadata.pop(key, None)
    for key, encoded in plan.set_metadata.items():
        metadata[key] = jsoncodec.loads(encoded)
    scalars = {name: getattr(base, name) for name in SCALARS}
    scalars.update(plan.scalars)
    return AgentState(
        **scalars,
        conversation_history=history,
        memory_context=items,
        metadata=metadata,
    )


def after_save(
    state: AgentState,
    conversation_id: str,
    plan: WritePlan,
    *,
    first_seq: int,
    first_item_id: int,
    version: int,
    message_count: int,
    user_id: str | None,
    created_at: datetime,
    updated_at: datetime,
    store: object = None,
) -> None:
    """After a successful ``save_state``: give new messages and items their seq and id,
    and remember what is stored, so the next save of the same object writes only what
    changed since."""
    history = state.conversation_history
    n_new = len(plan.append_messages)
    base = len(history) - n_new
    for i in range(n_new):
        history[base + i] = history[base + i].with_seq(first_seq + i)
    new_items = {id(c): first_item_id + i for i, c in enumerate(plan.add_items)}
    context = state.memory_context
    for i, item in enumerate(context):
        new_id = new_items.get(id(item))
        if new_id is not None:
            context[i] = item.with_id(new_id)
    snap = state._snapshot
    if plan.replace or snap is None:
        start = 0
        contiguous = True
    else:
        start = state.history_start
        # Concurrent appends may have landed between our loaded messages and our new
        # ones: then this object no longer holds a contiguous tail of the history.
        expected_first = start + base if plan.truncate_from is None else plan.truncate_from + base
        contiguous = snap.contiguous_tail and first_seq == expected_first
    state._snapshot = Snapshot(
        conversation_id=conversation_id,
        messages=tuple(history),
        contiguous_tail=contiguous and first_seq + n_new == message_count,
        items={c.item_id: c for c in context if c.item_id is not None},
        metadata_json={k: jsoncodec.dumps(v) for k, v in state.metadata.items()},
        store=store,
    )
    state.conversation_id = conversation_id
    state.user_id = user_id
    state.version = version
    state.created_at = created_at
    state.updated_at = updated_at
    state.history_start = start
    state.history_total = message_count


def remember_loaded(
    state: AgentState,
    conversation_id: str,
    options: LoadOptions,
    store: object,
    metadata_json: dict[str, str] | None = None,
) -> AgentState:
    """Attach to a state ``load_state`` is returning the snapshot ``plan_save`` later
    compares against (``metadata_json``: its metadata encoded, if already at hand)."""
    if metadata_json is None:
        metadata_json = {k: jsoncodec.dumps(v) for k, v in state.metadata.items()}
    state._snapshot = Snapshot(
        conversation_id=conversation_id,
        messages=tuple(state.conversation_history),
        contiguous_tail=not options.filters_messages,
        items={c.item_id: c for c in state.memory_context if c.item_id is not None},
        metadata_json=metadata_json,
        store=store,
    )
    return state


def view_of(
    whole: AgentState,
    options: LoadOptions,
    *,
    conversation_id: str,
    user_id: str | None,
    version: int,
    created_at: datetime,
    updated_at: datetime,
    store: object,
) -> AgentState:
    """``load_state``'s answer for a backend that keeps whole states (messages with
    their seq, items with their id): what ``options`` select, answered in Python,
    with the store-managed fields and the snapshot. ``whole`` is not modified."""
    total = len(whole.conversation_history)
    messages = options.select_messages(whole.conversation_history)
    state = AgentState(
        user_input=whole.user_input,
        focus_areas=list(whole.focus_areas),
        step_count=whole.step_count,
        last_tool_result=whole.last_tool_result,
        conversation_history=messages,
        memory_context=options.select_context(whole.memory_context, whole.focus_areas),
        metadata=dict(whole.metadata),
        conversation_id=conversation_id,
        user_id=user_id,
        version=version,
        created_at=created_at,
        updated_at=updated_at,
        history_start=messages[0].seq if messages and messages[0].seq is not None else total,
        history_total=total,
    )
    return remember_loaded(state, conversation_id, options, store)
