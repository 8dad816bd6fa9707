"""The ``statestore`` command: one argparse parser tree.

Every command that opens a store takes ``--backend`` and ``--url`` (else
``STATESTORE_BACKEND`` and ``STATESTORE_URL``, else SQLite in ./statestore.db). Errors
are one line on stderr and exit status 2; URLs are shown with their password masked.

Each module of this package adds its commands with ``register(sub)``; ``COMMANDS``
lists them in the order ``--help`` shows them (a new group of commands is a new module
and a line here). Registering builds parsers only: what a command needs beyond the
core (migrations, the copy tools, the benchmarks, rich) is imported when it runs, so
``statestore --help`` and ``statestore show`` start quickly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..core.errors import StateStoreError
from . import bench, data, store
from .common import Subparsers, add_store_arguments, run_async

__all__ = ["COMMANDS", "main", "build_parser", "add_store_arguments", "run_async"]

Handler = Callable[[argparse.Namespace], int]

COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    store.register,  # backends, migrate, show
    data.register,  # copy, export, import, prune, stats
    bench.register,  # bench
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``statestore`` command."""
    parser = argparse.ArgumentParser(
        prog="statestore",
        description="Persist AI-agent conversation state: inspect, migrate, benchmark "
        "and move data between backends.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``statestore`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except StateStoreError as exc:
        print(f"statestore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("statestore: interrupted", file=sys.stderr)
        return 130
