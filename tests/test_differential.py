"""Every backend, driven by the same random sequence of operations, answers alike.

A hypothesis state machine runs saves, partial updates, pops, loads with random
``LoadOptions``, saves of loaded (and possibly windowed) states, deletes, lists and
changes and reads of shared state against every registered backend on an engine at
once, and compares each answer with the first backend's: the same error class, or the
same result (``to_dict()``, the version, which part of the history was loaded, message
seqs, shared state, and context item ids where the backends keep them stable). A
difference is a bug in one of them; the example hypothesis prints reproduces it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from statestore import (
    AgentState,
    Capability,
    ContextItem,
    LoadOptions,
    Message,
    StatePatch,
)
from statestore.sync import SyncStore
from statestore.testing.plugin import (
    BackendTarget,
    backend_targets,
    open_target,
    scratch_database,
)

_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Small alphabets and few values: collisions (equal scores, repeated types, the same
# timestamp) are where filters and orderings differ.
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12).filter(
    lambda s: "\x00" not in s
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.sampled_from([0.5, -2.25]) | _text,
    _containers,
    max_leaves=6,
)
_metadata = st.dictionaries(st.sampled_from(["a", "b", "c", "ü"]), _json, max_size=3)
_times = st.sampled_from(
    [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)]
) | st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)
_TYPES = ["text", "tool_call", "tool_result"]
_CONTEXT_TYPES = ["general", "code", "plan"]
_SOURCES = ["ltm", "rag", "focus"]


@st.composite
def _messages(draw: st.DrawFn) -> Message:
    return Message(
        role=draw(st.sampled_from(["user", "assistant", "tool", "developer"])),
        content=draw(_text),
        message_type=draw(st.sampled_from(_TYPES)),
        tool_name=draw(st.sampled_from([None, "search", "calc"])),
        timestamp=draw(_times),
        metadata=draw(_metadata),
        payload=draw(st.none() | _json),
    )


@st.composite
def _items(draw: st.DrawFn) -> ContextItem:
    return ContextItem(
        content=draw(_text),
        source=draw(st.sampled_from(_SOURCES)),
        relevance_score=draw(st.sampled_from([0.0, 0.3, 0.7, 0.7, 0.9, 1.0])),
        context_type=draw(st.sampled_from(_CONTEXT_TYPES)),
        timestamp=draw(_times),
        metadata=draw(_metadata),
    )


_states = st.builds(
    AgentState,
    user_input=st.none() | _text,
    focus_areas=st.lists(st.sampled_from(_CONTEXT_TYPES), max_size=2),
    step_count=st.integers(0, 50),
    last_tool_result=_json,
    conversation_history=st.lists(_messages(), max_size=6),
    memory_context=st.lists(_items(), max_size=5),
    metadata=_metadata,
)
_subsets = st.none() | st.frozensets(st.sampled_from(_TYPES), max_size=2)
_options = st.builds(
    LoadOptions,
    last_messages=st.none() | st.integers(0, 5),
    message_types=_subsets,
    tool_name=st.sampled_from([None, "search"]),
    min_relevance=st.sampled_from([None, 0.0, 0.7]),
    context_limit=st.none() | st.integers(0, 3),
    context_sources=st.none() | st.frozensets(st.sampled_from(_SOURCES), max_size=2),
    context_types=st.none() | st.frozensets(st.sampled_from(_CONTEXT_TYPES), max_size=2),
    focus_only=st.booleans(),
    messages_since=st.none() | _times,
)


_KEYS = st.sampled_from(["a", "b", "c", "ü"])
# Namespaces of shared state by index into the machine's own (shared across
# conversations, so each machine names its own).
_namespace_sets = st.none() | st.frozensets(st.integers(0, 1), max_size=2)
_shared_changes = st.dictionaries(
    st.integers(0, 1),
    st.tuples(st.dictionaries(_KEYS, _json, max_size=2), st.lists(_KEYS, max_size=2)),
    max_size=2,
)


@st.composite
def _patches(draw: st.DrawFn) -> tuple[dict[str, Any], list[int]]:
    """A StatePatch's fields, and positions of context items to remove (each backend
    names an item by its own id)."""
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["user_input"] = draw(st.none() | _text)
    if draw(st.booleans()):
        fields["step_count"] = draw(st.integers(0, 50))
    if draw(st.booleans()):
        fields["focus_areas"] = draw(st.lists(st.sampled_from(_CONTEXT_TYPES), max_size=2))
    if draw(st.booleans()):
        fields["last_tool_result"] = draw(_json)
    fields["append_messages"] = draw(st.lists(_messages(), max_size=3))
    fields["add_context"] = draw(st.lists(_items(), max_size=2))
    set_metadata = draw(_metadata)
    fields["set_metadata"] = set_metadata
    fields["delete_metadata"] = draw(
        st.lists(st.sampled_from(["a", "b", "c", "ü"]), max_size=2).map(
            lambda keys: [k for k in keys if k not in set_metadata]
        )
    )
    fields["set_shared"] = draw(_shared_changes)  # namespace indexes, made names later
    removed = draw(st.lists(st.integers(0, 6), max_size=2, unique=True))
    return fields, removed


def _view(state: AgentState) -> dict[str, Any]:
    """What a load answered, as comparable values (item ids apart)."""
    return {
        "document": state.to_dict(),
        "version": state.version,
        "user_id": state.user_id,
        "history_start": state.history_start,
        "history_total": state.history_total,
        "seqs": [m.seq for m in state.conversation_history],
        "shared": state.shared,
    }


class _Outcome:
    """One backend's answer: a value or the class of the error it raised."""

    def __init__(self, call: Callable[[str, SyncStore], Any], name: str, store: SyncStore) -> None:
        self.value: Any = None
        self.error: type[BaseException] | None = None
        try:
            self.value = call(name, store)
        except Exception as exc:
            self.error = type(exc)
            self.value = str(exc)


