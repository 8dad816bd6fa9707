"""openai-agents' own tests of its session store, run against StatestoreSession.

The tests of the installed openai-agents release that use ``SQLiteSession`` (its
session tests and the runner tests that keep history in one) run from the release's
source archive, in a pytest process of their own with the release's own settings, with
``SQLiteSession`` replaced by ``StatestoreSession`` over a fresh statestore database
(``statestore_sdk_plugin.py``): once on SQLite, once on PostgreSQL. The tests that are
about SQLiteSession's own machinery are deselected there, each with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from statestore.testing.plugin import scratch_database

from ..sdist import framework_tests

AGENTS_VERSION = version("openai-agents")
HERE = Path(__file__).resolve().parent

# The release's test files that use SQLiteSession (``grep -rl SQLiteSession tests``),
# but for the tests of other session classes (AsyncSQLiteSession,
# AdvancedSQLiteSession) and of the package's import side effects. Within them, only
# the tests that use SQLiteSession run (statestore_sdk_plugin.uses_sqlite_session).
UPSTREAM_FILES = [
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/memory/test_compaction_suffix.py",
    "tests/memory/test_compaction_model_visibility.py",
    "tests/memory/test_openai_responses_compaction_session.py",
    "tests/extensions/memory/test_encrypt_session.py",
    "tests/test_agent_runner.py",
    "tests/test_agent_runner_streamed.py",
    "tests/test_max_turns.py",
    "tests/test_soft_cancel.py",
    "tests/test_tool_batch_failure_history.py",
    "tests/test_native_tool_failure_history.py",
    "tests/test_tool_failure_boundaries.py",
    "tests/test_programmatic_tool_calling.py",
    "tests/test_run_impl_resume_paths.py",
    "tests/sandbox/test_memory.py",
]

# Fewer would mean the selection (or the release) changed: look before lowering it.
MIN_TESTS_WITH_A_SESSION = 300


def run_upstream(engine: str, workdir: Path, template: str = "") -> dict[str, Any]:
    """Run the upstream tests on ``engine``; return the plugin's report."""
    root = framework_tests("openai-agents", AGENTS_VERSION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_SDK_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        STATESTORE_SDK_ENGINE=engine,
        STATESTORE_SDK_WORKDIR=str(workdir),
        STATESTORE_SDK_POSTGRES_TEMPLATE=template,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "statestore_sdk_plugin",
            *UPSTREAM_FILES,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = f"stdout:\n{result.stdout[-20000:]}\nstderr:\n{result.stderr[-5000:]}"
    assert result.returncode == 0, output
    report: dict[str, Any] = json.loads((workdir / "report.json").read_text(encoding="utf-8"))
    return report


def check_report(report: dict[str, Any], engine: str) -> None:
    collection = report.pop("__collection__")
    assert not collection["stale_deselections"], (
        "deselected tests that no longer exist: " + ", ".join(collection["stale_deselections"])
    )
    outcomes = {nodeid: entry["outcome"] for nodeid, entry in report.items()}
    assert set(outcomes) == set(collection["selected"])
    bad = {nodeid: outcome for nodeid, outcome in outcomes.items() if outcome != "passed"}
    assert not bad, bad
    with_session = sorted(nodeid for nodeid, entry in report.items() if entry["used_session"])
    assert len(with_session) >= MIN_TESTS_WITH_A_SESSION, len(with_session)
    print(
        f"openai-agents {AGENTS_VERSION} on {engine}: {len(outcomes)} passed "
        f"({len(with_session)} of them made a StatestoreSession), "
        f"{len(collection['deselected'])} deselected as SQLiteSession internals"
    )


def test_sdk_session_tests_on_sqlite(tmp_path: Path) -> None:
    """The SDK's session tests pass with every SQLiteSession a StatestoreSession on a
    SQLite file of its own."""
    check_report(run_upstream("sqlite", tmp_path), "sqlite")


@pytest.mark.postgres
def test_sdk_session_tests_on_postgres(tmp_path: Path) -> None:
    """The same tests with each database a PostgreSQL database of its own (copied from
    a migrated template)."""
    with scratch_database("statestore_sdk_template", migrated=True) as template:
        check_report(run_upstream("postgresql", tmp_path, template), "postgresql")
