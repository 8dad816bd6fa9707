"""What only the dual backend has: writes mirrored to the shadow, sampled read
comparison, a shadow failure that does not fail the call (unless strict), rollout by
prefix and hash, configuration from the environment. (The contract suite runs dual on
both engines too.)"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from typing import Any

import pytest

import statestore
from statestore import (
    AgentState,
    ContextItem,
    Message,
    StatePatch,
    StateStoreError,
    ValidationError,
)
from statestore.backends import dual, legacy_blob
from statestore.backends import postgres as postgres_backend
from statestore.backends import sqlite as sqlite_backend
from statestore.backends.dual import DualBackend, in_rollout, split_target
from statestore.backends.sqlite import sqlite_path
from statestore.tools.copy import copy_conversations, verify_stores


class Recorder:
    """A plugin that records what the dual backend reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, str]] = []

    @statestore.hookimpl
    def statestore_shadow_mismatch(
        self, backend: str, operation: str, conversation_id: str | None, reason: str
    ) -> None:
        self.events.append((operation, conversation_id, reason))


def _dual(url: str, recorder: Recorder | None = None, **options: Any) -> statestore.Store:
    # The built-in backends only, registered by hand as a host application may do.
    registry = statestore.Registry()
    for module in (sqlite_backend, postgres_backend, legacy_blob, dual):
        registry.register(module)
    if recorder is not None:
        registry.register(recorder)
    store = registry.open_store("dual", url, **options)
    assert isinstance(store.backend, DualBackend)
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_url(request: pytest.FixtureRequest) -> str:
    """A database URL on each engine (PostgreSQL: the session database)."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


async def _same_on_both(store: statestore.Store, conversation_id: str) -> None:
    a = await store.primary.load_state(conversation_id)
    b = await store.shadow.load_state(conversation_id)
    assert (a.user_id, a.to_dict()) == (b.user_id, b.to_dict())


async def test_writes_reach_both_sides(engine_url: str) -> None:
    """With only a URL, the primary is the normalized backend and the shadow the legacy
    layout of the same database; every kind of write leaves both equal."""
    cid = f"dual-{uuid.uuid4().hex}"
    async with _dual(engine_url) as store:
        assert store.primary.name in ("sqlite", "postgres")
        assert store.shadow.name == "legacy-blob"
        state = AgentState(
            user_input="hi",
            conversation_history=[Message(role="user", content="h\u00e9 \U0001f600")],
            memory_context=[ContextItem(content="a", relevance_score=0.2)],
        )
        await store.save_state(cid, state, user_id="u1")
        await _same_on_both(store, cid)
        state.conversation_history.append(Message(role="assistant", content="hello"))
        state.memory_context.pop(0)
        state.metadata["k"] = {"n": 1}
        await store.save_state(cid, state)
        await _same_on_both(store, cid)
        await store.update_state(
            cid,
            StatePatch(
                step_count=3, add_context=[ContextItem(content="b")], set_metadata={"x": [1]}
            ),
        )
        await _same_on_both(store, cid)
        assert await store.delete_state(cid)
        with pytest.raises(statestore.ConversationNotFound):
            await store.shadow.load_state(cid)


async def test_read_comparison_reports_differences(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With compare_reads=1, a shadow that differs is reported through the hook and the
    log, and the caller still gets the primary's answer."""
    recorder = Recorder()
    async with _dual(sqlite_url, recorder, compare_reads=1.0) as store:
        await store.save_state("c", AgentState(user_input="right"))
        assert (await store.load_state("c")).user_input == "right"
        assert recorder.events == []
        await store.shadow.save_state("c", AgentState(user_input="wrong"))
        with caplog.at_level(logging.WARNING, logger="statestore.dual"):
            assert (await store.load_state("c")).user_input == "right"
    assert recorder.events == [
        ("load_state", "c", "legacy-blob differs: state.user_input: 'right' against 'wrong'")
    ]
    assert "shadow mismatch on load_state of 'c'" in caplog.text


