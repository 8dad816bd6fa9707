"""ADK's own session-service tests, run against StatestoreSessionService on SQLite and
on PostgreSQL.

ADK's ``tests/unittests/sessions/test_session_service.py`` holds the contract every
``BaseSessionService`` owes its callers: its tests take a ``session_service`` fixture
that ADK parametrizes over its own services (in-memory, database, SQLite, ...). Here
that fixture (and the module's ``get_session_service()``) give our service instead,
over a fresh database per test; see ``adk_conformance.py``. The tests that construct
one of ADK's services by hand to check that service's internals are deselected, each
with its reason, and listed in this test's output.

Where the tests come from: the release's source, never this repository.
``STATESTORE_ADK_TESTS`` may name a directory holding ``tests/unittests/sessions/``;
otherwise the source release on PyPI (``tests/integrations/sdist.py``). google-adk's
sdist ships ``src/`` only, so without the variable the test skips, naming it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ..sdist import framework_tests
from .conftest import ENGINES

ADK_VERSION = importlib.metadata.version("google-adk")
UPSTREAM = Path("tests/unittests/sessions/test_session_service.py")
HARNESS = Path(__file__).with_name("adk_conformance.py")
# ADK's contract tests that must run and pass on each engine (fewer means the
# selection or the download went wrong, not that the service got better).
MIN_PASSED = 40


def upstream_tests() -> Path:
    """The file of ADK's session-service tests for the installed version."""
    override = os.environ.get("STATESTORE_ADK_TESTS")
    if override:
        root = Path(override)
    else:
        root = framework_tests("google-adk", ADK_VERSION)
        if not (root / UPSTREAM).is_file():
            # Not something CI can install: the sdist ships src/ only, and the
            # repository is on GitHub, which only package registries are reached from.
            pytest.skip(
                f"google-adk {ADK_VERSION}'s source release on PyPI holds no tests; set "
                "STATESTORE_ADK_TESTS to a checkout of google/adk-python at "
                f"v{ADK_VERSION} to run ADK's own session-service tests"
            )
    path = root / UPSTREAM
    assert path.is_file(), f"{path} is missing: ADK moved its session-service tests"
    return path


def _results(junit: Path) -> dict[str, list[str]]:
    outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "?")
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes["failed"].append(name)
        elif case.find("skipped") is not None:
            outcomes["skipped"].append(name)
        else:
            outcomes["passed"].append(name)
    return outcomes


@pytest.mark.parametrize("engine", ENGINES)
def test_adk_session_service_tests_pass(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """ADK's session-service contract tests pass against StatestoreSessionService."""
    upstream = upstream_tests()
    package = tmp_path / "adk_sessions"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    shutil.copyfile(upstream, package / "test_session_service.py")
    shutil.copyfile(HARNESS, package / "_conformance.py")
    (package / "conftest.py").write_text(
        "from ._conformance import pytest_collection_modifyitems, substitute_services  # noqa\n",
        encoding="utf-8",
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    report, junit = tmp_path / "deselected.json", tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_ADK")}
    env.update(STATESTORE_ADK_ENGINE=engine, STATESTORE_ADK_REPORT=str(report))
    if engine == "postgres":
        env["STATESTORE_ADK_PG_TEMPLATE"] = request.getfixturevalue("adk_pg_template")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "--junitxml", str(junit), "adk_sessions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert junit.exists(), output
    outcomes = _results(junit)
    deselected = json.loads(report.read_text(encoding="utf-8"))
    print(f"\nADK {ADK_VERSION} session-service tests on {engine}: {upstream}")
    for outcome, names in outcomes.items():
        print(f"{outcome}: {len(names)}")
    print(f"deselected: {len(deselected)}")
    for entry in deselected:
        print(f"  {entry['test']}: {entry['reason']}")
    assert result.returncode == 0, output
    assert not outcomes["failed"], output
    assert len(outcomes["passed"]) >= MIN_PASSED, output
