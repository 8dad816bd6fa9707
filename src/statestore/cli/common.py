"""What the command modules share: the store arguments, opening a store that must
exist, checking an output path, argument types, running a coroutine."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.config import resolve_config, url_scheme
from ..core.errors import StateStoreError
from ..core.registry import default_registry

__all__ = [
    "Subparsers",
    "add_store_arguments",
    "check_writable",
    "existing_store",
    "positive",
    "refuse_missing_sqlite",
    "run_async",
]

if TYPE_CHECKING:
    from ..core.store import Store

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


def refuse_missing_sqlite(url: str | None, option: str | None = None) -> None:
    """Raise if ``url`` names a SQLite file that does not exist: opening it would
    create (and migrate) an empty database, so a mistyped path would look like an
    empty store. ``option`` prefixes the message (``--from``)."""
    if url is None or url_scheme(url) != "sqlite":
        return
    from ..backends.sqlite import sqlite_path

    path = sqlite_path(url)
    if not path.exists():
        where = f"{option}: " if option else ""
        raise StateStoreError(f"{where}SQLite file {path} does not exist")


def existing_store(backend: str | None, url: str | None) -> Store:
    """The unopened store of ``--backend`` and ``--url`` (else the environment) for a
    command that reads what is there: a SQLite file that does not exist is refused."""
    config = resolve_config(backend, url)
    registry = default_registry()
    registry.get(config.backend)  # an unknown name is the first thing to say
    refuse_missing_sqlite(config.url)
    return registry.open_store(config.backend, config.url)


def check_writable(path: str, option: str) -> None:
    """Raise now, before any work, if ``path`` cannot be written (no such directory,
    a directory, no permission); leaves no file behind."""
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):  # appending: an existing file is left as it is
            pass
    except OSError as exc:
        raise StateStoreError(f"{option}: cannot write {path}: {exc.strerror}") from exc
    if not existed:
        os.unlink(path)


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
