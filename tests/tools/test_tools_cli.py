"""The copy, export, import, prune and stats commands, end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

import statestore
from statestore import AgentState
from statestore.cli import main
from statestore.testing.plugin import _admin

from .conftest import CORRUPT_IDS, assert_arrived, build_legacy, raw_insert

COMMANDS = ["copy", "export", "import", "prune", "stats"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command has a --help that says what it does and shows an option."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: statestore {command}" in out and len(out) > 400


def test_copy_help_names_delete_extra(capsys: pytest.CaptureFixture[str]) -> None:
    """copy --help says --delete-extra deletes target conversations absent from the source."""
    with pytest.raises(SystemExit):
        main(["copy", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "--delete-extra after copying, DELETE the target conversations absent from the source"
        in out
    )


def test_copy_to_postgres(
    sqlite_url: str, own_pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """copy legacy-blob → postgres: good ones arrive, corrupt ones are in the report
    and on stderr, exit status 1; a second run copies nothing; --verify-only agrees."""
    good = asyncio.run(build_legacy(sqlite_url))
    report = tmp_path / "report.jsonl"
    args = ["--from", f"legacy-blob:{sqlite_url}", "--to", f"postgres:{own_pg_url}"]
    args += ["--report", str(report), "--batch-size", "4"]
    assert main(["copy", *args]) == 1
    out, err = capsys.readouterr()
    assert f"copied {len(good)}" in out
    assert all(f"corrupt: {cid}:" in err for cid in CORRUPT_IDS)
    lines = [orjson.loads(x) for x in report.read_bytes().splitlines()]
    assert {x["conversation_id"] for x in lines} == CORRUPT_IDS
    assert all(x["problem"] == "corrupt" and x["reason"] for x in lines)
    asyncio.run(assert_arrived(("postgres", own_pg_url), good))

    assert main(["copy", *args]) == 1
    assert f"copied 0, unchanged {len(good)}" in capsys.readouterr().out
    assert main(["copy", *args, "--verify-only"]) == 1
    assert f"unchanged {len(good)}, corrupt {len(CORRUPT_IDS)}" in capsys.readouterr().out


def test_copy_clean_store_exits_zero(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing corrupt the exit status is 0 and no report is left; a dry run
    reads without creating the target."""

    async def fill() -> None:
        async with statestore.open_store("legacy-blob", sqlite_url) as store:
            for i in range(5):
                await store.save_state(f"c{i}", AgentState(user_input=str(i)))

    asyncio.run(fill())
    report = tmp_path / "r.jsonl"
    target = tmp_path / "t.db"
    base = ["copy", "--from", f"legacy-blob:{sqlite_url}", "--report", str(report)]
    assert main([*base, "--to", f"sqlite:sqlite:///{target}", "--dry-run"]) == 0
    assert not target.exists()
    assert "validated" in capsys.readouterr().out
    assert main([*base, "--to", f"sqlite:sqlite:///{target}"]) == 0
    assert not report.exists()


