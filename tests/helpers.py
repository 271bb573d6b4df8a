"""Helpers that tests share: what an answer must look like, tokens, and a few requests that
many tests make. Fixtures live in conftest.py; no test module imports from another."""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.auth.keys import ed25519_thumbprint
from tests.conftest import IN_CI, TEST_SIGNING_KEY, SignedUp

# Debian's Chromium, which the browser tests drive (Playwright downloads no browser here), and what
# it needs to run headless in a container and to stay off the network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_chromium() -> None:
    """Skips the test without Chromium, except under CI=true, where it fails."""
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium), and CI=true")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _our_key() -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(TEST_SIGNING_KEY.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


OUR_KEY = _our_key()


OUR_KID = ed25519_thumbprint(OUR_KEY.public_key())


def mint(
    subject: str,
    *,
    key: Any = OUR_KEY,
    algorithm: str = "EdDSA",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token shaped like ours, with any claim or header changed."""
    now = int(time.time())
    payload = {
        "sub": subject,
        "iat": now,
        "exp": now + 600,
        "iss": "todo-api",
        "aud": "todo-api",
        "typ": "access",
        **claims,
    }
    for name in drop:
        payload.pop(name)
    return jwt.encode(
        payload, key, algorithm=algorithm, headers={"kid": OUR_KID, **(headers or {})}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(client: httpx.AsyncClient, user: SignedUp, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        user.tasks_url, json={"title": "A task", **fields}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


NEW_PASSWORD = "a-brand-new-passphrase-77"


async def login(
    client: httpx.AsyncClient, user: SignedUp, password: str | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/login", json={"email": user.email, "password": password or user.password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


async def me_status(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/api/auth/me", headers=bearer(access_token))).status_code


@dataclass
class Event:
    """One Server-Sent Event as a client sees it."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class EventReader:
    """Reads the events of an open `text/event-stream` response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next(self, within: float = 5) -> Event:
        """The next event (comments counted and skipped); TimeoutError if none comes in time,
        StopAsyncIteration if the stream ends."""
        async with asyncio.timeout(within):
            fields: dict[str, str] = {}
            data: list[str] = []
            async for line in self._lines:
                if not line:
                    if data or fields:
                        return Event(
                            fields.get("event", "message"), "\n".join(data), fields.get("id")
                        )
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
            raise StopAsyncIteration

    async def ended(self, within: float) -> bool:
        """Whether the stream ends (after any events still coming) within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while True:
                    await self.next(within)
        except StopAsyncIteration:
            return True
        except (TimeoutError, httpx.ReadTimeout):
            return False
        except httpx.RemoteProtocolError:
            return True


class BackgroundLoop:
    """An event loop in a thread of its own: the app runs there, the (synchronous) state
    machine submits its requests to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@asynccontextmanager
async def open_events(
    client: httpx.AsyncClient,
    user: SignedUp,
    *,
    token: str | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[EventReader]:
    """The user's event stream, open (200) until the block ends; `token` instead of the
    user's own, `params` and `headers` (`{"Last-Event-ID": cursor}`) as given."""
    async with client.stream(
        "GET",
        f"/api/{user.id}/events",
        params=params,
        headers={**bearer(token or user.token), **(headers or {})},
        timeout=httpx.Timeout(10, read=None),
    ) as response:
        assert response.status_code == 200, await response.aread()
        yield EventReader(response)


# --- query plans ----------------------------------------------------------------------------


def engine_of(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.runtime.db.engine
    return engine


async def vacuum(engine: AsyncEngine) -> None:
    """What autovacuum does to tables this size, at once: statistics, and the visibility map
    (which lets PostgreSQL answer from an index alone)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if connection.dialect.name == "postgresql":
            await autocommit.exec_driver_sql("VACUUM ANALYZE tasks, task_tags")
        else:
            await autocommit.exec_driver_sql("ANALYZE")


async def plan(engine: AsyncEngine, statement: Any, params: dict[str, Any]) -> str:
    """The plan the database chooses for `statement` with these parameters, as text."""
    async with engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)
        values = compiled.construct_params(params)
        arguments = tuple(values[name] for name in compiled.positiontup)
        sqlite = connection.dialect.name == "sqlite"
        prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        result = await connection.exec_driver_sql(prefix + compiled.string, arguments)
        rows = result.all()
    return "\n".join(str(row[-1]) for row in rows)
