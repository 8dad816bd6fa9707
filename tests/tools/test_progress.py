"""The progress reporter."""

from __future__ import annotations

import io

from statestore.tools.progress import Progress, format_seconds


def test_plain_lines_when_not_a_terminal() -> None:
    """Off a terminal: whole lines with counts and rate, no control characters."""
    out = io.StringIO()
    progress = Progress("copied", 10, stream=out, tty=False, every=0)
    for _ in range(4):
        progress.advance()
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("copied 1/10") and "/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("copied 4/10")
    assert "\r" not in out.getvalue()


def test_bar_on_a_terminal() -> None:
    """On a terminal: one rewritten line with a bar, ending with a newline."""
    out = io.StringIO()
    progress = Progress("copied", 4, stream=out, tty=True, every=0)
    for _ in range(4):
        progress.advance(problems=0)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 5 and text.endswith("\n")
    assert "[########################] copied 4/4" in text


def test_format_seconds() -> None:
    """Durations read as s, m+s or h+m."""
    assert (format_seconds(5), format_seconds(75), format_seconds(3700)) == ("5s", "1m15s", "1h01m")
