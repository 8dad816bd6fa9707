"""pytest fixtures for testing statestore backends against real databases.

Use it from a ``conftest.py``: ``pytest_plugins = ["statestore.testing.plugin"]``
(install ``statestore[testing]``). It needs nothing from the host project's pytest
settings: it registers the markers the suite uses (``postgres``, ``slow``), and runs
the suite's async tests and fixtures through pytest-asyncio in its default strict mode
as in ``asyncio_mode = "auto"``.

- ``postgres_url`` (session): a fresh PostgreSQL database, migrated to head, dropped
  at the end. The server comes from ``STATESTORE_TEST_POSTGRES_URL`` (default
  ``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the
  tests that need it skip, saying how to enable them, unless
  ``STATESTORE_REQUIRE_POSTGRES=1`` (set in CI), where that is an error.
- ``sqlite_url``: a fresh SQLite file in the test's temporary directory.
- ``backend_target`` / ``store``: parametrized over every backend registered through
  the ``statestore`` entry points, once per database engine it accepts
  (ids like ``sqlite``, ``postgres``, ``legacy-blob[postgresql]``; targets on
  PostgreSQL carry the ``postgres`` marker). ``store`` is open. Override
  ``backend_target`` to test one backend: ``BackendTarget("name", engine)`` for one
  found through entry points, ``BackendTarget.from_factory(...)`` for one handed over
  directly (no entry point needed).

It is loaded through ``pytest_plugins`` rather than a ``pytest11`` entry point: an
entry point cannot depend on the ``[testing]`` extra, so it would load this module,
and fail on its imports, in every pytest run of every project that depends on
statestore.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pluggy
import pytest
import pytest_asyncio

from ..core.hookspecs import BackendSpec, hookimpl
from ..core.registry import Registry, default_registry
from ..core.store import Store

__all__ = ["scratch_database", "BackendTarget", "backend_targets", "open_target"]

# Markers the suite puts on its tests; registered here so that a host project running
# with --strict-markers needs no settings of its own.
MARKERS = {
    "postgres": "needs a PostgreSQL server (STATESTORE_TEST_POSTGRES_URL)",
    "slow": "large data (10,000 messages, 1 MB texts)",
}

_CONTRACT_PACKAGE = "statestore.testing.contract"

T = TypeVar("T")

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def _is_async_test(function: object) -> bool:
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    return inspect.iscoroutinefunction(inner)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, pluggy.Result[Any], None]:
    """Mark the suite's async tests ``asyncio``, so that pytest-asyncio runs them in
    strict mode too. trylast makes this wrapper the inner one: pytest-asyncio's own
    wrapper, which reads the marker, sees it."""
    outcome = yield
    result = outcome.get_result()
    items: Iterable[object] = result if isinstance(result, list) else [result]
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("asyncio"):
            continue
        owner = item.cls if item.cls is not None else item.obj
        if getattr(owner, "__module__", "").startswith(_CONTRACT_PACKAGE) and _is_async_test(
            item.obj
        ):
            item.add_marker(pytest.mark.asyncio)


@dataclass(frozen=True)
class BackendTarget:
    """One backend on one engine: what a parametrized test runs against.

    ``BackendTarget("memory", None)`` names a backend registered through the
    ``statestore`` entry points; ``BackendTarget.from_factory(...)`` carries one that is
    not registered anywhere (``spec``).
    """

    backend: str
    engine: str | None  # "sqlite", "postgresql", or None for a backend without a URL
    spec: BackendSpec | None = None

    @classmethod
    def from_factory(
        cls,
        factory: Callable[..., Any],
        *,
        name: str,
        engine: str | None = None,
    ) -> BackendTarget:
        """A backend handed to the suite directly: ``factory`` is a
        ``BackendSpec.factory`` (``factory(url, *, migrate, registry, **options)``
        returning an unopened ``StorageBackend``), ``name`` the backend's ``name`` (what
        the operation hook reports), ``engine`` the database its URL points at
        (``"sqlite"``, ``"postgresql"``, or None for no URL). It takes the place of an
        installed backend of the same name."""
        spec = BackendSpec(
            name=name,
            factory=factory,
            description="handed to the contract suite",
            url_schemes=(engine,) if engine else (),
        )
        return cls(name, engine, spec)

    def backend_spec(self) -> BackendSpec:
        """What the backend declares (from its entry point, or as handed over)."""
        return self.spec or default_registry().get(self.backend).spec

    def registry(self) -> Registry:
        """A new registry of the installed plugins, with this target's backend in it
        (tests register their own observers on it)."""
        registry = Registry.from_entry_points()
        if self.spec is not None:
            # An installed version of the same backend would clash with the one under
            # test: its plugin steps aside.
            hook = registry.hook.statestore_register_backends
            for impl in hook.get_hookimpls():
                if any(spec.name == self.backend for spec in impl.function()):
                    registry.plugin_manager.unregister(impl.plugin)
            registry.register(_HandedOver(self.spec), name=f"contract-target-{self.backend}")
        return registry

    @property
    def id(self) -> str:
        if self.engine is None or len(self.backend_spec().url_schemes) == 1:
            return self.backend
        return f"{self.backend}[{self.engine}]"


class _HandedOver:
    """The plugin that offers a backend handed over with ``BackendTarget.from_factory``."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    @hookimpl
    def statestore_register_backends(self) -> list[BackendSpec]:
        return [self.spec]


