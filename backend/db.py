"""The database: one async engine per process, one session per request, one place that commits.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on. Writing
requests open their transaction with `BEGIN IMMEDIATE`, so concurrent writers queue instead of
failing with "database is locked" when a read lock cannot be upgraded: in turn within a process
(`_SQLiteWriters`), on the busy timeout between processes.
PostgreSQL runs through asyncpg with a pool that pings before use and gives up quickly, so an
outage turns into fast 503s and the pool heals by itself when the server is back.
Core units of work (the task routes, the token's user) wait for a pooled connection in arrival
order (`_Turns`): SQLAlchemy's pool lets a newcomer take a connection ahead of those already
waiting, which makes the slowest requests under load several times slower than the rest.
The hot statements (`fetch_all`, `execute`) go to the driver directly where they may.
"""

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import await_
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings
from backend.database_url import PostgresTarget
from backend.errors import AppError
from backend.migrations import is_at_head

# aiosqlite logs every statement with its parameters (password hashes, emails) at DEBUG: keep
# it quiet even under LOG_LEVEL=DEBUG, as SQLAlchemy keeps its own loggers at WARNING.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCHEMA_RECHECK_SECONDS = 3.0
_BEGIN_MODE = "todo_sqlite_begin"
_HOLDS_WRITE_LOCK = "todo_holds_sqlite_write_lock"


