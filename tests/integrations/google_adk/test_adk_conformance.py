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
otherwise the source release on PyPI (``tests/integrations/sdist.py``), and when
that holds no tests (google-adk's sdist ships ``src/`` only) the release's tag on
GitHub, downloaded once into the same git-ignored cache. Without a network the test
skips, saying so (in CI, ``CI=true``, it fails).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ..sdist import CACHE, framework_tests
from .conftest import ENGINES

ADK_VERSION = importlib.metadata.version("google-adk")
UPSTREAM = Path("tests/unittests/sessions/test_session_service.py")
HARNESS = Path(__file__).with_name("adk_conformance.py")
# ADK's contract tests that must run and pass on each engine (fewer means the
# selection or the download went wrong, not that the service got better).
MIN_PASSED = 40


def _unreachable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _release_tag_tests(version: str) -> Path:
    """ADK's tests at the release's tag on GitHub, cached under ``CACHE``."""
    root = CACHE / f"adk-python-{version}"
    if (root / ".complete").exists():
        return root
    url = f"https://github.com/google/adk-python/archive/refs/tags/v{version}.tar.gz"
    with tempfile.TemporaryDirectory() as download:
        archive = Path(download) / "adk.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                archive.write_bytes(response.read())
        except OSError as exc:
            _unreachable(
                f"google-adk's source release on PyPI has no tests and {url} could not be "
                f"downloaded ({exc}); ADK's own tests need one of them, or "
                "STATESTORE_ADK_TESTS naming a checkout of google/adk-python at "
                f"v{version}"
            )
        CACHE.mkdir(parents=True, exist_ok=True)
        unpacked = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(archive) as tar:
            wanted = [m for m in tar.getmembers() if "/tests/unittests/sessions/" in m.name]
            tar.extractall(unpacked, members=wanted, filter="data")
        (top,) = unpacked.iterdir()
        shutil.rmtree(root, ignore_errors=True)
        top.rename(root)
        unpacked.rmdir()
        (root / ".complete").touch()
    return root


def upstream_tests() -> Path:
    """The file of ADK's session-service tests for the installed version."""
    override = os.environ.get("STATESTORE_ADK_TESTS")
    if override:
        root = Path(override)
    else:
        root = framework_tests("google-adk", ADK_VERSION)
        if not (root / UPSTREAM).is_file():
            root = _release_tag_tests(ADK_VERSION)
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
