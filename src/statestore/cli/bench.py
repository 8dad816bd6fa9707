"""``statestore bench``: the benchmark scenarios on chosen backends, as tables.

The benchmark code (``statestore.bench``) is imported when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .common import Subparsers, check_writable

__all__ = ["SCENARIO_NAMES", "register"]

SCENARIO_NAMES = (
    "save_full",
    "append_one",
    "save_after_turn",
    "update_scalar",
    "load_full",
    "load_window",
    "load_turn",
    "grow",
)
"""``statestore.bench.SCENARIOS`` by name, so that building the parser imports no
benchmark code (tests/test_bench_cli.py checks that the two agree)."""


DEFAULT_SIZES = (1_000,)
QUICK_SIZES = (100,)
DEFAULT_USERS = (10,)


def cmd_bench(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    import orjson

    from ..bench.run import import_pyplot, machine, plot, run_benchmarks, scenario_tables
    from .output import new_table, print_table

    # Fail before running anything, not after a run of minutes.
    if args.plot:
        import_pyplot()
        check_writable(args.plot, "--plot")
    if args.json:
        check_writable(args.json, "--json")
    with _status() as say:
        results = asyncio.run(
            run_benchmarks(
                args.scenario or [*SCENARIO_NAMES, "concurrency"],
                sizes=args.size or (QUICK_SIZES if args.quick else DEFAULT_SIZES),
                users=args.users or DEFAULT_USERS,
                backends=args.backend,
                postgres_server=args.url,
                quick=args.quick,
                say=say,
            )
        )
    for i, (heading, columns, rows) in enumerate(scenario_tables(results)):
        print(f"\n{heading}" if i else heading)
        table = new_table(*columns)
        for row in rows:
            table.add_row(*row)
        print_table(table)
    if args.json:
        document = {"machine": machine(), "quick": args.quick, "results": results}
        Path(args.json).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        print(f"\nresults written to {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"chart written to {args.plot}")
    return 0


@contextmanager
def _status() -> Iterator[Callable[[str], None]]:
    """What runs now, as a spinner on stderr when it is a terminal; nothing otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda text: None
        return
    with console.status("starting") as status:
        yield status.update


def register(sub: Subparsers) -> None:
    """Add ``bench``."""
    names = [*SCENARIO_NAMES, "concurrency"]
    p = sub.add_parser(
        "bench",
        help="time the scenarios on legacy-blob and the normalized backends",
        description="Run the benchmark scenarios and print one table per scenario: the "
        "median time and the ratio to legacy-blob on the same engine. Default: "
        "legacy-blob and sqlite on temporary SQLite files; --url postgresql://... adds "
        "postgres and legacy-blob on PostgreSQL in a database created and dropped for "
        "the run. (The raw-driver baseline runs in the repository's benchmarks/.)",
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
        help="only these backends (repeatable; default: legacy-blob, sqlite, and postgres "
        "with --url)",
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
