"""Behind PgBouncer in transaction mode (`DB_POOLER=pgbouncer`): the service keeps nothing on a
server connection between transactions, so any number of app instances share a few server
connections. The contract, concurrency and feed tests also run through it (the `pgbouncer`
leg, tests/conftest.py); these are about the pooler itself."""

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event, make_url

from backend.db import Database
from backend.main import create_app
from tests.conftest import (
    POOLER_LEG,
    POSTGRES_SERVER_URL,
    SettingsFactory,
    _pg_execute,
    client_for,
    database_url_for,
    running_app,
    sign_up,
)
from tests.helpers import create
from tests.live import live_server, todo_api
from tests.pgbouncer import SERVER_CONNECTIONS, PgBouncer

THROUGH_PGBOUNCER = pytest.mark.parametrize("database_url", [POOLER_LEG], indirect=True)
# What would keep state on a server connection past its transaction.
SESSION_STATE = re.compile(
    r"^\s*(SET|RESET|DISCARD|LISTEN|UNLISTEN|PREPARE|DEALLOCATE)\b|pg_advisory|set_config\s*\("
    r"|\bTEMP(ORARY)?\s+TABLE\b",
    re.IGNORECASE,
)


async def some_traffic(client: httpx.AsyncClient) -> None:
    """A little of everything: accounts (ORM sessions), task writes (transactions and single
    statements), reads, the feed, a safe retry."""
    user = await sign_up(client)
    login = await client.post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert login.status_code == 200, login.text
    tasks = [await create(client, user, title=f"task {n}") for n in range(5)]
    for task in tasks[:3]:
        toggled = await client.patch(
            f"{user.tasks_url}/{task['id']}/complete", headers=user.headers
        )
        assert toggled.status_code == 200, toggled.text
    deleted = await client.delete(f"{user.tasks_url}/{tasks[4]['id']}", headers=user.headers)
    assert deleted.status_code == 204
    retried = {**user.headers, "Idempotency-Key": "one"}
    for _ in range(2):
        response = await client.post(user.tasks_url, json={"title": "once"}, headers=retried)
        assert response.status_code == 201, response.text
    assert (await client.get(user.tasks_url, headers=user.headers)).json()["total"] == 5
    feed = await client.get(f"/api/{user.id}/changes", headers=user.headers)
    assert len(feed.json()["changes"]) == 5
    assert (await client.get("/ready")).status_code == 200
    assert (await client.post("/api/auth/logout-all", headers=user.headers)).status_code == 204


@THROUGH_PGBOUNCER
async def test_no_prepared_statement_is_left_on_the_server_connections(
    make_settings: SettingsFactory, pgbouncer: PgBouncer, database_url: str
) -> None:
    """Unnamed statements only (SQLAlchemy's recipe with uuid names would leave one per
    statement run on the server connections, which PgBouncer hands from client to client)."""
    async with running_app(make_settings()) as app, client_for(app) as client:
        await some_traffic(client)
    # Every server connection PgBouncer has for this database, held at once, looked into.
    held = asyncio.Barrier(SERVER_CONNECTIONS)

    async def look_into_one() -> tuple[int, list[str]]:
        dsn = database_url.replace("+asyncpg", "")
        connection = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            async with connection.transaction():
                pid = await connection.fetchval("SELECT pg_backend_pid()")
                await asyncio.wait_for(held.wait(), timeout=10)
                names = await connection.fetch("SELECT name FROM pg_prepared_statements")
                return pid, [row["name"] for row in names]
        finally:
            await connection.close()

    seen = await asyncio.gather(*(look_into_one() for _ in range(SERVER_CONNECTIONS)))
    assert len({pid for pid, _ in seen}) == SERVER_CONNECTIONS
    assert [names for _, names in seen] == [[]] * SERVER_CONNECTIONS


