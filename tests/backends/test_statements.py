"""The statements shipped compiled (``backends/sql/precompiled.json``) are what the
builders compile to today, and with them opening a store, loading, listing and a
turn's writes never import SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from statestore.backends.sql import normalized, normalized_sql, precompile
from statestore.backends.sql.statements import PRECOMPILED


def test_precompiled_statements_are_current() -> None:
    """Regenerate with ``python -m statestore.backends.sql.precompile`` when this
    fails (a table or a builder changed)."""
    shipped = json.loads(PRECOMPILED.read_text("utf-8"))
    fresh = json.loads(json.dumps(precompile.compile_all()))
    assert shipped.keys() == fresh.keys()
    for engine in fresh:
        stale = sorted(k for k in fresh[engine] if shipped[engine].get(k) != fresh[engine][k])
        assert stale == [], f"{engine}: stale or missing statements {stale[:5]}"
        assert shipped[engine].keys() == fresh[engine].keys()


def test_the_loaded_message_row_has_the_width_the_backend_reads() -> None:
    assert len(normalized_sql.MESSAGE_COLUMNS) == normalized._STATE_AT


def test_a_store_reads_and_writes_without_sqlalchemy(tmp_path: Path) -> None:
    """A fresh interpreter opens a migrated SQLite file, loads, lists, appends and
    saves (the shapes shipped compiled), and has not imported SQLAlchemy."""
    url = f"sqlite:///{tmp_path}/s.db"
    code = f"""
import asyncio, json, sys
import statestore
from statestore import AgentState, LoadOptions, Message, StatePatch

async def main():
    async with statestore.open_store("sqlite", url={url!r}) as store:
        await store.save_state("c", AgentState(conversation_history=[Message("user", "hi")]))
        state = await store.load_state("c")
        state.conversation_history.append(Message("assistant", "hello"))
        state.step_count += 1
        await store.save_state("c", state)
        await store.update_state("c", StatePatch(append_messages=[Message("user", "more")]))
        await store.load_state("c", LoadOptions.smart())
        await store.list_conversations()
        assert len((await store.load_state("c")).conversation_history) == 3

asyncio.run(main())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))))
"""
    # Migrate first, in another process: creating the schema is Alembic's work.
    subprocess.run(
        [sys.executable, "-m", "statestore.cli", "migrate", "--url", url],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_a_window_comes_out_in_seq_order_whatever_order_the_union_gives() -> None:
    """UNION ALL promises no order: the state row is found by its NULL seq and the
    window put in seq order by the client, whatever order the rows came in."""
    width = normalized._STATE_AT
    state = (*([None] * width), "owner", "input")
    window = [(seq, *([f"m{seq}"] * (width - 1)), *([None] * 2)) for seq in (7, 8, 9)]
    for rows in (
        [state, *window],
        [*reversed(window), state],
        [window[1], state, window[2], window[0]],
    ):
        row, messages = normalized._split_state_and_window(list(rows))
        assert tuple(row) == ("owner", "input")
        assert [m[0] for m in messages] == [7, 8, 9]
        assert all(len(m) == width for m in messages)
