"""Contract: hostile input is either stored exactly or refused before any write.

Property-based (hypothesis) round trips over every text field, JSON value and id:
whatever is accepted comes back equal; whatever is not raises ``ValidationError`` and
leaves the store as it was. The rules being checked (``core/validation.py``): NUL
characters and lone surrogates are refused in all text, JSON is finite with string keys,
signed 64-bit ints and at most 64 levels of nesting; ids are 1 to 255 characters, no
control characters, no surrounding white space. SQL-looking ids are plain data.
Examples per property are kept modest (``EXAMPLES``) so the suite stays fast.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ...core.errors import ConversationNotFound, ValidationError
from ...core.model import AgentState, ContextItem, Message
from ...core.query import LoadOptions, StatePatch
from ...core.store import Store
from ...core.validation import MAX_ID_LENGTH, MAX_JSON_DEPTH
from ._support import ContractTest, new_id

__all__ = ["TestHostileText", "TestHostileJson", "TestHostileIds", "EXAMPLES"]

EXAMPLES = 50

# One store serves every example of a test (fresh ids keep examples apart).
hostile_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_INT64 = 2**63

# Any code point, surrogates and NUL included, plus strings built to hit the edges.
_any_char = st.characters(exclude_categories=())
any_text = st.one_of(
    st.text(_any_char, max_size=30),
    st.text(max_size=30).map(lambda s: s[: len(s) // 2] + "\x00" + s[len(s) // 2 :]),
    st.text(max_size=10).map(lambda s: s + "\udc80"),
    st.sampled_from(["", " ", "\u2028", "\ufeff", "\U0010ffff", "'; --", "\\u0000"]),
    st.integers(250, 5000).map(lambda n: "x" * n),
)
_edge_ints = st.sampled_from([_INT64 - 1, _INT64, -_INT64, -_INT64 - 1, 2**64, 10**30])
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _edge_ints,
    st.floats(),  # NaN and infinities included
    any_text,
)
json_like = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(any_text, st.integers(), st.none()), inner, max_size=4),
    ),
    max_leaves=20,
)

NON_JSON: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    {"x": [1, float("nan")]},
    2**63,
    -(2**63) - 1,
    {1: "int key"},
    {None: "None key"},
    {("t",): "tuple key"},
    {"k": b"bytes"},
    {"k": {1, 2}},
    {"k": datetime(2024, 1, 1, tzinfo=UTC)},
    {"k": object()},
]

# Fixed UTC offsets from -23:59 to +23:59.
_offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _utc_ok(value: datetime) -> bool:
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


FIELDS = [
    "user_input",
    "focus_area",
    "content",
    "message_type",
    "tool_name",
    "item_content",
    "source",
    "context_type",
    "metadata_key",
    "metadata_value",
    "result_string",
]


def text_ok(value: str, *, non_empty: bool = False) -> bool:
    """Whether the rules accept ``value`` in a text field (computed independently of
    the code under test)."""
    return _BAD_TEXT.search(value) is None and not (non_empty and value == "")


def json_ok(value: Any, depth: int = 0) -> bool:
    """Whether the rules accept ``value`` as JSON whose top sits at ``depth``."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return text_ok(value)
    if isinstance(value, list | dict):
        if depth >= MAX_JSON_DEPTH:
            return False
        if isinstance(value, list):
            return all(json_ok(v, depth + 1) for v in value)
        return all(isinstance(k, str) and text_ok(k) for k in value) and all(
            json_ok(v, depth + 1) for v in value.values()
        )
    return False


def id_ok(value: str) -> bool:
    """Whether the id rules accept ``value``."""
    return (
        0 < len(value) <= MAX_ID_LENGTH
        and _BAD_TEXT.search(value) is None
        and _CONTROL.search(value) is None
        and value == value.strip()
    )


def nested(depth: int, width: int) -> Any:
    """``depth`` levels of lists around a wide object: [[...[{"k0": 0, ...}]...]]."""
    value: Any = {f"k{i}": i for i in range(width)}
    for _ in range(depth - 1):
        value = [value]
    return value


