"""What ``statestore bench`` runs: the benchmark scenarios on chosen backends,
through the public store API, printed as tables.

By default legacy-blob and sqlite on temporary SQLite files; ``--url
postgresql://...`` adds postgres and legacy-blob on PostgreSQL in a database the
command creates and drops. (The raw-driver baseline is in the repository's
``benchmarks/``, not here.)
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from ..core.config import mask_url, url_scheme
from ..core.errors import StateStoreError
from ..core.registry import default_registry
from .scenarios import SCENARIOS, Measurement, measure, run_concurrency
from .subjects import Subject, Target, make_subject

__all__ = ["import_pyplot", "machine", "plot", "run_benchmarks", "scenario_tables"]

CONCURRENCY = "concurrency"
TURNS_PER_USER = 10
QUICK_TURNS = 3


Say = Callable[[str], None]
"""Told what runs now (a scenario on a target), for a status line."""


def machine() -> dict[str, Any]:
    """The facts about this machine that a result file records."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _targets(names: Sequence[str] | None, with_postgres: bool) -> list[Target]:
    wanted = list(names) if names else ["legacy-blob", "sqlite", "postgres"]
    known = set(default_registry().backends())
    for name in wanted:
        if name not in known:
            raise StateStoreError(f"unknown backend {name!r}; known: {', '.join(sorted(known))}")
    engines = ["sqlite", "postgresql"] if with_postgres else ["sqlite"]
    targets = []
    for engine in engines:
        for name in wanted:
            if engine in default_registry().get(name).spec.url_schemes:
                targets.append(Target(name, engine))
    if not targets:
        raise StateStoreError("none of these backends runs on the chosen databases")
    return targets


async def run_benchmarks(
    scenarios: Sequence[str],
    *,
    sizes: Sequence[int],
    users: Sequence[int],
    backends: Sequence[str] | None = None,
    postgres_server: str | None = None,
    quick: bool = False,
    say: Say = lambda text: None,
) -> list[dict[str, Any]]:
    """Each scenario (``concurrency`` included) at each size on each target, as the
    dicts of ``Measurement.to_dict()``. ``backends``: names (default legacy-blob,
    sqlite, and postgres with a server); ``postgres_server``: adds PostgreSQL, in a
    database created for the run and dropped after."""
    targets = _targets(backends, postgres_server is not None)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="statestore-bench-") as tmp:
        async with _postgres_database(postgres_server) as pg_url:
            for target in targets:
                url = f"sqlite:///{tmp}/{target.id}.db" if target.engine == "sqlite" else pg_url
                assert url is not None
                subject = make_subject(target, url)
                await subject.open()
                try:
                    for name in scenarios:
                        if name == CONCURRENCY:
                            for n in users:
                                say(f"{CONCURRENCY} {target.id} {n} users")
                                results.append(await _concurrency(subject, n, quick))
                            continue
                        for size in sizes:
                            say(f"{name} {target.id} {size:,}")
                            m = await measure(subject, SCENARIOS[name], size, quick=quick)
                            results.append(m.to_dict())
                finally:
                    await subject.close()
    return results


async def _concurrency(subject: Subject, users: int, quick: bool) -> dict[str, Any]:
    target = subject.target
    m = Measurement(CONCURRENCY, target.id, target.engine, users)
    outcome = await run_concurrency(subject, users, QUICK_TURNS if quick else TURNS_PER_USER)
    m.times = [outcome["p50_ms"] / 1000]  # the median turn is the table's median
    m.extra = outcome
    return m.to_dict()


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
    from ..backends.postgres import asyncpg_dsn
    from ..backends.sql import migrate

    dsn = asyncpg_dsn(server)
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
    """By size and engine; legacy-blob first."""
    target = result["target"]
    return result["size"], result["engine"], 0 if target.startswith("legacy-blob") else 1, target


TableRows = tuple[str, tuple[str, ...], list[tuple[str, ...]]]


def scenario_tables(results: Sequence[dict[str, Any]]) -> list[TableRows]:
    """One table per scenario: (heading, column names, rows) with the median and the
    ratio to legacy-blob on the same engine. A column name starting with ``>`` holds
    numbers."""
    legacy: dict[tuple[str, str, int], float | None] = {}
    for r in results:
        if r["target"].startswith("legacy-blob"):
            legacy[(r["scenario"], r["engine"], r["size"])] = r["median_s"]
    tables: list[TableRows] = []
    for name in dict.fromkeys(r["scenario"] for r in results):
        scenario = SCENARIOS.get(name)
        title = scenario.description if scenario else "simulated users running turns"
        size_label = "users" if name == CONCURRENCY else "messages"
        columns = ("backend", ">" + size_label, ">median", ">vs legacy", ">rounds", "")
        rows: list[tuple[str, ...]] = []
        for r in sorted((r for r in results if r["scenario"] == name), key=_row_order):
            if r["skipped"]:
                rows.append((r["target"], f"{r['size']:,}", "skipped", "", "", r["skipped"]))
                continue
            base = legacy.get((name, r["engine"], r["size"]))
            ratio = "1.0x" if r["target"].startswith("legacy-blob") else _ratio(r["median_s"], base)
            rounds = str(r["rounds"]) if name != CONCURRENCY else ""
            rows.append(
                (r["target"], f"{r['size']:,}", _ms(r["median_s"]), ratio, rounds, _notes(r))
            )
        tables.append((f"{name}: {title}", columns, rows))
    return tables


def import_pyplot() -> Any:
    """matplotlib's pyplot (Agg), or a StateStoreError naming the extra to install."""
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
    plt = import_pyplot()
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
