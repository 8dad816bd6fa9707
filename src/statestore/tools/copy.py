"""Copy conversations from any backend to any other, verify them, compare two stores.

``copy_conversations`` pages through the source with ``list_conversations(after=...)``
(constant memory: one page of ids plus ``jobs`` conversations in flight), and for each
conversation: loads it (a ``CorruptState`` is reported and skipped), loads the target's
copy and writes only when owner or content differ, then loads the copy back and
compares. What travels: the owner and the content (``to_dict()``: scalar fields,
messages and context items with their timestamps and metadata, state metadata). What
does not: versions, item ids and the conversation's created_at/updated_at, which are
the target's own. A conversation deleted from the source stays on the target
(``verify_stores`` reports it as ``extra``) unless ``delete_extra=True``: then a second
pass pages through the target and deletes every conversation the source does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ..core.backend import ConversationInfo
from ..core.compare import describe_difference, fresh_copy
from ..core.errors import ConversationNotFound, CorruptState, ValidationError, VersionConflict
from ..core.model import AgentState
from ..core.query import LoadOptions
from ..core.store import Store

__all__ = [
    "CopyStats",
    "Problem",
    "Run",
    "store_verified",
    "copy_conversations",
    "iter_conversations",
    "verify_stores",
]

# Enough to know a conversation exists, without reading its history.
_PROBE = LoadOptions(last_messages=0, context_limit=0)


@dataclass(frozen=True, slots=True)
class Problem:
    """A conversation that was not copied, or not equal on both sides.

    ``kind``: ``corrupt`` (the source cannot be read), ``write-failed`` (the target
    refused it), ``verify-failed`` (the copy read back differs), ``missing`` (not on
    the target), ``different`` (not equal on both sides), ``extra`` (on the target
    only).
    """

    conversation_id: str
    kind: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {
            "conversation_id": self.conversation_id,
            "problem": self.kind,
            "reason": self.reason,
        }


@dataclass(slots=True)
class CopyStats:
    """Counts of one run."""

    read: int = 0
    copied: int = 0
    unchanged: int = 0
    deleted: int | None = None  # None: no deleting pass ran (not asked, or a dry run)
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def problem_count(self) -> int:
        return sum(self.problems.values())

    def summary(self) -> str:
        parts = [f"read {self.read}", f"copied {self.copied}", f"unchanged {self.unchanged}"]
        if self.deleted is not None:
            parts.append(f"deleted {self.deleted}")
        parts += [f"{kind} {n}" for kind, n in sorted(self.problems.items())]
        return ", ".join(parts)


ProblemSink = Callable[[Problem], None]
Tick = Callable[[], None]
DeletedSink = Callable[[str], None]


async def iter_conversations(
    store: Store, *, user_id: str | None = None, batch_size: int = 200
) -> AsyncIterator[list[ConversationInfo]]:
    """Every conversation of ``store`` (of ``user_id``), one page at a time."""
    after: str | None = None
    while True:
        page = await store.list_conversations(user_id=user_id, limit=batch_size, after=after)
        if not page:
            return
        yield page
        if len(page) < batch_size:
            return
        after = page[-1].conversation_id


async def count_conversations(
    store: Store, *, user_id: str | None = None, batch_size: int = 1000
) -> int:
    """How many conversations ``store`` lists (for a progress bar's total)."""
    total = 0
    async for page in iter_conversations(store, user_id=user_id, batch_size=batch_size):
        total += len(page)
    return total


class Run:
    """The counts and problem reporting of one run."""

    def __init__(self, on_problem: ProblemSink | None, tick: Tick | None) -> None:
        self.stats = CopyStats()
        self._on_problem = on_problem
        self._tick = tick

    def problem(self, conversation_id: str, kind: str, reason: str) -> None:
        self.stats.problems[kind] = self.stats.problems.get(kind, 0) + 1
        if self._on_problem is not None:
            self._on_problem(Problem(conversation_id, kind, reason))

    def tick(self) -> None:
        if self._tick is not None:
            self._tick()


async def _load(store: Store, conversation_id: str) -> AgentState | None:
    try:
        return await store.load_state(conversation_id)
    except ConversationNotFound:
        return None


async def _copy_one(run: Run, source: Store, target: Store | None, conversation_id: str) -> None:
    try:
        state = await source.load_state(conversation_id)
    except ConversationNotFound:  # deleted since it was listed
        return
    except CorruptState as exc:
        run.problem(conversation_id, "corrupt", exc.reason)
        return
    run.stats.read += 1
    if target is not None:  # else a dry run: read and validated
        await store_verified(run, target, conversation_id, state)


async def store_verified(run: Run, target: Store, conversation_id: str, state: AgentState) -> None:
    """Write ``state`` (with its ``user_id`` as owner) to ``target`` unless the target
    already holds the same owner and content, then read it back and compare."""
    try:
        existing = await _load(target, conversation_id)
    except CorruptState:
        existing = None  # replaced below by a good copy
        await target.delete_state(conversation_id)
    if existing is not None and describe_difference(state, existing) is None:
        run.stats.unchanged += 1
        return
    try:
        if existing is not None and existing.user_id != state.user_id:
            # A replacing save keeps the stored owner: the owner changes only this way.
            await target.delete_state(conversation_id)
        await target.save_state(conversation_id, fresh_copy(state), user_id=state.user_id)
    except (ValidationError, VersionConflict, ConversationNotFound) as exc:
        run.problem(conversation_id, "write-failed", f"{type(exc).__name__}: {exc}")
        return
    back = await _load(target, conversation_id)
    difference = "not found after writing" if back is None else describe_difference(state, back)
    if difference is not None:
        run.problem(conversation_id, "verify-failed", difference)
        return
    run.stats.copied += 1


async def _each(jobs: int, ids: list[str], fn: Callable[[str], Awaitable[None]]) -> None:
    """``fn(id)`` for every id, at most ``jobs`` at a time; the first error cancels the
    others and is raised as itself."""
    semaphore = asyncio.Semaphore(jobs)

    async def one(conversation_id: str) -> None:
        async with semaphore:
            await fn(conversation_id)

    try:
        async with asyncio.TaskGroup() as group:
            for conversation_id in ids:
                group.create_task(one(conversation_id))
    except ExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


async def copy_conversations(
    source: Store,
    target: Store | None,
    *,
    user_id: str | None = None,
    batch_size: int = 200,
    jobs: int = 4,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
    delete_extra: bool = False,
    on_deleted: DeletedSink | None = None,
) -> CopyStats:
    """Copy every conversation of ``source`` (of ``user_id``) to ``target``, verifying
    each; ``target=None`` only reads and validates (a dry run). Returns the counts;
    each conversation not copied or not verified goes to ``on_problem``. ``tick`` is
    called once per source conversation (for progress). Errors other than a bad
    conversation (the database is unreachable, ...) stop the run: run it again to resume.

    ``delete_extra``: then delete every target conversation (of ``user_id``) that the
    source does not have, counted in ``deleted`` and passed to ``on_deleted``. One the
    source cannot read counts as present. A dry run reads no target and deletes
    nothing (``deleted`` stays None); ``verify_stores`` lists them as ``extra``."""
    run = Run(on_problem, tick)

    async def one(cid: str) -> None:
        await _copy_one(run, source, target, cid)
        run.tick()

    async for page in iter_conversations(source, user_id=user_id, batch_size=batch_size):
        await _each(jobs, [info.conversation_id for info in page], one)
    if delete_extra and target is not None:
        await _delete_extra(run, source, target, user_id, batch_size, jobs, on_deleted)
    return run.stats


async def _delete_extra(
    run: Run,
    source: Store,
    target: Store,
    user_id: str | None,
    batch_size: int,
    jobs: int,
    on_deleted: DeletedSink | None,
) -> None:
    deleted = 0

    async def one(cid: str) -> None:
        nonlocal deleted
        if await _exists(source, cid):
            return
        # With user_id, a conversation that changed hands since it was listed stays.
        if await target.delete_state(cid, user_id=user_id):
            deleted += 1
            if on_deleted is not None:
                on_deleted(cid)

    # The page is a list read in full before any delete, and the next page starts after
    # its last id: deleting rows of this page cannot make the cursor skip one.
    async for page in iter_conversations(target, user_id=user_id, batch_size=batch_size):
        await _each(jobs, [info.conversation_id for info in page], one)
    run.stats.deleted = deleted


async def _compare_one(run: Run, source: Store, target: Store, conversation_id: str) -> None:
    try:
        state = await _load(source, conversation_id)
    except CorruptState as exc:
        run.problem(conversation_id, "corrupt", exc.reason)
        return
    if state is None:
        return
    run.stats.read += 1
    try:
        other = await _load(target, conversation_id)
    except CorruptState as exc:
        run.problem(conversation_id, "different", f"the target's copy is corrupt: {exc.reason}")
        return
    if other is None:
        run.problem(conversation_id, "missing", "not on the target")
        return
    difference = describe_difference(state, other)
    if difference is not None:
        run.problem(conversation_id, "different", difference)
        return
    run.stats.unchanged += 1


async def _exists(store: Store, conversation_id: str) -> bool:
    try:
        await store.load_state(conversation_id, _PROBE)
    except ConversationNotFound:
        return False
    except CorruptState:
        return True
    return True


async def verify_stores(
    source: Store,
    target: Store,
    *,
    user_id: str | None = None,
    batch_size: int = 200,
    jobs: int = 4,
    on_problem: ProblemSink | None = None,
    tick: Tick | None = None,
) -> CopyStats:
    """Compare two stores without writing: every source conversation must be on the
    target with the same owner and content (``missing``, ``different``, ``corrupt``
    otherwise), and every target conversation must be on the source (``extra``).
    ``unchanged`` counts the equal ones."""
    run = Run(on_problem, tick)

    async def forward(cid: str) -> None:
        await _compare_one(run, source, target, cid)
        run.tick()

    async def backward(cid: str) -> None:
        if not await _exists(source, cid):
            run.problem(cid, "extra", "on the target only")

    async for page in iter_conversations(source, user_id=user_id, batch_size=batch_size):
        await _each(jobs, [info.conversation_id for info in page], forward)
    async for page in iter_conversations(target, user_id=user_id, batch_size=batch_size):
        await _each(jobs, [info.conversation_id for info in page], backward)
    return run.stats
