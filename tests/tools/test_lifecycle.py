"""Export/import, prune, and the backends' maintenance (stats, vacuum)."""

from __future__ import annotations

import ast
import io
import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

import statestore
from statestore import AgentState, Message, StateStoreError, ValidationError
from statestore.backends.sqlite import sqlite_path
from statestore.core.maintenance import Maintenance, maintenance_of
from statestore.tools.copy import Problem
from statestore.tools.lifecycle import (
    export_conversations,
    import_conversations,
    parse_age,
    prune_conversations,
)

from .conftest import CORRUPT_IDS, assert_arrived, build_legacy

SRC = Path(statestore.__file__).parent


async def _export(name: str, url: str, **kw: object) -> tuple[bytes, list[Problem]]:
    out = io.BytesIO()
    problems: list[Problem] = []
    async with statestore.open_store(name, url) as store:
        await export_conversations(store, out, on_problem=problems.append, **kw)  # type: ignore[arg-type]
    return out.getvalue(), problems


async def test_export_import_round_trip(sqlite_url: str, tmp_path: object) -> None:
    """Export then import gives every good conversation back exactly (owner included),
    corrupt ones are reported on export, and importing again writes nothing."""
    good = await build_legacy(sqlite_url)
    data, problems = await _export("legacy-blob", sqlite_url)
    assert {p.conversation_id for p in problems} == CORRUPT_IDS
    lines = data.splitlines()
    assert len(lines) == len(good)
    record = orjson.loads(next(x for x in lines if b'"owned"' in x))
    assert record["user_id"] == "alice" and record["state"] == good["owned"][1].to_dict()

    target_url = f"sqlite:///{tmp_path}/imported.db"
    async with statestore.open_store("sqlite", target_url) as store:
        stats = await import_conversations(store, lines)
        assert stats.copied == len(good) and stats.problem_count == 0
        again = await import_conversations(store, lines)
        assert again.copied == 0 and again.unchanged == len(good)
    await assert_arrived(("sqlite", target_url), good)
    # And the export of the imported store is the same document for each conversation.
    data2, _ = await _export("sqlite", target_url)
    assert [orjson.loads(x)["state"] for x in data2.splitlines()] == [
        orjson.loads(x)["state"]
        for x in sorted(lines, key=lambda x: orjson.loads(x)["conversation_id"])
    ]


async def test_export_one_user(sqlite_url: str) -> None:
    """--user exports that user's conversations only."""
    await build_legacy(sqlite_url)
    data, _ = await _export("legacy-blob", sqlite_url, user_id="alice")
    assert [orjson.loads(x)["conversation_id"] for x in data.splitlines()] == ["owned"]


async def test_import_reports_bad_lines(sqlite_url: str) -> None:
    """A line that is not JSON, has unknown keys or an invalid state is reported with its
    line number and skipped; the good lines are imported."""
    good = orjson.dumps(
        {"conversation_id": "ok", "user_id": None, "state": AgentState(user_input="x").to_dict()}
    )
    lines = [
        b"{broken",
        good,
        orjson.dumps({"conversation_id": "typo", "stat": {}}),
        b"",
        orjson.dumps({"conversation_id": "bad-state", "state": {"step_count": -1}}),
    ]
    problems: list[Problem] = []
    async with statestore.open_store("sqlite", sqlite_url) as store:
        stats = await import_conversations(store, lines, on_problem=problems.append)
        assert (await store.load_state("ok")).user_input == "x"
    assert stats.copied == 1
    assert [(p.conversation_id, p.kind) for p in problems] == [
        ("line 1", "invalid"),
        ("typo", "invalid"),
        ("bad-state", "invalid"),
    ]
    assert "line 5" in problems[2].reason
    # Named "line 1" already: the reason does not repeat it, nor name a "line" field.
    assert problems[0].reason.startswith("not JSON: ")
    assert problems[1].reason == "line 3: unknown keys ['stat']"


def test_parse_age() -> None:
    """Ages take s/m/h/d/w units; anything else is a ValidationError."""
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(ValidationError):
        parse_age("30 days")


async def test_ages_beyond_the_calendar(sqlite_url: str) -> None:
    """An age too long for a timedelta is a ValidationError; one reaching back before
    year 1 prunes nothing (nothing was updated that long ago)."""
    with pytest.raises(ValidationError, match="too long"):
        parse_age("99999999999d")
    async with statestore.open_store("sqlite", sqlite_url) as store:
        await store.save_state("kept", AgentState())
        assert await prune_conversations(store, parse_age("1000000d")) == 0
        assert await prune_conversations(store, timedelta.max) == 0
        assert [i.conversation_id for i in await store.list_conversations()] == ["kept"]


def _age_conversation(url: str, conversation_id: str, when: str) -> None:
    conn = sqlite3.connect(sqlite_path(url))
    with conn:
        conn.execute(
            "UPDATE conversation_states SET updated_at = ? WHERE conversation_id = ?",
            (when, conversation_id),
        )
    conn.close()


