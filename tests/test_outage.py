"""Readiness follows the real PostgreSQL server: 503 while it is stopped, 200 again once it is
back, without restarting the service.

These tests stop the machine's PostgreSQL cluster, so they are marked `serial`: the test command
runs them on their own, after the rest of the suite.
"""

import asyncio
import time

import pytest

from backend.config import Settings
from tests.conftest import (
    TEST_SIGNING_KEY,
    client_for,
    running_app,
    set_postgres_running,
)

pytestmark = pytest.mark.serial


async def test_ready_is_503_while_postgres_is_stopped_and_recovers(postgres_database: str) -> None:
    settings = Settings(
        _env_file=None,
        database_url=postgres_database,
        jwt_private_key=TEST_SIGNING_KEY,
        log_format="text",
    )
    async with running_app(settings) as app, client_for(app) as client:
        assert (await client.get("/ready")).status_code == 200
        try:
            await asyncio.to_thread(set_postgres_running, False)
            started = time.monotonic()
            response = await client.get("/ready")
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "service_unavailable"
            assert elapsed < 3.0, f"/ready took {elapsed:.2f}s to say 503"
            assert (await client.get("/health")).status_code == 200
        finally:
            await asyncio.to_thread(set_postgres_running, True)

        deadline = time.monotonic() + 20
        statuses = []
        while time.monotonic() < deadline:
            response = await client.get("/ready")
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert statuses[-1] == 200, statuses
