"""``statestore bench``: the benchmark scenarios on chosen backends, as tables.

By default legacy-blob and sqlite on temporary SQLite files, with the raw-driver
baseline; ``--url postgresql://...`` adds postgres and legacy-blob on PostgreSQL in a
database the command creates and drops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..core.config import mask_url, url_scheme
from ..core.errors import StateStoreError
from ..core.registry import default_registry
from .scenarios import SCENARIOS, Measurement, measure, run_concurrency
from .subjects import RAW, Target, make_subject

__all__ = ["add_bench_parser", "cmd_bench", "format_tables", "plot"]

CONCURRENCY = "concurrency"
DEFAULT_SIZES = (1_000,)
QUICK_SIZES = (100,)
DEFAULT_USERS = (10,)
TURNS_PER_USER = 10
QUICK_TURNS = 3


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``statestore`` subcommands."""
    names = [*SCENARIOS, CONCURRENCY]
    p = sub.add_parser(
        "bench",
        help="time the scenarios on legacy-blob and the normalized backends",
        description="Run the benchmark scenarios and print one table per scenario: the "
        "median time and the ratio to legacy-blob on the same engine. Default: "
        "legacy-blob and sqlite on temporary SQLite files, plus the raw-driver "
        "baseline; --url postgresql://... adds postgres and legacy-blob on PostgreSQL "
        "in a database created and dropped for the run.",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"a scenario to run (repeatable; default: all): {', '.join(names)}",
    )
    p.add_argument(
        "--size",
        action="append",
        type=_positive,
        metavar="N",
        help="conversation size in messages (repeatable; default 1000, --quick 100)",
    )
    p.add_argument(
        "--users",
        action="append",
        type=_positive,
        metavar="N",
        help="simulated users for the concurrency scenario (repeatable; default 10)",
    )
    p.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="only these backends (repeatable; `raw` is the driver baseline; default: "
        "legacy-blob, sqlite, raw, and postgres with --url)",
    )
    p.add_argument(
        "--url",
        metavar="POSTGRES_URL",
        help="a PostgreSQL server (postgresql://user@host:5432/db): adds postgres and "
        "legacy-blob on PostgreSQL, in a database this command creates and drops",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw a chart (log-scale time per scenario and backend); needs the plot "
        "extra: pip install 'statestore[plot]'",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds: a few seconds")
    p.set_defaults(handler=cmd_bench)


def _positive(text: str) -> int:
    value = int(text.replace(",", "").replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    if args.plot:
        _import_pyplot()  # fail before running anything
    scenarios = args.scenario or [*SCENARIOS, CONCURRENCY]
    sizes = args.size or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    users = args.users or DEFAULT_USERS
    results = asyncio.run(_run(args, scenarios, sizes, users))
    print(format_tables(results))
    if args.json:
        document = {"machine": machine(), "quick": args.quick, "results": results}
        Path(args.json).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        print(f"\nresults written to {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"chart written to {args.plot}")
    return 0


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _targets(names: Sequence[str] | None, with_postgres: bool) -> list[Target]:
    wanted = list(names) if names else ["legacy-blob", "sqlite", RAW, "postgres"]
    known = set(default_registry().backends()) | {RAW}
    for name in wanted:
        if name not in known:
            raise StateStoreError(f"unknown backend {name!r}; known: {', '.join(sorted(known))}")
    engines = ["sqlite", "postgresql"] if with_postgres else ["sqlite"]
    targets = []
    for engine in engines:
        for name in wanted:
            schemes = (
                ("sqlite", "postgresql")
                if name == RAW
                else default_registry().get(name).spec.url_schemes
            )
            if engine in schemes:
                targets.append(Target(name, engine))
    if not targets:
        raise StateStoreError("none of these backends runs on the chosen databases")
    return targets


async def _run(
    args: argparse.Namespace, scenarios: list[str], sizes: Sequence[int], users: Sequence[int]
) -> list[dict[str, Any]]:
    targets = _targets(args.backend, args.url is not None)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="statestore-bench-") as tmp:
        async with _postgres_database(args.url) as pg_url:
            for target in targets:
                url = f"sqlite:///{tmp}/{target.id}.db" if target.engine == "sqlite" else pg_url
                assert url is not None
                subject = make_subject(target, url)
                await subject.open()
                try:
                    for name in scenarios:
                        if name == CONCURRENCY:
                            for n in users:
                                results.append(await _concurrency(subject, n, args.quick))
                            continue
                        for size in sizes:
                            _progress(f"{name} {target.id} {size:,}")
                            m = await measure(subject, SCENARIOS[name], size, quick=args.quick)
                            results.append(m.to_dict())
                finally:
                    await subject.close()
    _progress("")
    return results


async def _concurrency(subject: Any, users: int, quick: bool) -> dict[str, Any]:
    target: Target = subject.target
    _progress(f"{CONCURRENCY} {target.id} {users} users")
    m = Measurement(CONCURRENCY, target.id, target.engine, users)
    if target.backend == RAW:
        m.skipped = "the raw baseline is not run concurrently"
        return m.to_dict()
    outcome = await run_concurrency(subject, users, QUICK_TURNS if quick else TURNS_PER_USER)
    m.times = [outcome["p50_ms"] / 1000]  # the median turn is the table's median
    m.extra = outcome
    return m.to_dict()


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}")
        sys.stderr.flush()


@asynccontextmanager
async def _postgres_database(server: str | None) -> AsyncIterator[str | None]:
    """A fresh, migrated database on ``server``, dropped afterwards (None: no server)."""
    if server is None:
        yield None
        return
    if url_scheme(server) not in ("postgresql", "postgres"):
        raise StateStoreError("--url must be a postgresql:// URL (SQLite runs by default)")
    try:
        import asyncpg
    except ImportError:
        raise StateStoreError(
            "PostgreSQL needs asyncpg: pip install 'statestore[postgres]'"
        ) from None
    from ..backends.sql import migrate

    dsn = "postgresql://" + server.split("://", 1)[1]
    name = f"statestore_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(dsn, timeout=10)
    except Exception as exc:
        raise StateStoreError(
            f"cannot connect to {mask_url(server)}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        await admin.close()
        raise StateStoreError(
            f"cannot create a database on {mask_url(server)} (the role needs CREATEDB): {exc}"
        ) from exc
    base, _, _ = server.rpartition("/")
    url = f"{base}/{name}"
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        print(f"PostgreSQL: ran in the database {name}, now dropped", file=sys.stderr)


# -- output -----------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms >= 1000:
        return f"{ms / 1000:,.2f} s"
    return f"{ms:.3g} ms" if ms < 10 else f"{ms:,.1f} ms"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


def _ratio(value: float | None, legacy: float | None) -> str:
    if value is None or not legacy:
        return ""
    if value <= legacy:
        return f"{legacy / value:,.1f}x faster"
    return f"{value / legacy:,.1f}x slower"


def _notes(result: dict[str, Any]) -> str:
    extra = result["extra"]
    notes = []
    if "bytes_per_conversation" in extra:
        notes.append(f"stored {_bytes(extra['bytes_per_conversation'])}")
    if "bytes_after_grow" in extra:
        notes.append(f"stored after grow {_bytes(extra['bytes_after_grow'])}")
    if "peak_memory_bytes" in extra:
        notes.append(f"peak memory {_bytes(extra['peak_memory_bytes'])}")
    if "turns_per_s" in extra:
        notes.append(
            f"{extra['turns_per_s']:,.0f} turns/s, p99 {extra['p99_ms']:.3g} ms, "
            f"{extra['errors']} errors, {extra['lost_writes']} lost"
        )
    return "; ".join(notes)


def _row_order(result: dict[str, Any]) -> tuple[int, str, int, str]:
    """By size and engine; legacy-blob first, the raw baseline last."""
    target = result["target"]
    rank = 0 if target.startswith("legacy-blob") else 2 if target.startswith(RAW + "[") else 1
    return result["size"], result["engine"], rank, target


def format_tables(results: Sequence[dict[str, Any]]) -> str:
    """One table per scenario: median and the ratio to legacy-blob on the same engine."""
    legacy: dict[tuple[str, str, int], float | None] = {}
    for r in results:
        if r["target"].startswith("legacy-blob"):
            legacy[(r["scenario"], r["engine"], r["size"])] = r["median_s"]
    blocks = []
    for name in dict.fromkeys(r["scenario"] for r in results):
        rows = [r for r in results if r["scenario"] == name]
        scenario = SCENARIOS.get(name)
        title = scenario.description if scenario else "simulated users running turns"
        size_label = "users" if name == CONCURRENCY else "messages"
        header = ("backend", size_label, "median", "vs legacy", "rounds", "")
        table = [header]
        for r in sorted(rows, key=_row_order):
            if r["skipped"]:
                table.append((r["target"], f"{r['size']:,}", "skipped", "", "", r["skipped"]))
                continue
            base = legacy.get((name, r["engine"], r["size"]))
            ratio = "1.0x" if r["target"].startswith("legacy-blob") else _ratio(r["median_s"], base)
            table.append(
                (
                    r["target"],
                    f"{r['size']:,}",
                    _ms(r["median_s"]),
                    ratio,
                    str(r["rounds"]) if name != CONCURRENCY else "",
                    _notes(r),
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        lines = [f"{name}: {title}"]
        for row in table:
            cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
            cells += [row[2].rjust(widths[2]), row[3].rjust(widths[3]), row[4].rjust(widths[4])]
            lines.append(("  ".join(cells) + "  " + row[5]).rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _import_pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise StateStoreError("--plot needs matplotlib: pip install 'statestore[plot]'") from None
    return plt


def plot(results: Sequence[dict[str, Any]], path: str) -> None:
    """A bar chart of the medians, log scale: one group per scenario, one bar per
    backend, one panel per size."""
    plt = _import_pyplot()
    timed = [r for r in results if r["median_s"] is not None and r["scenario"] != CONCURRENCY]
    if not timed:
        raise StateStoreError("nothing to plot: no timed scenario in this run")
    sizes = sorted({r["size"] for r in timed})
    targets = list(dict.fromkeys(r["target"] for r in timed))
    scenarios = list(dict.fromkeys(r["scenario"] for r in timed))
    fig, axes = plt.subplots(
        len(sizes),
        1,
        figsize=(max(8, 1.3 * len(scenarios) * len(targets) / 3), 4 * len(sizes)),
        squeeze=False,
    )
    width = 0.8 / len(targets)
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        for i, target in enumerate(targets):
            xs, ys = [], []
            for j, name in enumerate(scenarios):
                for r in timed:
                    if (r["scenario"], r["target"], r["size"]) == (name, target, size):
                        xs.append(j + (i - (len(targets) - 1) / 2) * width)
                        ys.append(r["median_s"] * 1000)
            ax.bar(xs, ys, width, label=target)
        ax.set_yscale("log")
        ax.set_ylabel("median time (ms, log scale)")
        ax.set_title(f"conversations of {size:,} messages")
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=20)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small", ncols=min(len(targets), 3))
    fig.suptitle("statestore bench: lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
