"""Dual backend: every write goes to a primary and a shadow, reads come from the
primary. It is the parallel run of a move off the one-blob layout, and its rollback.

URL: a ``sqlite:///file.db`` or ``postgresql://`` URL. With only a URL, the primary is
the normalized backend of that engine (``sqlite`` or ``postgres``) and the shadow is
``legacy-blob`` on the same database, so ``open_store("dual", url=...)`` keeps the old
layout up to date while the new one serves. Options (else the environment):

- ``primary`` / ``shadow`` (``STATESTORE_DUAL_PRIMARY`` / ``_SHADOW``): ``NAME:URL``
  or ``NAME`` (then the main URL), e.g. ``shadow="legacy-blob:postgresql://..."``.
- ``strict`` (``STATESTORE_DUAL_STRICT=1``): a failing shadow fails the call (the
  primary has already written). Default: it is logged and reported through the
  ``statestore_shadow_mismatch`` hook, and the call succeeds.
- ``compare_reads`` (``STATESTORE_DUAL_COMPARE_READS``, 0..1, default 0): the share
  of loads also read from the shadow and compared; differences are reported.
- ``rollout_percent`` (``STATESTORE_DUAL_ROLLOUT_PERCENT``, 0..100) and
  ``rollout_prefixes`` (``STATESTORE_DUAL_ROLLOUT_PREFIXES``, comma-separated): which
  conversations the primary serves. A conversation whose id starts with one of the
  prefixes, or whose stable hash falls under the percentage, is served by the primary;
  the others are served by the shadow, and the primary follows them. Default: 100
  without prefixes, 0 with prefixes. Writes always reach both sides.

How the follower is kept equal: after each write on the serving side, the whole
conversation is read back from it and saved to the other side as a replacement
(O(history), like the legacy layout itself); a delete is repeated. Writes of one
conversation are mirrored one at a time within a process, so the follower ends with
the newest state, and writes that arrive while a mirror waits its turn share it.
Versions, item ids, created_at and updated_at are each side's own; owner and content
are equal. ``list_conversations`` comes from the primary once it serves every
conversation (rollout 100), and from the shadow before that.

Observability: the Store over the dual backend reports each operation under the
name ``dual``; its two sides are backends it drives directly, not stores, so they
report nothing of their own.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from ..core import jsoncodec
from ..core.backend import (
    SCALARS,
    Capability,
    ConversationInfo,
    StorageBackend,
    StoredView,
    WritePlan,
    WriteResult,
)
from ..core.compare import describe_difference
from ..core.config import backend_for_url, mask_url
from ..core.errors import StateStoreError, ValidationError
from ..core.hookspecs import BackendSpec, hookimpl
from ..core.query import LoadOptions
from ..core.store import Store

__all__ = ["DualBackend", "split_target"]

logger = logging.getLogger("statestore.dual")

_WHOLE = LoadOptions()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def split_target(spec: str, default_url: str | None = None) -> tuple[str, str | None]:
    """``NAME:URL`` → (name, url); ``NAME`` → (name, default_url); a bare URL →
    (the built-in backend for its scheme, url)."""
    if not isinstance(spec, str) or not spec:
        raise ValidationError("target", "must be NAME, NAME:URL or a database URL")
    name, sep, rest = spec.partition(":")
    if not sep:
        return name, default_url
    if rest.startswith("//"):  # a bare URL: postgresql://...
        return backend_for_url(spec), spec
    if not name or not rest:
        raise ValidationError("target", f"must be NAME:URL, got {mask_url(spec)!r}")
    return name, rest


class _AnyLoopLock:
    """A lock for coroutines on any event loop, in any thread (``asyncio.Lock`` serves
    one loop): the holder hands it to the first waiter, on that waiter's loop."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locked = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        with self._guard:
            if not self._locked:
                self._locked = True
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._guard:
                if waiter in self._waiters:  # not handed the lock: just leave
                    self._waiters.remove(waiter)
                    raise
            if not waiter.cancelled():  # handed the lock, then cancelled: pass it on
                self.release()
            # else _hand_over, still to run on this loop, passes it on
            raise

    def release(self) -> None:
        with self._guard:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(self._hand_over, waiter)
                    return
                except RuntimeError:  # its loop has closed: the next one
                    continue
            self._locked = False

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            self.release()
        else:
            waiter.set_result(None)