def _sqlite_on_connect(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" listener below emit BEGIN itself (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


class _SQLiteWriters:
    """The write transactions of one process take SQLite's write lock in turn, first come first
    served. SQLite itself lets waiting writers poll on the busy timeout, which under many
    concurrent writers served them in no order (seconds of tail latency); within a process they
    now queue on an asyncio lock instead, taken at a write transaction's BEGIN IMMEDIATE (not
    when its unit of work opens, so nested units of work cannot deadlock) and released when it
    commits or rolls back. Between processes, the busy timeout still applies."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def begin(self, connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
        if mode == "IMMEDIATE":
            await_(self._lock.acquire())
            connection.info[_HOLDS_WRITE_LOCK] = True
        try:
            connection.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            self._release(connection.info)
            raise

    def end(self, connection: Connection) -> None:
        self._release(connection.info)

    def reset(self, _dbapi_connection: Any, record: Any, _state: Any) -> None:
        self._release(record.info)  # a connection returned to the pool mid-transaction

    def _release(self, info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            self._lock.release()

    def listen(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "begin", self.begin)
        event.listen(engine.sync_engine, "commit", self.end)
        event.listen(engine.sync_engine, "rollback", self.end)
        event.listen(engine.sync_engine.pool, "reset", self.reset)


def build_engine(settings: Settings) -> AsyncEngine:
    # hide_parameters: a database error's message (logged with its traceback when it is a 500)
    # would otherwise carry the statement's parameters, such as a new user's password hash.
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url,
            hide_parameters=True,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        event.listen(
            engine.sync_engine, "connect", _sqlite_on_connect(settings.sqlite_busy_timeout_ms)
        )
        _SQLiteWriters().listen(engine)
        return engine
    target = PostgresTarget.parse(settings.database_url)
    engine = create_async_engine(
        target.url,
        hide_parameters=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        connect_args={
            **target.connect_args(
                timeout_seconds=settings.db_connect_timeout_seconds, application_name="todo-api"
            ),
            "command_timeout": settings.db_statement_timeout_seconds,
        },
    )
    if settings.db_pool_pre_ping:
        _ping_idle_connections(engine, idle_seconds=settings.db_pool_ping_idle_seconds)
    return engine


def _ping_idle_connections(engine: AsyncEngine, *, idle_seconds: float) -> None:
    """Test a pooled connection before use when it has sat idle for a while.

    SQLAlchemy's `pool_pre_ping` tests every checkout, which costs three round trips on asyncpg
    (BEGIN, a ping, ROLLBACK) on every request. A connection that was in use a moment ago is
    alive; one that idled may have been cut (a database restart, a proxy timeout). A dead one is
    replaced before the request sees it; one that dies under load fails its request with 503 and
    takes the rest of the pool's stale connections with it.
    """

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise sa_exc.DisconnectionError("the pooled connection is dead") from exc

    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", checked_out)


class _Turns:
    """Connections of the pool handed out strictly in arrival order.

    As many turns as the pool has connections, so a Core unit of work waits in the pool itself
    only while ORM sessions hold connections; one that finds every turn taken queues here,
    first come first served (asyncio's semaphore is fair), and gives up after the pool timeout
    with the pool's own error, which the app answers with 503.
    """

    def __init__(self, capacity: int, timeout_seconds: float) -> None:
        self._free = asyncio.Semaphore(capacity)
        self._timeout_seconds = timeout_seconds

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._free.locked():
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    await self._free.acquire()
            except TimeoutError:
                raise sa_exc.TimeoutError(
                    f"no database connection came free within {self._timeout_seconds:g} s"
                ) from None
        else:
            await self._free.acquire()  # free: returns at once
        try:
            yield
        finally:
            self._free.release()


class Database:
    """The process's engine and the only place that opens, commits and rolls back units of work:
    ORM sessions (`session`) for the services that need one, Core connections (`connection`)
    for those that build every statement on the tables (the task routes, the hottest ones)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = build_engine(settings)
        self.is_sqlite = settings.is_sqlite
        self._turns = _Turns(
            settings.db_pool_size + settings.db_max_overflow, settings.db_pool_timeout_seconds
        )
        # PostgreSQL reads run without BEGIN/COMMIT: under READ COMMITTED every statement takes
        # its own snapshot anyway, so a read-only transaction buys nothing but two round trips.
        self._reader_engine = self.engine.execution_options(
            **({} if settings.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        self._writer_engine = self.engine.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        self._readers = async_sessionmaker(
            self._reader_engine, class_=AsyncSession, expire_on_commit=False, autoflush=False
        )
        self._writers = async_sessionmaker(
            self._writer_engine, class_=AsyncSession, expire_on_commit=False, autoflush=False
        )
        self._migrated = False
        self._schema_recheck_at = 0.0

    def _writes_in_transaction(self, write: bool, single_statement: bool) -> bool:
        return write and (self.is_sqlite or not single_statement)

    @asynccontextmanager
    async def connection(
        self, *, write: bool, single_statement: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """The unit of work of `session`, on a Core connection: committed when the block ends
        normally, rolled back otherwise. The same transaction rules apply."""
        async with self._turns.turn():
            if self._writes_in_transaction(write, single_statement):
                async with self._writer_engine.begin() as connection:
                    yield connection
            else:
                async with self._reader_engine.connect() as connection:
                    yield connection

    @asynccontextmanager
    async def session(
        self, *, write: bool, single_statement: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends normally, rolled back otherwise (except
        for the domain errors that say their changes must be kept).

        `write` opens a write transaction (on SQLite, one that holds the write lock from its
        first statement). With `single_statement`, the caller promises that it writes with one
        statement at most, atomic on its own: on PostgreSQL it then runs without BEGIN/COMMIT,
        two round trips fewer.
        """
        transactional_write = self._writes_in_transaction(write, single_statement)
        factory = self._writers if transactional_write else self._readers
        # No turn here: a session checks a connection out only when its first statement runs
        # (a login reads the account in a unit of its own, then hashes for tens of milliseconds
        # before its session writes), so it waits in the pool itself, in no strict order.
        async with factory() as session:
            try:
                yield session
                await session.commit()
            except AppError as exc:
                await (session.commit() if exc.keeps_changes else session.rollback())
                raise
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a few reads with no ORM session around them, for the lookups that
        run on every request (the token's user)."""
        async with self._turns.turn(), self._reader_engine.connect() as connection:
            yield connection

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self._turns.turn(), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def migrated(self) -> bool:
        """Whether the schema is at this version's newest revision. Once it is, it stays so
        (only a downgrade undoes it), so the answer is kept; until then, the database is asked
        again at most every `SCHEMA_RECHECK_SECONDS`, so a busy /ready stays cheap."""
        if self._migrated or time.monotonic() < self._schema_recheck_at:
            return self._migrated
        async with self._turns.turn(), self.engine.connect() as connection:
            self._migrated = await connection.run_sync(is_at_head)
        self._schema_recheck_at = time.monotonic() + SCHEMA_RECHECK_SECONDS
        return self._migrated

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- Running hot statements -------------------------------------------------------------------


_REQUIRED = object()
_DRIVER = "todo_driver_connection"


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


@cache
def _compiled(statement: sa.Executable, dialect: Dialect) -> _Compiled:
    return _Compiled(statement, dialect)


async def _driver(connection: AsyncConnection) -> Any | None:
    """The driver's connection under `connection` (asyncpg's, aiosqlite's), when statements may
    go to it directly: inside a transaction SQLAlchemy has already begun, or on PostgreSQL
    outside any (AUTOCOMMIT). Otherwise (a transaction's first statement, which begins it)
    None."""
    # The driver's connection under a pooled connection never changes: remember it there.
    raw = connection.info.get(_DRIVER)
    if raw is None:
        raw = connection.info[_DRIVER] = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "sqlite":
        # BEGIN is ours (the "begin" listener): SQLAlchemy's transaction is SQLite's.
        return raw if connection.in_transaction() else None
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
    run_for_rows, run_for_count = _RUNNERS[connection.dialect.name]
    try:
        return await (run_for_rows if rows else run_for_count)(driver, compiled.sql, arguments)
    except (*_CONNECTION_ENDING_ERRORS, asyncpg.PostgresError, sqlite3.Error) as exc:
        raise await translate_driver_error(connection, compiled.sql, exc) from exc


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
    connection: AsyncConnection, statement: sa.Executable, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The rows of a statement built once at import time (bind parameters for every value).

    Where it may (see `_driver`), it runs on the driver directly, compiled once with
    SQLAlchemy's compiler and read with its column types: on PostgreSQL as asyncpg's own
    prepared statement, on SQLite in one trip to aiosqlite's thread (SQLAlchemy's adapter makes
    four). SQLAlchemy's per-execution work (execution context, cursor adaptation, result
    objects, greenlet switches) costs more than the query itself. Otherwise (a transaction's
    first statement) it runs through SQLAlchemy.
    """
    driver = await _driver(connection)
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
    connection: AsyncConnection, statement: sa.Executable, params: Mapping[str, Any]
) -> int:
    """Run a statement built once at import time for its effect; the number of rows it touched.
    The same paths as `fetch_all`."""
    driver = await _driver(connection)
    if driver is None:
        return (await connection.execute(statement, params)).rowcount
    count: int = await _on_driver(
        driver, connection, _compiled(statement, connection.dialect), params, rows=False
    )
    return count


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