async def test_prune_by_last_update(sqlite_url: str) -> None:
    """Prune removes exactly the conversations last updated before the cutoff (of one
    user when asked), in pages; a dry run removes nothing."""
    async with statestore.open_store("sqlite", sqlite_url) as store:
        for i in range(7):
            await store.save_state(f"c{i}", AgentState(), user_id="u" if i % 2 else None)
    for i in (0, 1, 2, 3):
        _age_conversation(sqlite_url, f"c{i}", "2020-01-01T00:00:00.000000+00:00")
    removed: list[str] = []
    async with statestore.open_store("sqlite", sqlite_url) as store:
        n = await prune_conversations(store, timedelta(days=30), dry_run=True, batch_size=2)
        assert n == 4 and len(await store.list_conversations()) == 7
        n = await prune_conversations(
            store,
            timedelta(days=30),
            user_id="u",
            batch_size=2,
            on_removed=lambda info: removed.append(info.conversation_id),
        )
        assert n == 2 and removed == ["c1", "c3"]
        n = await prune_conversations(store, timedelta(days=30), batch_size=2)
        assert n == 2
        left = [i.conversation_id for i in await store.list_conversations()]
    assert left == ["c4", "c5", "c6"]


async def test_stats_counts_both_layouts(sqlite_url: str) -> None:
    """The backend's storage_stats counts conversations, rows and bytes per table of
    both layouts and ranks the largest; legacy-blob on the same file says the same."""
    good = await build_legacy(sqlite_url)
    async with (
        statestore.open_store("legacy-blob", sqlite_url) as source,
        statestore.open_store("sqlite", sqlite_url) as target,
    ):
        state = await source.load_state("big")
        await target.save_state("big", AgentState.from_dict(state.to_dict()))
        await target.save_state("small", AgentState())
        stats = await maintenance_of(target).storage_stats(top=1)
        same = await maintenance_of(source).storage_stats(top=1)
    assert stats.engine == "sqlite"
    assert stats.conversations == 2
    assert stats.legacy_conversations == len(good) + len(CORRUPT_IDS)
    assert stats.rows["conversation_messages"] == 302
    assert stats.largest[0][0] == "big" and stats.largest[0][1] == 302
    assert stats.largest_legacy[0][0] == "big"
    assert stats.bytes["conversation_messages"] > 500_000
    assert same == stats


@pytest.mark.postgres
async def test_stats_and_vacuum_on_postgres(postgres_url: str) -> None:
    """On PostgreSQL the backend counts rows, sizes tables with their indexes and
    vacuums them."""
    async with statestore.open_store("postgres", postgres_url) as store:
        big = [Message(role="user", content="x" * 1000) for _ in range(50)]
        await store.save_state("stats-big", AgentState(conversation_history=big))
        stats = await maintenance_of(store).storage_stats(top=100)
        assert (
            "VACUUM (ANALYZE) done on conversation_states" in await maintenance_of(store).vacuum()
        )
        await store.delete_state("stats-big")
    assert stats.engine == "postgresql"
    assert stats.rows["conversation_messages"] >= 50
    assert stats.bytes["conversation_messages"] >= 50_000
    assert ("stats-big", 50, 0, 50_000) in stats.largest


async def test_vacuum_shrinks_the_sqlite_file(sqlite_url: str) -> None:
    """After deleting a large conversation the file keeps its pages until the
    backend's vacuum(), which gives them back; nothing else is lost."""
    path = sqlite_path(sqlite_url)

    def on_disk() -> int:
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    async with statestore.open_store("sqlite", sqlite_url) as store:
        big = [Message(role="user", content="y" * 2000) for _ in range(500)]
        await store.save_state("big", AgentState(conversation_history=big))
        await store.save_state("kept", AgentState(user_input="stay"))
        await store.delete_state("big")
        upkeep = maintenance_of(store)
        assert "does not shrink the file" in upkeep.vacuum_advice()
        before = on_disk()
        assert before > 500 * 2000
        assert await upkeep.vacuum() == "SQLite: VACUUM and ANALYZE done."
        assert on_disk() < 100_000
        assert (await store.load_state("kept")).user_input == "stay"


def test_maintenance_is_optional() -> None:
    """A store without Maintenance is a clear error naming it, not an AttributeError."""

    class NoUpkeep:
        name = "memory"

    assert not isinstance(NoUpkeep(), Maintenance)
    with pytest.raises(StateStoreError, match="the memory backend offers no table statistics"):
        maintenance_of(NoUpkeep())


DRIVERS = ("sqlite3", "aiosqlite", "asyncpg", "sqlalchemy", "alembic")


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports (relative imports resolved to statestore.*)."""
    found = set()
    package = "statestore." + ".".join(path.parent.relative_to(SRC).parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            found.add(f"{base}.{node.module}" if base and node.module else node.module or base)
    return found


@pytest.mark.parametrize("path", sorted((SRC / "tools").glob("*.py")), ids=lambda p: p.name)
def test_tools_use_the_public_store_api_only(path: Path) -> None:
    """A tool imports no database driver and no backend: it works through the store."""
    modules = imported_modules(path)
    assert not {m for m in modules if m.split(".")[0] in DRIVERS}
    assert not {m for m in modules if m.startswith("statestore.backends")}
