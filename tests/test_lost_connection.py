"""A connection that dies inside a transaction (PostgreSQL restarted, a backend killed): the
request is a 503 like any outage, never a 500 from the unit of work's own clean-up."""

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa
from sqlmodel import select

from backend.db import Database
from backend.db.errors import is_outage
from backend.models import USERS
from tests.conftest import SettingsFactory, asyncpg_dsn


@pytest.mark.parametrize("then", ["a statement", "the commit"])
async def test_a_connection_lost_inside_a_transaction_is_an_outage(
    make_settings: SettingsFactory, database_url: str, then: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("an SQLite connection cannot be lost")
    database = Database(make_settings())

    async def lose_the_connection() -> None:
        async with database.unit(write=True) as unit, unit.transaction() as work:
            pid = (await work.rows(select(sa.func.pg_backend_pid().label("pid"))))[0]["pid"]
            admin = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                await admin.fetch("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            await asyncio.sleep(0.2)
            if then == "a statement":
                await work.rows(select(USERS.c.id))

    try:
        with pytest.raises(Exception) as raised:  # noqa: PT011 (any error: is_outage judges)
            await lose_the_connection()
        assert is_outage(raised.value), repr(raised.value)
        # The pool heals: the next unit of work gets a live connection.
        async with database.reading() as work:
            assert await work.rows(select(USERS.c.id)) == []
    finally:
        await database.dispose()
