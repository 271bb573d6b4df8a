"""Live updates: `GET /api/{user_id}/events`, over real HTTP (uvicorn), with one instance on
SQLite and two instances on PostgreSQL (a write through one reaches a stream on the other)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import select

from backend.cli import purge
from backend.config import Settings
from backend.errors import TooManyStreams
from backend.models import EVENT_STREAMS, utcnow
from backend.services import streams
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    asyncpg_dsn,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import Event, EventReader, assert_problem, mint, open_events
from tests.live import live_server, server_thread

# Behind PgBouncer too (a third leg: two instances through the pooler, the Redis bus).
pytestmark = pytest.mark.pgbouncer

# The slowest periodic check there is: what arrives sooner came through the bus.
SLOW_CHECKS = {"events_check_seconds": 5}


@contextmanager
def instances(make_settings: SettingsFactory, **overrides: Any) -> Iterator[tuple[str, str]]:
    """Two app instances on one database (PostgreSQL), or the one SQLite serves, twice."""
    settings = make_settings(**overrides)
    with server_thread(settings) as first:
        if settings.is_sqlite:
            yield first, first
            return
        with server_thread(make_settings(**overrides)) as second:
            yield first, second


@asynccontextmanager
async def clients(a: str, b: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=200)
    async with (
        httpx.AsyncClient(base_url=a, limits=limits) as on_a,
        httpx.AsyncClient(base_url=b, limits=limits) as on_b,
    ):
        yield on_a, on_b


async def open_status(client: httpx.AsyncClient, user: SignedUp) -> int:
    """The status of a stream opened and closed at once."""
    async with client.stream(
        "GET", f"/api/{user.id}/events", headers=user.headers, timeout=10
    ) as response:
        return response.status_code


async def _create(client: httpx.AsyncClient, user: SignedUp, title: str) -> dict[str, Any]:
    response = await client.post(user.tasks_url, json={"title": title}, headers=user.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _arrives_within_a_second(
    writer: httpx.AsyncClient, reader: EventReader, user: SignedUp, title: str
) -> Event:
    """Create a task through `writer`; its change must reach `reader` within a second."""
    await _create(writer, user, title)
    written = time.monotonic()
    event = await reader.next(within=5)
    assert time.monotonic() - written < 1.0
    assert event.event == "change"
    assert event.json()["op"] == "upsert"
    assert event.json()["task"]["title"] == title
    return event


async def test_a_write_through_one_instance_reaches_a_stream_on_the_other_within_a_second(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings, **SLOW_CHECKS) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                assert reader.response.headers["content-type"].startswith("text/event-stream")
                assert reader.response.headers["cache-control"] == "no-cache"
                assert reader.response.headers["x-accel-buffering"] == "no"
                for title in ("first", "second", "third"):
                    event = await _arrives_within_a_second(on_a, reader, user, title)
                    assert event.id


async def test_a_stream_resumed_with_last_event_id_gets_every_change_once_in_order(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings, **SLOW_CHECKS) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                tasks = [await _create(on_a, user, f"task {n}") for n in range(3)]
                seen = [await reader.next() for _ in tasks]
            # Killed mid-way; meanwhile, changes of every kind.
            last = seen[-1].id
            assert last is not None
            first, second = tasks[0]["id"], tasks[1]["id"]
            done = await on_a.patch(
                f"{user.tasks_url}/{first}/complete", json={"completed": True}, headers=user.headers
            )
            assert done.status_code == 200, done.text
            deleted = await on_a.delete(f"{user.tasks_url}/{second}", headers=user.headers)
            assert deleted.status_code == 204
            for n in range(3, 6):
                await _create(on_a, user, f"task {n}")
            feed = await on_a.get(
                f"/api/{user.id}/changes", params={"since": last}, headers=user.headers
            )
            expected = feed.json()["changes"]
            assert len(expected) == 5
            async with open_events(on_a, user, headers={"Last-Event-ID": last}) as resumed:
                caught_up = [await resumed.next() for _ in expected]
                assert [event.json() for event in caught_up] == expected
                assert caught_up[-1].id == feed.json()["next"]
                await _create(on_b, user, "live")
                live = await resumed.next()
                assert live.json()["task"]["title"] == "live"
                with pytest.raises(TimeoutError):
                    await resumed.next(within=1)
            ids = [event.id for event in [*caught_up, live]]
            assert len(set(ids)) == len(ids)
            # `since=` resumes the same way.
            async with open_events(on_b, user, params={"since": last}) as again:
                assert [(await again.next()).json() for _ in expected] == expected


async def test_a_cursor_that_purging_has_forgotten_gives_reset_and_the_stream_goes_on(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings, **SLOW_CHECKS) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                task = await _create(on_a, user, "soon gone")
                old = (await reader.next()).id
            assert old is not None
            await on_a.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
            purged = await on_a.delete(f"/api/{user.id}/trash", headers=user.headers)
            assert purged.status_code == 204
            expired = await on_a.get(
                f"/api/{user.id}/changes", params={"since": old}, headers=user.headers
            )
            assert_problem(expired, 410, "sync_expired")
            async with open_events(on_b, user, headers={"Last-Event-ID": old}) as reader:
                reset = await reader.next()
                assert reset.event == "reset"
                assert reset.json() == {"code": "sync_expired"}
                assert reset.id
                await _create(on_a, user, "after the reset")
                after = await reader.next()
                assert after.event == "change"
                assert after.json()["task"]["title"] == "after the reset"
            # The reset's id is a cursor the feed accepts.
            feed = await on_a.get(
                f"/api/{user.id}/changes", params={"since": reset.id}, headers=user.headers
            )
            assert [change["task"]["title"] for change in feed.json()["changes"]] == [
                "after the reset"
            ]


async def test_a_stream_ends_within_5_seconds_of_its_token_expiring(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            expires = int(time.time()) + 3
            async with open_events(on_b, user, token=mint(user.id, exp=expires)) as reader:
                assert await reader.ended(within=3 + 5)
                assert time.time() >= expires - 1
                assert time.time() - expires < 5


async def test_logout_all_ends_every_stream_of_the_user_within_5_seconds(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            other = await sign_up(on_a)
            async with (
                open_events(on_a, user) as on_first,
                open_events(on_b, user) as on_second,
                open_events(on_b, other) as others,
            ):
                await asyncio.sleep(1.1)  # a token issued in an earlier second than the logout
                out = await on_a.post("/api/auth/logout-all", headers=user.headers)
                assert out.status_code == 204, out.text
                logged_out = time.monotonic()
                ended = await asyncio.gather(on_first.ended(within=5), on_second.ended(within=5))
                assert list(ended) == [True, True]
                assert time.monotonic() - logged_out < 5
                # Another user's stream goes on.
                await _create(on_a, other, "still here")
                assert (await others.next()).json()["task"]["title"] == "still here"


async def test_deleting_the_account_ends_its_streams(make_settings: SettingsFactory) -> None:
    with instances(make_settings) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                gone = await on_a.request(
                    "DELETE", "/api/auth/me", json={"password": user.password}, headers=user.headers
                )
                assert gone.status_code == 204, gone.text
                assert await reader.ended(within=5)


async def test_the_sixth_stream_of_a_user_is_429_on_any_instance(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings) as (a, b):
        async with clients(a, b) as (on_a, on_b), AsyncExitStack() as streams:
            user = await sign_up(on_a)
            for client in (on_a, on_a, on_a, on_b, on_b):
                await streams.enter_async_context(open_events(client, user))
            for client in (on_a, on_b):
                refused = await client.get(f"/api/{user.id}/events", headers=user.headers)
                body = assert_problem(refused, 429, "too_many_streams")
                assert "5" in str(body["detail"])
                assert refused.headers["retry-after"]
            # Another user has streams of their own.
            other = await sign_up(on_a)
            async with open_events(on_b, other):
                pass
            # A stream that ends gives its place back, as soon as its worker has seen the
            # client go (a reconnection that comes first is 429, with Retry-After).
            await streams.aclose()
            deadline = time.monotonic() + 5
            while (reopened := await open_status(on_b, user)) == 429:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert reopened == 200


async def test_ten_streams_opened_at_once_on_two_instances_make_exactly_five(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings) as (a, b):
        async with clients(a, b) as (on_a, on_b), AsyncExitStack() as kept:
            user = await sign_up(on_a)

            async def attempt(client: httpx.AsyncClient) -> int:
                response = await kept.enter_async_context(
                    client.stream(
                        "GET",
                        f"/api/{user.id}/events",
                        headers=user.headers,
                        timeout=httpx.Timeout(10, read=None),
                    )
                )
                return response.status_code

            statuses = await asyncio.gather(*(attempt(c) for c in [on_a, on_b] * 5))
            assert sorted(statuses) == [200] * 5 + [429] * 5


async def test_heartbeat_comments_keep_an_idle_stream_open(make_settings: SettingsFactory) -> None:
    with instances(make_settings, events_heartbeat_seconds=0.3) as (a, _b):
        async with httpx.AsyncClient(base_url=a) as client:
            user = await sign_up(client)
            async with open_events(client, user) as reader:
                with pytest.raises(TimeoutError):
                    await reader.next(within=1.5)
                assert reader.comments >= 3


async def test_a_stream_is_refused_like_any_owner_route(make_settings: SettingsFactory) -> None:
    with instances(make_settings) as (a, _b):
        async with httpx.AsyncClient(base_url=a) as client:
            user = await sign_up(client)
            other = await sign_up(client)
            url = f"/api/{user.id}/events"
            assert_problem(await client.get(url), 401, "missing_token")
            assert_problem(await client.get(url, headers=other.headers), 403, "forbidden")
            for cursor in ("not a cursor", "eyJ2IjoxfQ", "x" * 3000):
                refused = await client.get(url, headers={**user.headers, "Last-Event-ID": cursor})
                assert refused.status_code == 400, refused.text
            bad_since = await client.get(url, params={"since": "%%%"}, headers=user.headers)
            assert_problem(bad_since, 400, "invalid_cursor")


async def test_a_dead_redis_delays_live_updates_to_the_periodic_check_and_loses_none(
    make_settings: SettingsFactory,
) -> None:
    settings = {"events_bus": "redis", "redis_url": "redis://127.0.0.1:1/0"}
    with instances(make_settings, events_check_seconds=0.5, **settings) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                await _create(on_a, user, "through the check")
                event = await reader.next(within=3)
                assert event.json()["task"]["title"] == "through the check"


async def test_live_updates_through_redis(
    make_settings: SettingsFactory, redis_settings: dict[str, Any]
) -> None:
    with instances(make_settings, events_bus="redis", **redis_settings, **SLOW_CHECKS) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                await _arrives_within_a_second(on_a, reader, user, "through redis")


async def test_the_postgresql_bus_listens_again_after_losing_its_connection(
    make_settings: SettingsFactory, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's bus is in-process")
    # Behind the pooler, the bus listens past it (DATABASE_LISTEN_URL).
    with instances(make_settings, events_bus="postgres", **SLOW_CHECKS) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            user = await sign_up(on_a)
            async with open_events(on_b, user) as reader:
                admin = await asyncpg.connect(asyncpg_dsn(database_url))
                try:
                    killed = await admin.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'todo-api-events' "
                        "AND datname = current_database()"
                    )
                finally:
                    await admin.close()
                assert len(killed) == 2  # one listener per instance
                await asyncio.sleep(1.5)  # it listens again after 0.1 s
                await _arrives_within_a_second(on_a, reader, user, "after the outage")


async def test_a_reader_too_slow_to_take_its_events_is_dropped_and_gives_its_place_back(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(events_heartbeat_seconds=0.2, events_send_timeout_seconds=0.5)
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        sent: list[str] = []
        never = asyncio.Event()

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message["type"])
            if message["type"] == "http.response.body":
                await never.wait()  # a client that stopped reading: its buffers are full

        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        path = f"/api/{user.id}/events"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", f"Bearer {user.token}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await asyncio.wait_for(app(scope, receive, send), timeout=10)
        assert sent[:2] == ["http.response.start", "http.response.body"]
        runtime = app.state.runtime
        assert runtime.hub.open_streams == 0
        async with runtime.db.reading() as work:
            leases = await work.rows(
                select(sa.func.count().label("n")).where(EVENT_STREAMS.c.user_id == user.id)
            )
        assert leases[0]["n"] == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_shutdown_ends_100_open_streams_well_within_the_graceful_timeout(
    database_url: str, tmp_path: Path
) -> None:
    workers = 1 if database_url.startswith("sqlite") else 2
    env = {"DATABASE_URL": database_url, "MAX_STREAMS_PER_USER": "100"}
    with live_server(tmp_path, workers=workers, env=env) as server:
        async with (
            httpx.AsyncClient(
                base_url=server.url, limits=httpx.Limits(max_connections=200)
            ) as client,
            AsyncExitStack() as streams,
        ):
            user = await sign_up(client)
            readers = [
                await streams.enter_async_context(open_events(client, user)) for _ in range(100)
            ]
            await _create(client, user, "to every stream")
            events = await asyncio.gather(*(reader.next(within=10) for reader in readers))
            assert {event.json()["task"]["title"] for event in events} == {"to every stream"}
            asked = time.monotonic()
            server.process.terminate()
            ended = await asyncio.gather(*(reader.ended(within=20) for reader in readers))
            assert all(ended)
            await asyncio.to_thread(server.process.wait, 30)
            took = time.monotonic() - asked
    assert took < 10, f"shutdown took {took:.1f} s (the graceful timeout is 30 s)"
    assert not [line for line in server.log_lines() if "graceful shutdown exceeded" in line]


async def test_head_answers_the_stream_headers_without_opening_one(
    make_settings: SettingsFactory,
) -> None:
    with instances(make_settings) as (a, _b):
        async with httpx.AsyncClient(base_url=a, timeout=5) as client:
            user = await sign_up(client)
            for _ in range(6):  # more than the limit: none of them holds a stream
                head = await client.head(f"/api/{user.id}/events", headers=user.headers)
                assert head.status_code == 200
                assert head.headers["content-type"].startswith("text/event-stream")
                assert head.content == b""
            async with AsyncExitStack() as streams:
                for _ in range(5):
                    await streams.enter_async_context(open_events(client, user))


@pytest.mark.parametrize(
    ("database", "redis", "bus"),
    [
        ("sqlite:///x.db", None, "local"),
        ("postgresql://u@h/db", None, "postgres"),
        ("postgresql://u@h/db", "redis://h:6379/0", "redis"),
        ("sqlite:///x.db", "redis://h:6379/0", "redis"),
    ],
)
def test_the_bus_by_default_is_redis_when_there_is_one_else_the_database_s(
    database: str, redis: str | None, bus: str
) -> None:
    settings = Settings(_env_file=None, database_url=database, redis_url=redis)
    assert settings.live_bus == bus


async def test_the_leases_of_a_worker_that_died_lapse(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    async with running_app(settings) as app, client_for(app) as client:
        user, other = await sign_up(client), await sign_up(client)
        database = app.state.runtime.db

        async def claim(owner: SignedUp) -> None:
            async with database.unit(write=True) as unit:
                await streams.claim_stream(
                    unit, owner.id, uuid.uuid4(), worker=uuid.uuid4(), max_streams=5
                )

        for owner in (user, other):
            for _ in range(5):  # a worker's streams; the worker then dies
                await claim(owner)
            with pytest.raises(TooManyStreams):
                await claim(owner)
        async with database.unit(write=True) as unit, unit.statement() as work:
            await work.run(
                sa.update(EVENT_STREAMS).values(expires_at=utcnow() - timedelta(seconds=1))
            )
        await claim(user)  # its lapsed leases no longer count
        assert (await purge(settings))["lapsed live-update stream lease(s)"] == 5  # the other's
        assert (await purge(settings))["lapsed live-update stream lease(s)"] == 0