def _state_with(field: str, text: str) -> AgentState:
    """A state with ``text`` in one field (raises ValidationError where the model does)."""
    msg: dict[str, Any] = {"role": "user", "content": "c"}
    ctx: dict[str, Any] = {"content": "i", "relevance_score": 0.5}
    state: dict[str, Any] = {"user_input": "u"}
    if field == "user_input":
        state["user_input"] = text
    elif field == "focus_area":
        state["focus_areas"] = [text]
    elif field in ("content", "message_type", "tool_name"):
        msg[field] = text
    elif field == "item_content":
        ctx["content"] = text
    elif field in ("source", "context_type"):
        ctx[field] = text
    elif field == "metadata_key":
        state["metadata"] = {text: 1}
    elif field == "metadata_value":
        state["metadata"] = {"k": text}
    elif field == "result_string":
        state["last_tool_result"] = text
    return AgentState(
        conversation_history=[Message(**msg)], memory_context=[ContextItem(**ctx)], **state
    )


async def _assert_absent(store: Store, cid: str) -> None:
    with pytest.raises(ConversationNotFound):
        await store.load_state(cid)


class TestHostileText(ContractTest):
    """Arbitrary unicode in every text field: stored exactly, or refused."""

    @hostile_settings
    @given(field=st.sampled_from(FIELDS), text=any_text)
    async def test_any_text_round_trips_or_is_refused_before_writing(
        self, store: Store, field: str, text: str
    ) -> None:
        """Text with no NUL and no lone surrogate comes back equal in any field; text
        with one raises ValidationError and nothing is stored."""
        non_empty = field in ("message_type", "source", "context_type")
        cid = new_id("text")
        try:
            state = _state_with(field, text)
            await store.save_state(cid, state)
        except ValidationError:
            assert not text_ok(text, non_empty=non_empty), f"{field}={text!r} was refused"
            await _assert_absent(store, cid)
            return
        assert text_ok(text, non_empty=non_empty), f"{field}={text!r} was accepted"
        loaded = await store.load_state(cid)
        assert loaded.to_dict() == state.to_dict()

    async def test_nul_and_lone_surrogates_are_refused_everywhere(self, store: Store) -> None:
        """The NUL policy: NUL and lone surrogates are refused in every field, by
        save_state and update_state alike, and the stored state does not change."""
        cid = new_id("nul")
        await store.save_state(cid, AgentState(user_input="before"))
        for text in ["\x00", "a\x00b", "\ud800", "x\udfff", "\udc00\ud800"]:
            for field in FIELDS:
                with pytest.raises(ValidationError):
                    await store.save_state(cid, _state_with(field, text))
            patches: list[dict[str, Any]] = [
                {"user_input": text},
                {"focus_areas": [text]},
                {"last_tool_result": [text]},
                {"set_metadata": {text: 1}},
                {"set_metadata": {"k": text}},
                {"delete_metadata": [text]},
            ]
            for fields in patches:
                with pytest.raises(ValidationError):
                    await store.update_state(cid, StatePatch(**fields))
        loaded = await store.load_state(cid)
        assert (loaded.version, loaded.user_input) == (1, "before")

    @settings(hostile_settings, max_examples=EXAMPLES // 2)
    @given(stamps=st.lists(st.datetimes(timezones=_offsets), min_size=1, max_size=3))
    async def test_any_aware_timestamp_round_trips_or_is_refused(
        self, store: Store, stamps: list[datetime]
    ) -> None:
        """Aware timestamps from year 1 to 9999 at any UTC offset: messages and items
        come back at the same instant, in UTC, to the microsecond; one that is out of
        range once in UTC is a ValidationError."""
        cid = new_id("time")
        try:
            state = AgentState(
                conversation_history=[Message("user", "m", timestamp=t) for t in stamps],
                memory_context=[ContextItem("c", timestamp=t) for t in stamps],
            )
        except ValidationError:
            assert any(not _utc_ok(t) for t in stamps)
            return
        assert all(_utc_ok(t) for t in stamps)
        await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        expected = [t.astimezone(UTC) for t in stamps]
        assert [m.timestamp for m in loaded.conversation_history] == expected
        assert [c.timestamp for c in loaded.memory_context] == expected
        assert all(m.timestamp.utcoffset() == timedelta(0) for m in loaded.conversation_history)

    async def test_long_and_empty_strings_round_trip(self, store: Store) -> None:
        """Empty strings and 200,000-character strings (astral characters included)
        come back equal in messages, keys and metadata."""
        long = "🧠a\u00e9" * 66_667
        cid = new_id("long")
        state = AgentState(
            user_input="",
            focus_areas=["", long],
            last_tool_result=long,
            conversation_history=[Message("user", ""), Message("assistant", long)],
            memory_context=[ContextItem(long), ContextItem("")],
            metadata={"": "", long[:10_000]: long},
        )
        await store.save_state(cid, state)
        assert (await store.load_state(cid)).to_dict() == state.to_dict()


class TestHostileJson(ContractTest):
    """JSON values: finite, string keys, 64-bit ints, bounded depth."""

    @hostile_settings
    @given(value=json_like, where=st.sampled_from(["metadata", "result", "message", "patch"]))
    async def test_any_json_round_trips_or_is_refused_before_writing(
        self, store: Store, value: Any, where: str
    ) -> None:
        """A JSON value anywhere JSON is stored: accepted ones come back equal; NaN,
        infinities, out-of-range ints, non-string keys and bad text raise
        ValidationError and leave the stored state unchanged."""
        cid = new_id("json")
        base = await store.save_state(cid, AgentState(metadata={"keep": 1}))
        # Inside an object (metadata) the value sits one level down.
        acceptable = json_ok(value, 0 if where == "result" else 1)
        try:
            if where == "patch":
                await store.update_state(cid, StatePatch(set_metadata={"v": value}))
            else:
                state = AgentState(metadata={"keep": 1})
                if where == "metadata":
                    state.metadata["v"] = value
                elif where == "result":
                    state.last_tool_result = value
                else:
                    state.conversation_history.append(Message("tool", "r", metadata={"v": value}))
                await store.save_state(cid, state)
        except ValidationError:
            assert not acceptable, f"{value!r} was refused"
            loaded = await store.load_state(cid)
            assert loaded.version == base.version
            assert loaded.metadata == {"keep": 1} and loaded.conversation_history == []
            return
        assert acceptable, f"{value!r} was accepted"
        loaded = await store.load_state(cid)
        if where in ("metadata", "patch"):
            assert loaded.metadata == {"keep": 1, "v": value}
        elif where == "result":
            assert loaded.last_tool_result == value
        else:
            assert loaded.conversation_history[0].metadata == {"v": value}

    @settings(hostile_settings, max_examples=EXAMPLES // 2)
    @given(depth=st.integers(1, MAX_JSON_DEPTH + 8), width=st.integers(0, 300))
    async def test_deep_and_wide_json(self, store: Store, depth: int, width: int) -> None:
        """Nesting up to the limit (64 levels from the top of the value) is stored
        whole, however wide; one level more is refused."""
        cid = new_id("deep")
        value = nested(depth, width)
        if depth > MAX_JSON_DEPTH:
            with pytest.raises(ValidationError, match="deeper"):
                await store.save_state(cid, AgentState(last_tool_result=value))
            await _assert_absent(store, cid)
            return
        await store.save_state(cid, AgentState(last_tool_result=value))
        assert (await store.load_state(cid)).last_tool_result == value

    async def test_very_wide_json_round_trips(self, store: Store) -> None:
        """An object of 5,000 keys and a list of 50,000 numbers come back equal."""
        cid = new_id("wide")
        wide = {f"key {i}": i * 0.5 for i in range(5_000)}
        state = AgentState(last_tool_result=list(range(50_000)), metadata={"wide": wide})
        await store.save_state(cid, state)
        assert (await store.load_state(cid)).to_dict() == state.to_dict()

    async def test_non_json_values_are_refused_everywhere(self, store: Store) -> None:
        """NaN, infinities, out-of-range ints, non-string keys and non-JSON types are a
        ValidationError in every JSON field, and nothing is written."""
        cid = new_id("bad")
        await store.save_state(cid, AgentState(metadata={"keep": 1}))
        builders: list[Callable[[Any], AgentState]] = [
            lambda v: AgentState(metadata={"v": v}),
            lambda v: AgentState(last_tool_result=v),
            lambda v: AgentState(conversation_history=[Message("user", "x", metadata={"v": v})]),
            lambda v: AgentState(memory_context=[ContextItem("x", metadata={"v": v})]),
        ]
        for bad in NON_JSON:
            for build in builders:
                with pytest.raises(ValidationError):
                    await store.save_state(cid, build(bad))
            for fields in ({"set_metadata": {"v": bad}}, {"last_tool_result": bad}):
                with pytest.raises(ValidationError):
                    await store.update_state(cid, StatePatch(**fields))
        loaded = await store.load_state(cid)
        assert (loaded.version, loaded.metadata) == (1, {"keep": 1})

    @pytest.mark.parametrize("kind", ["list", "dict"])
    async def test_cycles_are_refused(self, store: Store, kind: str) -> None:
        """A self-referencing list or dict raises ValidationError, not RecursionError."""
        cycle: Any = []
        if kind == "list":
            cycle.append(cycle)
        else:
            cycle = {}
            cycle["self"] = cycle
        cid = new_id("cycle")
        with pytest.raises(ValidationError, match="cycle"):
            await store.save_state(cid, AgentState(metadata={"c": cycle}))
        with pytest.raises(ValidationError, match="cycle"):
            await store.save_state(cid, AgentState(last_tool_result=cycle))
        await _assert_absent(store, cid)

    async def test_bad_step_counts_are_refused(self, store: Store) -> None:
        """step_count is an int in 0..2**63-1: anything else is refused; the maximum
        itself is stored."""
        cid = new_id("step")
        bad_counts: list[Any] = [-1, 2**63, True, 1.0, "1", None]
        for step_count in bad_counts:
            with pytest.raises(ValidationError, match="step_count"):
                await store.save_state(cid, AgentState(step_count=step_count))
            await _assert_absent(store, cid)
        await store.save_state(cid, AgentState(step_count=2**63 - 1))
        assert (await store.load_state(cid)).step_count == 2**63 - 1

    async def test_value_broken_after_validation_rolls_the_whole_save_back(
        self, store: Store
    ) -> None:
        """A message whose metadata is made unencodable after it was built (its dict
        stays mutable) fails the save with ValidationError, and nothing of the save
        (scalars, earlier messages, metadata) is stored."""
        cid = new_id("half")
        state = AgentState(user_input="v1", conversation_history=[Message("user", "kept")])
        await store.save_state(cid, state)
        broken = Message("assistant", "broken", metadata={"ok": 1})
        broken.metadata["bad"] = object()  # the dict is mutable: validation is bypassed
        state.user_input = "v2"
        state.metadata["new"] = True
        state.conversation_history += [Message("user", "before"), broken, Message("user", "after")]
        with pytest.raises(ValidationError):
            await store.save_state(cid, state)
        loaded = await store.load_state(cid)
        assert loaded.version == 1
        assert loaded.user_input == "v1" and loaded.metadata == {}
        assert [m.content for m in loaded.conversation_history] == ["kept"]

    async def test_nan_put_in_metadata_after_building_is_refused(self, store: Store) -> None:
        """A NaN put into a message's or item's metadata after it was built is a
        ValidationError on save and update, never silently stored as null."""
        cid = new_id("nan")
        await store.save_state(cid, AgentState())
        message = Message("user", "x")
        message.metadata["score"] = float("nan")
        item = ContextItem("c")
        item.metadata["score"] = float("inf")
        with pytest.raises(ValidationError, match="nan"):
            await store.update_state(cid, StatePatch(append_messages=[message]))
        with pytest.raises(ValidationError, match="inf"):
            await store.update_state(cid, StatePatch(add_context=[item]))
        with pytest.raises(ValidationError, match="nan"):
            await store.save_state(cid, AgentState(conversation_history=[message]))
        loaded = await store.load_state(cid)
        assert loaded.version == 1 and loaded.conversation_history == []
        assert loaded.memory_context == []

    async def test_a_patch_changed_after_it_was_built_is_checked_again(self, store: Store) -> None:
        """A patch keeps the dicts and lists it was given: values put into them after
        it was built are checked when it is applied, and a bad one is a ValidationError
        naming the field, with nothing written (never a NaN stored as null, nor a
        conversation no load can read)."""
        cid = new_id("patch")
        await store.save_state(cid, AgentState(focus_areas=["plan"]))
        metadata: dict[str, Any] = {}
        later_nan = StatePatch(set_metadata=metadata, append_messages=[Message("user", "x")])
        metadata["score"] = float("nan")
        focus = StatePatch(focus_areas=["code"])
        focus.focus_areas.append(5)
        result: dict[str, Any] = {"rows": []}
        tool = StatePatch(last_tool_result=result)
        result["rows"].append({1, 2})
        namespace = new_id("ns")
        scores: list[float] = []
        shared_later = StatePatch(set_shared={namespace: {"scores": scores}})
        scores.append(float("inf"))
        for patch, field in [
            (later_nan, "set_metadata"),
            (focus, "focus_areas"),
            (tool, "last_tool_result"),
            (shared_later, "set_shared"),
        ]:
            with pytest.raises(ValidationError, match=field):
                await store.update_state(cid, patch)
        loaded = await store.load_state(cid, LoadOptions(shared=frozenset({namespace})))
        assert loaded.version == 1 and loaded.focus_areas == ["plan"]
        assert loaded.metadata == {} and loaded.conversation_history == []
        assert loaded.last_tool_result is None and loaded.shared == {namespace: {}}


HOSTILE_IDS = [
    "'; DROP TABLE conversation_states; --",
    "Robert'); DELETE FROM memory_chunks; --",
    '" OR "1"="1',
    "' OR 1=1 --",
    "$1",
    "?1",
    "%s %(x)s {0}",
    "\\'",
    "a\\",
    "x' UNION SELECT conversation_id FROM conversation_states --",
    "json_each('[1]')",
    "ü漢字🙂 inner space",
    "a" * MAX_ID_LENGTH,
    "🙂" * MAX_ID_LENGTH,
]

BAD_IDS: list[Any] = [
    "",
    " leading",
    "trailing ",
    "\u3000ideographic space",
    "new\nline",
    "tab\t",
    "del\x7f",
    "nul\x00",
    "sur\udc80",
    "a" * (MAX_ID_LENGTH + 1),
    123,
    b"bytes",
]


class TestHostileIds(ContractTest):
    """Conversation and user ids: documented rules, enforced; SQL is just data."""

    async def test_sql_looking_ids_are_plain_data(self, store: Store) -> None:
        """Quotes, semicolons and SQL fragments as conversation and user ids work in
        every operation and touch no other conversation."""
        bystander = new_id("bystander")
        await store.save_state(bystander, AgentState(user_input="untouched"), user_id="u")
        for hostile in HOSTILE_IDS:
            await self._round_trip_id(store, hostile)
        assert (await store.load_state(bystander)).user_input == "untouched"

    async def _round_trip_id(self, store: Store, hostile: str) -> None:
        cid = hostile if len(hostile) == MAX_ID_LENGTH else f"{hostile}{new_id('')}"
        await store.save_state(cid, AgentState(user_input=hostile), user_id=hostile)
        await store.update_state(
            cid, StatePatch(append_messages=[Message("user", hostile)]), user_id=hostile
        )
        loaded = await store.load_state(cid, user_id=hostile)
        assert (loaded.conversation_id, loaded.user_id, loaded.user_input) == (
            cid,
            hostile,
            hostile,
        )
        listed = await store.list_conversations(user_id=hostile)
        assert [c.conversation_id for c in listed] == [cid]
        await store.list_conversations(after=hostile, limit=1)  # a bound parameter too
        with pytest.raises(ConversationNotFound):
            await store.load_state(cid, user_id="someone-else")
        assert await store.delete_state(cid, user_id=hostile)
        await _assert_absent(store, cid)

    async def test_bad_ids_are_refused_by_every_operation(self, store: Store) -> None:
        """An empty, too long, padded, control-character or non-string id raises
        ValidationError from every operation, as conversation id and as user id."""
        good = new_id("good")
        for bad in BAD_IDS:
            await self._refused_everywhere(store, bad, good)
        await _assert_absent(store, good)

    async def _refused_everywhere(self, store: Store, bad: Any, good: str) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.save_state(bad, AgentState()),
            lambda: store.load_state(bad),
            lambda: store.update_state(bad, StatePatch(step_count=1)),
            lambda: store.delete_state(bad),
            lambda: store.save_state(good, AgentState(), user_id=bad),
            lambda: store.load_state(good, user_id=bad),
            lambda: store.update_state(good, StatePatch(step_count=1), user_id=bad),
            lambda: store.delete_state(good, user_id=bad),
            lambda: store.list_conversations(user_id=bad),
            lambda: store.list_conversations(after=bad),
        ]
        for call in calls:
            with pytest.raises(ValidationError):
                await call()

    @settings(hostile_settings, max_examples=EXAMPLES // 2)
    @given(conversation_id=st.text(_any_char, max_size=300), user_id=any_text)
    async def test_any_id_round_trips_or_is_refused(
        self, store: Store, conversation_id: str, user_id: str
    ) -> None:
        """Arbitrary strings as ids: those the rules allow are stored and found again
        under exactly that id; the others raise ValidationError and store nothing."""
        cid = conversation_id + new_id("") if len(conversation_id) < 200 else conversation_id
        acceptable = id_ok(cid) and id_ok(user_id)
        try:
            await store.save_state(cid, AgentState(user_input="x"), user_id=user_id)
        except ValidationError:
            assert not acceptable, f"{cid!r}/{user_id!r} was refused"
            if id_ok(cid):
                await _assert_absent(store, cid)
            return
        assert acceptable, f"{cid!r}/{user_id!r} was accepted"
        loaded = await store.load_state(cid, user_id=user_id)
        assert (loaded.conversation_id, loaded.user_id) == (cid, user_id)
        listed = await store.list_conversations(user_id=user_id)
        assert cid in [c.conversation_id for c in listed]
        assert await store.delete_state(cid, user_id=user_id)
