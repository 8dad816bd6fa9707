"""docs/integrations/langchain.md stays true: every Python block runs (each in a fresh
directory, in its own interpreter, as tests/test_readme.py does for docs/*.md), and its
relative links point at files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .pending import skip_without_any_loop

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "integrations" / "langchain.md"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def _python_blocks() -> list[object]:
    text = PAGE.read_text(encoding="utf-8")
    return [
        pytest.param(match.group(2), id=f"line-{text.count(chr(10), 0, match.start()) + 1}")
        for match in _FENCE.finditer(text)
        if match.group(1) == "python"
    ]


def test_page_has_examples() -> None:
    """The page has Python blocks to run, so the test below cannot pass vacuously."""
    assert len(_python_blocks()) >= 3


@pytest.mark.parametrize("code", _python_blocks())
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    """This block runs without error in an empty directory."""
    if "open_store_sync" in code:
        skip_without_any_loop()
    script = tmp_path / "doc_block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_relative_links_resolve() -> None:
    """Every relative link of the page points at a file that exists."""
    targets = [m.group(1) for m in _LINK.finditer(PAGE.read_text(encoding="utf-8"))]
    missing = [t for t in targets if "://" not in t and not (PAGE.parent / t).exists()]
    assert not missing, missing
