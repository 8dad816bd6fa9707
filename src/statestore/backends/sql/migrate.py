"""Running the Alembic migrations against a database URL.

The scripts live in the repository's top-level ``migrations/``; the wheel ships them
inside the package as ``statestore/migrations`` (hatch ``force-include``), so an
installed statestore finds them beside its code and an editable install of a checkout
finds them in the checkout.

Alembic and SQLAlchemy's engine are imported by the functions that run migrations,
not by this module: every backend checks the revision on open (``head_revision``),
and opening a store (``statestore show``) should not pay for importing them.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.config import check_server_url, mask_url, url_scheme
from ...core.errors import BackendUnavailable, StateStoreError, ValidationError
from . import citus

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "HEAD_REVISION",
    "alembic_config",
    "script_location",
    "head_revision",
    "sqlalchemy_url",
    "upgrade",
    "downgrade",
    "upgrade_sql",
    "upgrade_sqlite_blocking",
]


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain one (the async driver added)."""
    scheme = url_scheme(url)
    if scheme in ("postgresql", "postgres"):
        driver = "postgresql+asyncpg"
    elif scheme == "sqlite":
        driver = "sqlite+aiosqlite"
    else:
        raise ValidationError("url", f"no migrations for the scheme {scheme!r}")
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def script_location() -> Path:
    """The directory holding Alembic's env.py and versions/."""
    package = Path(__file__).resolve().parents[2]
    installed = package / "migrations"
    if installed.is_dir():
        return installed
    # An editable install imports the package from src/ of a checkout, where the
    # scripts sit beside src/ (the wheel's copy would be a snapshot of them).
    checkout = package.parents[1] / "migrations"
    if checkout.is_dir():
        return checkout
    raise StateStoreError(f"the migration scripts are missing: neither {installed} nor {checkout}")


def alembic_config(url: str | None = None, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config

    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    if url is not None:
        # ConfigParser interpolation would read a '%' in a password as a directive.
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


HEAD_REVISION = "0004"
"""The newest revision in ``migrations/versions``; a new migration sets it
(tests/test_cli.py checks it against Alembic's own head)."""


def head_revision() -> str:
    """The revision a store needs its database at."""
    return HEAD_REVISION


def _runner(url: str, action: str, revision: str) -> Callable[[Connection], None]:
    """Run the Alembic ``action`` on an open connection, in its transaction."""
    from alembic import command

    config = alembic_config(url)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)
        if action == "upgrade":
            # On Citus, tables a migration created are distributed in its transaction.
            citus.distribute_tables(connection)

    return run


@contextlib.contextmanager
def _errors_named(url: str, *, connecting: bool) -> Iterator[None]:
    """The driver's and Alembic's errors as statestore's, without the password."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except (OSError, ConnectionError, DBAPIError, CommandError) as exc:
        if connecting and not isinstance(exc, CommandError):
            raise BackendUnavailable(
                f"cannot migrate {mask_url(url)}: {_reason(exc, url)}"
            ) from exc
        if isinstance(exc, (DBAPIError, CommandError)):
            raise StateStoreError(f"migrating {mask_url(url)} failed: {_reason(exc, url)}") from exc
        raise


async def _run(url: str, action: str, revision: str) -> None:
    from sqlalchemy import pool
    from sqlalchemy.ext.asyncio import create_async_engine

    run = _runner(url, action, revision)
    if url_scheme(url) == "sqlite":
        engine = create_async_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
        _one_immediate_transaction(engine.sync_engine)
    else:
        check_server_url(url)
        engine = _postgresql_engine(url)
    try:
        with _errors_named(url, connecting=True):
            connection = await engine.connect()
        try:
            with _errors_named(url, connecting=False):
                async with connection.begin():
                    await connection.run_sync(run)
                if action == "upgrade":
                    # Citus: the functions a call is delegated with, once the tables
                    # they are co-located with are distributed (committed above).
                    async with connection.begin():
                        await connection.run_sync(citus.create_functions)
                        await connection.run_sync(_check_adopted_legacy_table)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


_NAIVE_CREATED_AT = """
SELECT 1 FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'memory_chunks'
  AND column_name = 'created_at' AND data_type = 'timestamp without time zone'
