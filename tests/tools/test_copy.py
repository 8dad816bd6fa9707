"""Copy and verify: a legacy store with odd and corrupt rows to both normalized
backends."""

from __future__ import annotations

from typing import Any

import pytest

import statestore
from statestore import AgentState, Message, StatePatch
from statestore.core.compare import describe_difference
from statestore.tools.copy import CopyStats, Problem, copy_conversations, verify_stores

from .conftest import CORRUPT_IDS, assert_arrived, build_legacy, raw_insert


async def _copy(
    src: str, target_name: str, target_url: str, **options: Any
) -> tuple[CopyStats, list[Problem]]:
    problems: list[Problem] = []
    async with (
        statestore.open_store("legacy-blob", src) as source,
        statestore.open_store(target_name, target_url) as target,
    ):
        stats = await copy_conversations(
            source, target, batch_size=3, on_problem=problems.append, **options
        )
    return stats, problems


async def _ids(name: str, url: str) -> set[str]:
    async with statestore.open_store(name, url) as store:
        return {i.conversation_id for i in await store.list_conversations(limit=1000)}


async def _versions(name: str, url: str) -> dict[str, tuple[int, object]]:
    async with statestore.open_store(name, url) as store:
        return {
            i.conversation_id: (i.version, i.updated_at)
            for i in await store.list_conversations(limit=1000)
        }


@pytest.fixture(params=["sqlite", "postgres"])
def normalized_target(request: pytest.FixtureRequest, tmp_path: object) -> tuple[str, str]:
    """(backend name, URL) of an empty normalized store, on each engine."""
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("own_pg_url"))
    return "sqlite", f"sqlite:///{tmp_path}/target.db"


async def test_copy_legacy_to_normalized(
    normalized_target: tuple[str, str], sqlite_url: str
) -> None:
    """Every good conversation arrives equal, every bad one is reported with its id and
    reason, and a second run rewrites nothing."""
    target_name, target_url = normalized_target
    good = await build_legacy(sqlite_url)

    stats, problems = await _copy(sqlite_url, target_name, target_url)
    assert {p.conversation_id for p in problems} == CORRUPT_IDS
    assert all(p.kind == "corrupt" and p.reason for p in problems)
    assert stats.copied == len(good) and stats.unchanged == 0
    await assert_arrived((target_name, target_url), good)

    before = await _versions(target_name, target_url)
    stats, problems = await _copy(sqlite_url, target_name, target_url)
    assert stats.copied == 0 and stats.unchanged == len(good)
    assert {p.conversation_id for p in problems} == CORRUPT_IDS
    assert await _versions(target_name, target_url) == before


async def test_second_run_copies_only_what_changed(sqlite_url: str, tmp_path: object) -> None:
    """After a change to one source conversation and a new one, a second run copies
    exactly those two and leaves the others' versions alone."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    await build_legacy(sqlite_url)
    await _copy(sqlite_url, "sqlite", target_url)
    before = await _versions("sqlite", target_url)
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        await source.update_state(
            "owned", StatePatch(append_messages=[Message(role="user", content="more")])
        )
        await source.save_state("brand-new", AgentState(user_input="new"))
    stats, _ = await _copy(sqlite_url, "sqlite", target_url)
    assert stats.copied == 2
    after = await _versions("sqlite", target_url)
    changed = {cid for cid in after if after[cid] != before.get(cid)}
    assert changed == {"owned", "brand-new"}


async def test_interrupted_copy_resumes(sqlite_url: str, tmp_path: object) -> None:
    """A run that stopped half-way (here: the target got only some conversations) is
    completed by the next run, which copies only the rest."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    good = await build_legacy(sqlite_url)
    async with (
        statestore.open_store("legacy-blob", sqlite_url) as source,
        statestore.open_store("sqlite", target_url) as target,
    ):
        for cid in list(good)[:3]:
            state = await source.load_state(cid)
            await target.save_state(
                cid, AgentState.from_dict(state.to_dict()), user_id=state.user_id
            )
    stats, _ = await _copy(sqlite_url, "sqlite", target_url)
    assert stats.copied == len(good) - 3 and stats.unchanged == 3
    await assert_arrived(("sqlite", target_url), good)


