"""The request pipeline (backend/routing.py) and the unit of work (backend/db/unit.py): what a
request holds while it waits, the single-statement guard, and overriding the infrastructure."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from backend.db import Database, SecondStatement
from backend.infrastructure import get_limiter
from backend.models import TASKS
from backend.ratelimit import RateLimiter
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import assert_problem, create

ONE = sa.select(sa.literal(1).label("one"))


def _database(app: FastAPI) -> Database:
    database: Database = app.state.runtime.db
    return database


@asynccontextmanager
async def silent_redis() -> AsyncIterator[str]:
    """A server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for writer in held:
            writer.close()


async def test_a_hung_limiter_holds_no_database_resource_and_reads_go_on(
    make_settings: SettingsFactory,
) -> None:
    """Task writes wait for the rate limiter before their unit of work takes anything: while a
    Redis that never answers keeps them waiting, no pooled connection is out (so neither is
    SQLite's write lock), other users' writes to the database go through, and reads answer."""
    async with silent_redis() as redis_url:
        settings = make_settings(
            redis_url=redis_url, db_pool_size=2, db_max_overflow=0, db_pool_timeout_seconds=5
        )
        async with running_app(settings) as app, client_for(app) as client:
            user = await sign_up(client)
            task = (await client.get(user.tasks_url, headers=user.headers)).json()
            assert task["total"] == 0
            pool = _database(app).engine.pool
            writes = [
                asyncio.create_task(
                    client.post(user.tasks_url, json={"title": f"t{n}"}, headers=user.headers)
                )
                for n in range(6)  # three times the pool
            ]
            await asyncio.sleep(0.3)
            assert not any(write.done() for write in writes)  # waiting for the limiter
            assert pool.checkedout() == 0  # type: ignore[attr-defined]
            # A write that takes the write lock (SQLite) completes meanwhile.
            async with _database(app).unit(write=True) as unit, unit.transaction() as work:
                await work.rows(ONE)
            started = time.monotonic()
            for _ in range(5):
                listed = await client.get(user.tasks_url, headers=user.headers)
                assert listed.status_code == 200
            assert time.monotonic() - started < 0.9  # well under the limiter's 1 s timeouts
            assert not all(write.done() for write in writes)
            answers = await asyncio.gather(*writes)
        # Redis never answered: the limits fell back to process memory, and every write landed.
        assert [answer.status_code for answer in answers] == [201] * 6


@pytest.mark.parametrize(
    "first",
    [ONE, sa.update(TASKS).where(TASKS.c.id.is_(None)).values(title="x")],
    ids=["read", "write"],
)
async def test_the_single_statement_guard_catches_a_second_statement(
    app: FastAPI, first: sa.Executable
) -> None:
    """A unit of work opened for one atomic statement refuses a second one before running it:
    on PostgreSQL it would run outside any transaction."""
    unit_statements: list[str] = []
    database = _database(app)

    @sa.event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def seen(*args: object) -> None:
        unit_statements.append(str(args[2]))

    async def two_statements() -> None:
        async with database.unit(write=True) as unit, unit.statement() as work:
            if isinstance(first, sa.Update):
                await work.run(first)
            else:
                await work.rows(first)
            await work.run(sa.delete(TASKS))

    try:
        with pytest.raises(SecondStatement):
            await two_statements()
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    assert not any("DELETE" in statement for statement in unit_statements)
    # A transaction takes any number.
    async with database.unit(write=True) as unit, unit.transaction() as work:
        for _ in range(3):
            assert await work.rows(ONE) == [{"one": 1}]


async def test_work_is_refused_once_its_block_has_ended(app: FastAPI) -> None:
    async with _database(app).unit(write=True) as unit:
        async with unit.transaction() as work:
            await work.rows(ONE)
        with pytest.raises(RuntimeError, match="after its unit of work ended"):
            await work.rows(ONE)


async def test_the_pipeline_takes_its_limiter_from_the_overridable_dependency(
    app: FastAPI, user: SignedUp, make_settings: SettingsFactory
) -> None:
    """`app.dependency_overrides` reaches the pipeline itself: a stricter limiter applies to
    the next request, without rebuilding the app, and is gone with the override."""
    client = client_for(app)
    strict = RateLimiter(make_settings(task_write_rate_limit="1/minute"))
    app.dependency_overrides[get_limiter] = lambda: strict
    try:
        await create(client, user)
        refused = await client.post(user.tasks_url, json={"title": "x"}, headers=user.headers)
        assert_problem(refused, 429, "rate_limited")
    finally:
        app.dependency_overrides.clear()
        await strict.close()
    await create(client, user)
    await client.aclose()