def test_copy_delete_extra(
    sqlite_url: str, own_pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """copy --delete-extra to PostgreSQL deletes, names and counts a lost one; verify exits 0."""

    async def fill() -> None:
        async with statestore.open_store("legacy-blob", sqlite_url) as store:
            for i in range(5):
                await store.save_state(f"c{i}", AgentState(user_input=str(i)))

    async def forget(cid: str) -> None:
        async with statestore.open_store("legacy-blob", sqlite_url) as store:
            await store.delete_state(cid)

    async def target_ids() -> set[str]:
        async with statestore.open_store("postgres", own_pg_url) as store:
            return {i.conversation_id for i in await store.list_conversations(limit=100)}

    asyncio.run(fill())
    args = ["copy", "--from", f"legacy-blob:{sqlite_url}", "--to", f"postgres:{own_pg_url}"]
    args += ["--report", str(tmp_path / "r.jsonl"), "--batch-size", "2"]
    assert main(args) == 0
    asyncio.run(forget("c3"))
    assert main(args) == 0
    assert "deleted" not in capsys.readouterr().out
    assert "c3" in asyncio.run(target_ids())

    assert main([*args, "--delete-extra"]) == 0
    out, err = capsys.readouterr()
    assert "copied 0, unchanged 4, deleted 1" in out
    assert "deleted: c3: not on the source" in err
    assert asyncio.run(target_ids()) == {"c0", "c1", "c2", "c4"}
    assert main([*args, "--verify-only"]) == 0


@pytest.mark.parametrize("other", ["--verify-only", "--dry-run"])
def test_copy_delete_extra_refuses_other_flag(
    other: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--delete-extra with --verify-only/--dry-run: exit 2, both flags named, nothing written."""

    async def fill(url: str, cid: str) -> None:
        async with statestore.open_store("sqlite", url) as store:
            await store.save_state(cid, AgentState())

    source, target = f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/t.db"
    asyncio.run(fill(source, "kept"))
    asyncio.run(fill(target, "extra"))
    before = (tmp_path / "t.db").read_bytes()
    report = tmp_path / "r.jsonl"
    argv = ["copy", "--from", f"sqlite:{source}", "--to", f"sqlite:{target}"]
    argv += ["--report", str(report), "--delete-extra", other]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("statestore: error:")
    assert "--delete-extra" in err and other in err
    assert not report.exists()
    assert (tmp_path / "t.db").read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["copy", "--from", "legacy-blob:sqlite:///nowhere/x.db", "--to", "sqlite"],
            "does not exist",
        ),
        (["copy", "--from", "legacy-blob:sqlite:///a.db"], "--to NAME:URL is required"),
        (
            ["copy", "--from", "nosuch:sqlite:///a.db", "--to", "sqlite:sqlite:///b.db"],
            "no statestore backend named 'nosuch'",
        ),
        (["prune", "--older-than", "soon", "--url", "sqlite:///x.db"], "older-than"),
        (["stats", "--url", "sqlite:///nowhere/x.db"], "does not exist"),
        (["import", "nowhere.jsonl", "--url", "sqlite:///x.db"], "cannot open"),
    ],
)
def test_errors_are_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user error is one line on stderr and exit status 2."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("statestore: error:")


def test_export_import_via_postgres(
    sqlite_url: str, own_pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export to a file, import into PostgreSQL: every good conversation arrives."""
    good = asyncio.run(build_legacy(sqlite_url))
    out = tmp_path / "dump.jsonl"
    assert main(["export", "--backend", "legacy-blob", "--url", sqlite_url, "--out", str(out)]) == 1
    assert len(out.read_bytes().splitlines()) == len(good)
    assert not Path(f"{out}.partial").exists()
    report = tmp_path / "import.jsonl"
    argv = ["import", str(out), "--url", own_pg_url, "--report", str(report)]
    assert main(argv) == 0
    asyncio.run(assert_arrived(("postgres", own_pg_url), good))
    assert main(argv) == 0
    assert f"copied 0, unchanged {len(good)}" in capsys.readouterr().out


def test_prune_and_stats_on_postgres(own_pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """prune --vacuum removes the old conversations on PostgreSQL and vacuums; stats
    --json counts what is left."""

    async def fill() -> None:
        async with statestore.open_store("postgres", own_pg_url) as store:
            for i in range(4):
                await store.save_state(f"p{i}", AgentState(user_input="x"))

    asyncio.run(fill())
    asyncio.run(
        _admin(
            own_pg_url,
            "UPDATE conversation_states SET updated_at = "
            "'2020-01-01' WHERE conversation_id IN ('p0', 'p2')",
        )
    )
    assert main(["prune", "--url", own_pg_url, "--older-than", "30d", "--dry-run"]) == 0
    assert "would remove 2" in capsys.readouterr().out
    assert main(["prune", "--url", own_pg_url, "--older-than", "30d", "--vacuum"]) == 0
    out = capsys.readouterr().out
    assert "removed p0" in out and "removed p2" in out and "VACUUM (ANALYZE) done" in out
    assert main(["stats", "--url", own_pg_url, "--json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["conversations"] == 2
    assert stats["tables"]["conversation_states"]["rows"] == 2
    assert stats["tables"]["conversation_states"]["bytes"] > 0


def _fill(name: str, url: str, *ids: str) -> None:
    async def fill() -> None:
        async with statestore.open_store(name, url) as store:
            for cid in ids:
                await store.save_state(cid, AgentState(user_input=cid))

    asyncio.run(fill())


def _one_line_error(err: str, *names: str) -> None:
    assert err.count("\n") == 1 and err.startswith("statestore: error:"), err
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--out", "e.jsonl"],
        ["prune", "--older-than", "30d"],
        ["prune", "--older-than", "30d", "--dry-run"],
    ],
)
def test_reading_commands_refuse_a_missing_sqlite_file(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """export and prune on a mistyped SQLite path: exit 2, the path named, no
    database created and no output file written."""
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "typo.db"
    assert main([*argv, "--url", f"sqlite:///{typo}"]) == 2
    captured = capsys.readouterr()
    _one_line_error(captured.err, f"SQLite file {typo} does not exist")
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["copy", "--from", "sqlite:sqlite:///tpyo.db", "--to", "sqlite:sqlite:///t.db"],
        ["copy", "--from", "nosuch:sqlite:///s.db", "--to", "sqlite:sqlite:///t.db"],
        ["copy", "--from", "sqlite:sqlite:///s.db", "--to", "nosuch:x"],
        ["import", "dump.jsonl", "--url", "nosuch:x"],
        ["import", "dump.jsonl", "--backend", "nosuch"],
    ],
)
def test_a_failed_start_keeps_the_previous_report(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A copy or import refused for its arguments (a bad store or file) leaves the
    report of the previous run as it was."""
    monkeypatch.chdir(tmp_path)
    _fill("sqlite", "sqlite:///s.db", "c1")
    (tmp_path / "dump.jsonl").write_bytes(b"")
    old = b'{"conversation_id":"c9","problem":"corrupt","reason":"earlier run"}\n'
    report = tmp_path / "old-report.jsonl"
    report.write_bytes(old)
    assert main([*argv, "--report", str(report)]) == 2
    _one_line_error(capsys.readouterr().err)
    assert report.read_bytes() == old
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize("command", ["copy", "import"])
def test_report_only_when_there_is_something_in_it(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A clean run leaves no report file (and removes an earlier run's, which no
    longer holds); a run with problems writes one, named on stderr."""
    monkeypatch.chdir(tmp_path)
    _fill("legacy-blob", "sqlite:///s.db", "c1", "c2")
    argv = ["export", "--backend", "legacy-blob", "--url", "sqlite:///s.db"]
    assert main([*argv, "--out", "dump.jsonl", "-q"]) == 0
    report = Path(f"statestore-{command}-report.jsonl")
    report.write_bytes(b'{"conversation_id":"c9","problem":"corrupt","reason":"stale"}\n')
    if command == "copy":
        argv = ["copy", "--from", "legacy-blob:sqlite:///s.db", "--to", "sqlite:sqlite:///t.db"]
    else:
        argv = ["import", "dump.jsonl", "--url", "sqlite:///t.db"]
    assert main([*argv, "-q"]) == 0
    assert not report.exists()
    assert "report" not in capsys.readouterr().err

    if command == "copy":
        asyncio.run(raw_insert("sqlite:///s.db", "bad", "{not json"))
    else:
        Path("dump.jsonl").write_bytes(b'{"bad": 1}\n')
    assert main([*argv, "-q"]) == 1
    assert len(report.read_bytes().splitlines()) == 1
    assert f"see {report}" in capsys.readouterr().err


def test_prune_ages_beyond_the_calendar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An age too long to compute is a one-line error; one reaching back before year 1
    removes nothing."""
    url = f"sqlite:///{tmp_path}/p.db"
    _fill("sqlite", url, "kept")
    assert main(["prune", "--url", url, "--older-than", "99999999999d", "--dry-run"]) == 2
    _one_line_error(capsys.readouterr().err, "older-than", "99999999999d")
    assert main(["prune", "--url", url, "--older-than", "1000000d"]) == 0
    assert "removed 0 conversation(s)" in capsys.readouterr().out
    assert main(["stats", "--url", url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["conversations"] == 1


def test_export_says_what_it_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export's summary counts the conversations exported (not a copy's counts), on
    stdout for a file and on stderr for stdout; a directory as --out is refused before
    anything is read or printed."""
    url = f"sqlite:///{tmp_path}/s.db"
    _fill("sqlite", url, "c1", "c2")
    out = tmp_path / "e.jsonl"
    assert main(["export", "--url", url, "--out", str(out), "-q"]) == 0
    assert capsys.readouterr().out == f"exported 2 conversation(s) to {out}\n"
    assert main(["export", "--url", url, "--out", "-"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err == "exported 2 conversation(s)\n"
    assert main(["export", "--url", url, "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_line_error(captured.err, "--out", str(tmp_path), "Is a directory")
    assert not Path(f"{tmp_path}.partial").exists()


def test_import_counts_lines_and_names_each_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """import's progress counts lines read, not conversations imported, and each bad
    line is named once: by its conversation id with its line number, else as "line N"."""
    dump = tmp_path / "bad.jsonl"
    dump.write_bytes(
        b'{"bad": 1}\n{"conversation_id": "c9", "state": {"step_count": "x"}}\nnot json\n'
    )
    report = tmp_path / "r.jsonl"
    argv = ["import", str(dump), "--url", f"sqlite:///{tmp_path}/i.db", "--report", str(report)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "invalid: line 1: unknown keys ['bad']" in lines
    assert "invalid: c9: line 2: step_count: must be an int, not str" in lines
    assert any(line.startswith("invalid: line 3: not JSON: ") for line in lines)
    assert any(line.startswith("lines 3  problems 3  ") for line in lines), err
    assert not any(line.startswith("imported") for line in lines), err
    assert f"3 line(s) not imported; see {report}" in lines
    assert "invalid 3" in out
    reasons = [orjson.loads(x)["reason"] for x in report.read_bytes().splitlines()]
    assert reasons[0] == "unknown keys ['bad']"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("stats", "largest conversations shown (default: 10)"),
        ("import", "(default: statestore-import-report.jsonl)"),
    ],
)
def test_help_shows_defaults(command: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows the default of --top and of --report, as copy --help does."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    # argparse wraps lines at hyphens too: compare without any white space.
    assert "".join(shown.split()) in "".join(capsys.readouterr().out.split())
