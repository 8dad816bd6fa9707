"""The progress reporter of the long commands (copy, export, import)."""

from __future__ import annotations

import io

from rich.console import Console

from statestore.cli.progress import Progress, format_seconds


def test_plain_lines_when_not_a_terminal() -> None:
    """Off a terminal: whole lines with counts and rate, no control characters."""
    out = io.StringIO()
    progress = Progress("copied", 10, console=Console(file=out), every=0)
    assert not progress.tty
    for _ in range(4):
        progress.advance()
    progress.note("corrupt: c9: not JSON")
    progress.finish()
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("copied 1/10") and "/s" in lines[0] and "ETA" in lines[0]
    assert "corrupt: c9: not JSON" in lines
    assert lines[-1].startswith("copied 4/10")
    assert "\r" not in text and "\x1b" not in text


def test_plain_lines_are_spaced_out() -> None:
    """Off a terminal, advancing faster than ``every`` writes only the final line."""
    out = io.StringIO()
    progress = Progress("exported", console=Console(file=out), every=3600)
    for _ in range(50):
        progress.advance()
    progress.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exported 50  ")


def test_bar_on_a_terminal() -> None:
    """On a terminal: a rich bar with the count and the extra counters, a problem line
    printed above it, and a final newline."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    progress = Progress("copied", 4, console=console)
    assert progress.tty
    for _ in range(4):
        progress.advance()
    progress.count("problems")
    progress.note("corrupt: c3: not JSON")
    progress.finish()
    text = out.getvalue()
    assert "corrupt: c3: not JSON" in text
    assert "copied" in text and "4/4" in text and "problems 1" in text
    assert text.replace("\x1b[?25h", "").endswith("\n")  # the cursor shown again last


def test_format_seconds() -> None:
    """Durations read as s, m+s or h+m."""
    assert (format_seconds(5), format_seconds(75), format_seconds(3700)) == ("5s", "1m15s", "1h01m")
