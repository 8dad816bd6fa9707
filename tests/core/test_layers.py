"""Layers only point down (DESIGN.md): core imports nothing above it, backends never
import tools, cli or integrations."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "statestore"


def _statestore_imports(path: Path) -> set[str]:
    """The statestore subpackages ``path`` imports (``core``, ``backends``, ...)."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module_parts[: len(module_parts) - node.level]
                target = [*base, *(node.module or "").split(".")]
            else:
                target = (node.module or "").split(".")
            if target[0] == "statestore" and len(target) > 1 and target[1]:
                found.add(target[1])
            elif target[0] == "statestore":  # from statestore(.x) import name
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "statestore" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", {"backends", "tools", "cli", "integrations", "testing", "bench", "sync"}),
        ("backends", {"tools", "cli", "integrations", "testing", "bench"}),
    ],
)
def test_imports_point_down(layer: str, forbidden: set[str]) -> None:
    """No module of ``layer`` imports a package above it."""
    paths = sorted((PACKAGE / layer).rglob("*.py"))
    assert paths, PACKAGE / layer
    for path in paths:
        above = _statestore_imports(path) & forbidden
        assert not above, f"{path.relative_to(PACKAGE)} imports {sorted(above)}"
