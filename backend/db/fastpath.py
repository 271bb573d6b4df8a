"""Hot statements (`fetch_all`, `execute`) on the driver directly where they may: compiled once
with SQLAlchemy's compiler (a bounded cache), bound and read with its column types, and driver
errors translated as SQLAlchemy would raise them.
"""

import sqlite3
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
)
from sqlalchemy.sql.compiler import SQLCompiler

_REQUIRED = object()
_DRIVER = "todo_driver_connection"
# Behind a transaction-mode pooler (backend/db/engine.py): where a connection keeps its
# statements, in its `info`, and how many at most.
UNNAMED_STATEMENTS = "todo_unnamed_statements"
_UNNAMED_KEPT = 256


class _Compiled:
    """A statement compiled once for a dialect's driver: its SQL, how to bind its parameters, and
    how to read its result columns, all taken from SQLAlchemy's own compiler and column types."""

    __slots__ = ("binds", "columns", "sql")

    def __init__(self, statement: sa.Executable, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, cast(sa.ClauseElement, statement).compile(dialect=dialect))
        self.sql = compiled.string
        # Each parameter: its name, how to convert it, and whether it is a literal that the
        # statement itself holds (`task_count + 1`) rather than one the caller must give.
        self.binds = tuple(
            (
                name,
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                _REQUIRED
                if compiled.binds[name].required
                else compiled.binds[name].effective_value,
            )
            for name in compiled.positiontup or ()
        )
        self.columns = tuple(
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in getattr(statement, "exported_columns", ())
        )


# Statements are built once at import time (a few dozen): the bound only guards against a caller
# that builds them per request.
@lru_cache(maxsize=1024)
def _compiled(statement: sa.Executable, dialect: Dialect) -> _Compiled:
    return _Compiled(statement, dialect)


async def _driver(connection: AsyncConnection, autocommit: bool) -> Any | None:
    """The driver's connection under `connection` (asyncpg's, aiosqlite's), when statements may
    go to it directly: inside a transaction SQLAlchemy has already begun, on PostgreSQL outside
    any (AUTOCOMMIT), and on SQLite for `autocommit` statements (reads, each in SQLite's own
    implicit transaction: no BEGIN and COMMIT around them). Otherwise (a transaction's first
    statement, which begins it) None."""
    # The driver's connection under a pooled connection never changes: remember it there.
    raw = connection.info.get(_DRIVER)
    if raw is None:
        raw = connection.info[_DRIVER] = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "sqlite":
        # BEGIN is ours (the "begin" listener): SQLAlchemy's transaction is SQLite's.
        return raw if autocommit or connection.in_transaction() else None
    sync = connection.sync_connection
    autocommit = sync is not None and (
        sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    )
    return raw if autocommit or (raw is not None and raw.is_in_transaction()) else None


async def _asyncpg_rows(driver: Any, sql: str, arguments: list[Any]) -> Any:
    return await driver.fetch(sql, *arguments)


async def _asyncpg_count(driver: Any, sql: str, arguments: list[Any]) -> int:
    # asyncpg answers the command tag: "UPDATE 1", "DELETE 0", "INSERT 0 1".
    status: str = await driver.execute(sql, *arguments)
    return int(status.rsplit(" ", 1)[-1])


async def _aiosqlite_rows(driver: Any, sql: str, arguments: list[Any]) -> Any:
    return await driver.execute_fetchall(sql, arguments)  # one trip to its thread


async def _aiosqlite_count(driver: Any, sql: str, arguments: list[Any]) -> int:
    async with driver.execute(sql, arguments) as cursor:
        count: int = cursor.rowcount
        return count


# How each driver runs a statement for its rows, and for the number of rows it touched.
_RUNNERS = {
    "postgresql": (_asyncpg_rows, _asyncpg_count),
    "sqlite": (_aiosqlite_rows, _aiosqlite_count),
}


async def _on_driver(
    driver: Any,
    connection: AsyncConnection,
    compiled: _Compiled,
    params: Mapping[str, Any],
    *,
    rows: bool,
) -> Any:
    arguments = []
    for name, process, literal in compiled.binds:
        value = params[name] if literal is _REQUIRED else params.get(name, literal)
        arguments.append(process(value) if process else value)
    try:
        kept = connection.info.get(UNNAMED_STATEMENTS)
        if kept is not None:
            return await _unnamed(driver, kept, compiled.sql, arguments, rows=rows)
        run_for_rows, run_for_count = _RUNNERS[connection.dialect.name]
        return await (run_for_rows if rows else run_for_count)(driver, compiled.sql, arguments)
    except (*_CONNECTION_ENDING_ERRORS, asyncpg.PostgresError, sqlite3.Error) as exc:
        raise await translate_driver_error(connection, compiled.sql, exc) from exc


