"""``statestore backends``, ``migrate`` and ``show``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from typing import Any

from ..core.config import mask_url, resolve_config, url_scheme
from ..core.errors import StateStoreError
from ..core.query import LoadOptions
from ..core.registry import default_registry
from .common import Subparsers, add_store_arguments, existing_store, run_async

__all__ = ["register"]


# -- backends ---------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace) -> int:
    backends = default_registry().backends()
    width = max((len(name) for name in backends), default=4)
    for name in sorted(backends):
        info = backends[name]
        print(f"{name:<{width}}  {info.package or '-':<16}  {info.description}")
    return 0


# -- migrate ----------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    config = resolve_config(args.backend, args.url)
    if config.url is None:
        raise StateStoreError("no database URL: pass --url or set STATESTORE_URL")
    _check_schema_backend(config.backend, config.url)
    if args.sql and args.downgrade:
        raise StateStoreError(
            "--sql prints the upgrade SQL only; it cannot be combined with --downgrade"
        )
    if args.downgrade and args.revision is None:
        # "head" is no way down: without a REVISION nothing would happen.
        raise StateStoreError("--downgrade needs a REVISION (e.g. base to remove every table)")
    revision = args.revision or "head"
    from ..backends.sql import migrate  # Alembic: only this command needs it

    if args.sql:
        print(migrate.upgrade_sql(config.url, revision), end="")
        return 0
    if revision.startswith("-") or args.downgrade:
        run_async(_void(migrate.downgrade(config.url, revision)))
        print(f"downgraded {mask_url(config.url)} to {revision}")
    else:
        run_async(_void(migrate.upgrade(config.url, revision)))
        target = migrate.head_revision() if revision == "head" else revision
        print(f"{mask_url(config.url)} is at revision {target}")
    return 0


def _check_schema_backend(name: str, url: str) -> None:
    """Refuse to migrate a database the named backend would not use (a typo in --url
    or --backend must not create tables in the wrong place)."""
    schemes = default_registry().get(name).spec.url_schemes
    scheme = url_scheme(url)
    engine = "postgresql" if scheme == "postgres" else scheme
    if not schemes:
        raise StateStoreError(f"the {name} backend has no database schema to migrate")
    if engine not in schemes:
        raise StateStoreError(
            f"the {name} backend does not use {engine} databases "
            f"(it takes {', '.join(s + '://' for s in schemes)} URLs)"
        )


async def _void(coro: Coroutine[Any, Any, None]) -> int:
    await coro
    return 0


# -- show -------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    return run_async(_show(args))


async def _show(args: argparse.Namespace) -> int:
    import orjson

    options = LoadOptions(last_messages=args.last)
    async with existing_store(args.backend, args.url) as store:
        state = await store.load_state(args.conversation_id, options, user_id=args.user)
    if args.json:
        sys.stdout.write(orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(
        f"conversation {state.conversation_id}  user={state.user_id or '-'}  "
        f"version={state.version}  messages={state.history_total}  "
        f"updated={state.updated_at.isoformat() if state.updated_at else '-'}"
    )
    print(
        f"step_count={state.step_count}  focus_areas={state.focus_areas}  "
        f"user_input={state.user_input!r}"
    )
    if state.metadata:
        print(f"metadata: {orjson.dumps(state.metadata).decode()}")
    shown = len(state.conversation_history)
    if shown < state.history_total:
        print(f"(last {shown} of {state.history_total} messages)")
    for m in state.conversation_history:
        tool = f" [{m.tool_name}]" if m.tool_name else ""
        kind = "" if m.message_type == "text" else f" ({m.message_type})"
        text = m.content
        if m.payload is not None:  # a tool call or event: its text is in the payload
            text = f"{text} {_short_json(m.payload)}" if text else _short_json(m.payload)
        print(f"#{m.seq} {m.timestamp:%Y-%m-%d %H:%M:%S} {m.role}{tool}{kind}: {text}")
    for c in state.memory_context:
        print(
            f"context #{c.item_id} {c.source}/{c.context_type} "
            f"relevance={c.relevance_score:.2f}: {c.content}"
        )
    return 0


def _short_json(value: object, width: int = 200) -> str:
    """``value`` as compact JSON, cut to ``width`` characters (--json prints it whole)."""
    import orjson

    text = orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "\u2026"


# -- the parsers ------------------------------------------------------------------------


def register(sub: Subparsers) -> None:
    """Add ``backends``, ``migrate`` and ``show``."""
    p = sub.add_parser(
        "backends",
        help="list the backends found through entry points",
        description="List every backend registered through the `statestore` "
        "entry points: name, package and description.",
    )
    p.set_defaults(handler=cmd_backends)

    p = sub.add_parser(
        "migrate",
        help="apply the schema migrations",
        description="Bring the database schema to the newest revision (or REVISION). "
        "SQLite stores migrate themselves on open; PostgreSQL needs this command, run "
        "by a role that owns the tables.",
    )
    add_store_arguments(p)
    p.add_argument(
        "revision",
        nargs="?",
        help="target revision (default: head); required with --downgrade, where `base` "
        "removes every table",
    )
    p.add_argument("--downgrade", action="store_true", help="go down to REVISION instead of up")
    p.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead of running it (for a DBA to review)",
    )
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser(
        "show",
        help="print one conversation",
        description="Print a conversation: its fields, messages and context.",
    )
    add_store_arguments(p)
    p.add_argument("conversation_id", metavar="CONVERSATION_ID", help="the conversation to print")
    p.add_argument("--last", type=int, metavar="N", help="only the last N messages")
    p.add_argument("--user", metavar="USER_ID", help="read as this user (ownership applies)")
    p.add_argument("--json", action="store_true", help="print the legacy JSON document")
    p.set_defaults(handler=cmd_show)