def in_rollout(conversation_id: str, percent: float, prefixes: tuple[str, ...]) -> bool:
    """Whether ``conversation_id`` is served by the primary: a prefix match, or its
    stable hash (the same in every process) under ``percent``."""
    if prefixes and conversation_id.startswith(prefixes):
        return True
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    digest = hashlib.sha256(conversation_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < percent * 100


class DualBackend:
    """A primary and a shadow backend written together (see the module docstring)."""

    name: ClassVar[str] = "dual"

    def __init__(
        self,
        primary: StorageBackend,
        shadow: StorageBackend,
        *,
        strict: bool = False,
        compare_reads: float = 0.0,
        rollout_percent: float | None = None,
        rollout_prefixes: tuple[str, ...] = (),
        hook: Any = None,
    ) -> None:
        """``primary``, ``shadow``: unopened backends; ``hook``: the pluggy hook relay
        ``statestore_shadow_mismatch`` is called on (``Registry.hook``), or None."""
        if not 0.0 <= compare_reads <= 1.0:
            raise ValidationError("compare_reads", "must be between 0 and 1")
        if rollout_percent is None:
            rollout_percent = 0.0 if rollout_prefixes else 100.0
        if not 0.0 <= rollout_percent <= 100.0:
            raise ValidationError("rollout_percent", "must be between 0 and 100")
        self.primary_backend = primary
        self.shadow_backend = shadow
        self.strict = strict
        self.compare_reads = compare_reads
        self.rollout_percent = rollout_percent
        self.rollout_prefixes = tuple(rollout_prefixes)
        self._hook = hook
        # Shared by the callers of every event loop and thread: the guard makes each
        # change to the two dicts one step.
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[_AnyLoopLock, int]] = {}
        self._queued: dict[str, concurrent.futures.Future[Exception | None]] = {}

    def __repr__(self) -> str:
        return f"<DualBackend primary={self.primary_backend!r} shadow={self.shadow_backend!r}>"

    @property
    def primary(self) -> Store:
        """The primary side as a store of its own (to read or repair it directly)."""
        return Store(self.primary_backend)

    @property
    def shadow(self) -> Store:
        """The shadow side as a store of its own (to read or repair it directly)."""
        return Store(self.shadow_backend)

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The primary's, except incremental writes: the follower is rewritten whole."""
        return self.primary_backend.capabilities - {Capability.INCREMENTAL_WRITES}

    @property
    def data_key(self) -> str:
        """Both sides' data."""
        return f"dual {self.primary_backend.data_key} | {self.shadow_backend.data_key}"

    async def open(self) -> None:
        """Open both sides (neither stays open if the other fails)."""
        await self.primary_backend.open()
        try:
            await self.shadow_backend.open()
        except BaseException:
            await self.primary_backend.close()
            raise

    async def close(self) -> None:
        try:
            await self.primary_backend.close()
        finally:
            await self.shadow_backend.close()

    def _sides(self, conversation_id: str) -> tuple[StorageBackend, StorageBackend]:
        """(serving side, following side) for one conversation."""
        if in_rollout(conversation_id, self.rollout_percent, self.rollout_prefixes):
            return self.primary_backend, self.shadow_backend
        return self.shadow_backend, self.primary_backend

    # -- reporting -----------------------------------------------------------------------

    def _report(self, operation: str, conversation_id: str | None, reason: str) -> None:
        logger.warning("dual: shadow mismatch on %s of %r: %s", operation, conversation_id, reason)
        hook = self._hook
        if hook is not None:
            hook.statestore_shadow_mismatch(
                backend=self.name,
                operation=operation,
                conversation_id=conversation_id,
                reason=reason,
            )

    def _follower_failed(
        self, operation: str, conversation_id: str | None, side: StorageBackend, exc: Exception
    ) -> None:
        reason = f"{side.name} failed: {type(exc).__name__}: {exc}"
        self._report(operation, conversation_id, reason)
        if self.strict:
            raise StateStoreError(
                f"dual (strict): {operation} of {conversation_id!r} succeeded on the serving "
                f"side but {reason}"
            ) from exc

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, conversation_id: str) -> AsyncIterator[None]:
        with self._guard:
            lock, users = self._locks.get(conversation_id, (_AnyLoopLock(), 0))
            self._locks[conversation_id] = (lock, users + 1)
        try:
            await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[conversation_id]
                if users == 1:
                    del self._locks[conversation_id]
                else:
                    self._locks[conversation_id] = (lock, users - 1)

    async def _mirror(
        self,
        operation: str,
        conversation_id: str,
        source: StorageBackend,
        follower: StorageBackend,
    ) -> None:
        """Make ``follower`` hold what ``source`` holds for one conversation.

        Writers of one conversation that arrive while a mirror is still waiting for
        its turn share it: it has not read the source yet, so it carries their writes
        too (a hot conversation is copied once per turn of the lock, not once per write).
        """
        with self._guard:
            queued = self._queued.get(conversation_id)
            sharing = queued is not None
            if queued is None:
                queued = self._queued[conversation_id] = concurrent.futures.Future()
        if sharing:
            # wrap_future answers on this loop whichever thread sets it; shielded, a
            # cancelled sharer never cancels the mirror the others wait for.
            outcome = await asyncio.shield(asyncio.wrap_future(queued))
        else:
            outcome = None
            completed = False
            try:
                try:
                    async with self._one_at_a_time(conversation_id):
                        # From now on a new write needs a new mirror: this one may read
                        # the source before it.
                        with self._guard:
                            if self._queued.get(conversation_id) is queued:
                                del self._queued[conversation_id]
                        await self._copy_over(conversation_id, source, follower)
                except Exception as exc:
                    outcome = exc
                completed = True
            finally:
                with self._guard:
                    if self._queued.get(conversation_id) is queued:
                        del self._queued[conversation_id]
                # Sharers get our outcome; if we were cancelled, an error, never a hang.
                queued.set_result(outcome if completed else StateStoreError("mirror cancelled"))
        if outcome is not None:
            self._follower_failed(operation, conversation_id, follower, outcome)

    async def _copy_over(
        self, conversation_id: str, source: StorageBackend, follower: StorageBackend
    ) -> None:
        whole = await source.read(conversation_id, _WHOLE, user_id=None)
        if whole is None:  # deleted meanwhile
            await follower.delete(conversation_id, user_id=None)
            return
        await follower.write(conversation_id, _replacing(whole), user_id=whole.user_id)

    # -- the protocol --------------------------------------------------------------------

    async def write(
        self, conversation_id: str, plan: WritePlan, *, user_id: str | None
    ) -> WriteResult:
        """Write on the serving side, then make the follower hold the same."""
        serving, follower = self._sides(conversation_id)
        written = await serving.write(conversation_id, plan, user_id=user_id)
        await self._mirror(plan.operation, conversation_id, serving, follower)
        if plan.set_shared or plan.delete_shared:
            try:
                await follower.write_shared(plan.set_shared, plan.delete_shared)
            except Exception as exc:
                self._follower_failed(plan.operation, conversation_id, follower, exc)
        return written

    async def delete(self, conversation_id: str, *, user_id: str | None) -> bool:
        """Delete on the serving side, then on the follower."""
        serving, follower = self._sides(conversation_id)
        deleted = await serving.delete(conversation_id, user_id=user_id)
        if deleted:
            try:
                async with self._one_at_a_time(conversation_id):
                    await follower.delete(conversation_id, user_id=None)
            except Exception as exc:
                self._follower_failed("delete_state", conversation_id, follower, exc)
        return deleted

    async def read(
        self, conversation_id: str, options: LoadOptions, *, user_id: str | None
    ) -> StoredView | None:
        """Read from the serving side; compare with the follower when sampled."""
        serving, follower = self._sides(conversation_id)
        view = await serving.read(conversation_id, options, user_id=user_id)
        if view is not None and self.compare_reads and random.random() < self.compare_reads:
            await self._compare(conversation_id, options, user_id, view, follower)
        return view

    async def _compare(
        self,
        conversation_id: str,
        options: LoadOptions,
        user_id: str | None,
        view: StoredView,
        follower: StorageBackend,
    ) -> None:
        try:
            other = await follower.read(conversation_id, options, user_id=user_id)
        except Exception as exc:
            self._follower_failed("load_state", conversation_id, follower, exc)
            return
        if other is None:
            self._report("load_state", conversation_id, f"missing on {follower.name}")
            return
        difference = describe_difference(view, other)
        if difference is not None:
            self._report("load_state", conversation_id, f"{follower.name} differs: {difference}")

    async def list_conversations(
        self,
        *,
        user_id: str | None,
        limit: int,
        after: str | None,
        prefix: str | None,
        order: str,
        with_metadata: bool,
    ) -> Sequence[ConversationInfo]:
        """The primary's list once it serves every conversation (rollout 100), before
        that the shadow's: the old layout's conversations are only there until they
        are copied, and the shadow gets every write too."""
        side = self.primary_backend if self.rollout_percent >= 100 else self.shadow_backend
        return await side.list_conversations(
            user_id=user_id,
            limit=limit,
            after=after,
            prefix=prefix,
            order=order,
            with_metadata=with_metadata,
        )

    async def read_shared(self, namespaces: frozenset[str]) -> dict[str, dict[str, Any]]:
        """The primary's shared state (both sides get every shared write)."""
        return await self.primary_backend.read_shared(namespaces)

    async def write_shared(
        self, set_shared: dict[str, dict[str, str]], delete_shared: dict[str, list[str]]
    ) -> None:
        """Write on the primary, then on the shadow."""
        await self.primary_backend.write_shared(set_shared, delete_shared)
        try:
            await self.shadow_backend.write_shared(set_shared, delete_shared)
        except Exception as exc:
            self._follower_failed("update_shared", None, self.shadow_backend, exc)


