"""The README and the pages in docs/ stay true: every Python code block runs (each in a
fresh directory, in its own interpreter), the set-up section gives exactly two
commands, each a script in the repository, the README's test files for a third-party
backend are the example plugin's and run the contract suite with no pytest settings,
and every relative link points at a file that exists.

A block that cannot run here (it needs a service the tests do not have) is preceded by
the line ``<!-- readme-test: skip -->`` and shows up as a skip, never a silent pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
EXAMPLE = ROOT / "examples" / "statestore-memory"
SKIP_MARK = "<!-- readme-test: skip -->"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: Path, language: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of each fenced block in ``language``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group(1) != language:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].strip() == SKIP_MARK
        found.append((line, match.group(2), skipped))
    return found


def _python_params() -> list[object]:
    return [
        pytest.param(
            code,
            id=f"{_name(page)}:line-{line}",
            marks=[pytest.mark.skip(reason=f"marked {SKIP_MARK}")] if skipped else [],
        )
        for page in PAGES
        for line, code, skipped in _blocks(page, "python")
    ]


def _file_block(page: Path, filename: str, containing: str = "") -> str:
    """The one Python block of ``page`` that is the file ``filename`` (its first line
    is ``# filename``) and contains ``containing``."""
    found = [
        code
        for _, code, _ in _blocks(page, "python")
        if code.startswith(f"# {filename}\n") and containing in code
    ]
    assert len(found) == 1, f"{_name(page)}: {len(found)} blocks are {filename} ({containing!r})"
    return found[0]


def test_pages_have_python_examples() -> None:
    """The README and the docs have Python blocks to run (so the test below cannot pass
    vacuously), and docs/ has pages."""
    assert len(_blocks(README, "python")) >= 2
    assert len(PAGES) >= 8
    assert sum(len(_blocks(page, "python")) for page in PAGES) >= 8


def test_readme_stays_short() -> None:
    """The README is an entry point for users (at most ~250 lines); the rest is in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("code", _python_params())
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    """This block runs without error in an empty directory."""
    script = tmp_path / "readme_block.py"
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


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the page points at a file or directory that exists."""
    text = page.read_text(encoding="utf-8")
    targets = [m.group(1) for m in _LINK.finditer(text) if "://" not in m.group(1)]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, missing


def test_readme_links_every_docs_page() -> None:
    """A page nobody links to is a page nobody finds: the README links each one."""
    text = README.read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name}" in text, page.name


def test_example_plugin_uses_the_readme_test_files() -> None:
    """examples/statestore-memory's tests/conftest.py and tests/test_contract.py are the
    README's blocks, character for character, so CI's clean-environment run of the
    example is a run of the README's instructions."""
    for filename in ("tests/conftest.py", "tests/test_contract.py"):
        assert (EXAMPLE / filename).read_text(encoding="utf-8") == _file_block(README, filename)


def _run_suite_without_settings(tmp_path: Path, conftest: str) -> str:
    """Run part of the contract suite from a directory holding only ``conftest`` and the
    README's test_contract.py, with an empty pytest configuration (strict asyncio mode,
    no markers declared, strict markers on); returns pytest's output."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(conftest, encoding="utf-8")
    (tests / "test_contract.py").write_text(
        _file_block(README, "tests/test_contract.py"), encoding="utf-8"
    )
    # An empty configuration file stops pytest from looking further up for one.
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "-k",
            "TestRoundTrip or TestVersions or TestObservability",
            "tests",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    return result.stdout


def test_readme_conftest_runs_the_suite_with_no_settings(tmp_path: Path) -> None:
    """The README's conftest.py and test_contract.py, alone in a project with no pytest
    settings, run the contract suite on the entry-point backend they name."""
    _run_suite_without_settings(tmp_path, _file_block(README, "tests/conftest.py"))


def test_factory_conftest_runs_the_suite_with_no_settings(tmp_path: Path) -> None:
    """The docs' conftest.py that hands a factory over (no entry point) runs the suite
    the same way."""
    conftest = _file_block(DOCS / "writing-a-backend.md", "tests/conftest.py", "from_factory")
    _run_suite_without_settings(tmp_path, conftest)


def _setup_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- setup:start -->(.*?)<!-- setup:end -->", text, re.DOTALL)
    assert match, "README has no setup section"
    return match.group(1)


def test_setup_is_two_commands_that_exist() -> None:
    """The set-up section gives exactly two commands, each an executable script at the
    repository root (one runs the demonstration, one the tests), after the quick start."""
    text = README.read_text(encoding="utf-8")
    assert text.index("## Quick start") < text.index("<!-- setup:start -->")
    blocks = [m.group(2) for m in _FENCE.finditer(_setup_section())]
    assert len(blocks) == 1, "one code block with the commands"
    commands = [
        line.split("#", 1)[0].strip()
        for line in blocks[0].splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert len(commands) == 2, commands
    for command in commands:
        program = command.split()[0]
        assert program.startswith("./"), command
        path = ROOT / program
        assert path.is_file() and os.access(path, os.X_OK), f"{program} is not an executable file"
        assert path.read_text().startswith("#!/usr/bin/env bash"), program


def test_demo_runs_a_real_command() -> None:
    """./demo ends by running a `statestore` command line the parser accepts."""
    from statestore.cli import build_parser

    lines = [ln for ln in (ROOT / "demo").read_text().splitlines() if "bin/statestore" in ln]
    assert len(lines) == 1, lines
    args = lines[0].split("bin/statestore", 1)[1].replace('"$@"', "").split()
    parsed = build_parser().parse_args(args)
    assert parsed.command == "bench"
    assert parsed.quick is True