@pytest.mark.parametrize("database_url", ["postgresql", POOLER_LEG], indirect=True)
async def test_a_transaction_asks_for_its_isolation_in_its_begin_and_sets_nothing(
    make_settings: SettingsFactory,
) -> None:
    """Reads run in AUTOCOMMIT and a unit of work's transaction in READ COMMITTED: the switch is
    the driver's, said in the BEGIN itself, never a `SET` that would stay on the session."""
    statements: list[str] = []
    listening: set[int] = set()

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in listening:
            listening.add(id(driver))
            driver.add_query_logger(lambda logged: statements.append(logged.query))

    def before_execute(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    app = create_app(make_settings())
    async with app.router.lifespan_context(app), client_for(app) as client:
        database: Database = app.state.runtime.db
        await database.engine.dispose()  # every connection from here on is listened to
        event.listen(database.engine.sync_engine, "checkout", on_checkout)
        event.listen(database.engine.sync_engine, "before_cursor_execute", before_execute)
        await some_traffic(client)
    assert not [sql for sql in statements if SESSION_STATE.search(sql)]
    begins = {sql.strip(" ;") for sql in statements if sql.strip().upper().startswith("BEGIN")}
    assert "BEGIN ISOLATION LEVEL READ COMMITTED" in begins
    assert begins <= {"BEGIN", "BEGIN ISOLATION LEVEL READ COMMITTED"}


@THROUGH_PGBOUNCER
async def test_without_db_pooler_two_instances_fail_as_in_issue_23(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """What `DB_POOLER=pgbouncer` is for (and proof that the PgBouncer of these tests hands
    server connections from client to client): asyncpg's named statements meet another
    instance's, and the log says what to set."""
    settings = make_settings(db_pooler="none")
    statuses: list[int] = []
    async with (
        running_app(settings) as one,
        running_app(settings) as two,
        client_for(one) as first,
        client_for(two) as second,
    ):
        for _ in range(10):
            answers = await asyncio.gather(
                *(client.get("/ready") for client in (first, second, first, second))
            )
            statuses += [answer.status_code for answer in answers]
    assert 500 in statuses
    assert "set DB_POOLER=pgbouncer" in caplog.text


@pytest.fixture
def pooled_database(pgbouncer: PgBouncer) -> Iterator[str]:
    """An empty database of this test's own (not migrated); its URL through PgBouncer."""
    name = f"todo_pgb_cli_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'CREATE DATABASE "{name}"'))
    yield pgbouncer.url_for(name).replace("+asyncpg", "")
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


def test_migrate_serve_on_two_servers_and_purge_through_pgbouncer(
    tmp_path: Path, pooled_database: str
) -> None:
    """The operator's commands through the pooler: `todo-api migrate` (twice: the second finds
    nothing to do), two `todo-api serve` processes sharing the data, `todo-api purge`."""
    env = {
        "DATABASE_URL": pooled_database,
        "DB_POOLER": "pgbouncer",
        # Live updates listen past the pooler.
        "DATABASE_LISTEN_URL": database_url_for(
            POSTGRES_SERVER_URL, str(make_url(pooled_database).database)
        ),
    }
    for _ in range(2):
        migrated = todo_api(tmp_path, "migrate", **env)
        assert migrated.returncode == 0, migrated.stderr
    with (
        live_server(tmp_path, env=env) as one,
        live_server(tmp_path, env=env) as two,
        httpx.Client(base_url=one.url) as first,
        httpx.Client(base_url=two.url) as second,
    ):
        signup = first.post(
            "/api/auth/signup",
            json={"email": "pool@example.com", "password": "river-lantern-48-quietly"},
        )
        assert signup.status_code == 201, signup.text
        user_id, token = signup.json()["user"]["id"], signup.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for n in range(3):
            made = second.post(f"/api/{user_id}/tasks", json={"title": f"t{n}"}, headers=headers)
            assert made.status_code == 201, made.text
        assert first.get(f"/api/{user_id}/tasks", headers=headers).json()["total"] == 3
        changes = second.get(f"/api/{user_id}/changes", headers=headers).json()["changes"]
        assert len(changes) == 3
        assert first.get("/ready").status_code == second.get("/ready").status_code == 200
    purged = todo_api(tmp_path, "purge", **env)
    assert purged.returncode == 0, purged.stderr
