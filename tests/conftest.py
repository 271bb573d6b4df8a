"""Fixtures: an isolated database per test (SQLite file and real PostgreSQL), the app with its
lifespan, an HTTP client over ASGI, and signed-up users.

Every test that takes `database_url` (directly or through `client`) runs twice: on a fresh SQLite
file copied from a migrated template, and on a PostgreSQL database migrated once per test worker
and emptied before each test. PostgreSQL is skipped when unreachable, except under CI=true, where
its absence fails the run.

Modules marked `pgbouncer` run a third time, the way many app machines share one PostgreSQL: two
app instances (each request to the other one), each with its own engine, through a private
PgBouncer in transaction mode (tests/pgbouncer.py), rate limits in Redis. Skipped when PgBouncer
or Redis is missing, except under CI=true.
"""

import asyncio
import itertools
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from backend.auth.keys import generate_private_key_pem
from backend.config import Settings
from backend.database_url import PostgresTarget, normalize_database_url
from backend.logs import JsonFormatter
from backend.main import create_app
from backend.migrations import upgrade_to_head
from backend.routes.sessions import REFRESH_COOKIE
from tests.pgbouncer import PgBouncer, pgbouncer_binary, running_pgbouncer

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_server_url() -> str:
    """The PostgreSQL server of the PostgreSQL leg: DATABASE_URL when it names one, else the
    machine's local server."""
    for name in ("TEST_POSTGRES_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
            return url
    return "postgresql://postgres@127.0.0.1:5432/test"


POSTGRES_SERVER_URL = _postgres_server_url()

# Tests build their settings explicitly; the developer's environment must not leak into them.
for _field in Settings.model_fields:
    os.environ.pop(_field.upper(), None)

TEST_SIGNING_KEY = generate_private_key_pem()
TEST_PASSWORD = "river-lantern-48-quietly"


# The PgBouncer leg's URLs, and the same databases' own: the tests' helper connections (asyncpg
# with its statement cache, as an administrator's psql would be) go to PostgreSQL directly.
_DIRECT_URLS: dict[str, str] = {}


def asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg's own libpq parser takes it: every parameter the service accepts,
    spelled as libpq spells it (the connect timeout is the caller's)."""
    target = PostgresTarget.parse(normalize_database_url(_DIRECT_URLS.get(url, url)))
    query = {**target.libpq, **target.server_settings}
    return target.url.set(drivername="postgresql", query=query).render_as_string(
        hide_password=False
    )


def database_url_for(server_url: str, database: str) -> str:
    """The server's URL, parameters kept, naming another database."""
    url = make_url(normalize_database_url(server_url)).set(database=database)
    return url.render_as_string(hide_password=False)


async def _pg_execute(url: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
    try:
        return [await connection.fetch(statement) for statement in statements]
    finally:
        await connection.close()


def postgres_reachable() -> bool:
    try:
        asyncio.run(_pg_execute(POSTGRES_SERVER_URL, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def require_postgres() -> None:
    if postgres_reachable():
        return
    if IN_CI:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_SERVER_URL} is not reachable, and CI=true requires it"
        )
    pytest.skip(f"PostgreSQL at {POSTGRES_SERVER_URL} is not reachable")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database(worker_id: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test worker's own."""
    require_postgres()
    name = f"todo_test_{worker_id}_{os.getpid()}"
    asyncio.run(
        _pg_execute(
            POSTGRES_SERVER_URL,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}"',
        )
    )
    url = database_url_for(POSTGRES_SERVER_URL, name)
    upgrade_to_head(url)
    yield url
    if postgres_reachable():
        asyncio.run(
            _pg_execute(POSTGRES_SERVER_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


def empty_postgres(url: str) -> None:
    async def truncate() -> None:
        (tables,) = await _pg_execute(
            url,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'",
        )
        names = ", ".join(f'"{row["tablename"]}"' for row in tables)
        await _pg_execute(url, f"TRUNCATE {names} CASCADE")

    asyncio.run(truncate())


def _require(what: str, available: bool) -> None:
    if not available:
        if IN_CI:
            pytest.fail(f"{what} is missing, and CI=true requires it")
        pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """This test worker's PgBouncer, in transaction mode, in front of the PostgreSQL leg's
    server."""
    require_postgres()
    binary = pgbouncer_binary()
    _require("PgBouncer (Debian's package pgbouncer)", binary is not None)
    assert binary is not None
    with running_pgbouncer(binary, POSTGRES_SERVER_URL) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def pgbouncer_database(worker_id: str, pgbouncer: PgBouncer) -> Iterator[str]:
    """A database of this test worker's own, migrated through PgBouncer; its URL through it."""
    name = f"todo_pgb_{worker_id}_{os.getpid()}"
    direct = database_url_for(POSTGRES_SERVER_URL, name)
    asyncio.run(
        _pg_execute(
            POSTGRES_SERVER_URL,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}"',
        )
    )
    url = pgbouncer.url_for(name)
    _DIRECT_URLS[url] = direct
    upgrade_to_head(url)
    yield url
    if postgres_reachable():
        asyncio.run(
            _pg_execute(POSTGRES_SERVER_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


POOLER_LEG = "pgbouncer"


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The PgBouncer leg for the tests of modules marked `pgbouncer` (those that choose their
    legs themselves keep them): a parametrize mark, which takes the place of the fixture's
    own legs as a test's own mark does."""
    definition = metafunc.definition
    if "database_url" not in metafunc.fixturenames or not definition.get_closest_marker(
        "pgbouncer"
    ):
        return
    for mark in definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "database_url" in (
            names.replace(" ", "").split(",") if isinstance(names, str) else names
        ):
            return
    definition.add_marker(
        pytest.mark.parametrize("database_url", ["sqlite", "postgresql", POOLER_LEG], indirect=True)
    )


def database_leg(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("database_url") if callspec is not None else None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty, migrated database of this test's own, on each engine in turn."""
    if request.param == "sqlite":
        path = tmp_path / "todo.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    if request.param == POOLER_LEG:
        _require("Redis on 127.0.0.1:6379", _redis_answers())
        pooled: str = request.getfixturevalue("pgbouncer_database")
        empty_postgres(_DIRECT_URLS[pooled])
        return pooled
    url: str = request.getfixturevalue("postgres_database")
    empty_postgres(url)
    return url


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, database_url: str) -> SettingsFactory:
    # The PgBouncer leg deploys as many machines would: through the pooler, limits in Redis.
    deployed: dict[str, Any] = (
        {
            "db_pooler": "pgbouncer",
            "redis_url": REDIS_URL,
            "rate_limit_key_prefix": f"test-{uuid.uuid4().hex}",
            # Live updates go through Redis; a test that picks the PostgreSQL bus listens past
            # the pooler.
            "database_listen_url": _DIRECT_URLS[database_url],
        }
        if database_leg(request) == POOLER_LEG
        else {}
    )

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **deployed,
            "database_url": database_url,
            "jwt_private_key": TEST_SIGNING_KEY,
            "log_format": "text",
            "password_hash_concurrency": 4,
            # Tests sign up and log in far more often than people do; the tests of the limits
            # set the limits they test.
            "signup_rate_limit": "1000/minute",
            "login_rate_limit": "1000/minute",
            "login_lockout": "1000/minute",
            "refresh_rate_limit": "1000/minute",
            "password_change_rate_limit": "1000/minute",
            "password_reset_rate_limit": "1000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


# Behind a pooler, an app's twin: a second instance with its own engine (see `running_app`).
_TWINS: dict[FastAPI, FastAPI] = {}


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan started, as a server would run it. Behind a pooler, with a
    twin: `client_for` sends each request to the other instance."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if settings.db_pooler == "none":
            yield app
            return
        twin = create_app(settings)
        async with twin.router.lifespan_context(twin):
            _TWINS[app] = twin
            try:
                yield app
            finally:
                del _TWINS[app]


class _InTurns(httpx.AsyncBaseTransport):
    """Each request to the next of several app instances."""

    def __init__(self, *apps: FastAPI) -> None:
        self._next = itertools.cycle([httpx.ASGITransport(app=app) for app in apps])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._next).handle_async_request(request)


def client_for(
    app: FastAPI, *, base_url: str = "http://testserver", **kwargs: Any
) -> httpx.AsyncClient:
    twin = _TWINS.get(app)
    return httpx.AsyncClient(
        transport=_InTurns(app, twin) if twin else httpx.ASGITransport(app=app),
        base_url=base_url,
        event_hooks={"request": [_secrets_sent], "response": [_secrets_received]},
        **kwargs,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@dataclass
class SignedUp:
    id: str
    email: str
    password: str
    token: str
    body: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def tasks_url(self) -> str:
        return f"/api/{self.id}/tasks"


async def sign_up(
    client: httpx.AsyncClient, *, email: str | None = None, password: str = TEST_PASSWORD
) -> SignedUp:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/api/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body = response.json()
    remember_secrets(password, body["access_token"], body["refresh_token"])
    return SignedUp(body["user"]["id"], email, password, body["access_token"], body)


@pytest.fixture
async def user(client: httpx.AsyncClient) -> SignedUp:
    return await sign_up(client)


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> SignedUp:
    return await sign_up(client)


SignUp = Callable[..., Awaitable[SignedUp]]


def postgres_cluster_command(action: str) -> list[str]:
    """The command that stops or starts the machine's PostgreSQL cluster."""
    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no local PostgreSQL cluster to stop and start")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", action]
    return [*command, "-m", "fast"] if action == "stop" else command


def set_postgres_running(running: bool) -> None:
    subprocess.run(postgres_cluster_command("start" if running else "stop"), check=True)


WithSettings = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, SignedUp]]]


@pytest.fixture
def with_settings(make_settings: SettingsFactory) -> WithSettings:
    """`async with with_settings(max_tasks_per_user=2) as (client, user)`: an app started with
    these settings, a client for it and a signed-up user."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, SignedUp]]:
        async with running_app(make_settings(**overrides)) as app, client_for(app) as client:
            yield client, await sign_up(client)

    return start


# --- No secret in any log line ----------------------------------------------------------------
# Every record of every logger, at every level (DEBUG included), is kept as the JSON line the
# service would write, traceback included. After each test, none may hold a password, a token or
# a password hash that the test used: those sent or received by a test client (`client_for`) or
# by `sign_up`, and any other a test declares with `remember_secrets`. JWTs and Argon2 hashes
# are also recognised by their shape, so that one a test never saw is caught too.

# Values shorter than any password the service accepts ("x", "wrong") are not secrets.
_MIN_SECRET_LENGTH = 8
_SECRET_SHAPES = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.|\$argon2")
_SECRET_FIELDS = ("password", "current_password", "new_password", "refresh_token", "token")
_TOKEN_FIELDS = ("access_token", "refresh_token")
# What the tests' own HTTP clients log of what they send and receive (tokens in a query string,
# Better Auth's token headers). The service's only outbound request, the JWKS fetch, holds no
# secret.
_TEST_CLIENT_LOGGERS = ("httpx", "httpcore")


class _EveryLogLine(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self.secrets: set[str] = set()
        self.allowed: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_TEST_CLIENT_LOGGERS):
            self.lines.append(self.format(record))

    def leaks(self) -> list[str]:
        return [
            line
            for line in self.lines
            if _SECRET_SHAPES.search(line)
            or any(secret in line for secret in self.secrets - self.allowed)
        ]


_LOG = _EveryLogLine()


def record_log_lines(lines: list[str]) -> None:
    """Log lines written elsewhere (a server process), to be checked with this test's own."""
    _LOG.lines.extend(lines)


def remember_secrets(*values: object) -> None:
    """Values that no log line of this test may contain."""
    _LOG.secrets.update(
        value for value in values if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH
    )


def allow_in_logs(value: str) -> None:
    """A secret that this test's log lines may hold, because the service logs it on purpose
    (the development mailer logs the reset link it would have mailed). Only that value."""
    _LOG.allowed.add(value)


async def _secrets_sent(request: httpx.Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        remember_secrets(token.strip())
    if request.url.path.startswith("/api/auth/"):
        try:
            body = orjson.loads(request.content)
        except (httpx.RequestNotRead, orjson.JSONDecodeError):  # streamed, or not JSON
            return
        if isinstance(body, dict):
            remember_secrets(*(body.get(field) for field in _SECRET_FIELDS))


async def _secrets_received(response: httpx.Response) -> None:
    if not response.request.url.path.startswith("/api/auth/"):
        return
    remember_secrets(response.cookies.get(REFRESH_COOKIE))
    content = await response.aread()
    if response.headers.get("content-type") == "application/json" and content:  # HEAD: none
        body = orjson.loads(content)
        if isinstance(body, dict):
            remember_secrets(*(body.get(field) for field in _TOKEN_FIELDS))


@pytest.fixture(scope="session", autouse=True)
def _every_log_line() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.addHandler(_LOG)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(_LOG)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_secret_in_the_logs() -> Iterator[None]:
    _LOG.lines.clear()
    _LOG.secrets.clear()
    _LOG.allowed.clear()
    yield
    leaks = _LOG.leaks()
    assert not leaks, "log lines with a password, a token or a hash:\n" + "\n".join(leaks[:5])


REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_answers() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (OSError, redis.RedisError):
        return False
    finally:
        client.close()


async def redis_reachable() -> bool:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, redis.RedisError):
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def redis_settings() -> dict[str, Any]:
    """Settings that keep the counters in the real Redis, under keys of this test's own."""
    if not await redis_reachable():
        if IN_CI:
            pytest.fail("Redis on 127.0.0.1:6379 is not reachable, and CI=true requires it")
        pytest.skip("Redis on 127.0.0.1:6379 is not reachable")
    return {"redis_url": REDIS_URL, "rate_limit_key_prefix": f"test-{uuid.uuid4().hex}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    require_postgres()
    name = f"todo_migration_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'CREATE DATABASE "{name}"'))
    yield database_url_for(POSTGRES_SERVER_URL, name)
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))
