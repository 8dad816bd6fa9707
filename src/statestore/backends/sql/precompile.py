"""Write ``precompiled.json``: the compiled text of the statements that opening a
store, loading, listing and a turn's write use, for both engines (see
``statements.py``). Run it after changing a table or a builder::

    python -m statestore.backends.sql.precompile

``tests/backends/test_statements.py`` fails while the file differs from a fresh
compile.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Hashable, Iterator

from .statements import PRECOMPILED, compile_fresh, statement_key

__all__ = ["ENGINES", "shipped_statements", "write"]

ENGINES = ("sqlite", "postgresql")
_BOOL = (False, True)
_SCALARS = ("user_input", "focus_areas", "step_count", "last_tool_result")


def _flags(n: int) -> Iterator[tuple[bool, ...]]:
    return itertools.product(_BOOL, repeat=n)


def shipped_statements(engine: str) -> Iterator[tuple[str, tuple[Hashable, ...]]]:
    """(builder, shape) of every statement shipped compiled for ``engine``."""
    # Reads: every shape.
    for owned, shared in _flags(2):
        yield "normalized_sql.state_select", (owned, shared)
    for shape in _flags(4):
        yield "normalized_sql.messages_select", shape
    for shape in _flags(5):
        yield "normalized_sql.items_select", shape
        if engine == "postgresql":  # SQLite runs the two statements (in process)
            yield "normalized_sql.state_and_window", shape
    prefixes = ((False, False), (True, False), (True, True))
    for by_user, after, with_metadata in _flags(3):
        for by_prefix, bounded in prefixes:
            for order in ("id", "updated"):
                listing = (by_user, after, by_prefix, bounded, order, with_metadata)
                yield "normalized_sql.list_states", listing
            for limited in _BOOL:
                yield "legacy_sql.list", (by_user, after, by_prefix, bounded, limited)
    for owned in _BOOL:
        yield "legacy_sql.newest", (owned,)
        yield "normalized_sql.delete_state", (owned,)
        yield "legacy_sql.delete", (owned,)
    yield "compile.select_shared", ()
    # A turn's writes: an append, the scalars of a saved state, a new conversation.
    for count, add_items, all_scalars, owned, versioned in itertools.product(
        ("", "add"), _BOOL, _BOOL, _BOOL, _BOOL
    ):
        update = (count, add_items, _SCALARS if all_scalars else (), owned, versioned, False)
        yield "normalized_sql.update_state", update
        if engine == "postgresql" and count == "add" and not add_items:
            for one in _BOOL:
                yield "normalized_sql.append_messages", (one, *update)
    for table in ("conversation_messages", "memory_context_items"):
        yield "normalized_sql.insert_row", (table,)
        yield "compile.bulk_insert", (table,)
    for builder in (
        "normalized_sql.insert_state",
        "normalized_sql.probe_state",
        "normalized_sql.upsert_metadata",
        "legacy_sql.insert",
        "compile.upsert_shared",
    ):
        yield builder, ()
    if engine == "postgresql":
        yield "legacy_sql.lock_conversation", ()


def compile_all() -> dict[str, dict[str, list[object]]]:
    """What ``precompiled.json`` holds: per engine, each statement's key to its
    [text, parameter names, fixed values]."""
    shipped: dict[str, dict[str, list[object]]] = {}
    for engine in ENGINES:
        entries = shipped[engine] = {}
        for builder, shape in shipped_statements(engine):
            compiled = compile_fresh(engine, builder, shape)
            entries[statement_key(builder, shape)] = [
                compiled.sql,
                list(compiled.names),
                dict(compiled.fixed),
            ]
    return shipped


def write() -> None:
    """Compile every shipped statement afresh into ``precompiled.json``."""
    text = json.dumps(compile_all(), indent=1, sort_keys=True, ensure_ascii=False)
    PRECOMPILED.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {PRECOMPILED}")


if __name__ == "__main__":
    write()
