"""`statestore bench`: quick mode, tables, JSON output, the PNG chart, PostgreSQL in
a database of its own, and clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from statestore.bench import SCENARIOS
from statestore.cli import main
from statestore.cli.bench import SCENARIO_NAMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One default quick run (legacy-blob and sqlite on SQLite), with JSON and plot."""
    out = tmp_path_factory.mktemp("bench")
    json_path, png_path = out / "bench.json", out / "bench.png"
    capture = out / "stdout.txt"
    with capture.open("w") as stream, contextlib.redirect_stdout(stream):  # capsys: per test
        status = main(["bench", "--quick", "--json", str(json_path), "--plot", str(png_path)])
    return {
        "status": status,
        "stdout": capture.read_text(),
        "json": orjson.loads(json_path.read_bytes()),
        "png": png_path,
    }


def test_scenario_names_of_the_parser_are_the_scenarios() -> None:
    """The names `bench --scenario` accepts (known without importing the benchmarks)
    are the scenarios, in order."""
    assert list(SCENARIO_NAMES) == list(SCENARIOS)


def test_quick_run_prints_one_table_per_scenario(quick_run: dict[str, Any]) -> None:
    """Every scenario gets a table with legacy-blob and sqlite, plain text off a
    terminal; the raw-driver baseline is not part of the installed command."""
    assert quick_run["status"] == 0
    out = quick_run["stdout"]
    for name in [*SCENARIOS, "concurrency"]:
        assert f"\n{name}: " in f"\n{out}", name
    assert out.count("legacy-blob[sqlite]") >= len(SCENARIOS)
    assert "x faster" in out
    assert "raw[" not in out
    assert "\x1b" not in out


def test_json_holds_every_scenario_and_target(quick_run: dict[str, Any]) -> None:
    """The JSON file has a timed result for each scenario on each default target,
    with storage, memory and concurrency figures."""
    document = quick_run["json"]
    assert document["quick"] is True
    assert {"date", "python", "cpus"} <= document["machine"].keys()
    results = {(r["scenario"], r["target"]): r for r in document["results"]}
    for name in SCENARIOS:
        for target in ("legacy-blob[sqlite]", "sqlite"):
            result = results[(name, target)]
            assert result["size"] == 100
            assert result["rounds"] >= 1
            assert result["median_s"] > 0
    assert results[("save_full", "sqlite")]["extra"]["bytes_per_conversation"] > 0
    assert results[("grow", "legacy-blob[sqlite]")]["extra"]["bytes_after_grow"] > 0
    assert results[("load_turn", "sqlite")]["extra"]["peak_memory_bytes"] > 0
    concurrency = results[("concurrency", "sqlite")]["extra"]
    assert concurrency["errors"] == 0
    assert concurrency["lost_writes"] == 0
    assert concurrency["turns"] == 10 * 3


def test_plot_is_a_png(quick_run: dict[str, Any]) -> None:
    """--plot writes a PNG image."""
    data = Path(quick_run["png"]).read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000


@pytest.mark.postgres
def test_url_adds_postgres_in_a_database_it_drops(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--url runs postgres and legacy-blob on PostgreSQL in a new database, dropped after."""
    json_path = tmp_path / "pg.json"
    argv = ["bench", "--quick", "--scenario", "append_one", "--size", "20"]
    status = main([*argv, "--url", postgres_url, "--json", str(json_path)])
    assert status == 0
    captured = capsys.readouterr()
    targets = {r["target"] for r in orjson.loads(json_path.read_bytes())["results"]}
    assert {"postgres", "legacy-blob[postgresql]", "sqlite"} <= targets
    name = captured.err.split("ran in the database ", 1)[1].split(",", 1)[0]
    assert name.startswith("statestore_bench_")
    assert not asyncio.run(_database_exists(postgres_url, name))


async def _database_exists(url: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()
    return found is not None


def test_plot_without_matplotlib_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the plot extra, --plot fails before running, naming the extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    status = main(["bench", "--quick", "--plot", str(tmp_path / "x.png")])
    assert status == 2
    assert "pip install 'statestore[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_unknown_backend_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --backend lists the known ones."""
    assert main(["bench", "--quick", "--backend", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'nope'" in err
    assert "legacy-blob" in err


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_output_fails_before_running(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output file that cannot be written is a one-line error before the run, not
    a traceback after it; nothing is left behind."""
    path = tmp_path / "no-such-dir" / "out"
    assert main(["bench", "--quick", "--scenario", "append_one", option, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("statestore: error:")
    assert option in captured.err and str(path) in captured.err
    assert not path.parent.exists()
