"""The engine: SQLite in WAL mode with a busy timeout and foreign keys on, its writers queued in
turn within a process (`_SQLiteWriters`: BEGIN IMMEDIATE, so concurrent writers wait instead of
failing with "database is locked"); PostgreSQL through asyncpg with a pool that pings idle
connections and gives up quickly, so an outage is fast 503s and the pool heals by itself.
Behind a transaction-mode pooler (`DB_POOLER=pgbouncer`), without prepared statement caches.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import AdaptedConnection, Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    create_async_engine,
)

from backend.config import Settings
from backend.database_url import PostgresTarget
from backend.db.errors import wrap_driver_os_errors
from backend.db.fastpath import UNNAMED_STATEMENTS

# aiosqlite logs every statement with its parameters (password hashes, emails) at DEBUG: keep
# it quiet even under LOG_LEVEL=DEBUG, as SQLAlchemy keeps its own loggers at WARNING.
logging.getLogger("aiosqlite").setLevel(logging.INFO)
logger = logging.getLogger(__name__)


# The execution option that makes a SQLite transaction begin IMMEDIATE (taking the write lock),
# and the flag in a connection's `info` that does it for its next BEGIN only.
BEGIN_MODE = "todo_sqlite_begin"
BEGIN_IMMEDIATE = "todo_sqlite_begin_immediate"
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
        mode = (
            "IMMEDIATE"
            if connection.info.pop(BEGIN_IMMEDIATE, False)
            else connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        )
        if mode == "IMMEDIATE":
            # SQLAlchemy's documented way to await in an event of an async engine.
            adapted = cast(AdaptedConnection, connection.connection.dbapi_connection)
            adapted.run_async(lambda _driver: self._lock.acquire())
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
        wrap_driver_os_errors(engine)
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
            **(POOLER_SAFE_ARGS if settings.db_pooler != "none" else {}),
        },
    )
    if settings.db_pooler == "none":
        _hint_at_a_pooler(engine)
    else:
        event.listen(engine.sync_engine, "connect", _keep_unnamed_statements)
    if settings.db_pool_pre_ping:
        _ping_idle_connections(engine, idle_seconds=settings.db_pool_ping_idle_seconds)
    wrap_driver_os_errors(engine)
    return engine


# asyncpg's connect arguments behind a transaction-mode pooler, which may run each transaction
# (each statement, outside one) on another server connection. asyncpg's cached prepared
# statements are named and live on the server connection that prepared them: elsewhere the
# name is unknown, or another client's (issue 23: `prepared statement "__asyncpg_stmt_1__"
# already exists`). Without its cache, asyncpg (0.30 on) prepares statements unnamed and sends
# each run as Parse, Bind, Execute and Sync at once, so the pooler keeps one server connection
# for it, and the next statement replaces it there: nothing piles up on the server (the uuid
# names of SQLAlchemy's PgBouncer recipe would leave a prepared statement there per statement
# prepared). SQLAlchemy's own cache then keeps these unnamed statements, described once per
# connection, as the fast path does (fastpath._unnamed).
POOLER_SAFE_ARGS: dict[str, Any] = {"statement_cache_size": 0}
# What PostgreSQL answers when a named prepared statement met another client's server
# connection: the name is taken (42P05), or unknown (26000).
_POOLER_SQLSTATES = frozenset({"42P05", "26000"})


def _keep_unnamed_statements(_dbapi_connection: Any, record: Any) -> None:
    record.info[UNNAMED_STATEMENTS] = {}


def _hint_at_a_pooler(engine: AsyncEngine) -> None:
    """Say once what to set when the errors show a transaction-mode pooler that
    DB_POOLER does not declare (a pooler cannot be told from the database itself)."""
    hinted = False

    def on_error(context: Any) -> None:
        nonlocal hinted
        if not hinted and getattr(context.original_exception, "sqlstate", None) in (
            _POOLER_SQLSTATES
        ):
            hinted = True
            logger.error(
                "prepared statements meet another client's: DATABASE_URL seems to lead to a "
                "transaction-mode pooler (PgBouncer); set DB_POOLER=pgbouncer"
            )

    event.listen(engine.sync_engine, "handle_error", on_error)


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
