"""The agent frameworks' own tests, taken from their source releases on PyPI.

The adapters are proven by each framework's own tests for its session store, run
against the adapter. Those tests are not this project's code and are not committed:
``framework_tests`` downloads the source release of the installed version once into
``.cache/framework-tests/`` (git-ignored) and returns its extracted root. Without
PyPI the tests that need it skip, saying so; in CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

__all__ = ["framework_tests"]

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "framework-tests"


def framework_tests(dist: str, version: str) -> Path:
    """The extracted source release of ``dist`` ``version`` (e.g. ``openai-agents``,
    ``0.24.0``): the directory holding its ``tests/``."""
    root = CACHE / f"{dist}-{version}"
    if (root / ".complete").exists():
        return root
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            download,
            f"{dist}=={version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        archives = sorted(Path(download).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            reason = (
                f"could not download the source release of {dist}=={version} from PyPI "
                f"({result.stderr.strip().splitlines()[-1:] or 'no archive'}); its own tests "
                "need it"
            )
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        CACHE.mkdir(parents=True, exist_ok=True)
        unpacked = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(archives[0]) as archive:
            archive.extractall(unpacked, filter="data")
        (top,) = unpacked.iterdir()
        shutil.rmtree(root, ignore_errors=True)
        top.rename(root)
        unpacked.rmdir()
        (root / ".complete").touch()
    return root
