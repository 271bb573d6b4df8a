"""Alembic environment: runs migrations through the same async drivers as the service."""

import asyncio
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from backend import models
from backend.database_url import PostgresTarget
from backend.db.engine import POOLER_SAFE_ARGS
from backend.db.errors import wrap_driver_os_errors
from backend.migrations import compared

# Generous: a hosted database may take seconds to wake up, and a migration runs once a release.
CONNECT_TIMEOUT_SECONDS = 10

target_metadata = SQLModel.metadata
assert models.Task.__tablename__ in target_metadata.tables


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write our column types as the plain SQL types they store (migrations must not import
    application code that may change later; the template already imports `sa`)."""
    if type_ == "type" and isinstance(obj, sa.types.TypeDecorator):
        return f"sa.{obj.impl!r}"
    if type_ == "type" and type(obj).__module__.startswith("sqlmodel"):
        length = getattr(obj, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


def _configure(dialect: str, **kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=render_item,
        **compared(dialect),
        **kwargs,
    )


def _run(connection: Connection) -> None:
    dialect = connection.dialect.name
    _configure(dialect, connection=connection, render_as_batch=dialect == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    if url.startswith("postgresql"):
        target = PostgresTarget.parse(url)
        engine = create_async_engine(
            target.url,
            poolclass=sa.pool.NullPool,
            hide_parameters=True,
            # Safe behind a transaction-mode pooler whatever DB_POOLER says: a migration's few
            # statements are not worth caching.
            connect_args={
                **target.connect_args(
                    timeout_seconds=CONNECT_TIMEOUT_SECONDS, application_name="todo-api migrate"
                ),
                **POOLER_SAFE_ARGS,
            },
        )
    else:
        engine = create_async_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
    wrap_driver_os_errors(engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    offline_url = context.config.get_main_option("sqlalchemy.url")
    assert offline_url, "sqlalchemy.url is not set"
    _configure(sa.make_url(offline_url).get_dialect().name, url=offline_url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