async def test_owner_change_is_carried(sqlite_url: str, tmp_path: object) -> None:
    """A conversation whose owner differs on the target gets the source's owner."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        await source.save_state("c", AgentState(user_input="x"), user_id="new-owner")
    async with statestore.open_store("sqlite", target_url) as target:
        await target.save_state("c", AgentState(user_input="x"), user_id="old-owner")
    stats, problems = await _copy(sqlite_url, "sqlite", target_url)
    assert problems == [] and stats.copied == 1
    async with statestore.open_store("sqlite", target_url) as target:
        assert (await target.load_state("c")).user_id == "new-owner"


async def test_dry_run_writes_nothing(sqlite_url: str) -> None:
    """A dry run reads and validates every conversation and reports the corrupt ones."""
    good = await build_legacy(sqlite_url)
    problems: list[Problem] = []
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        stats = await copy_conversations(source, None, on_problem=problems.append)
    assert stats.read == len(good) and stats.copied == 0
    assert {p.conversation_id for p in problems} == CORRUPT_IDS


async def test_verify_only_finds_missing_different_extra(sqlite_url: str, tmp_path: object) -> None:
    """verify_stores reports a conversation missing on the target, one that differs and
    one on the target only, and writes nothing."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    good = await build_legacy(sqlite_url)
    await _copy(sqlite_url, "sqlite", target_url)
    async with statestore.open_store("sqlite", target_url) as target:
        await target.delete_state("plain")
        await target.update_state("owned", StatePatch(step_count=99))
        await target.save_state("only-here", AgentState())
    before = await _versions("sqlite", target_url)
    problems: list[Problem] = []
    async with (
        statestore.open_store("legacy-blob", sqlite_url) as source,
        statestore.open_store("sqlite", target_url) as target,
    ):
        stats = await verify_stores(source, target, batch_size=4, on_problem=problems.append)
    found = {(p.conversation_id, p.kind) for p in problems}
    assert found == {
        ("plain", "missing"),
        ("owned", "different"),
        ("only-here", "extra"),
        *((cid, "corrupt") for cid in CORRUPT_IDS),
    }
    assert stats.unchanged == len(good) - 2
    assert await _versions("sqlite", target_url) == before


async def test_copy_normalized_back_to_legacy(sqlite_url: str, tmp_path: object) -> None:
    """The way back: a copy from a normalized store to a fresh legacy store is equal."""
    middle = f"sqlite:///{tmp_path}/middle.db"
    back = f"sqlite:///{tmp_path}/back.db"
    good = await build_legacy(sqlite_url)
    await _copy(sqlite_url, "sqlite", middle)
    async with (
        statestore.open_store("sqlite", middle) as source,
        statestore.open_store("legacy-blob", back) as target,
    ):
        stats = await copy_conversations(source, target)
    assert stats.copied == len(good) and stats.problem_count == 0
    await assert_arrived(("legacy-blob", back), good)


def test_describe_difference_names_the_field() -> None:
    """The comparison names the first differing field, and 2 == 2.0 but True != 1."""
    a = AgentState(metadata={"x": [1, 2]})
    b = AgentState(metadata={"x": [1, 3]})
    assert describe_difference(a, b) == "state.metadata.x[1]: 2 against 3"
    assert (
        describe_difference(AgentState(metadata={"n": 2}), AgentState(metadata={"n": 2.0})) is None
    )
    assert describe_difference(AgentState(metadata={"n": True}), AgentState(metadata={"n": 1}))


async def test_copy_within_one_postgres_database(own_pg_url: str) -> None:
    """legacy-blob on PostgreSQL to postgres in the same database (rows written by raw
    SQL where old code would have): good ones equal, bad ones reported, second run idle."""
    good = await build_legacy(own_pg_url)
    problems: list[Problem] = []
    async with (
        statestore.open_store("legacy-blob", own_pg_url) as source,
        statestore.open_store("postgres", own_pg_url) as target,
    ):
        stats = await copy_conversations(source, target, on_problem=problems.append)
        assert stats.copied == len(good)
        assert {p.conversation_id for p in problems} == CORRUPT_IDS
        again = await copy_conversations(source, target)
        assert again.copied == 0 and again.unchanged == len(good)
    await assert_arrived(("postgres", own_pg_url), good)


