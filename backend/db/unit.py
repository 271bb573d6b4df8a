"""Units of work: the only place that opens, commits and rolls back.

A request has one `UnitOfWork` (the pipeline, `backend/routing.py`, opens and closes it). It
holds nothing until a service first needs the database; then it takes one pooled connection,
in arrival order (`_Turns`: SQLAlchemy's pool lets a newcomer take a connection ahead of those
already waiting, which makes the slowest requests under load several times slower than the
rest), and keeps it until the request ends. The service says what it needs, and gets a `Work`
to run its statements on:

- `unit.read()`: reads. On PostgreSQL without BEGIN/COMMIT (under READ COMMITTED every
  statement takes its own snapshot anyway: a read-only transaction buys two round trips).
- `unit.statement()`: exactly one statement, atomic on its own (on PostgreSQL, no transaction
  around it: two round trips fewer). A second statement raises `SecondStatement`: ask for a
  transaction instead. On SQLite it is a write transaction all the same (BEGIN IMMEDIATE).
- `unit.transaction()`: a transaction, committed when the block ends normally and rolled back
  otherwise (except for the domain errors that say their changes must be kept). On SQLite it
  holds the write lock from its start, so two writers never deadlock on a lock upgrade.
- `unit.session()`: an ORM session for the account services, committed when the request's
  work ends (by the pipeline, before the response is sent), or rolled back.

Every write of a task goes through `statement()` or `transaction()`: the one place where the
changes feed and conditional requests will hook in.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import Executable, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    async_sessionmaker,
)
from sqlalchemy.pool import QueuePool
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings
from backend.db.engine import BEGIN_IMMEDIATE, BEGIN_MODE, build_engine
from backend.db.fastpath import execute, fetch_all
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
        self.waiting = 0  # units of work queued for a turn now (a metric samples it)

    async def take(self) -> None:
        if self._free.locked():
            self.waiting += 1
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    await self._free.acquire()
            except TimeoutError:
                raise sa_exc.TimeoutError(
                    f"no database connection came free within {self._timeout_seconds:g} s"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()  # free: returns at once

    def give_back(self) -> None:
        self._free.release()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        await self.take()
        try:
            yield
        finally:
            self.give_back()


class SecondStatement(RuntimeError):
    """A unit of work opened for one atomic statement ran a second one: it would run outside any
    transaction on PostgreSQL. The service must ask for `UnitOfWork.transaction()`."""


class Work:
    """Where a service runs its statements, in the mode it asked its unit of work for. Valid only
    inside the block (or the request) that handed it out."""

    __slots__ = ("_autocommit", "_connection", "_left", "dialect")

    def __init__(
        self, connection: AsyncConnection, statements: int | None, *, autocommit: bool = False
    ) -> None:
        self._connection: AsyncConnection | None = connection
        self._left = statements  # None: any number
        # Reads outside a transaction: each statement is atomic on its own (on SQLite too).
        self._autocommit = autocommit
        self.dialect: str = connection.dialect.name

    def _take(self) -> AsyncConnection:
        connection = self._connection
        if connection is None:
            raise RuntimeError("this Work was used after its unit of work ended")
        if self._left is not None:
            if self._left == 0:
                raise SecondStatement(
                    "a second statement in a unit of work opened for one: use a transaction"
                )
            self._left -= 1
        return connection

    async def rows(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The rows of a statement built once (bind parameters for every value)."""
        return await fetch_all(self._take(), statement, params or {}, autocommit=self._autocommit)

    async def run(self, statement: Executable, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement for its effect; the number of rows it touched."""
        return await execute(self._take(), statement, params or {}, autocommit=self._autocommit)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: an error inside undoes only what ran inside."""
        connection = self._take()
        if self._left is not None:
            raise SecondStatement("a savepoint in a unit of work opened for one statement")
        async with connection.begin_nested():
            yield

    def end(self) -> None:
        self._connection = None


class UnitOfWork:
    """A request's work with the database: one pooled connection, taken when a service first
    needs it and kept until the request ends (see the module's docstring)."""

    def __init__(self, database: "Database", *, write: bool) -> None:
        self._database = database
        self._write = write
        # The token's standing, for the statements that check it themselves (the
        # `standing_*` parameters of `task_statements.IN_STANDING`): set by the pipeline when
        # it has not read the account (`backend/routing.py`); empty otherwise.
        self.standing: dict[str, Any] = {}
        self._connection: AsyncConnection | None = None
        self._reader: Work | None = None
        self._session: AsyncSession | None = None

    @property
    def dialect(self) -> str:
        return self._database.dialect

    async def _connect(self) -> AsyncConnection:
        # Taken and given back by hand rather than with context managers: this runs on every
        # request, and each `async with` layer costs a generator and its frames.
        if self._connection is None:
            turns = self._database._turns
            await turns.take()
            try:
                self._connection = await self._database._reader_engine.connect()
            except BaseException:
                turns.give_back()
                raise
        return self._connection

    async def read(self) -> Work:
        """Reads, as many as needed, on the request's connection."""
        if self._reader is None:
            self._reader = Work(await self._connect(), None, autocommit=True)
        return self._reader

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[Work]:
        """One statement, atomic on its own; a second one raises `SecondStatement`."""
        if self._database.is_sqlite:
            async with self._transaction(statements=1) as work:
                yield work
            return
        work = Work(await self._connect(), 1)
        try:
            yield work
        finally:
            work.end()

    def transaction(self) -> AbstractAsyncContextManager[Work]:
        """A transaction: committed when the block ends normally, rolled back otherwise."""
        return self._transaction(statements=None)

    @asynccontextmanager
    async def _transaction(self, *, statements: int | None) -> AsyncIterator[Work]:
        connection = await self._connect()
        if connection.in_transaction():  # a read's (SQLite's snapshot; nothing on PostgreSQL)
            await connection.commit()
        await self._database._to_transaction(connection)
        work = Work(connection, statements)
        try:
            transaction = await connection.begin()
        finally:
            connection.info.pop(BEGIN_IMMEDIATE, None)
        try:
            yield work
        except AppError as exc:
            await (transaction.commit() if exc.keeps_changes else transaction.rollback())
            raise
        except BaseException:
            await transaction.rollback()
            raise
        else:
            await transaction.commit()
        finally:
            work.end()
            # A connection lost mid-transaction (the commit failed with it) is discarded when the
            # unit of work ends; asking it for its read mode would hide the outage behind
            # "rollback first".
            if not connection.invalidated:
                await self._database._from_transaction(connection)

    def session(self) -> AsyncSession:
        """The request's ORM session (a write transaction when the request writes), committed
        when the request's work ends. It checks a connection out at its first statement."""
        if self._session is None:
            factory = self._database._writers if self._write else self._database._readers
            self._session = factory()
        return self._session

    async def close(self, error: BaseException | None) -> None:
        """End the request's work: commit the session (unless `error` undoes it), give the
        connection back."""
        try:
            if self._session is not None:
                session, self._session = self._session, None
                try:
                    keeps = error is None or (isinstance(error, AppError) and error.keeps_changes)
                    await (session.commit() if keeps else session.rollback())
                finally:
                    await session.close()
        finally:
            if self._reader is not None:
                self._reader.end()
            if self._connection is not None:
                connection, self._connection = self._connection, None
                try:
                    await connection.close()
                finally:
                    self._database._turns.give_back()


class Database:
    """The process's engine, and the units of work on it: `unit()` for a request (see the
    module's docstring), `session()` and `reading()` for services that work in short units of
    their own (a login reads the account, hashes for tens of milliseconds with no connection
    held, then writes)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = build_engine(settings)
        self.is_sqlite = settings.is_sqlite
        self.dialect = self.engine.dialect.name
        self._turns = _Turns(
            settings.db_pool_size + settings.db_max_overflow, settings.db_pool_timeout_seconds
        )
        # PostgreSQL reads run without BEGIN/COMMIT (AUTOCOMMIT); a transaction switches its
        # connection to the database's own isolation level for its duration.
        self._read_options: dict[str, Any] = (
            {BEGIN_MODE: "DEFERRED"} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}
        )
        self._reader_engine = self.engine.execution_options(**self._read_options)
        self._writer_engine = self.engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
        self._readers = async_sessionmaker(
            self._reader_engine, class_=AsyncSession, expire_on_commit=False, autoflush=False
        )
        self._writers = async_sessionmaker(
            self._writer_engine, class_=AsyncSession, expire_on_commit=False, autoflush=False
        )
        self._migrated = False
        self._schema_recheck_at = 0.0

    async def _to_transaction(self, connection: AsyncConnection) -> None:
        """Make the connection's next BEGIN a write transaction's: on SQLite BEGIN IMMEDIATE,
        taking the write lock (a flag that the begin listener takes: no round trip); on
        PostgreSQL out of AUTOCOMMIT."""
        if self.is_sqlite:
            connection.info[BEGIN_IMMEDIATE] = True
        else:
            await connection.execution_options(isolation_level="READ COMMITTED")

    async def _from_transaction(self, connection: AsyncConnection) -> None:
        if not self.is_sqlite:
            await connection.execution_options(**self._read_options)

    @asynccontextmanager
    async def unit(self, *, write: bool) -> AsyncIterator[UnitOfWork]:
        """A request's unit of work (`write`: whether its ORM session writes)."""
        unit = UnitOfWork(self, write=write)
        try:
            yield unit
        except BaseException as exc:
            await unit.close(exc)
            raise
        await unit.close(None)

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """An ORM session in a unit of work of its own: committed when the block ends normally,
        rolled back otherwise (except for the domain errors that say their changes must be
        kept). `write` opens a write transaction (on SQLite, one that holds the write lock from
        its first statement)."""
        async with self.unit(write=write) as unit:
            yield unit.session()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Work]:
        """A few reads in a unit of work of their own."""
        async with self.unit(write=False) as unit:
            yield await unit.read()

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

    def connections_in_use(self) -> int | None:
        """Connections checked out of the pool now (None for a pool that does not count)."""
        pool = self.engine.pool
        return pool.checkedout() if isinstance(pool, QueuePool) else None

    def waiting_for_connection(self) -> int:
        """Units of work queued for a connection now."""
        return self._turns.waiting

    async def dispose(self) -> None:
        await self.engine.dispose()
