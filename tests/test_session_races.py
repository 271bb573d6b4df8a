"""Revocation wins every race: logout-all and a password change, run while another client of
the same user refreshes a session in a loop, never fail and leave no token of the user alive."""

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from backend.config import Settings
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    asyncpg_dsn,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import bearer

pytestmark = pytest.mark.pgbouncer

# At least 200 races of each kind on PostgreSQL, where they ran into deadlocks; SQLite
# serialises writers, so fewer show the same there. Through PgBouncer, on two instances, the
# same races again: fewer, to keep the suite's time.
RACES = {"postgresql": 200, "sqlite": 40, "pgbouncer": 50}


@dataclass
class RefreshLoop:
    """A client refreshing one session as fast as it can, keeping every token it was given."""

    client: httpx.AsyncClient
    refresh_token: str
    access_tokens: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            response = await self.client.post(
                "/api/auth/refresh", json={"refresh_token": self.refresh_token}
            )
            self.statuses.append(response.status_code)
            if response.status_code != 200:
                return
            body: dict[str, Any] = response.json()
            self.refresh_token = body["refresh_token"]
            self.access_tokens.append(body["access_token"])


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_all_refused(client: httpx.AsyncClient, loop: RefreshLoop, *stale: str) -> None:
    """No refresh token nor access token handed out before the revocation still works."""
    again = await client.post("/api/auth/refresh", json={"refresh_token": loop.refresh_token})
    assert again.status_code == 401, again.text
    for access in (*stale, *loop.access_tokens):
        response = await client.get("/api/auth/me", headers=bearer(access))
        assert response.status_code == 401, response.text
    assert 500 not in loop.statuses and 503 not in loop.statuses, loop.statuses


def race_settings(make_settings: SettingsFactory) -> Settings:
    # Every loop refreshes hundreds of times: the refresh limit is not what these tests test.
    return make_settings(refresh_rate_limit="100000/minute")


def races_for(settings: Settings) -> int:
    if settings.db_pooler != "none":
        return RACES["pgbouncer"]
    return RACES["sqlite" if settings.is_sqlite else "postgresql"]


async def test_logout_all_wins_every_race_with_a_refreshing_client(
    make_settings: SettingsFactory,
) -> None:
    settings = race_settings(make_settings)
    async with running_app(settings) as app, client_for(app) as client:
        user: SignedUp = await sign_up(client)
        for _ in range(races_for(settings)):
            # One login per race (hashing is the slow part): its refresh token loops, its
            # access token logs out everywhere.
            victim = await login(client, user.email, user.password)
            loop = RefreshLoop(client, victim["refresh_token"])
            looping = asyncio.create_task(loop.run())
            await asyncio.sleep(random.uniform(0, 0.01))
            response = await client.post(
                "/api/auth/logout-all", headers=bearer(victim["access_token"])
            )
            assert response.status_code == 204, response.text
            await asyncio.wait_for(looping, timeout=30)
            await assert_all_refused(client, loop, victim["access_token"])


async def test_password_change_wins_every_race_with_a_refreshing_client(
    make_settings: SettingsFactory,
) -> None:
    settings = race_settings(make_settings)
    async with running_app(settings) as app, client_for(app) as client:
        user: SignedUp = await sign_up(client)
        current = user.password
        for n in range(races_for(settings)):
            victim = await login(client, user.email, current)
            loop = RefreshLoop(client, victim["refresh_token"])
            looping = asyncio.create_task(loop.run())
            await asyncio.sleep(random.uniform(0, 0.01))
            new_password = f"passphrase number {n} of the race"
            response = await client.post(
                "/api/auth/password",
                json={"current_password": current, "new_password": new_password},
                headers=bearer(victim["access_token"]),
            )
            assert response.status_code == 200, response.text
            await asyncio.wait_for(looping, timeout=30)
            await assert_all_refused(client, loop, victim["access_token"])
            if n % 10 == 0:  # the old password is refused (one more hash, so not every time)
                old = await client.post(
                    "/api/auth/login", json={"email": user.email, "password": current}
                )
                assert old.status_code == 401, old.text
            current = new_password
            fresh = response.json()
            # The caller's new session is the one that lives on.
            assert (
                await client.get("/api/auth/me", headers=bearer(fresh["access_token"]))
            ).status_code == 200


async def test_a_deadlock_is_retried_not_answered_500(
    make_settings: SettingsFactory, database_url: str
) -> None:
    """Another transaction takes the locks logout-all needs in the opposite order, so PostgreSQL
    breaks the deadlock by rolling logout-all back: it runs again and succeeds."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's writers never wait for each other's row locks")
    settings = race_settings(make_settings)
    async with running_app(settings) as app, client_for(app) as client:
        user: SignedUp = await sign_up(client)
        other = await asyncpg.connect(asyncpg_dsn(database_url), timeout=3)
        try:
            async with other.transaction():
                await other.execute(
                    "SELECT 1 FROM refresh_tokens WHERE user_id = $1 FOR UPDATE", user.id
                )
                logging_out = asyncio.create_task(
                    client.post("/api/auth/logout-all", headers=user.headers)
                )
                await wait_for_lock_wait(other)
                with contextlib.suppress(asyncpg.DeadlockDetectedError):
                    # Waits for logout-all's lock on the user; one of the two is rolled back.
                    await other.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
            response = await asyncio.wait_for(logging_out, timeout=30)
        finally:
            await other.close()
        assert response.status_code == 204, response.text
        refreshed = await client.post(
            "/api/auth/refresh", json={"refresh_token": user.body["refresh_token"]}
        )
        assert refreshed.status_code == 401


async def wait_for_lock_wait(connection: asyncpg.Connection) -> None:
    """Until another backend waits for a lock (logout-all, blocked by `connection`)."""
    for _ in range(500):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("logout-all never waited for the lock")
