"""Alembic environment: one history for SQLite and PostgreSQL.

statestore runs migrations itself (``statestore migrate``, or on open for SQLite) and
hands env.py an open connection in ``config.attributes["connection"]`` (the cookbook's
"sharing a connection" recipe). Run by the ``alembic`` command instead, it builds an
async engine from ``sqlalchemy.url`` (Alembic's async template). Batch mode is used on
SQLite only, where ALTER TABLE needs it.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from statestore.backends.sql.tables import metadata

config = context.config
target_metadata = metadata


def _configure(**kwargs: object) -> None:
    url = kwargs.get("url") or kwargs["connection"].engine.url  # type: ignore[attr-defined]
    is_sqlite = str(url).startswith("sqlite")
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Print the SQL (``statestore migrate --sql``) instead of running it."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
