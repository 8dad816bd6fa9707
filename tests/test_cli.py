"""The ``statestore`` command: ``backends``, ``migrate``, ``show``, useful ``--help``
everywhere, and errors as one line without a traceback or a password."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import statestore
from statestore import AgentState, ContextItem, Message
from statestore.backends.sql import migrate
from statestore.cli import build_parser, main
from statestore.testing.plugin import (
    scratch_database,
)

PASSWORD = "pa55-w0rd-secret"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory (the default store is ./statestore.db)
    with no STATESTORE_* configuration inherited."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATESTORE_BACKEND", raising=False)
    monkeypatch.delenv("STATESTORE_URL", raising=False)


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database of this test's own, dropped afterwards."""
    with scratch_database("statestore_cli") as url:
        yield url


def _statestore_script() -> str:
    """The installed console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "statestore"
    found = str(script) if script.exists() else shutil.which("statestore")
    assert found, "the statestore console script is not installed"
    return found


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_statestore_script(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _save(url: str, conversation_id: str, state: AgentState, user_id: str | None = None) -> None:
    async def save() -> None:
        async with statestore.open_store(None, url) as store:
            await store.save_state(conversation_id, state, user_id=user_id)

    asyncio.run(save())


def _conversation() -> AgentState:
    return AgentState(
        user_input="third question",
        focus_areas=["tea"],
        step_count=3,
        conversation_history=[
            Message(role="user", content="first question"),
            Message(role="tool", content="result", message_type="tool_result", tool_name="calc"),
            Message(role="assistant", content="third answer"),
        ],
        memory_context=[ContextItem(content="likes green tea", relevance_score=0.75)],
        metadata={"channel": "web"},
    )


def _assert_one_line_error(err: str, *forbidden: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("statestore: error: "), err
    assert "Traceback" not in err
    for text in forbidden:
        assert text not in err


# -- backends ---------------------------------------------------------------------------


def test_backends_lists_name_package_description(capsys: pytest.CaptureFixture[str]) -> None:
    """`statestore backends` prints every registered backend with package and description."""
    assert main(["backends"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert {"sqlite", "postgres", "legacy-blob"} <= set(lines)
    assert lines["sqlite"].split()[1] == "statestore"
    assert "SQLite" in lines["sqlite"]
    assert "PostgreSQL" in lines["postgres"]


def test_console_script_backends() -> None:
    """The installed `statestore` script runs and lists the built-in backends."""
    result = _run("backends")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"sqlite", "postgres", "legacy-blob"} <= set(names)
    assert names == sorted(names)


# -- help -------------------------------------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_has_useful_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Every subcommand's --help exits 0 with a description, and every argument says
    what it is for."""
    commands = _subcommands()
    assert {"backends", "migrate", "show"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: statestore {name}"), name
        assert sub.description and len(sub.description) > 20, name
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_top_level_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`statestore --help` lists each command with a one-line summary."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Running `statestore` alone is a usage error (exit 2), not a traceback."""
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# -- start-up ---------------------------------------------------------------------------

# What only some commands need: `--help` and `show` must not pay for importing it.
# (SQLAlchemy builds and compiles statements; the ones opening a store and reading use
# ship compiled, in backends/sql/precompiled.json.)
HEAVY = (
    "alembic",
    "sqlalchemy",
    "statestore.migrations",
    "statestore.bench",
    "statestore.tools.copy",
    "rich",
    "matplotlib",
)


def _modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter has imported after running the command, which
    must succeed (a command that stopped early would import little)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from statestore.cli import main\n"
        "try:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        f"        status = main({list(argv)!r})\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "print(json.dumps([status, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    status, modules = json.loads(result.stdout.splitlines()[-1])
    assert status in (0, None), result.stderr
    return set(modules)


@pytest.mark.parametrize("argv", [["--help"], ["show", "--help"], ["show", "conv-1"]])
def test_light_commands_import_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    """`statestore --help` and `statestore show` import no benchmark, migration
    (Alembic), SQLAlchemy, copy-tool or rich code."""
    url = f"sqlite:///{tmp_path}/s.db"
    _save(url, "conv-1", _conversation())
    extra = ["--url", url] if argv[0] == "show" and "--help" not in argv else []
    modules = _modules_after(*argv, *extra)
    assert "statestore.cli" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


def test_head_revision_is_alembics_head() -> None:
    """The revision the backends check on open (known without importing Alembic) is
    the head of the migrations: a new migration must set HEAD_REVISION."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert migrate.head_revision() == migrate.HEAD_REVISION == script.get_current_head()


def test_python_dash_m(tmp_path: Path) -> None:
    """`python -m statestore.cli` is the same command."""
    result = subprocess.run(
        [sys.executable, "-m", "statestore.cli", "backends"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "sqlite" in result.stdout.split()


# -- migrate ----------------------------------------------------------------------------


def test_migrate_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`statestore migrate --url sqlite:///...` creates the schema at head."""
    url = f"sqlite:///{tmp_path}/m.db"
    assert main(["migrate", "--url", url]) == 0
    assert migrate.head_revision() in capsys.readouterr().out
    conn = sqlite3.connect(tmp_path / "m.db")
    try:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        conn.close()
    assert version == migrate.head_revision()


def test_migrate_sql_prints_without_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`migrate --sql` prints the DDL and creates nothing."""
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/never"
    assert main(["migrate", "--url", url, "--sql"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE conversation_states" in out
    assert "JSONB" in out
    assert PASSWORD not in out


@pytest.mark.postgres
def test_migrate_postgres_up_and_down(
    empty_postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`migrate --backend postgres` makes a database usable without migrate=True;
    `--downgrade base` removes the tables again."""
    url = empty_postgres_url
    assert main(["migrate", "--backend", "postgres", "--url", url]) == 0
    _save(url, "after-migrate", _conversation())  # migrate=None: check only
    assert main(["show", "after-migrate", "--url", url]) == 0
    assert "third answer" in capsys.readouterr().out
    assert main(["migrate", "--url", url, "--downgrade", "base"]) == 0
    with pytest.raises(statestore.SchemaOutOfDate):
        _save(url, "after-downgrade", _conversation())


def test_migrate_refuses_backend_url_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --backend that does not take the URL's engine is refused before connecting."""
    code = main(["migrate", "--backend", "postgres", "--url", f"sqlite:///{tmp_path}/x.db"])
    assert code == 2
    _assert_one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "x.db").exists()