@functools.cache
def _registry_of(target: BackendTarget) -> Registry:
    return default_registry() if target.spec is None else target.registry()


def backend_targets(registry: Registry | None = None) -> list[BackendTarget]:
    """Every registered backend, once per engine its URL may point at."""
    registry = registry or default_registry()
    targets = []
    for name, info in sorted(registry.backends().items()):
        for engine in info.spec.url_schemes or (None,):
            targets.append(BackendTarget(name, engine))
    return targets


def _server_url() -> str:
    return os.environ.get("STATESTORE_TEST_POSTGRES_URL", DEFAULT_SERVER)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("STATESTORE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (STATESTORE_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(
        f"PostgreSQL not available ({reason}); start one and set "
        "STATESTORE_TEST_POSTGRES_URL=postgresql://user@host:5432/postgres to run these tests"
    )


def _run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from sync or async code (a thread of its own, so that a
    fixture inside a running event loop may call it too)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def scratch_database(
    prefix: str = "statestore_scratch", *, create_options: str = "", migrated: bool = False
) -> Iterator[str]:
    """A new PostgreSQL database of the caller's own (``CREATE DATABASE ...
    create_options``), migrated to head if asked, dropped on exit. Without a server the
    test skips, saying how to enable it (fails under ``STATESTORE_REQUIRE_POSTGRES=1``)."""
    from ..backends.sql import migrate

    server = _server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        _run_now(_admin(server, f'CREATE DATABASE "{name}" {create_options}'))
    except ImportError:
        _unavailable("asyncpg is not installed: pip install 'statestore[postgres]'")
    except Exception as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
    url = _with_database(server, name)
    try:
        if migrated:
            _run_now(migrate.upgrade(url))
        yield url
    finally:
        _run_now(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    with scratch_database("statestore_test", migrated=True) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A fresh SQLite file (created and migrated when a store opens it)."""
    return f"sqlite:///{tmp_path}/state.db"


def _target_params() -> list[Any]:
    return [
        pytest.param(t, id=t.id, marks=[pytest.mark.postgres] if t.engine == "postgresql" else [])
        for t in backend_targets()
    ]


@pytest.fixture(params=_target_params())
def backend_target(request: pytest.FixtureRequest) -> BackendTarget:
    target: BackendTarget = request.param
    return target


def target_url(target: BackendTarget, request: pytest.FixtureRequest) -> str | None:
    """The URL a test opens ``target`` with (fixtures resolved on demand)."""
    if target.engine == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    if target.engine == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return None


def open_target(target: BackendTarget, url: str | None, **options: Any) -> Store:
    """The unopened backend for ``target`` (use with ``async with``)."""
    return _registry_of(target).open_store(target.backend, url, **options)


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, for ``store_url`` to copy:
    an Alembic upgrade per test costs about 0.25 s, a copy almost nothing."""
    from ..backends.sql import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "state.db"
    asyncio.run(migrate.upgrade(f"sqlite:///{path}"))
    return path


@pytest.fixture
def store_url(backend_target: BackendTarget, request: pytest.FixtureRequest) -> str | None:
    """The URL ``store`` opens: on SQLite a fresh file, already migrated."""
    url = target_url(backend_target, request)
    if backend_target.engine == "sqlite" and url is not None:
        template: Path = request.getfixturevalue("migrated_sqlite_template")
        shutil.copyfile(template, url.removeprefix("sqlite:///"))
    return url


@pytest_asyncio.fixture(loop_scope="function")
async def store(backend_target: BackendTarget, store_url: str | None) -> AsyncIterator[Store]:
    """An open store of ``backend_target``."""
    async with open_target(backend_target, store_url) as opened:
        yield opened