"""


def _check_adopted_legacy_table(connection: Connection) -> None:
    """Raise if a ``memory_chunks`` adopted from the old system keeps its times
    without a time zone on PostgreSQL: legacy-blob reads it, but every write would
    fail in the driver. Converting it is the DBA's call (it rewrites the table)."""
    if connection.dialect.name != "postgresql":
        return
    if connection.exec_driver_sql(_NAIVE_CREATED_AT).first() is not None:
        raise StateStoreError(
            "migrated, but memory_chunks.created_at (the old system's table) is a "
            "timestamp without time zone, which legacy-blob cannot write: convert it "
            "with ALTER TABLE memory_chunks ALTER COLUMN created_at TYPE timestamptz "
            "USING created_at AT TIME ZONE 'UTC' (statestore reads naive times as "
            "UTC), then run migrate again"
        )


def _postgresql_engine(url: str) -> AsyncEngine:
    """An engine whose connections asyncpg opens from ``url`` whole, as a store opens
    its own, so that ``migrate`` takes the URLs a store takes.

    Given the URL, SQLAlchemy would pass each option of its query to
    ``asyncpg.connect`` as a keyword argument, and asyncpg reads libpq's options
    (``sslmode``, ``sslrootcert``, ``application_name``, ...) only from a DSN:
    ``?sslmode=disable`` failed with "connect() got an unexpected keyword argument
    'sslmode'". The options go in the DSN instead; SQLAlchemy's own keywords (user,
    host, port, database) name the same server."""
    from sqlalchemy import pool
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    plain = make_url(sqlalchemy_url(url))
    dsn = plain.set(drivername="postgresql").render_as_string(hide_password=False)
    return create_async_engine(
        plain.set(query={}), poolclass=pool.NullPool, connect_args={"dsn": dsn}
    )


def upgrade_sqlite_blocking(url: str) -> None:
    """Apply every migration to a SQLite file through the standard library's driver,
    blocking the calling thread. The SQLite backend runs it on its own thread: an open
    cancelled meanwhile then never leaves another driver thread calling back into a
    loop that has closed."""
    from sqlalchemy import create_engine, pool
    from sqlalchemy.engine import make_url

    run = _runner(url, "upgrade", "head")
    engine = create_engine(make_url(url).set(drivername="sqlite"), poolclass=pool.NullPool)
    _one_immediate_transaction(engine)
    try:
        with _errors_named(url, connecting=True):
            connection = engine.connect()
        try:
            with _errors_named(url, connecting=False), connection.begin():
                run(connection)
        finally:
            connection.close()
    finally:
        engine.dispose()


def _one_immediate_transaction(engine: Engine) -> None:
    """SQLite: run a migration as one ``BEGIN IMMEDIATE`` transaction (SQLite's DDL is
    transactional). Processes opening a new file at once then take turns: the first
    migrates, the others wait for its lock and find the file already at head. By
    default the driver would commit each CREATE TABLE on its own, and the others
    would fail with "table ... already exists" half-way."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _reason(exc: BaseException, url: str) -> str:
    """One line saying why, without SQLAlchemy's wrapping and never the password."""
    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    # The adapted asyncpg error reads "<class 'asyncpg...Error'>: message".
    text = re.sub(r"^<class '[\w.]+'>: ", "", text)
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    return text.replace(password, "***") if password else text


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base``: remove every table)."""
    await _run(url, "downgrade", revision)


def upgrade_sql(url: str, revision: str = "head") -> str:
    """The SQL that ``upgrade`` would run, for a DBA to review and apply."""
    from alembic import command
    from alembic.util.exc import CommandError

    output = io.StringIO()
    try:
        command.upgrade(alembic_config(url, output), revision, sql=True)
    except CommandError as exc:
        raise StateStoreError(f"cannot write the SQL: {exc}") from exc
    return re.sub(r"\n{3,}", "\n\n", output.getvalue())
