"""Progress of a long command on stderr: a rich progress bar (count, extra counters,
rate, time left) on a terminal; off one (a pipe, a log file, the tests), plain lines,
at most one every few seconds, without control characters."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3700`` → ``1h01m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _RateColumn(ProgressColumn):
    """Items per second (rich's own speed columns count bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f}/s")


class Progress:
    """Counts ``done`` out of ``total`` (None: unknown) items of work.

    ``advance()`` after each item, ``note()`` for a line of its own (shown above the
    bar), ``finish()`` at the end. Extra counters (``problems=3``) are shown after the
    main count.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        console: Console | None = None,
        every: float = 5.0,
    ) -> None:
        self.label = label
        self.total = total
        self.console = console if console is not None else Console(stderr=True)
        self.tty = self.console.is_terminal
        self.every = every
        self.done = 0
        self.extra: dict[str, int] = {}
        self._started = time.monotonic()
        self._shown = self._started
        self._bar: RichProgress | None = None
        if self.tty:
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                _RateColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(label, total=total, extra="")
            self._bar.start()

    def advance(self, n: int = 1, **extra: int) -> None:
        """``n`` more items done; ``extra`` counters added to."""
        self.done += n
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0) + value
        if self._bar is not None:
            self._bar.update(self._task, advance=n, extra=self._extra_text())
            return
        now = time.monotonic()
        if now - self._shown >= self.every:
            self._shown = now
            self._write(self.line())

    def count(self, key: str, n: int = 1) -> None:
        """Add to an extra counter without advancing."""
        self.extra[key] = self.extra.get(key, 0) + n
        if self._bar is not None:
            self._bar.update(self._task, extra=self._extra_text())

    def note(self, text: str) -> None:
        """A line of its own on the progress stream (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._write(text)

    def finish(self) -> None:
        """The final count; the bar stays on screen."""
        if self._bar is not None:
            self._bar.update(self._task, extra=self._extra_text())
            self._bar.stop()
        else:
            self._write(self.line())

    def line(self) -> str:
        """The current state as text, without a bar."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        parts = [f"{self.label} {count}", self._extra_text()]
        parts.append(f"{rate:.1f}/s")
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_seconds(elapsed)}")
        return "  ".join(part for part in parts if part)

    def _extra_text(self) -> str:
        return "  ".join(f"{key} {value}" for key, value in self.extra.items() if value)

    def _write(self, text: str) -> None:
        stream = self.console.file
        stream.write(text + "\n")
        stream.flush()
