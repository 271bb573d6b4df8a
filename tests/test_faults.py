"""Faults: the real PostgreSQL stopped under load, an exhausted pool, concurrent SQLite writers,
several workers sharing their limits through Redis, and what the logs say."""

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from backend.config import Settings
from backend.db import translate_driver_error
from backend.db.errors import is_outage
from backend.logs import JsonFormatter
from tests.conftest import (
    REDIS_URL,
    TEST_SIGNING_KEY,
    SettingsFactory,
    SignedUp,
    asyncpg_dsn,
    client_for,
    empty_postgres,
    running_app,
    set_postgres_running,
    sign_up,
)
from tests.helpers import assert_problem
from tests.live import live_server


@dataclass
class Outcome:
    title: str
    status: int
    started: float
    seconds: float
    content_type: str


async def _write_load(
    url: str, user: SignedUp, stop_at: float, outcomes: list[Outcome], worker: int
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        sequence = 0
        while time.monotonic() < stop_at:
            sequence += 1
            title = f"w{worker}-{sequence}"
            started = time.monotonic()
            try:
                response = await client.post(
                    user.tasks_url, json={"title": title}, headers=user.headers
                )
                status, content_type = (
                    response.status_code,
                    response.headers.get("content-type", ""),
                )
            except httpx.TransportError:
                status, content_type = 0, ""
            outcomes.append(
                Outcome(title, status, started, time.monotonic() - started, content_type)
            )
            await asyncio.sleep(0.02)


@pytest.mark.serial
async def test_postgres_outage_under_load_loses_no_acknowledged_write(
    postgres_database: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": postgres_database,
        "DB_POOL_TIMEOUT_SECONDS": "2",
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
        "TASK_WRITE_RATE_LIMIT": "100000/minute",
    }
    with live_server(tmp_path, workers=2, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            user = await sign_up(client)
        outcomes: list[Outcome] = []
        started = time.monotonic()
        stop_at = started + 16
        load = asyncio.gather(
            *(_write_load(server.url, user, stop_at, outcomes, worker) for worker in range(6))
        )
        try:
            await asyncio.sleep(2)
            await asyncio.to_thread(set_postgres_running, False)
            stopped_at = time.monotonic()
            await asyncio.sleep(4)
        finally:
            await asyncio.to_thread(set_postgres_running, True)
        back_at = time.monotonic()
        await load

    during = [o for o in outcomes if stopped_at <= o.started < back_at]
    settled = [o for o in outcomes if o.started >= back_at + 5]
    statuses = {o.status for o in outcomes}
    assert statuses <= {201, 503}, f"unexpected statuses: {statuses}"
    assert any(o.status == 503 for o in during), "the outage was not noticed"
    assert all(o.content_type == "application/problem+json" for o in outcomes if o.status == 503)
    slowest_refusal = max(o.seconds for o in outcomes if o.status == 503)
    assert slowest_refusal < 5, f"a 503 took {slowest_refusal:.1f} s"
    assert settled and all(o.status == 201 for o in settled), [
        (round(o.started - back_at, 2), o.status) for o in settled if o.status != 201
    ]
    acknowledged = {o.title for o in outcomes if o.status == 201}
    connection = await asyncpg.connect(asyncpg_dsn(postgres_database))
    try:
        rows = await connection.fetch("SELECT title FROM tasks WHERE user_id = $1", user.id)
    finally:
        await connection.close()
    stored = {row["title"] for row in rows}
    assert acknowledged <= stored, f"lost: {sorted(acknowledged - stored)[:10]}"
    print(
        f"{len(outcomes)} writes: {len(acknowledged)} acknowledged, "
        f"{sum(o.status == 503 for o in outcomes)} refused with 503 "
        f"(slowest refusal {slowest_refusal * 1000:.0f} ms), all acknowledged ones stored"
    )


@pytest.mark.parametrize("holder", ["the pool", "a request"])
async def test_an_exhausted_pool_answers_503_within_seconds(
    make_settings: SettingsFactory, holder: str
) -> None:
    """The only connection held by the pool's own user (the request's turn comes, the pool then
    times out) or by a request (the request's turn never comes): 503 either way."""
    settings = make_settings(db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=1)
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        db = app.state.runtime.db
        async with AsyncExitStack() as holding:
            if holder == "the pool":
                connection = await holding.enter_async_context(db.engine.connect())
                await connection.exec_driver_sql("SELECT 1")
            else:
                work = await holding.enter_async_context(db.reading())
                await work.rows(sa.select(sa.literal(1).label("one")))
            started = time.monotonic()
            response = await client.get(user.tasks_url, headers=user.headers)
            elapsed = time.monotonic() - started
            ready = await client.get("/ready")
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"]
        assert ready.status_code == 503
        assert 0.9 < elapsed < 3, f"took {elapsed:.1f} s"
        assert (await client.get(user.tasks_url, headers=user.headers)).status_code == 200


async def test_requests_waiting_for_a_connection_get_it_in_arrival_order(
    make_settings: SettingsFactory,
) -> None:
    """SQLAlchemy's pool lets a newcomer take a returned connection ahead of the requests that
    were already waiting; the database layer hands connections out first come, first served."""
    settings = make_settings(db_pool_size=2, db_max_overflow=0, db_pool_timeout_seconds=10)
    async with running_app(settings) as app:
        db = app.state.runtime.db
        served: list[str] = []

        one = sa.select(sa.literal(1).label("one"))

        async def read(name: str) -> None:
            async with db.unit(write=False) as unit:
                work = await unit.read()  # takes the connection, in turn
                served.append(name)
                await work.rows(one)

        release = asyncio.Event()

        async def hold() -> None:
            async with db.reading() as work:
                await work.rows(one)
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.2)  # both connections are taken
        waiting = []
        for i in range(8):
            waiting.append(asyncio.create_task(read(f"waiter-{i}")))
            await asyncio.sleep(0.01)  # each one queues before the next arrives
        release.set()
        await asyncio.gather(*holders)
        # Newcomers that arrive while the queue drains go behind it.
        late = [asyncio.create_task(read(f"late-{i}")) for i in range(4)]
        await asyncio.gather(*waiting, *late)
        assert served == [f"waiter-{i}" for i in range(8)] + [f"late-{i}" for i in range(4)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("route", ["list", "create", "toggle"])
async def test_a_connection_ended_by_the_server_mid_statement_is_503_and_the_pool_heals(
    make_settings: SettingsFactory, database_url: str, route: str
) -> None:
    """The server ends a connection while a statement runs on it (what a shutdown or an
    administrator does): that request gets 503, not 500, and the next one a sound connection."""
    async with running_app(make_settings()) as app, client_for(app) as client:
        user = await sign_up(client)
        task = (await client.post(user.tasks_url, json={"title": "t"}, headers=user.headers)).json()

        def call() -> Any:
            if route == "list":
                return client.get(user.tasks_url, headers=user.headers)
            if route == "create":
                return client.post(user.tasks_url, json={"title": "u"}, headers=user.headers)
            return client.patch(f"{user.tasks_url}/{task['id']}/complete", headers=user.headers)

        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        waiting = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'todo-api' AND wait_event_type = 'Lock'"
        )
        try:
            # The request's statement on tasks waits behind this lock until its backend ends.
            await admin.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            request = asyncio.ensure_future(call())
            for _ in range(200):
                if await admin.fetch(waiting):
                    break
                await asyncio.sleep(0.025)
            ended = await admin.fetch(f"SELECT pg_terminate_backend(pid) FROM ({waiting}) w")
            assert ended, "the request never waited for the lock"
            response = await request
        finally:
            await admin.execute("ROLLBACK")
            await admin.close()
        assert_problem(response, 503, "service_unavailable")
        assert (await call()).status_code in (200, 201)


@pytest.mark.parametrize(
    ("database_url", "error", "outage", "ends_connection"),
    [
        ("postgresql", asyncpg.AdminShutdownError("terminating connection"), True, True),
        ("postgresql", asyncpg.CannotConnectNowError("the system is shutting down"), True, True),
        ("postgresql", asyncpg.ConnectionDoesNotExistError("closed mid-operation"), True, True),
        ("postgresql", asyncpg.InternalClientError("another operation (2)"), True, True),
        ("postgresql", ConnectionResetError(104, "Connection reset by peer"), True, True),
        ("postgresql", TimeoutError(), True, True),
        ("postgresql", asyncpg.UniqueViolationError("duplicate key value"), False, False),
        ("postgresql", asyncpg.PostgresSyntaxError("syntax error at or near"), False, False),
        ("sqlite", sqlite3.OperationalError("database is locked"), True, False),
        ("sqlite", sqlite3.OperationalError("database or disk is full"), True, False),
        ("sqlite", sqlite3.IntegrityError("UNIQUE constraint failed: tasks.id"), False, False),
        ("sqlite", sqlite3.ProgrammingError("Incorrect number of bindings"), False, False),
    ],
    indirect=["database_url"],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_errors_of_hot_statements_on_the_driver_are_told_apart_like_sqlalchemys(
    make_settings: SettingsFactory, error: Exception, outage: bool, ends_connection: bool
) -> None:
    """Statements run on the driver directly (db.fetch_all, db.execute) report errors as
    SQLAlchemy would: an outage is 503, a failing query 500. A connection the server ended, or
    one left in a state asyncpg no longer trusts, is never handed out again; a busy SQLite
    database leaves its connection sound."""
    async with (
        running_app(make_settings()) as app,
        app.state.runtime.db.engine.connect() as connection,
    ):
        await connection.exec_driver_sql("SELECT 1")  # on SQLite, this begins the transaction
        translated = await translate_driver_error(connection, "SELECT 1", error)
        assert isinstance(translated, sa_exc.DBAPIError)
        assert translated.orig is error
        assert is_outage(translated) is outage
        assert connection.invalidated is ends_connection


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_concurrent_writers_in_two_processes_never_see_database_is_locked(
    settings: Settings,
) -> None:
    """Two app instances (two engines, as two worker processes would have) on one SQLite file,
    50 concurrent writers between them."""
    async with (
        running_app(settings) as first,
        running_app(settings) as second,
        client_for(first) as one,
        client_for(second) as two,
    ):
        user = await sign_up(one)

        async def write(client: httpx.AsyncClient, i: int) -> int:
            response = await client.post(
                user.tasks_url, json={"title": f"t{i}"}, headers=user.headers
            )
            if response.status_code == 201:
                toggled = await client.patch(
                    f"{user.tasks_url}/{response.json()['id']}/complete", headers=user.headers
                )
                return toggled.status_code
            return response.status_code

        statuses = await asyncio.gather(*(write(one if i % 2 else two, i) for i in range(50)))
        assert statuses == [200] * 50
        page = (await one.get(f"{user.tasks_url}?limit=100", headers=user.headers)).json()
        assert page["total"] == 50
        assert all(task["completed"] for task in page["items"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_login_limits_hold_across_two_workers_with_redis(
    database_url: str,
    tmp_path: Path,
    redis_settings: dict[str, Any],
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT_KEY_PREFIX": redis_settings["rate_limit_key_prefix"],
        "LOGIN_LOCKOUT": "10/15minutes",
    }
    with live_server(tmp_path, workers=2, env=env) as server:

        async def attempt() -> int:
            # A connection of its own for each attempt, so that both workers take some.
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                response = await client.post(
                    "/api/auth/login",
                    json={"email": "target@example.com", "password": "wrong password"},
                )
                return response.status_code

        # Bursts of new connections until both workers have taken some (the kernel decides).
        statuses: list[int] = []
        workers: set[int] = set()
        for _ in range(10):
            statuses += await asyncio.gather(*(attempt() for _ in range(6)))
            lines = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
            workers = {line["pid"] for line in lines if line.get("route") == "/api/auth/login"}
            if len(workers) == 2 and len(statuses) >= 24:
                break
    assert len(workers) == 2, "the attempts never reached both workers"
    # Counted together: exactly ten failures are let through, whichever worker saw them.
    fallbacks = [line for line in lines if "fall back to process memory" in line.get("message", "")]
    assert not fallbacks, fallbacks
    assert statuses.count(401) == 10, statuses
    assert statuses.count(429) == len(statuses) - 10, statuses


async def test_access_log_is_one_json_line_per_request_without_secrets(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    password = "very-secret-password-42"
    signup = await client.post(
        "/api/auth/signup", json={"email": "log@example.com", "password": password}
    )
    token = signup.json()["access_token"]
    user_id = signup.json()["user"]["id"]
    await client.post(
        f"/api/{user_id}/tasks",
        json={"title": "private title"},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-test-1"},
    )
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    access = [json.loads(line) for line in lines if '"logger":"backend.access"' in line]
    task_line = next(line for line in access if line["request_id"] == "log-test-1")
    assert task_line["method"] == "POST"
    assert task_line["route"] == "/api/{user_id}/tasks"
    assert task_line["status"] == 201
    assert task_line["user_id"] == user_id
    assert isinstance(task_line["duration_ms"], float)
    everything = "\n".join(lines)
    for secret in (password, token, signup.json()["refresh_token"], "private title"):
        assert secret not in everything


async def test_a_signup_that_postgresql_refuses_logs_no_parameter(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed INSERT is a 500 whose error log names the statement, to debug with, but none
    of its parameters: neither the new password's hash nor the email."""
    await asyncio.to_thread(empty_postgres, postgres_database)
    email, password = "refused@example.com", "a password that is never logged"
    connection = await asyncpg.connect(asyncpg_dsn(postgres_database))
    try:
        await connection.execute(
            "CREATE FUNCTION refuse_users() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;"
            "CREATE TRIGGER refuse_users BEFORE INSERT ON users "
            "FOR EACH ROW EXECUTE FUNCTION refuse_users()"
        )
        settings = Settings(
            _env_file=None, database_url=postgres_database, jwt_private_key=TEST_SIGNING_KEY
        )
        async with running_app(settings) as app, client_for(app) as client:
            response = await client.post(
                "/api/auth/signup", json={"email": email, "password": password}
            )
    finally:
        await connection.execute(
            "DROP TRIGGER IF EXISTS refuse_users ON users; DROP FUNCTION IF EXISTS refuse_users()"
        )
        await connection.close()
    assert_problem(response, 500, "internal_error")
    lines = [JsonFormatter().format(record) for record in caplog.records]
    errors = [line for line in lines if '"level":"error"' in line]
    assert len(errors) == 1 and "INSERT INTO users" in errors[0]
    assert "refused by a test trigger" in errors[0]
    for secret in ("$argon2", email, password):
        assert secret not in "\n".join(lines)


async def test_error_logs_carry_the_request_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(settings) as app:

        async def boom() -> None:
            raise RuntimeError("kaput")

        app.add_api_route("/boom", boom)
        async with client_for(app) as client:
            await client.get("/boom", headers={"X-Request-ID": f"req-{uuid.uuid4().hex[:6]}"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    line = json.loads(JsonFormatter().format(errors[0]))
    assert line["request_id"].startswith("req-")
    assert "kaput" in line["exception"]