async def _unnamed(
    driver: Any, kept: dict[str, Any], sql: str, arguments: list[Any], *, rows: bool
) -> Any:
    """Behind a transaction-mode pooler, asyncpg (its statement cache off) prepares statements
    unnamed and parses one again each time it runs it, with its Bind and Execute: one round
    trip, on one server connection. Kept here (asyncpg no longer keeps them), a statement is
    described once per connection; otherwise asyncpg would ask the server to describe it on
    every run, a second round trip."""
    statement = kept.get(sql)
    if statement is None:
        if len(kept) >= _UNNAMED_KEPT:
            del kept[next(iter(kept))]
        statement = kept[sql] = await driver.prepare(sql)
    records = await statement.fetch(*arguments)
    # For its effect: the number of rows from the command tag ("UPDATE 1", "INSERT 0 1").
    return records if rows else int(statement.get_statusmsg().rsplit(" ", 1)[-1])


# SQLSTATE classes that end the connection: 08 (connection exception), 57P (the server shuts
# down: an administrator's or a crash's `terminating connection`, or it is starting up).
_CONNECTION_ENDING_SQLSTATES = ("08", "57P")
_CONNECTION_ENDING_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def translate_driver_error(
    connection: AsyncConnection, sql: str, exc: Exception
) -> sa_exc.DBAPIError:
    """A driver's error as SQLAlchemy would raise it, so that the error handlers treat both paths
    alike (an outage is 503, a bug 500). A connection the error leaves unusable is invalidated,
    so that the pool never hands it out again: one the server ended, and one whose protocol
    state asyncpg no longer trusts (`InternalClientError`, seen when the server shut down in
    the middle of a statement, before the socket closed)."""
    sqlstate = str(getattr(exc, "sqlstate", None) or "")
    if isinstance(exc, _CONNECTION_ENDING_ERRORS) or sqlstate.startswith(
        _CONNECTION_ENDING_SQLSTATES
    ):
        await connection.invalidate(exc)
        return sa_exc.OperationalError(sql, None, exc, connection_invalidated=True)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError | sqlite3.IntegrityError):
        return sa_exc.IntegrityError(sql, None, exc)
    if isinstance(exc, sqlite3.OperationalError):  # "database is locked", a full disk
        return sa_exc.OperationalError(sql, None, exc)
    return sa_exc.DBAPIError(sql, None, exc)


async def fetch_all(
    connection: AsyncConnection,
    statement: sa.Executable,
    params: Mapping[str, Any],
    *,
    autocommit: bool = False,
) -> list[dict[str, Any]]:
    """The rows of a statement built once at import time (bind parameters for every value).

    Where it may (see `_driver`), it runs on the driver directly, compiled once with
    SQLAlchemy's compiler and read with its column types: on PostgreSQL as asyncpg's own
    prepared statement, on SQLite in one trip to aiosqlite's thread (SQLAlchemy's adapter makes
    four). SQLAlchemy's per-execution work (execution context, cursor adaptation, result
    objects, greenlet switches) costs more than the query itself. Otherwise (a transaction's
    first statement) it runs through SQLAlchemy.
    """
    driver = await _driver(connection, autocommit)
    if driver is None:
        result = await connection.execute(statement, params)
        return [dict(row._mapping) for row in result]
    compiled = _compiled(statement, connection.dialect)
    records = await _on_driver(driver, connection, compiled, params, rows=True)
    columns = compiled.columns
    return [
        {
            key: (process(value) if process else value)
            for (key, process), value in zip(columns, record, strict=True)
        }
        for record in records
    ]


async def execute(
    connection: AsyncConnection,
    statement: sa.Executable,
    params: Mapping[str, Any],
    *,
    autocommit: bool = False,
) -> int:
    """Run a statement built once at import time for its effect; the number of rows it touched.
    The same paths as `fetch_all`."""
    driver = await _driver(connection, autocommit)
    if driver is None:
        return (await connection.execute(statement, params)).rowcount
    count: int = await _on_driver(
        driver, connection, _compiled(statement, connection.dialect), params, rows=False
    )
    return count
