"""Units of work: the only place that opens, commits and rolls back. Core units of work (the
task routes, the token's user) wait for a pooled connection in arrival order (`_Turns`):
SQLAlchemy's pool lets a newcomer take a connection ahead of those already waiting, which makes
the slowest requests under load several times slower than the rest.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    async_sessionmaker,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings

# aiosqlite logs every statement with its parameters (password hashes, emails) at DEBUG: keep
# it quiet even under LOG_LEVEL=DEBUG, as SQLAlchemy keeps its own loggers at WARNING.
from backend.db.engine import BEGIN_MODE, build_engine
from backend.errors import AppError
from backend.migrations import is_at_head

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCHEMA_RECHECK_SECONDS = 3.0


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
        self._writer_engine = self.engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
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