class Backends(RuleBasedStateMachine):
    """The stores of one engine, given the same operations."""

    stores: ClassVar[dict[str, SyncStore]] = {}
    loaded = Bundle("loaded")

    def __init__(self) -> None:
        super().__init__()
        prefix = f"diff-{uuid.uuid4().hex[:8]}/"
        self.prefix = prefix
        self.ids = [prefix + "a", prefix + "b"]
        self.namespaces = [prefix + "ns0", prefix + "ns1"]
        self.stable = {
            name: Capability.STABLE_ITEM_IDS in store.capabilities
            for name, store in self.stores.items()
        }

    def _each(self, call: Callable[[str, SyncStore], Any]) -> dict[str, _Outcome]:
        """``call`` on every store; the outcomes, after checking they agree."""
        outcomes = {name: _Outcome(call, name, s) for name, s in self.stores.items()}
        first_name, first = next(iter(outcomes.items()))
        for name, outcome in outcomes.items():
            assert outcome.error == first.error, (
                f"{name} raised {outcome.error} ({outcome.value if outcome.error else ''}), "
                f"{first_name} {first.error} ({first.value if first.error else ''})"
            )
        return outcomes

    def _agree(self, values: dict[str, Any]) -> None:
        if not values:
            return
        first_name, first = next(iter(values.items()))
        for name, value in values.items():
            assert value == first, f"{name} answered\n{value}\n{first_name}\n{first}"

    def _agree_on_states(self, outcomes: dict[str, _Outcome]) -> None:
        """Loaded states: the same content, and the same item ids where kept stable."""
        self._agree({name: _view(o.value) for name, o in outcomes.items()})
        self._agree(
            {
                name: [c.item_id for c in o.value.memory_context]
                for name, o in outcomes.items()
                if self.stable[name]
            }
        )

    def _shared(
        self, changes: dict[int, tuple[dict[str, Any], list[str]]]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """``set_shared`` and ``delete_shared`` for ``changes`` by namespace index (a key
        both set and deleted is only set)."""
        set_shared = {self.namespaces[i]: values for i, (values, _) in changes.items()}
        delete_shared = {
            self.namespaces[i]: [k for k in keys if k not in values]
            for i, (values, keys) in changes.items()
        }
        return set_shared, delete_shared

    @rule(
        which=st.integers(0, 1),
        state=_states,
        user=st.sampled_from([None, "u1", "u2"]),
        expect=st.sampled_from([None, 0, 1, 2, 3]),
    )
    def save(self, which: int, state: AgentState, user: str | None, expect: int | None) -> None:
        cid = self.ids[which]
        outcomes = self._each(
            lambda name, s: (
                s.save_state(cid, _copy(state), user_id=user, expected_version=expect).version
            )
        )
        self._agree({name: o.value for name, o in outcomes.items() if o.error is None})

    @rule(
        which=st.integers(0, 1),
        patch=_patches(),
        user=st.sampled_from([None, "u1"]),
        expect=st.sampled_from([None, 0, 1, 2, 3]),
    )
    def update(
        self,
        which: int,
        patch: tuple[dict[str, Any], list[int]],
        user: str | None,
        expect: int | None,
    ) -> None:
        cid = self.ids[which]
        fields, removed = dict(patch[0]), patch[1]
        fields["set_shared"], fields["delete_shared"] = self._shared(fields["set_shared"])

        def apply(name: str, store: SyncStore) -> Any:
            fields["remove_context"] = []
            if removed:
                try:
                    items = store.load_state(cid, user_id=user).memory_context
                except Exception:
                    items = []
                fields["remove_context"] = [items[i].item_id for i in removed if i < len(items)]
            return store.update_state(
                cid, StatePatch(**fields), user_id=user, expected_version=expect
            ).version

        outcomes = self._each(apply)
        self._agree({name: o.value for name, o in outcomes.items() if o.error is None})

    @rule(which=st.integers(0, 1), count=st.integers(1, 3), user=st.sampled_from([None, "u1"]))
    def pop(self, which: int, count: int, user: str | None) -> None:
        cid = self.ids[which]
        outcomes = self._each(
            lambda name, s: [m.to_dict() for m in s.pop_messages(cid, count, user_id=user)]
        )
        self._agree({name: o.value for name, o in outcomes.items() if o.error is None})

    @rule(
        target=loaded,
        which=st.integers(0, 1),
        options=_options,
        user=st.sampled_from([None, "u1", "u2"]),
        shared=_namespace_sets,
    )
    def load(
        self, which: int, options: LoadOptions, user: str | None, shared: frozenset[int] | None
    ) -> Any:
        cid = self.ids[which]
        if shared is not None:
            namespaces = frozenset(self.namespaces[i] for i in shared)
            options = dataclasses.replace(options, shared=namespaces)
        outcomes = self._each(lambda name, s: s.load_state(cid, options, user_id=user))
        if next(iter(outcomes.values())).error is not None:
            return (cid, user, None)
        self._agree_on_states(outcomes)
        return (cid, user, {name: o.value for name, o in outcomes.items()})

    @rule(
        loaded=consumes(loaded),
        appended=st.lists(_messages(), max_size=3),
        dropped=st.integers(0, 2),
        removed=st.lists(st.integers(0, 4), max_size=2, unique=True),
        added=st.lists(_items(), max_size=2),
        step=st.none() | st.integers(0, 50),
        key=st.none() | st.sampled_from(["a", "b", "c"]),
    )
    def save_loaded(
        self,
        loaded: tuple[str, str | None, dict[str, AgentState] | None],
        appended: list[Message],
        dropped: int,
        removed: list[int],
        added: list[ContextItem],
        step: int | None,
        key: str | None,
    ) -> None:
        """Change a loaded state the same way on every backend and save it."""
        cid, user, states = loaded
        if states is None:
            return

        def change_and_save(name: str, store: SyncStore) -> Any:
            state = states[name]
            if dropped:
                del state.conversation_history[-dropped:]
            state.conversation_history.extend(appended)
            for i in sorted(removed, reverse=True):
                if i < len(state.memory_context):
                    del state.memory_context[i]
            state.memory_context.extend(added)
            if step is not None:
                state.step_count = step
            if key is not None:
                state.metadata[key] = step
            return store.save_state(cid, state, user_id=user).version

        outcomes = self._each(change_and_save)
        self._agree({name: o.value for name, o in outcomes.items() if o.error is None})

    @rule(changes=_shared_changes)
    def update_shared(self, changes: dict[int, tuple[dict[str, Any], list[str]]]) -> None:
        set_shared, delete_shared = self._shared(changes)
        for namespace, values in set_shared.items():
            self._each(
                lambda name, s, ns=namespace, v=values: s.update_shared(ns, v, delete_shared[ns])
            )

    @rule(which=_namespace_sets)
    def load_shared(self, which: frozenset[int] | None) -> None:
        namespaces = [self.namespaces[i] for i in sorted(which or ())]
        outcomes = self._each(lambda name, s: s.load_shared(namespaces))
        self._agree({name: o.value for name, o in outcomes.items()})

    @rule(which=st.integers(0, 1), user=st.sampled_from([None, "u1", "u2"]))
    def delete(self, which: int, user: str | None) -> None:
        cid = self.ids[which]
        outcomes = self._each(lambda name, s: s.delete_state(cid, user_id=user))
        self._agree({name: o.value for name, o in outcomes.items()})

    @rule(
        user=st.sampled_from([None, "u1", "u2"]),
        order=st.sampled_from(["id", "updated"]),
        limit=st.integers(1, 3),
    )
    def list_them(self, user: str | None, order: str, limit: int) -> None:
        outcomes = self._each(
            lambda name, s: [
                (c.conversation_id, c.user_id, c.version, c.message_count, c.metadata)
                for c in s.list_conversations(
                    user_id=user, prefix=self.prefix, order=order, limit=limit, with_metadata=True
                )
            ]
        )
        self._agree({name: o.value for name, o in outcomes.items()})

    @invariant()
    def whole_states_agree(self) -> None:
        for cid in self.ids:
            outcomes = self._each(lambda name, s, cid=cid: s.load_state(cid))
            if next(iter(outcomes.values())).error is None:
                self._agree_on_states(outcomes)

    def teardown(self) -> None:
        for store in self.stores.values():
            for cid in self.ids:
                store.delete_state(cid)
            for namespace, values in store.load_shared(self.namespaces).items():
                store.update_shared(namespace, delete=list(values))


def _copy(state: AgentState) -> AgentState:
    """A new, never-saved state with ``state``'s content (each store gets its own)."""
    return AgentState.from_dict(state.to_dict())


def _targets(engine: str) -> list[BackendTarget]:
    """The reference (the normalized backend of the engine) first, then the rest."""
    native = "sqlite" if engine == "sqlite" else "postgres"
    targets = [t for t in backend_targets() if t.engine in (engine, None)]
    return sorted(targets, key=lambda t: t.backend != native)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[dict[str, SyncStore]]:
    """An open store of every backend on the engine, each on a database of its own."""
    engine = request.param
    opened: dict[str, SyncStore] = {}
    with contextlib.ExitStack() as stack:
        for target in _targets(engine):
            if target.engine is None:
                url = None
            elif engine == "sqlite":
                url = f"sqlite:///{tmp_path}/{target.backend}.db"
            else:
                url = stack.enter_context(scratch_database("statestore_diff", migrated=True))
            opened[target.id] = SyncStore(open_target(target, url)).open()
            stack.callback(opened[target.id].close)
        yield opened


def test_every_backend_answers_a_random_sequence_alike(stores: dict[str, SyncStore]) -> None:
    Backends.stores = stores
    run_state_machine_as_test(Backends, settings=_SETTINGS)