def _break_shadow(url: str) -> None:
    """Make every legacy-layout write fail, for real: its table is gone."""
    conn = sqlite3.connect(sqlite_path(url))
    conn.execute("DROP TABLE memory_chunks")
    conn.close()


async def test_failing_shadow_does_not_fail_the_call(tmp_path: Any) -> None:
    """A shadow that cannot write is reported, and the user's save succeeds on the
    primary."""
    primary, shadow = f"sqlite:///{tmp_path}/p.db", f"sqlite:///{tmp_path}/s.db"
    recorder = Recorder()
    async with _dual(primary, recorder, shadow=f"legacy-blob:{shadow}") as store:
        _break_shadow(shadow)
        result = await store.save_state("c", AgentState(user_input="kept"))
        assert result.version == 1
        assert (await store.load_state("c")).user_input == "kept"
    [(operation, cid, reason)] = recorder.events
    assert (operation, cid) == ("save_state", "c") and "legacy-blob failed" in reason


async def test_strict_mode_fails_the_call(tmp_path: Any) -> None:
    """In strict mode a failing shadow raises StateStoreError (the primary has the
    write)."""
    primary, shadow = f"sqlite:///{tmp_path}/p.db", f"sqlite:///{tmp_path}/s.db"
    async with _dual(primary, shadow=f"legacy-blob:{shadow}", strict=True) as store:
        _break_shadow(shadow)
        with pytest.raises(StateStoreError, match="strict"):
            await store.save_state("c", AgentState(user_input="x"))
        assert (await store.primary.load_state("c")).user_input == "x"


async def test_listing_comes_from_the_shadow_until_the_primary_serves_all(
    tmp_path: Any,
) -> None:
    """Before the copy, the old layout's conversations are on the shadow only: a list
    through dual shows them while the shadow serves any conversation (rollout below
    100), and comes from the primary once it serves every one."""
    primary, shadow = f"sqlite:///{tmp_path}/p.db", f"sqlite:///{tmp_path}/s.db"
    async with statestore.open_store("legacy-blob", shadow) as old:
        await old.save_state("old-1", AgentState(user_input="before dual"), user_id="u1")
    for percent, listed in [(0, ["new-1", "old-1"]), (50, ["new-1", "old-1"]), (100, ["new-1"])]:
        options = {"shadow": f"legacy-blob:{shadow}", "rollout_percent": percent}
        async with _dual(primary, **options) as store:
            await store.save_state("new-1", AgentState(), user_id="u1")
            page = await store.list_conversations(user_id="u1")
            assert [c.conversation_id for c in page] == listed, percent


@pytest.mark.parametrize("strict", ["maybe", "no-thanks", 2])
def test_a_strict_that_is_not_on_or_off_is_refused(strict: object) -> None:
    """``strict`` (or STATESTORE_DUAL_STRICT) that is neither on nor off is a
    ValidationError, not silently off."""
    with pytest.raises(ValidationError, match=r"^strict: "):
        statestore.open_store("dual", "sqlite:///never-opened.db", strict=strict)


async def test_rollout_by_prefix(sqlite_url: str) -> None:
    """Conversations under a rollout prefix are served by the primary, the others by
    the shadow; writes reach both either way."""
    async with _dual(sqlite_url, rollout_prefixes="new-,beta-") as store:
        for cid in ("new-1", "old-1"):
            await store.save_state(cid, AgentState(user_input="both"))
            await _same_on_both(store, cid)
        # Make the sides differ to see who answers.
        await store.primary.update_state("old-1", StatePatch(user_input="primary"))
        await store.shadow.update_state("new-1", StatePatch(user_input="shadow"))
        assert (await store.load_state("new-1")).user_input == "both"
        assert (await store.load_state("old-1")).user_input == "both"
        # A write to old-1 goes to the shadow first, then the primary follows.
        await store.update_state("old-1", StatePatch(step_count=2))
        await _same_on_both(store, "old-1")


