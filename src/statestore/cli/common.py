"""What the command modules share: the store arguments, argument types, running a
coroutine."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["Subparsers", "add_store_arguments", "positive", "run_async"]

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time before Python 3.12
    Subparsers = argparse._SubParsersAction
T = TypeVar("T")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--url``, shared by every command that opens a store."""
    parser.add_argument(
        "-b",
        "--backend",
        metavar="NAME",
        help="backend name (see `statestore backends`); default: $STATESTORE_BACKEND, "
        "else inferred from the URL, else sqlite",
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        help="database URL, e.g. sqlite:///state.db or postgresql://user@host/db; "
        "default: $STATESTORE_URL, else sqlite:///statestore.db",
    )


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a new event loop."""
    return asyncio.run(coro)