def test_migrate_downgrade_needs_a_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`migrate --downgrade` without REVISION is a one-line error that asks for one,
    not a "downgraded to head" that did nothing; the schema stays at head."""
    url = f"sqlite:///{tmp_path}/x.db"
    assert main(["migrate", "--url", url]) == 0
    capsys.readouterr()
    assert main(["migrate", "--url", url, "--downgrade"]) == 2
    captured = capsys.readouterr()
    _assert_one_line_error(captured.err)
    assert "--downgrade needs a REVISION" in captured.err and captured.out == ""
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        conn.close()
    assert version == migrate.head_revision()


def test_migrate_unknown_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown revision is a one-line error, not an Alembic traceback."""
    assert main(["migrate", "--url", f"sqlite:///{tmp_path}/x.db", "nosuchrev"]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "nosuchrev" in err


def test_migrate_unreachable_server_hides_password(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that cannot be reached: one line, exit 2, the password masked."""
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/db"
    assert main(["migrate", "--url", url]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, PASSWORD)
    assert "app:***@127.0.0.1:1" in err


# -- show -------------------------------------------------------------------------------


def test_show_prints_the_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show` prints the fields, every message in order and the context items."""
    url = f"sqlite:///{tmp_path}/s.db"
    _save(url, "conv-1", _conversation(), user_id="alice")
    assert main(["show", "conv-1", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "conversation conv-1" in out
    assert "user=alice" in out
    assert "messages=3" in out
    assert out.index("first question") < out.index("result") < out.index("third answer")
    assert "[calc]" in out
    assert "likes green tea" in out
    assert "relevance=0.75" in out


def test_show_prints_a_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A message whose text is in its payload (a function call) shows the payload as
    compact JSON, cut short when long."""
    url = f"sqlite:///{tmp_path}/s.db"
    call = {"name": "lookup", "arguments": {"id": 3}}
    state = AgentState(
        conversation_history=[
            Message("assistant", "", "function_call", "lookup", payload=call),
            Message("tool", "", "event", payload={"blob": "z" * 500}),
        ]
    )
    _save(url, "calls", state)
    assert main(["show", "calls", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith(
        ' assistant [lookup] (function_call): {"name":"lookup","arguments":{"id":3}}'
    )
    assert lines[3].endswith("\u2026") and '{"blob":"zzz' in lines[3] and len(lines[3]) < 300


def test_show_last_n(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show --last 1` prints only the newest message and says how many there are."""
    url = f"sqlite:///{tmp_path}/s.db"
    _save(url, "conv-1", _conversation())
    assert main(["show", "conv-1", "--url", url, "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert "(last 1 of 3 messages)" in out
    assert "third answer" in out
    assert "first question" not in out


def test_show_json_is_the_legacy_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show --json` prints exactly the state's to_dict()."""
    url = f"sqlite:///{tmp_path}/s.db"
    state = _conversation()
    _save(url, "conv-1", state)
    assert main(["show", "conv-1", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == state.to_dict()


def test_show_legacy_blob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show --backend legacy-blob` reads the old layout from the same kind of URL."""
    url = f"sqlite:///{tmp_path}/legacy.db"

    async def save() -> None:
        async with statestore.open_store("legacy-blob", url) as store:
            await store.save_state("old-1", _conversation())

    asyncio.run(save())
    assert main(["show", "old-1", "--backend", "legacy-blob", "--url", url, "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "(last 2 of 3 messages)" in out
    assert "third answer" in out
    # The normalized backend does not see the legacy rows.
    assert main(["show", "old-1", "--url", url]) == 2
    assert "not found" in capsys.readouterr().err


def test_show_reads_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --url, `show` uses STATESTORE_URL."""
    url = f"sqlite:///{tmp_path}/env.db"
    _save(url, "from-env", _conversation())
    monkeypatch.setenv("STATESTORE_URL", url)
    assert main(["show", "from-env"]) == 0
    assert "third answer" in capsys.readouterr().out


def test_show_default_store_is_local_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing configured, `show` reads ./statestore.db."""
    _save("sqlite:///statestore.db", "local", _conversation())
    assert (tmp_path / "statestore.db").exists()
    assert main(["show", "local"]) == 0
    assert "conversation local" in capsys.readouterr().out


def test_show_missing_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown conversation is a one-line error with exit status 2."""
    url = f"sqlite:///{tmp_path}/s.db"
    _save(url, "other", _conversation())
    assert main(["show", "nope", "--url", url]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "not found" in err


def test_show_refuses_a_missing_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show` on a mistyped SQLite path says the file does not exist and creates no
    database, as stats and copy --from do."""
    typo = tmp_path / "typo.db"
    assert main(["show", "conv-1", "--url", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert f"SQLite file {typo} does not exist" in err
    assert not typo.exists()


def test_show_respects_ownership(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show --user` of another user does not reveal the conversation."""
    url = f"sqlite:///{tmp_path}/s.db"
    _save(url, "private", _conversation(), user_id="alice")
    assert main(["show", "private", "--url", url, "--user", "mallory"]) == 2
    captured = capsys.readouterr()
    assert "third answer" not in captured.out + captured.err
    _assert_one_line_error(captured.err)


def test_show_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A negative --last and an unknown backend are one-line errors."""
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["show", "c", "--url", url, "--last", "-1"]) == 2
    _assert_one_line_error(capsys.readouterr().err)
    assert main(["show", "c", "--backend", "no-such-backend"]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "sqlite" in err  # lists the names found


def test_console_script_errors_are_one_line_without_password() -> None:
    """Through the installed script, a connection failure prints one line on stderr,
    no traceback, no password, exit status 2."""
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/db"
    for args in (["show", "c", "--url", url], ["migrate", "--url", url]):
        result = _run(*args)
        assert result.returncode == 2, result
        _assert_one_line_error(result.stderr, PASSWORD)
        assert PASSWORD not in result.stdout


def test_console_script_round_trip(tmp_path: Path) -> None:
    """migrate then show through the script, configured by the environment only."""
    url = f"sqlite:///{tmp_path}/script.db"
    env = {"STATESTORE_URL": url}
    assert _run("migrate", env=env).returncode == 0
    _save(url, "scripted", _conversation())
    result = _run("show", "scripted", "--last", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "(last 2 of 3 messages)" in result.stdout
    assert "third answer" in result.stdout