def test_rollout_percentage_is_stable() -> None:
    """The hash split is deterministic and close to the percentage asked for."""
    ids = [f"conv-{i}" for i in range(2000)]
    chosen = [c for c in ids if in_rollout(c, 30, ())]
    assert 500 < len(chosen) < 700
    assert chosen == [c for c in ids if in_rollout(c, 30, ())]
    assert set(chosen) <= {c for c in ids if in_rollout(c, 60, ())}  # growing never moves back
    assert not any(in_rollout(c, 0, ()) for c in ids)
    assert all(in_rollout(c, 100, ()) for c in ids)
    assert in_rollout("vip-1", 0, ("vip-",))


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """STATESTORE_DUAL_* set shadow, strictness, sampling and rollout; options win."""
    monkeypatch.setenv("STATESTORE_DUAL_SHADOW", f"legacy-blob:sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("STATESTORE_DUAL_STRICT", "1")
    monkeypatch.setenv("STATESTORE_DUAL_COMPARE_READS", "0.25")
    monkeypatch.setenv("STATESTORE_DUAL_ROLLOUT_PERCENT", "10")
    store = _dual(f"sqlite:///{tmp_path}/p.db")
    assert store.strict and store.compare_reads == 0.25 and store.rollout_percent == 10
    assert "s.db" in repr(store.shadow)
    assert _dual(f"sqlite:///{tmp_path}/p.db", rollout_percent=50).rollout_percent == 50
    with pytest.raises(ValidationError, match="compare_reads"):
        _dual(f"sqlite:///{tmp_path}/p.db", compare_reads=2)
    with pytest.raises(ValidationError, match="unknown dual options"):
        _dual(f"sqlite:///{tmp_path}/p.db", shadoww="x")


def test_split_target() -> None:
    """NAME:URL, NAME alone and a bare URL are all understood."""
    assert split_target("postgres:postgresql://h/db") == ("postgres", "postgresql://h/db")
    assert split_target("legacy-blob", "sqlite:///a.db") == ("legacy-blob", "sqlite:///a.db")
    assert split_target("postgresql://h/db") == ("postgres", "postgresql://h/db")
    with pytest.raises(ValidationError):
        split_target(":sqlite:///a.db")


async def test_parallel_run_and_way_back(sqlite_url: str) -> None:
    """The documented sequence: legacy data, dual on, copy, compare (nothing differs),
    and after more dual writes the legacy layout alone still has everything (rollback)."""
    async with statestore.open_store("legacy-blob", sqlite_url) as legacy:
        for i in range(5):
            await legacy.save_state(f"c{i}", AgentState(user_input=f"old {i}"), user_id="u")
    async with _dual(sqlite_url) as store:
        stats = await copy_conversations(store.shadow, store.primary)
        assert stats.copied == 5
        await store.update_state(
            "c1", StatePatch(append_messages=[Message(role="user", content="new turn")])
        )
        await store.save_state("c9", AgentState(user_input="born in dual"), user_id="v")
        verified = await verify_stores(store.shadow, store.primary)
        assert verified.problem_count == 0 and verified.unchanged == 6
    async with statestore.open_store("legacy-blob", sqlite_url) as legacy:
        back = await legacy.load_state("c1", user_id="u")
        assert back.conversation_history[-1].content == "new turn"
        assert (await legacy.load_state("c9")).user_id == "v"


async def test_concurrent_writes_share_mirrors(engine_url: str) -> None:
    """Concurrent appends to one conversation all reach the shadow, with fewer shadow
    rewrites than writes (writers waiting for a mirror share it)."""
    cid = f"hot-{uuid.uuid4().hex}"
    async with _dual(engine_url) as store:
        await store.save_state(cid, AgentState())

        async def append(i: int) -> None:
            await store.update_state(
                cid, StatePatch(append_messages=[Message(role="user", content=f"m{i}")])
            )

        await asyncio.gather(*(append(i) for i in range(20)))
        await _same_on_both(store, cid)
        primary = await store.primary.load_state(cid)
        shadow = await store.shadow.load_state(cid)
        assert len(primary.conversation_history) == 20
        assert shadow.version < primary.version  # legacy: one snapshot per rewrite
