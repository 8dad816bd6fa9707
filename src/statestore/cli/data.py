"""``statestore copy``, ``export``, ``import``, ``prune`` and ``stats``.

Exit status: 0 when everything went through, 1 when some conversation was skipped,
missing or different (see the report), 2 on an error (one line on stderr). The tools
(``statestore.tools``) and rich are imported when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..core.config import mask_url, resolve_config
from ..core.errors import StateStoreError
from ..core.registry import default_registry
from .common import (
    Subparsers,
    add_store_arguments,
    check_writable,
    existing_store,
    positive,
    refuse_missing_sqlite,
    run_async,
)

if TYPE_CHECKING:
    from ..core.backend import ConversationInfo
    from ..core.maintenance import StoreStats
    from ..core.store import Store
    from ..tools.copy import CopyStats, Problem
    from .progress import Progress

__all__ = ["register"]

DEFAULT_REPORT = "statestore-copy-report.jsonl"
DEFAULT_IMPORT_REPORT = "statestore-import-report.jsonl"


def _open_spec(
    spec: str, option: str, migrate: bool | None, *, must_exist: bool = False
) -> tuple[Store, str]:
    """The unopened store for ``NAME:URL`` and a masked label for messages."""
    from ..backends.dual import split_target

    name, url = split_target(spec)
    if url is None:
        raise StateStoreError(f"{option} needs NAME:URL, e.g. postgres:postgresql://host/db")
    default_registry().get(name)  # an unknown name is the first thing to say
    if must_exist:
        refuse_missing_sqlite(url, option)
    return default_registry().open_store(name, url, migrate=migrate), f"{name}:{mask_url(url)}"


class _Reporter:
    """Problems: one line each on stderr (above the progress bar) and one JSON line
    each in the report file."""

    def __init__(self, report: IO[bytes] | None, progress: Progress | None) -> None:
        self.report = report
        self.progress = progress
        self.count = 0

    def __call__(self, problem: Problem) -> None:
        import orjson

        self.count += 1
        self._say(f"{problem.kind}: {problem.conversation_id}: {problem.reason}", "problems")
        if self.report is not None:
            self.report.write(orjson.dumps(problem.as_json()) + b"\n")
            self.report.flush()

    def deleted(self, conversation_id: str) -> None:
        """A target conversation removed by --delete-extra: one line on stderr."""
        self._say(f"deleted: {conversation_id}: not on the source", "deleted")

    def _say(self, line: str, counter: str) -> None:
        if self.progress is None:
            print(line, file=sys.stderr)
            return
        self.progress.count(counter)
        self.progress.note(line)


@contextmanager
def _report_file(path: str) -> Iterator[IO[bytes]]:
    """The report of a run that has started (a previous run's report is replaced),
    removed again if nothing went into it: a clean run leaves no report behind."""
    try:
        report = open(path, "wb")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise StateStoreError(f"--report: cannot write {path}: {exc.strerror}") from exc
    try:
        yield report
    finally:
        empty = report.tell() == 0
        report.close()
        if empty and os.path.isfile(path):  # never unlink /dev/null and the like
            os.unlink(path)


def _finish(stats: CopyStats, reporter: _Reporter, report_path: str, verb: str, what: str) -> int:
    print(f"{verb}: {stats.summary()}")
    if reporter.count:
        print(f"{reporter.count} {what}; see {report_path}", file=sys.stderr)
        return 1
    return 0


# -- copy ---------------------------------------------------------------------------------


def cmd_copy(args: argparse.Namespace) -> int:
    if args.dry_run and args.verify_only:
        raise StateStoreError("--dry-run and --verify-only cannot be combined")
    if args.delete_extra and args.verify_only:
        raise StateStoreError(
            "--delete-extra and --verify-only cannot be combined "
            "(--verify-only lists what --delete-extra would delete as extra)"
        )
    if args.delete_extra and args.dry_run:
        raise StateStoreError(
            "--delete-extra and --dry-run cannot be combined: a dry run opens no target "
            "(--verify-only lists what --delete-extra would delete as extra)"
        )
    if args.to is None and not args.dry_run:
        raise StateStoreError("--to NAME:URL is required (except with --dry-run)")
    if args.to is not None and args.to == getattr(args, "from"):
        raise StateStoreError("--from and --to name the same store")
    check_writable(args.report, "--report")
    source, source_label = _open_spec(getattr(args, "from"), "--from", None, must_exist=True)
    target = label = None
    if args.to is not None and not args.dry_run:
        target, label = _open_spec(args.to, "--to", True if args.migrate else None)
    return run_async(
        _copy(args, source, target, f"{source_label} -> {label}" if label else source_label)
    )


async def _copy(args: argparse.Namespace, source: Store, target: Store | None, where: str) -> int:
    from ..tools.copy import copy_conversations, count_conversations, verify_stores
    from .progress import Progress

    async with AsyncExitStack() as stores:
        await stores.enter_async_context(source)
        if target is not None:
            await stores.enter_async_context(target)
        with _report_file(args.report) as report:  # both stores open: the run starts
            total = await count_conversations(source, user_id=args.user)
            progress = None if args.quiet else Progress("conversations", total)
            reporter = _Reporter(report, progress)
            tick = progress.advance if progress is not None else None
            common: dict[str, Any] = {
                "user_id": args.user,
                "batch_size": args.batch_size,
                "jobs": args.jobs,
                "on_problem": reporter,
                "tick": tick,
            }
            if target is None:
                stats = await copy_conversations(source, None, **common)
            elif args.verify_only:
                stats = await verify_stores(source, target, **common)
            else:
                stats = await copy_conversations(
                    source,
                    target,
                    **common,
                    delete_extra=args.delete_extra,
                    on_deleted=reporter.deleted,
                )
            if progress is not None:
                progress.finish()
    verb = "verified" if args.verify_only else "validated" if args.dry_run else "copied"
    return _finish(
        stats, reporter, args.report, f"{verb} {where}", "conversation(s) not copied or not equal"
    )


# -- export / import ----------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    to_stdout = args.out == "-"
    if not to_stdout:
        check_writable(args.out, "--out")
    store = existing_store(args.backend, args.url)
    if to_stdout:
        try:
            exported, left_out = run_async(_export(args, store, sys.stdout.buffer))
        except BrokenPipeError:  # the reader stopped early (`| head`): not finished
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    else:
        partial = Path(f"{args.out}.partial")
        try:
            with open(partial, "wb") as out:
                exported, left_out = run_async(_export(args, store, out))
            os.replace(partial, args.out)  # never a half-written FILE
        except OSError as exc:
            raise StateStoreError(f"--out: cannot write {args.out}: {exc.strerror}") from exc
        finally:
            partial.unlink(missing_ok=True)
    # With --out -, stdout is the export itself: the summary goes to stderr.
    where = "" if to_stdout else f" to {args.out}"
    print(f"exported {exported} conversation(s){where}", file=sys.stderr if to_stdout else None)
    if left_out:
        print(f"{left_out} corrupt conversation(s) left out (named above)", file=sys.stderr)
        return 1
    return 0


async def _export(args: argparse.Namespace, store: Store, out: IO[bytes]) -> tuple[int, int]:
    """(conversations exported, corrupt ones left out)."""
    from ..tools.lifecycle import export_conversations
    from .progress import Progress

    progress = None if args.quiet or args.out == "-" else Progress("conversations")
    reporter = _Reporter(None, progress)
    async with store:
        stats = await export_conversations(
            store,
            out,
            user_id=args.user,
            on_problem=reporter,
            tick=progress.advance if progress else None,
        )
    if progress is not None:
        progress.finish()
    return stats.read, reporter.count


def cmd_import(args: argparse.Namespace) -> int:
    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise StateStoreError(f"cannot open {exc.filename}: {exc.strerror}") from exc
    with source:
        check_writable(args.report, "--report")
        config = resolve_config(args.backend, args.url)
        store = default_registry().open_store(config.backend, config.url)
        return run_async(_import(args, store, source))


async def _import(args: argparse.Namespace, store: Store, source: IO[bytes]) -> int:
    from ..tools.lifecycle import import_conversations
    from .progress import Progress

    async with store:
        with _report_file(args.report) as report:  # the store is open: the run starts
            progress = None if args.quiet else Progress("lines")
            reporter = _Reporter(report, progress)
            stats = await import_conversations(
                store, source, on_problem=reporter, tick=progress.advance if progress else None
            )
            if progress is not None:
                progress.finish()
    return _finish(stats, reporter, args.report, f"imported {args.file}", "line(s) not imported")


# -- prune --------------------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace) -> int:
    from ..tools.lifecycle import parse_age

    age = parse_age(args.older_than)
    return run_async(_prune(args, age))


async def _prune(args: argparse.Namespace, age: timedelta) -> int:
    from ..core.maintenance import Maintenance, maintenance_of
    from ..tools.lifecycle import prune_conversations

    store = existing_store(args.backend, args.url)
    verb = "would remove" if args.dry_run else "removed"

    def removed(info: ConversationInfo) -> None:
        print(f"{verb} {info.conversation_id} (updated {info.updated_at:%Y-%m-%d %H:%M:%S})")

    async with store:
        # --vacuum on a backend without it fails before anything is deleted.
        upkeep = maintenance_of(store) if args.vacuum else None
        count = await prune_conversations(
            store,
            age,
            user_id=args.user,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            on_removed=removed,
        )
        print(f"{verb} {count} conversation(s) last updated more than {args.older_than} ago")
        if count and not args.dry_run:
            if upkeep is not None:
                print(await upkeep.vacuum())
            elif isinstance(store, Maintenance):
                print(store.vacuum_advice())
    return 0


# -- stats --------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    config = resolve_config(args.backend, args.url)
    if config.url is None:
        raise StateStoreError("no database URL: pass --url or set STATESTORE_URL")
    stats = run_async(_stats(existing_store(config.backend, config.url), args.top))
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(stats.as_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    from .output import new_table, print_table

    print(f"{mask_url(config.url)} ({stats.engine})")
    print(f"conversations: {stats.conversations} normalized, {stats.legacy_conversations} legacy")
    table = new_table("table", ">rows", ">bytes")
    for name, rows in stats.rows.items():
        size = stats.bytes.get(name)
        table.add_row(name, f"{rows:,}", "-" if size is None else f"{size:,}")
    print_table(table)
    if stats.largest:
        print(f"largest conversations (content bytes of messages), top {args.top}:")
        table = new_table("conversation", ">messages", ">context items", ">bytes")
        for cid, messages, items, size in stats.largest:
            table.add_row(cid, f"{messages:,}", f"{items:,}", f"{size:,}")
        print_table(table)
    if stats.largest_legacy:
        print(f"largest legacy conversations (all snapshots), top {args.top}:")
        table = new_table("conversation", ">snapshots", ">bytes")
        for cid, snapshots, size in stats.largest_legacy:
            table.add_row(cid, f"{snapshots:,}", f"{size:,}")
        print_table(table)
    return 0


async def _stats(store: Store, top: int) -> StoreStats:
    from ..core.maintenance import maintenance_of

    async with store:
        return await maintenance_of(store).storage_stats(top=top)


# -- the parsers --------------------------------------------------------------------------


def register(sub: Subparsers) -> None:
    """Add ``copy``, ``export``, ``import``, ``prune`` and ``stats``."""
    p = sub.add_parser(
        "copy",
        help="copy conversations between backends and verify them",
        description="Copy every conversation from one store to another (any backend to "
        "any backend), a page at a time, and verify each copy by reading it back. A "
        "conversation that cannot be read is reported (stderr and --report) and skipped; "
        "the exit status is then 1. Running again copies only what is new or changed; "
        "with --delete-extra it also deletes what the source no longer has. "
        "Example: statestore copy --from legacy-blob:postgresql://db/app "
        "--to postgres:postgresql://db/app",
    )
    p.add_argument(
        "--from",
        required=True,
        metavar="NAME:URL",
        help="the source store, e.g. legacy-blob:sqlite:///old.db",
    )
    p.add_argument(
        "--to", metavar="NAME:URL", help="the target store, e.g. postgres:postgresql://h/db"
    )
    p.add_argument("--user", metavar="USER_ID", help="only this user's conversations")
    p.add_argument(
        "--dry-run", action="store_true", help="read and validate the source only; no target"
    )
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="write nothing: compare source and target (missing, different, extra)",
    )
    p.add_argument(
        "--delete-extra",
        action="store_true",
        help="after copying, DELETE the target conversations absent from the source "
        "(with --user: that user's only), naming each on stderr; --verify-only lists "
        "them (extra) first",
    )
    p.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        metavar="FILE",
        help="JSON-lines file of the conversations not copied or not equal, written "
        "only if there are any (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=positive, default=200, metavar="N", help="page size (default 200)"
    )
    p.add_argument(
        "--jobs", type=positive, default=4, metavar="N", help="conversations in flight (4)"
    )
    p.add_argument("--migrate", action="store_true", help="apply migrations to the target first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=cmd_copy)

    p = sub.add_parser(
        "export",
        help="write conversations to a JSON-lines file",
        description="Write every conversation (or one user's) to FILE, one JSON object a "
        'line: {"conversation_id", "user_id", "version", "created_at", "updated_at", '
        '"state"} where state is the legacy document. Corrupt conversations are '
        "reported and left out (exit status 1).",
    )
    add_store_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output file (- for stdout)")
    p.add_argument("--user", metavar="USER_ID", help="only this user's conversations")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser(
        "import",
        help="read conversations from a JSON-lines export",
        description="Write each conversation of an export file to the store with its "
        "owner and content, unless the store already holds the same; each is read back "
        "and compared. Bad lines are reported and skipped (exit status 1).",
    )
    add_store_arguments(p)
    p.add_argument("file", metavar="FILE", help="a file written by `statestore export` (- stdin)")
    p.add_argument(
        "--report",
        default=DEFAULT_IMPORT_REPORT,
        metavar="FILE",
        help="JSON-lines file of the lines not imported, written only if there are any "
        "(default: %(default)s)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "prune",
        help="delete conversations not updated for a while",
        description="Delete the conversations last updated more than AGE ago (e.g. 30d, "
        "12h, 2w), a page at a time, printing each one removed; then say how to reclaim "
        "the space on this engine, or do it with --vacuum.",
    )
    add_store_arguments(p)
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 90m, 2w")
    p.add_argument("--user", metavar="USER_ID", help="only this user's conversations")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed only")
    p.add_argument(
        "--vacuum",
        action="store_true",
        help="then VACUUM and ANALYZE (SQLite) / VACUUM (ANALYZE) the tables (PostgreSQL)",
    )
    p.add_argument(
        "--batch-size", type=positive, default=500, metavar="N", help="page size (default 500)"
    )
    p.set_defaults(handler=cmd_prune)

    p = sub.add_parser(
        "stats",
        help="rows and bytes per table, the largest conversations",
        description="Show conversation counts, rows and bytes per table (normalized and "
        "legacy tables) and the largest conversations of the database at --url.",
    )
    add_store_arguments(p)
    p.add_argument(
        "--top",
        type=positive,
        default=10,
        metavar="N",
        help="largest conversations shown (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_stats)
