"""A small progress reporter: a one-line bar with counts, rate and ETA on a terminal,
plain lines (at most one every few seconds) when the output is not one."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3700`` → ``1h01m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts ``done`` out of ``total`` (None: unknown) items of work.

    ``advance()`` after each item; ``finish()`` at the end. ``extra`` counters
    (``skipped=3``) are shown after the main count.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every if every is not None else (0.1 if self.tty else 5.0)
        self.done = 0
        self.extra: dict[str, int] = {}
        self._started = time.monotonic()
        self._shown = 0.0

    def advance(self, n: int = 1, **extra: int) -> None:
        self.done += n
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0) + value
        now = time.monotonic()
        if now - self._shown >= self.every:
            self._shown = now
            self._show(final=False)

    def finish(self) -> None:
        self._show(final=True)

    def line(self) -> str:
        """The current state as text, without a bar."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        parts = [f"{self.label} {count}"]
        parts += [f"{key} {value}" for key, value in self.extra.items() if value]
        parts.append(f"{rate:.1f}/s")
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_seconds(elapsed)}")
        return "  ".join(parts)

    def _show(self, *, final: bool) -> None:
        text = self.line()
        if self.tty:
            bar = ""
            if self.total:
                width = 24
                filled = int(width * min(self.done / self.total, 1.0))
                bar = "[" + "#" * filled + "." * (width - filled) + "] "
            self.stream.write("\r\x1b[K" + bar + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
