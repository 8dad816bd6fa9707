"""TEMPORARY, until issue 11 item 1 is on main: a Store usable from any event loop and
thread, and ``open_store_sync()`` / ``SyncStore``. The tests that need them skip with
this reason while ``statestore`` has no ``open_store_sync``, and run once it has.
Delete this module and its uses when it lands."""

from __future__ import annotations

import pytest

import statestore

ANY_LOOP = hasattr(statestore, "open_store_sync")
REASON = "needs issue 11 item 1 (a Store usable from any loop; SyncStore), not on main yet"


def skip_without_any_loop() -> None:
    if not ANY_LOOP:
        pytest.skip(REASON)