async def test_delete_extra_removes_what_the_source_lost(
    normalized_target: tuple[str, str], sqlite_url: str
) -> None:
    """A source deletion stays without delete_extra, goes with it; verify finds no extra."""
    target_name, target_url = normalized_target
    good = await build_legacy(sqlite_url)
    await _copy(sqlite_url, target_name, target_url)
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        assert await source.delete_state("plain")

    stats, _ = await _copy(sqlite_url, target_name, target_url)
    assert stats.deleted is None and "deleted" not in stats.summary()
    assert "plain" in await _ids(target_name, target_url)

    deleted: list[str] = []
    stats, problems = await _copy(
        sqlite_url, target_name, target_url, delete_extra=True, on_deleted=deleted.append
    )
    assert stats.deleted == 1 and deleted == ["plain"] and "deleted 1" in stats.summary()
    assert {p.conversation_id for p in problems} == CORRUPT_IDS
    assert await _ids(target_name, target_url) == set(good) - {"plain"}

    extra: list[Problem] = []
    async with (
        statestore.open_store("legacy-blob", sqlite_url) as source,
        statestore.open_store(target_name, target_url) as target,
    ):
        await verify_stores(source, target, on_problem=extra.append)
    assert [p for p in extra if p.kind != "corrupt"] == []

    stats, _ = await _copy(sqlite_url, target_name, target_url, delete_extra=True)
    assert stats.deleted == 0 and "deleted 0" in stats.summary()


async def test_delete_extra_pages_without_skipping(
    normalized_target: tuple[str, str], sqlite_url: str
) -> None:
    """Deleting while paging the target (pages of 3) skips no extra and keeps the rest."""
    target_name, target_url = normalized_target
    async with statestore.open_store(target_name, target_url) as target:
        for i in range(20):
            await target.save_state(f"c{i:02d}", AgentState(user_input=str(i)))
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        for i in range(0, 20, 2):
            await source.save_state(f"c{i:02d}", AgentState(user_input=str(i)))
    stats, problems = await _copy(sqlite_url, target_name, target_url, delete_extra=True)
    assert problems == [] and stats.deleted == 10 and stats.unchanged == 10
    assert await _ids(target_name, target_url) == {f"c{i:02d}" for i in range(0, 20, 2)}


async def test_delete_extra_with_user_only_that_users(sqlite_url: str, tmp_path: object) -> None:
    """With user_id only that user's extras are deleted; another user's extra stays."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        for cid, owner in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")]:
            await source.save_state(cid, AgentState(user_input=cid), user_id=owner)
    await _copy(sqlite_url, "sqlite", target_url)
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        await source.delete_state("a1")
        await source.delete_state("b1")
    stats, problems = await _copy(
        sqlite_url, "sqlite", target_url, user_id="alice", delete_extra=True
    )
    assert problems == [] and stats.deleted == 1 and stats.unchanged == 1
    assert await _ids("sqlite", target_url) == {"a2", "b1"}


async def test_delete_extra_keeps_the_copy_of_a_corrupt_source(
    sqlite_url: str, tmp_path: object
) -> None:
    """A conversation the source cannot read (corrupt) keeps its copy on the target."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        await source.save_state("breaks", AgentState(user_input="fine"))
    await _copy(sqlite_url, "sqlite", target_url)
    await raw_insert(sqlite_url, "breaks", "{not json")  # a newer, corrupt snapshot
    stats, problems = await _copy(sqlite_url, "sqlite", target_url, delete_extra=True)
    assert [(p.conversation_id, p.kind) for p in problems] == [("breaks", "corrupt")]
    assert stats.deleted == 0
    async with statestore.open_store("sqlite", target_url) as target:
        assert (await target.load_state("breaks")).user_input == "fine"


async def test_dry_run_with_delete_extra_deletes_nothing(sqlite_url: str, tmp_path: object) -> None:
    """A dry run with delete_extra deletes nothing and reports no deleted count (None)."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    async with statestore.open_store("sqlite", target_url) as target:
        await target.save_state("only-on-target", AgentState())
    async with statestore.open_store("legacy-blob", sqlite_url) as source:
        await source.save_state("c", AgentState())
        stats = await copy_conversations(source, None, delete_extra=True)
    assert stats.read == 1 and stats.deleted is None and "deleted" not in stats.summary()
    assert await _ids("sqlite", target_url) == {"only-on-target"}