def _replacing(view: StoredView) -> WritePlan:
    """A plan that makes a conversation hold exactly ``view``'s content."""
    return WritePlan(
        replace=True,
        scalars={name: getattr(view, name) for name in SCALARS},
        append_messages=view.messages,
        add_items=view.items,
        set_metadata={k: jsoncodec.dumps(v) for k, v in view.metadata.items()},
    )


def _option(options: dict[str, Any], key: str) -> Any:
    if key in options:
        return options.pop(key)
    return os.environ.get(f"STATESTORE_DUAL_{key.upper()}") or None


def _float(value: Any, field: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(field, f"must be a number, got {value!r}") from None


def _factory(
    url: str | None,
    *,
    migrate: bool | None = None,
    registry: Any = None,
    **options: Any,
) -> DualBackend:
    from ..core.registry import default_registry

    registry = registry or default_registry()
    primary_spec = _option(options, "primary")
    shadow_spec = _option(options, "shadow")
    strict = _option(options, "strict")
    compare_reads = _float(_option(options, "compare_reads"), "compare_reads")
    percent = _float(_option(options, "rollout_percent"), "rollout_percent")
    prefixes = _option(options, "rollout_prefixes")
    if options:
        raise ValidationError("options", f"unknown dual options {sorted(options)}")
    if primary_spec is None:
        if url is None:
            raise ValidationError("url", "the dual backend needs a URL or primary=NAME:URL")
        primary_spec = backend_for_url(url)
    if shadow_spec is None:
        shadow_spec = "legacy-blob"
    primary_name, primary_url = split_target(primary_spec, url)
    shadow_name, shadow_url = split_target(shadow_spec, url)
    if isinstance(prefixes, str):
        prefixes = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    if isinstance(strict, str):
        word = strict.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValidationError(
                "strict", f"must be on or off (1/0, true/false, yes/no), got {strict!r}"
            )
        strict = word in _TRUE
    elif strict is not None and not isinstance(strict, bool):
        raise ValidationError("strict", f"must be True or False, not {type(strict).__name__}")
    return DualBackend(
        registry.open_backend(primary_name, primary_url, migrate=migrate),
        registry.open_backend(shadow_name, shadow_url, migrate=migrate),
        strict=bool(strict),
        compare_reads=compare_reads or 0.0,
        rollout_percent=percent,
        rollout_prefixes=tuple(prefixes or ()),
        hook=registry.hook,
    )


@hookimpl
def statestore_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="dual",
            factory=_factory,
            description="a primary and a shadow written together, reads from the primary "
            "(parallel run and rollback of a move off legacy-blob)",
            url_schemes=("sqlite", "postgresql"),
        )
    ]
