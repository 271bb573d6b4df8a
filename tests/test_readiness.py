"""Readiness means "this process can serve": 503 while the database cannot be used, whatever
the cause (not migrated, no such database, a role it refuses), and requests are 503, not 500."""

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from backend.config import Settings
from backend.db import unit as db
from backend.migrations import upgrade_to_head
from tests.conftest import TEST_PASSWORD, TEST_SIGNING_KEY, SettingsFactory, client_for, running_app
from tests.helpers import assert_problem


async def signup(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/api/auth/signup", json={"email": "ada@example.com", "password": TEST_PASSWORD}
    )


async def test_an_unmigrated_database_is_not_ready_until_it_is_migrated(
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "SCHEMA_RECHECK_SECONDS", 0)
    settings = Settings(
        _env_file=None,
        database_url=fresh_database_url,
        jwt_private_key=TEST_SIGNING_KEY,
        log_format="text",
    )
    async with running_app(settings) as app, client_for(app) as client:
        body = assert_problem(await client.get("/ready"), 503, "service_unavailable")
        assert body["detail"] == "The database is not migrated to this version's schema."
        assert_problem(await signup(client), 503, "service_unavailable")
        await asyncio.to_thread(upgrade_to_head, fresh_database_url)
        assert (await client.get("/ready")).status_code == 200
        assert (await signup(client)).status_code == 201


async def test_readiness_is_asked_of_the_database_once_it_is_migrated(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.get("/ready")).status_code == 200
    monkeypatch.setattr(db, "is_at_head", lambda _connection: pytest.fail("asked again"))
    assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("part", "wrong"), [("database", "no_such_database"), ("username", "no_such_role")]
)
async def test_a_database_that_refuses_us_is_503_not_500(
    make_settings: SettingsFactory,
    database_url: str,
    part: str,
    wrong: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts: dict[str, Any] = {part: wrong}
    url = make_url(database_url).set(**parts).render_as_string(hide_password=False)
    async with running_app(make_settings(database_url=url)) as app, client_for(app) as client:
        assert_problem(await client.get("/ready"), 503, "service_unavailable")
        assert_problem(await signup(client), 503, "service_unavailable")
    assert f'"{wrong}" does not exist' in caplog.text
