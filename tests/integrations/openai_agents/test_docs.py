"""docs/integrations/openai-agents.md stays true: each of its Python blocks runs, in a
fresh directory and an interpreter of its own (as tests/test_readme.py runs the
README's and docs/*.md's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[3] / "docs" / "integrations" / "openai-agents.md"
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[int, str]]:
    text = PAGE.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def test_the_page_has_examples() -> None:
    """The examples below cannot pass by being absent."""
    assert len(blocks()) >= 3


@pytest.mark.parametrize("code", [c for _, c in blocks()], ids=[f"line-{n}" for n, _ in blocks()])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATESTORE_", "OPENAI_"))}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
