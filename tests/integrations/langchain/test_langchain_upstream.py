"""langchain-core's own tests of chat message histories, from its source release, run
with ``InMemoryChatMessageHistory`` replaced by ``StatestoreChatMessageHistory`` over a
fresh SQLite file and a fresh PostgreSQL database (upstream_plugin.py does the
replacing), with the store given as an async ``Store`` and as a ``SyncStore``.

- ``tests/unit_tests/runnables/test_history.py``: every ``RunnableWithMessageHistory``
  test (sync, async, streaming, dict and message inputs and outputs, custom config
  fields), all of them.
- ``tests/unit_tests/chat_history/test_chat_history.py``: the history's async and sync
  interface. Deselected: ``test_chat_history_deprecated[StoreBackedHistory]``, which
  checks that the in-memory class's docstring announces its deprecation (a fact about
  that class's documentation, not about behaviour).

Upstream's ``conftest.py`` files are loaded as upstream runs them: every test runs
inside their ``blockbuster`` fixture, which fails a test when code called from
LangChain (the history included) makes a blocking call on the event loop. They need
``blockbuster`` and ``pytest-mock`` (in the dev extra); without them the runs leave
upstream's conftest out (``--noconftest``, LangSmith tracing switched off through the
environment instead), and test_langchain_history.py's own blocking-call test shows a
skip.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import statestore
from statestore.testing.plugin import scratch_database

from ..sdist import framework_tests

HERE = Path(__file__).resolve().parent
VERSION = importlib.metadata.version("langchain-core")

FILES = [
    "tests/unit_tests/runnables/test_history.py",
    "tests/unit_tests/chat_history/test_chat_history.py",
]
DESELECTED = {
    # It asserts that InMemoryChatMessageHistory.__doc__ announces the deprecation:
    # documentation of the in-memory class, not behaviour of a history.
    "tests/unit_tests/chat_history/test_chat_history.py::test_chat_history_deprecated"
    "[StoreBackedHistory]",
}
# test_history.py of langchain-core 1.8.3 has 23 tests; each must run and pass, so
# none may vanish unnoticed (a later release may add more).
HISTORY_TESTS = 23

# What langchain-core's tests/unit_tests/conftest.py imports.
UPSTREAM_CONFTEST = all(
    importlib.util.find_spec(name) is not None for name in ("blockbuster", "pytest_mock")
)

INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
    ignore::langchain_core._api.beta_decorator.LangChainBetaWarning
markers =
    requires: mark tests as requiring a specific library
    compile: mark placeholder test used to compile integration tests without running them
"""


def _run_upstream(
    backend: str, url: str, kind: str, tmp_path: Path
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Run the upstream files against ``backend`` at ``url``; return each test's
    outcome and the fixtures it ran with, by node id."""
    root = framework_tests("langchain-core", VERSION)
    ini = tmp_path / "pytest.ini"
    ini.write_text(INI, encoding="utf-8")
    report = tmp_path / "report.xml"
    fixtures = tmp_path / "fixtures.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STATESTORE_", "LANGCHAIN_", "LANGSMITH_"))
    }
    env |= {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])
        ),
        "LANGSMITH_TRACING": "false",
        "STATESTORE_LANGCHAIN_BACKEND": backend,
        "STATESTORE_LANGCHAIN_URL": url,
        "STATESTORE_LANGCHAIN_STORE": kind,
        "STATESTORE_LANGCHAIN_FIXTURES": str(fixtures),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(ini),
        "--rootdir",
        str(root),
        *([] if UPSTREAM_CONFTEST else ["--noconftest"]),
        "-p",
        "no:cacheprovider",
        "-p",
        "integrations.langchain.upstream_plugin",
        "-q",
        f"--junitxml={report}",
        *(f"--deselect={node}" for node in sorted(DESELECTED)),
        *FILES,
    ]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        node = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        failed = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[node] = failed[0] if failed else "passed"
    return outcomes, json.loads(fixtures.read_text(encoding="utf-8"))


def _conversations(backend: str, url: str) -> list[str]:
    async def ids() -> list[str]:
        async with statestore.open_store(backend, url=url) as store:
            found = await store.list_conversations(prefix="upstream-", limit=10_000)
            return [info.conversation_id for info in found]

    return asyncio.run(ids())


def _check(backend: str, url: str, kind: str, tmp_path: Path) -> None:
    outcomes, fixtures = _run_upstream(backend, url, kind, tmp_path)
    history = [node for node in outcomes if "test_history.py" in node]
    assert len(history) >= HISTORY_TESTS, sorted(history)
    not_passed = {node: outcome for node, outcome in outcomes.items() if outcome != "passed"}
    assert not not_passed
    assert any("test_in_memory_history_initialization" in node for node in outcomes)
    # The histories the tests used were ours: their conversations are in the database.
    assert len(_conversations(backend, url)) >= HISTORY_TESTS
    assert fixtures.keys() == outcomes.keys()
    if UPSTREAM_CONFTEST:
        assert all("blockbuster" in names for names in fixtures.values())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_upstream_on_sqlite(kind: str, tmp_path: Path) -> None:
    """langchain-core's history tests pass over a fresh SQLite file."""
    _check("sqlite", f"sqlite:///{tmp_path}/upstream.db", kind, tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_upstream_on_postgres(kind: str, tmp_path: Path) -> None:
    """langchain-core's history tests pass over a fresh PostgreSQL database."""
    with scratch_database("statestore_langchain", migrated=True) as url:
        _check("postgres", url, kind, tmp_path)
