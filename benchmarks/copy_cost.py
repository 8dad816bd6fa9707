"""What a copy off the blob costs: legacy-blob on SQLite -> postgres.

Builds a legacy SQLite store of N conversations (default 10,000, each with M messages,
3 context items and some metadata, written as old code did: one JSON document per
row), creates a fresh PostgreSQL database, and runs ``statestore copy`` as a child
process three times: the first copy, a second run (nothing changed: nothing written)
and ``--verify-only``. Prints wall time, rate and the child's peak RSS for each.

    .venv/bin/python benchmarks/copy_cost.py                  # 10,000 conversations
    .venv/bin/python benchmarks/copy_cost.py -n 2000 -m 50     # other shapes

PostgreSQL comes from STATESTORE_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres); the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

import statestore
from statestore import AgentState, ContextItem, Message
from statestore.backends.sql import migrate

SERVER = os.environ.get(
    "STATESTORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def document(i: int, messages: int) -> str:
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    state = AgentState(
        user_input=f"question {i}",
        focus_areas=["billing"],
        step_count=messages // 2,
        last_tool_result={"ok": True, "rows": [i, i + 1]},
        conversation_history=[
            Message(
                role="user" if j % 2 == 0 else "assistant",
                content=f"turn {j} of conversation {i}: " + "lorem ipsum " * 8,
                timestamp=start + timedelta(seconds=j),
            )
            for j in range(messages)
        ],
        memory_context=[
            ContextItem(content=f"fact {k}", relevance_score=k / 4, timestamp=start)
            for k in range(3)
        ],
        metadata={"channel": "web", "n": i},
    )
    return orjson.dumps(state.to_dict()).decode()


async def build_legacy(url: str, path: Path, n: int, messages: int) -> None:
    async with statestore.open_store("legacy-blob", url):  # creates and migrates the file
        pass
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO memory_chunks (user_id, conversation_id, content, created_at) "
            "VALUES (?, ?, ?, ?)",
            (
                (
                    f"user-{i % 100}",
                    f"conv-{i:06d}",
                    document(i, messages),
                    "2025-01-01T00:00:00.000000+00:00",
                )
                for i in range(n)
            ),
        )
    conn.close()


async def admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run_copy(argv: list[str], log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS of this child in MB, exit status)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "statestore.cli", "copy", *argv, "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    text = log.read_text().strip()
    if code not in (0, 1):
        sys.exit(f"copy failed: {text}")
    print("   ", "\n    ".join(text.splitlines()[-5:]))
    return seconds, usage.ru_maxrss / 1024, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--conversations", type=int, default=10_000)
    parser.add_argument("-m", "--messages", type=int, default=20, help="per conversation")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "legacy.db"
        source = f"sqlite:///{path}"
        t0 = time.perf_counter()
        asyncio.run(build_legacy(source, path, args.conversations, args.messages))
        size = path.stat().st_size / 1e6
        print(
            f"legacy store: {args.conversations} conversations x {args.messages} messages, "
            f"{size:.1f} MB, built in {time.perf_counter() - t0:.1f}s"
        )
        name = f"statestore_copy_cost_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        target = SERVER.rpartition("/")[0] + "/" + name
        try:
            asyncio.run(migrate.upgrade(target))
            common = ["--from", f"legacy-blob:{source}", "--to", f"postgres:{target}"]
            common += ["--jobs", str(args.jobs), "--batch-size", str(args.batch_size)]
            common += ["--report", str(Path(tmp) / "report.jsonl")]
            for label, extra in (
                ("first copy", []),
                ("second run (nothing changed)", []),
                ("verify-only", ["--verify-only"]),
            ):
                seconds, peak_mb, status = run_copy(common + extra, Path(tmp) / "copy.log")
                rate = args.conversations / seconds
                print(
                    f"{label:<30} {seconds:7.1f}s  {rate:7.0f} conversations/s  "
                    f"peak RSS {peak_mb:6.0f} MB  exit {status}"
                )
        finally:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
