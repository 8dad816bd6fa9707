"""Observability without wrappers: each backend reports every finished operation
through the ``statestore_operation_done`` hook and a DEBUG log line."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["Observer"]

logger = logging.getLogger("statestore")


class Observer:
    """Reports operations of one backend instance. ``hook`` is a pluggy hook relay
    (``registry.hook``) or None when nobody listens."""

    __slots__ = ("backend", "hook")

    def __init__(self, backend: str, hook: Any = None) -> None:
        self.backend = backend
        self.hook = hook

    def done(self, operation: str, conversation_id: str | None, started: float, rows: int) -> None:
        """Report an operation that began at ``started`` (a ``time.perf_counter()``)."""
        seconds = time.perf_counter() - started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s conversation=%r rows=%d %.3f ms",
                self.backend,
                operation,
                conversation_id,
                rows,
                seconds * 1000,
            )
        # Asked each time, as plugins may register later; calling a hook nobody
        # implements costs more than asking (a few µs per operation).
        if self.hook is not None and self.hook.statestore_operation_done.get_hookimpls():
            self.hook.statestore_operation_done(
                backend=self.backend,
                operation=operation,
                conversation_id=conversation_id,
                seconds=seconds,
                rows=rows,
            )
