"""Hook specifications of statestore plugins.

A plugin is a module or object with ``@statestore.hookimpl`` functions, found through
the ``statestore`` entry-point group (or registered on a ``Registry`` by hand).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

__all__ = ["BackendSpec", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("statestore")
hookimpl = pluggy.HookimplMarker("statestore")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend a plugin offers.

    ``factory(url, *, migrate, registry, **options)`` returns an unopened
    ``StorageBackend``; ``url`` may be None (the backend's default), ``registry`` is
    the ``Registry`` opening it (a backend built on others opens them through it).
    ``url_schemes`` names the database engines its URL may point at (``"sqlite"``,
    ``"postgresql"``); empty for a backend that takes no URL. The contract suite runs
    the backend once per engine. What it can do is the backend's own
    ``capabilities``.
    """

    name: str
    factory: Callable[..., Any]
    description: str
    url_schemes: tuple[str, ...] = ()


@hookspec
def statestore_register_backends() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the backends this plugin offers. Results of all plugins are
    concatenated; two backends with one name are an error."""


@hookspec
def statestore_operation_done(
    backend: str, operation: str, conversation_id: str | None, seconds: float, rows: int
) -> None:
    """Called after every backend operation that succeeded (``rows``: rows read or
    written). Every implementation is called; return values are ignored. Keep it fast:
    it runs on the caller's task."""


@hookspec
def statestore_shadow_mismatch(
    backend: str, operation: str, conversation_id: str | None, reason: str
) -> None:
    """Called by the ``dual`` backend when its shadow disagrees with its primary: a
    shadow write that failed, or a compared read that differs (``reason`` says which and
    why). Every implementation is called; return values are ignored."""
