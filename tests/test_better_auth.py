"""Interoperability with a real Better Auth server (issue 5).

A session fixture installs the pinned `better-auth` from npm into tests/interop/betterauth and
starts Better Auth servers there, on 127.0.0.1 (`server.mjs`, one node process): one per signing
algorithm, one that mints tokens that are already expired, one with an issuer and audience of its
own and an impostor that claims the same ones, one whose signing key the tests rotate and one that
rotates it by itself. Users sign up on those servers over HTTP as a frontend would, and the tokens
Better Auth hands out are sent to this API.

A JWKS stub, also on 127.0.0.1, plays a Better Auth endpoint that answers HTML, a huge body, an
error, or nothing for a long time. Where a test must step past the JWKS cache's lifetime or its
refetch cooldown, it gives the app's key cache a clock of its own instead of sleeping.
"""

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import secrets
import selectors
import shutil
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlmodel import select

from backend.auth.keys import RemoteJwks
from backend.models import AuthProvider, User
from backend.runtime import Runtime
from tests.conftest import (
    IN_CI,
    SettingsFactory,
    client_for,
    remember_secrets,
    running_app,
    sign_up,
)
from tests.helpers import assert_problem

BETTER_AUTH_DIR = Path(__file__).resolve().parent / "interop" / "betterauth"
ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
# The "custom" server signs with these instead of its base URL; the impostor claims them too.
CUSTOM_ISSUER = "https://auth.example.test"
CUSTOM_AUDIENCE = "https://api.example.test"
SECOND_AUDIENCE = "https://reports.example.test"
WRONG_URL = "https://elsewhere.example.test"
# The long-lived servers (options of server.mjs's --instances; the rest are Better Auth's defaults).
SERVERS: dict[str, dict[str, str]] = {
    **{algorithm: {"alg": algorithm} for algorithm in ALGORITHMS},
    "expired": {"expirationTime": "-1h"},  # tokens that are already expired when minted
    "custom": {"issuer": CUSTOM_ISSUER, "audience": f"{CUSTOM_AUDIENCE},{SECOND_AUDIENCE}"},
    "impostor": {"issuer": CUSTOM_ISSUER, "audience": f"{CUSTOM_AUDIENCE},{SECOND_AUDIENCE}"},
    "rotating": {},  # the tests rotate its signing key
    # Better Auth's own rotation: a new key once the newest is a second old; old ones stay listed.
    "self_rotating": {"rotationInterval": "1", "gracePeriod": "3600"},
}
START_TIMEOUT_SECONDS = 30.0
NPM_TIMEOUT_SECONDS = 600.0
HTTP_TIMEOUT = httpx.Timeout(15.0)
DEFAULT_CACHE_SECONDS = 300
DEFAULT_COOLDOWN_SECONDS = 30.0


# --- The Better Auth servers ----------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true requires the Better Auth interoperability tests to run)")
    pytest.skip(reason)


def _pinned_version() -> str:
    package = json.loads((BETTER_AUTH_DIR / "package.json").read_text())
    version: str = package["dependencies"]["better-auth"]
    return version


def _installed_version() -> str | None:
    try:
        package = json.loads(
            (BETTER_AUTH_DIR / "node_modules/better-auth/package.json").read_text()
        )
    except (OSError, ValueError):
        return None
    version = package.get("version") if isinstance(package, dict) else None
    return version if isinstance(version, str) else None


def _installed_as_locked() -> bool:
    """Whether node_modules holds the pinned better-auth and every package at its locked version
    (so a `npm ci` done beforehand, by CI or by hand, is not repeated)."""
    if _installed_version() != _pinned_version():
        return False
    lock_path = BETTER_AUTH_DIR / "package-lock.json"
    if not lock_path.exists():
        return True
    for path, entry in json.loads(lock_path.read_text()).get("packages", {}).items():
        if not path or entry.get("optional"):
            continue  # the project itself; platform-specific extras
        try:
            installed = json.loads((BETTER_AUTH_DIR / path / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if installed.get("version") != entry.get("version"):
            return False
    return True


def _install_better_auth(npm: str) -> None:
    """`npm ci` (or `npm install` while there is no lock file) unless node_modules is already as
    locked; one test worker at a time."""
    digest = hashlib.sha256(str(BETTER_AUTH_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"todo-api-better-auth-{digest}.lock"
    deadline = time.monotonic() + NPM_TIMEOUT_SECONDS + 60
    with lock_path.open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _unavailable(f"another worker held {lock_path} for too long")
                time.sleep(0.2)
        if _installed_as_locked():
            return
        command = "ci" if (BETTER_AUTH_DIR / "package-lock.json").exists() else "install"
        try:
            result = subprocess.run(
                [npm, command, "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=BETTER_AUTH_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _unavailable(f"`npm {command}` in {BETTER_AUTH_DIR} took too long")
        if result.returncode != 0 or not _installed_as_locked():
            _unavailable(
                f"`npm {command}` in {BETTER_AUTH_DIR} did not install better-auth "
                f"{_pinned_version()}: {result.stderr[-2000:]}"
            )


@dataclass
class NodeProcess:
    """One `node server.mjs` process, serving one or more Better Auth servers."""

    process: subprocess.Popen[bytes]
    log: Path

    def output_so_far(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class BetterAuthServer:
    """One Better Auth server: its own port, base URL, signing keys and users."""

    name: str
    base_url: str
    node: NodeProcess

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/api/auth/jwks"

    def stop(self) -> None:
        """Stop the server (and any other server of its process)."""
        self.node.stop()


def _read_lines(node: NodeProcess, count: int, deadline: float) -> list[bytes]:
    stdout = node.process.stdout
    assert stdout is not None
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while output.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            chunk = os.read(stdout.fileno(), 65536) if selector.select(max(remaining, 0)) else b""
            if not chunk:
                node.stop()
                pytest.fail(f"the Better Auth servers did not start: {node.output_so_far()}")
            output += chunk
    return output.splitlines()[:count]


def start_servers(node_binary: str, log_dir: Path, arguments: list[str]) -> list[BetterAuthServer]:
    """Run `node server.mjs <arguments>` and wait until every server it starts answers."""
    log = log_dir / f"better-auth-{uuid.uuid4().hex[:8]}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(log_dir),
        "BA_SECRET": secrets.token_urlsafe(32),
    }
    expected = len(json.loads(arguments[1])) if arguments[:1] == ["--instances"] else 1
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [node_binary, "server.mjs", *arguments],
            cwd=BETTER_AUTH_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    node = NodeProcess(process, log)
    try:
        lines = _read_lines(node, expected, time.monotonic() + START_TIMEOUT_SECONDS)
        servers = []
        for line in lines:
            ready = json.loads(line)
            server = BetterAuthServer(ready["name"], ready["baseURL"], node)
            response = httpx.get(f"{server.base_url}/api/auth/ok", timeout=10, trust_env=False)
            assert response.status_code == 200, response.text
            servers.append(server)
    except BaseException:
        node.stop()
        raise
    return servers


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with the pinned better-auth installed next to server.mjs."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run a real Better Auth server; install Node 20+")
    _install_better_auth(npm)
    return node


@pytest.fixture(scope="session")
def better_auth(
    node: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BetterAuthServer]]:
    """The long-lived servers, by name (see SERVERS), all in one node process."""
    instances = [{"name": name, **options} for name, options in SERVERS.items()]
    servers = start_servers(
        node, tmp_path_factory.mktemp("better-auth"), ["--instances", json.dumps(instances)]
    )
    yield {server.name: server for server in servers}
    servers[0].stop()


StartServer = Callable[..., BetterAuthServer]


@pytest.fixture
def start_better_auth(node: str, tmp_path: Path) -> Iterator[StartServer]:
    """`start(*arguments)`: a server in a process of its own, configured by command-line
    arguments, stopped at the end of the test at the latest."""
    started: list[BetterAuthServer] = []

    def start(*arguments: str) -> BetterAuthServer:
        (server,) = start_servers(node, tmp_path, list(arguments))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _ba_client(server: BetterAuthServer) -> httpx.AsyncClient:
    # Better Auth refuses cross-site POSTs: a browser would send the app's own origin.
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Origin": server.base_url},
        timeout=HTTP_TIMEOUT,
        trust_env=False,
    )


@dataclass
class BetterAuthUser:
    """A user signed up on a Better Auth server, with the session cookie it was given."""

    server: BetterAuthServer
    id: str
    email: str
    name: str
    cookie: str

    async def _get(self, path: str) -> httpx.Response:
        async with _ba_client(self.server) as http:
            response = await http.get(path, headers={"Cookie": self.cookie})
        assert response.status_code == 200, response.text
        return response

    async def token(self) -> str:
        """A JWT from `GET /api/auth/token` (what `authClient.token()` calls)."""
        token: str = (await self._get("/api/auth/token")).json()["token"]
        return token

    async def token_from_session(self) -> str:
        """The JWT in the `set-auth-jwt` header of `GET /api/auth/get-session`."""
        return (await self._get("/api/auth/get-session")).headers["set-auth-jwt"]

    async def rename(self, name: str) -> None:
        async with _ba_client(self.server) as http:
            response = await http.post(
                "/api/auth/update-user", json={"name": name}, headers={"Cookie": self.cookie}
            )
        assert response.status_code == 200, response.text
        self.name = name


async def better_auth_sign_up(
    server: BetterAuthServer, *, email: str | None = None, name: str = "Ada Better"
) -> BetterAuthUser:
    email = email or f"ba-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": "correct-horse-battery-9", "name": name}
    async with _ba_client(server) as http:
        response = await http.post(
            "/api/auth/sign-up/email",
            # json.dumps escapes what httpx's own encoder refuses (a lone surrogate in a name).
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    cookie = "; ".join(
        header.split(";", 1)[0] for header in response.headers.get_list("set-cookie")
    )
    assert "session_token=" in cookie
    user = response.json()["user"]
    return BetterAuthUser(server, user["id"], user["email"], user["name"], cookie)


@pytest.fixture(scope="session")
def _signed_up_twice(
    better_auth: dict[str, BetterAuthServer],
) -> tuple[dict[str, BetterAuthUser], dict[str, BetterAuthUser]]:
    async def sign_up_everywhere() -> list[BetterAuthUser]:
        servers = [*better_auth.values(), *better_auth.values()]
        return await asyncio.gather(*map(better_auth_sign_up, servers))

    users = asyncio.run(sign_up_everywhere())
    first, second = users[: len(better_auth)], users[len(better_auth) :]
    return {user.server.name: user for user in first}, {user.server.name: user for user in second}


@pytest.fixture(scope="session")
def ba_users(
    _signed_up_twice: tuple[dict[str, BetterAuthUser], dict[str, BetterAuthUser]],
) -> dict[str, BetterAuthUser]:
    """A user signed up on each long-lived server, for tests that need a valid token but no new
    user (a test still asks Better Auth for a fresh token). Signing up costs ~0.1 s."""
    return _signed_up_twice[0]


@pytest.fixture(scope="session")
def ba_others(
    _signed_up_twice: tuple[dict[str, BetterAuthUser], dict[str, BetterAuthUser]],
) -> dict[str, BetterAuthUser]:
    """A second user on each long-lived server. The verifier remembers tokens it has verified,
    so a test that must see a key looked up again uses a token the app has not seen yet."""
    return _signed_up_twice[1]


async def rotate_key(server: BetterAuthServer) -> str:
    """Add a new signing key on the server (the old one stays published)."""
    async with _ba_client(server) as http:
        response = await http.post("/test/rotate-key")
    assert response.status_code == 200, response.text
    kid: str = response.json()["kid"]
    return kid


async def withdraw_key(server: BetterAuthServer, kid: str) -> None:
    """Remove a key from the server's key store: its JWKS stops listing it."""
    async with _ba_client(server) as http:
        response = await http.post("/test/withdraw-key", params={"kid": kid})
    assert response.status_code == 200, response.text
    async with _ba_client(server) as http:
        published = (await http.get("/api/auth/jwks")).json()["keys"]
    assert kid not in {key["kid"] for key in published}


async def jwks_requests(server: BetterAuthServer) -> int:
    """How often the server has served its JWKS."""
    async with _ba_client(server) as http:
        response = await http.get("/test/stats")
    assert response.status_code == 200, response.text
    count: int = response.json()["jwksRequests"]
    return count


# --- Tokens and the app ---------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_kid(token: str, kid: str) -> str:
    """The token with another `kid` in its header (and so a signature that no longer matches)."""
    _, payload, signature = token.split(".")
    fields = jwt.get_unverified_header(token)
    return f"{_b64url(json.dumps({**fields, 'kid': kid}).encode())}.{payload}.{signature}"


def tampered(token: str) -> str:
    """The token with a corrupted signature."""
    head, _, signature = token.rpartition(".")
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def better_auth_keys(app: FastAPI) -> RemoteJwks:
    keys = runtime_of(app).better_auth_keys
    assert keys is not None, "Better Auth is not enabled in this app"
    return keys


class JwksFetches:
    """The app's requests for Better Auth's JWKS, counted at its HTTP client as they are sent
    (a request that finds the endpoint down counts too)."""

    def __init__(self, app: FastAPI) -> None:
        self.url = httpx.URL(better_auth_keys(app).url)
        self.count = 0
        runtime_of(app).http.event_hooks["request"].append(self._sent)

    async def _sent(self, request: httpx.Request) -> None:
        if request.url == self.url:
            self.count += 1


_JWKS_FETCHES: weakref.WeakKeyDictionary[FastAPI, JwksFetches] = weakref.WeakKeyDictionary()


def jwks_fetches(app: FastAPI) -> JwksFetches:
    """The JWKS requests of an app that `serving` started (it counts them from the start)."""
    return _JWKS_FETCHES[app]


def fake_clock(app: FastAPI) -> FakeClock:
    """Give the app's Better Auth key cache a clock the test moves (before its first fetch)."""
    keys = better_auth_keys(app)
    assert jwks_fetches(app).count == 0
    clock = FakeClock()
    keys._clock = clock
    return clock


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until `condition` holds, for what the app does in the background."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def serving(
    make_settings: SettingsFactory, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(make_settings(**overrides)) as app, client_for(app) as client:
        if runtime_of(app).better_auth_keys is not None:
            # Nothing fetches the JWKS while the app starts: the first request does.
            _JWKS_FETCHES[app] = JwksFetches(app)
        yield app, client


async def stored_user(app: FastAPI, user_id: str) -> User | None:
    async with runtime_of(app).db.session(write=False) as session:
        return (await session.exec(select(User).where(User.id == user_id))).first()


async def create_task(
    client: httpx.AsyncClient, user_id: str, token: str, title: str = "Buy milk"
) -> httpx.Response:
    return await client.post(f"/api/{user_id}/tasks", json={"title": title}, headers=bearer(token))


# --- A Better Auth user calls the API -------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_better_auth_token_works_on_the_task_routes(
    algorithm: str,
    better_auth: dict[str, BetterAuthServer],
    ba_users: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    server, user = better_auth[algorithm], ba_users[algorithm]
    token = await user.token()

    # What Better Auth hands out, as the issue describes it.
    header, claims = jwt.get_unverified_header(token), claims_of(token)
    assert header["alg"] == algorithm and isinstance(header["kid"], str)
    assert claims["sub"] == user.id and len(user.id) == 32
    assert claims["iss"] == claims["aud"] == server.base_url
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert (claims["email"], claims["name"]) == (user.email, user.name)
    published = json.loads(await _jwks_document(server))["keys"]
    assert {key["alg"] for key in published} == {algorithm}
    assert header["kid"] in {key["kid"] for key in published}
    assert not any("use" in key or "d" in key for key in published)

    served_before = await jwks_requests(server)
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        assert better_auth_keys(app).url == server.jwks_url  # derived from BETTER_AUTH_URL
        created = await create_task(client, user.id, token)
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["user_id"] == user.id
        assert created.headers["location"] == f"/api/{user.id}/tasks/{task['id']}"

        listed = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
        assert listed.status_code == 200, listed.text
        assert [item["id"] for item in listed.json()["items"]] == [task["id"]]
        fetched = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=bearer(token))
        assert fetched.json() == task

        someone_else = secrets.token_urlsafe(24)  # 32 characters, like a Better Auth user id
        for response in (
            await client.get(f"/api/{someone_else}/tasks", headers=bearer(token)),
            await create_task(client, someone_else, token),
        ):
            assert_problem(response, 403, "forbidden")

        me = await client.get("/api/auth/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert {k: me.json()[k] for k in ("id", "email", "name")} == {
            "id": user.id,
            "email": user.email,
            "name": user.name,
        }
        assert jwks_fetches(app).count == 1
    assert await jwks_requests(server) - served_before == 1


async def test_token_from_the_get_session_header_works_cross_origin(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["EdDSA"]
    token = await user.token_from_session()
    assert claims_of(token)["sub"] == user.id
    frontend = "https://app.example.test"
    async with serving(
        make_settings, better_auth_url=user.server.base_url, cors_origins=frontend
    ) as (_, client):
        # The browser's preflight for a cross-origin call with the bearer token.
        preflight = await client.options(
            f"/api/{user.id}/tasks",
            headers={
                "Origin": frontend,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == frontend
        created = await create_task(client, user.id, token)
        assert created.status_code == 201, created.text


async def test_our_tokens_and_better_auths_work_side_by_side(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    ba_user = ba_users["EdDSA"]
    ba_token = await ba_user.token()
    async with serving(make_settings, better_auth_url=ba_user.server.base_url) as (_, client):
        local = await sign_up(client)
        local_task = await create_task(client, local.id, local.token, "ours")
        ba_task = await create_task(client, ba_user.id, ba_token, "theirs")
        assert local_task.status_code == ba_task.status_code == 201

        for user_id, token, title in (
            (local.id, local.token, "ours"),
            (ba_user.id, ba_token, "theirs"),
        ):
            listed = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
            assert [item["title"] for item in listed.json()["items"]] == [title]
        assert_problem(
            await client.get(f"/api/{ba_user.id}/tasks", headers=local.headers), 403, "forbidden"
        )
        assert_problem(
            await client.get(f"/api/{local.id}/tasks", headers=bearer(ba_token)), 403, "forbidden"
        )
        local_me = await client.get("/api/auth/me", headers=local.headers)
        ba_me = await client.get("/api/auth/me", headers=bearer(ba_token))
        assert (local_me.json()["id"], ba_me.json()["id"]) == (local.id, ba_user.id)


# --- Tokens that must be refused ------------------------------------------------------------------


async def test_expired_better_auth_token_is_token_expired(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["expired"]
    token = await user.token()
    assert claims_of(token)["exp"] < time.time() - 3000
    async with serving(make_settings, better_auth_url=user.server.base_url) as (_, client):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
        assert_problem(response, 401, "token_expired")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        # An expired token whose signature is wrong is not "expired": it is not authentic.
        forged = await client.get(f"/api/{user.id}/tasks", headers=bearer(tampered(token)))
        assert_problem(forged, 401, "invalid_token")


async def test_token_of_another_better_auth_server_is_invalid_token(
    better_auth: dict[str, BetterAuthServer],
    ba_users: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    configured, user = better_auth["EdDSA"], ba_users["ES256"]
    token = await user.token()
    async with serving(make_settings, better_auth_url=configured.base_url) as (app, client):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
        assert_problem(response, 401, "invalid_token")
        # An issuer that is not trusted costs no JWKS fetch.
        assert jwks_fetches(app).count == 0


async def test_untrusted_issuer_says_which_came_and_which_are_expected(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    """The classic mistake: Better Auth serves http://127.0.0.1:port, BETTER_AUTH_URL says
    http://localhost:port. The 401 names both issuers, so nobody has to guess."""
    user = ba_users["EdDSA"]
    token = await user.token()
    served = user.server.base_url
    assert served.startswith("http://127.0.0.1:")
    configured = served.replace("127.0.0.1", "localhost")
    async with serving(make_settings, better_auth_url=configured) as (app, client):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
        body = assert_problem(response, 401, "invalid_token")
        detail = str(body["detail"])
        assert f'"{served}"' in detail and f'"{configured}"' in detail
        assert '"todo-api"' in detail  # our own issuer is trusted too
        assert jwks_fetches(app).count == 0


async def test_server_claiming_the_configured_issuer_with_its_own_keys_is_refused(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user, pretender = ba_users["custom"], ba_users["impostor"]
    token, pretender_token = await user.token(), await pretender.token()
    claims = claims_of(token)
    assert claims["iss"] == claims_of(pretender_token)["iss"] == CUSTOM_ISSUER
    assert claims["aud"] == claims_of(pretender_token)["aud"] == [CUSTOM_AUDIENCE, SECOND_AUDIENCE]

    async with serving(
        make_settings,
        better_auth_url=user.server.base_url,
        better_auth_issuer=CUSTOM_ISSUER,
        better_auth_audience=CUSTOM_AUDIENCE,
    ) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        accepted = await create_task(client, user.id, token)
        assert accepted.status_code == 201, accepted.text
        # Its key id is looked for at the configured server, even after a refetch, in vain.
        clock.advance(DEFAULT_COOLDOWN_SECONDS)
        refused = await client.get(f"/api/{pretender.id}/tasks", headers=bearer(pretender_token))
        assert_problem(refused, 401, "invalid_token")
        assert fetches.count == 2


@pytest.mark.parametrize(
    ("server_name", "issuer", "audience"),
    [
        ("custom", CUSTOM_ISSUER, WRONG_URL),
        ("custom", WRONG_URL, CUSTOM_AUDIENCE),
        ("EdDSA", None, WRONG_URL),
        ("EdDSA", WRONG_URL, None),
    ],
    ids=["wrong_aud", "wrong_iss", "default_server_wrong_aud", "default_server_wrong_iss"],
)
async def test_wrong_audience_or_issuer_is_401(
    server_name: str,
    issuer: str | None,
    audience: str | None,
    ba_users: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    user = ba_users[server_name]
    token = await user.token()
    async with serving(
        make_settings,
        better_auth_url=user.server.base_url,
        better_auth_issuer=issuer,
        better_auth_audience=audience,
    ) as (_, client):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
        assert_problem(response, 401, "invalid_token")


def _reheaded(token: str, **fields: Any) -> str:
    """The token with header fields replaced (None removes one); payload and signature kept."""
    header = {**jwt.get_unverified_header(token), **fields}
    header = {name: value for name, value in header.items() if value is not None}
    _, payload, signature = token.split(".")
    return f"{_b64url(json.dumps(header).encode())}.{payload}.{signature}"


DOCTORED_HEADERS: list[dict[str, Any]] = [
    {"alg": ["EdDSA"]},
    {"alg": {"name": "EdDSA"}},
    {"alg": "none"},
    {"alg": "HS256"},
    {"alg": "ES256"},  # an accepted algorithm, but not the one of the key
    {"kid": 42},
    {"kid": None},
    {"jku": "http://127.0.0.1:9/jwks.json"},
    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}},
]


async def test_better_auth_token_with_a_doctored_header_is_invalid_token(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["EdDSA"]
    token = await user.token()
    url = f"/api/{user.id}/tasks"
    async with serving(make_settings, better_auth_url=user.server.base_url) as (_, client):
        assert (await client.get(url, headers=bearer(token))).status_code == 200
        for header in DOCTORED_HEADERS:
            response = await client.get(url, headers=bearer(_reheaded(token, **header)))
            assert response.status_code == 401, (header, response.text)
            assert_problem(response, 401, "invalid_token")


# --- Keys: rotation, unknown key ids, outages -----------------------------------------------------


async def test_rotated_key_is_accepted_after_one_refetch(
    ba_users: dict[str, BetterAuthUser],
    ba_others: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    user, other = ba_users["rotating"], ba_others["rotating"]
    server = user.server
    old_token, other_old_token = await user.token(), await other.token()
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        served_before = await jwks_requests(server)
        assert (await create_task(client, user.id, old_token)).status_code == 201
        assert fetches.count == 1

        new_kid = await rotate_key(server)
        new_token = await user.token()
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        assert jwt.get_unverified_header(old_token)["kid"] != new_kid

        # Two seconds after the first (routine) fetch: the cache is fresh and no cooldown has
        # passed, yet the first unknown kid is fetched at once; a rotation is never a gap.
        clock.advance(2)
        assert (await create_task(client, user.id, new_token)).status_code == 201
        assert fetches.count == 2
        # The old key is still published, so tokens signed with it keep working; no more fetches.
        assert jwt.get_unverified_header(other_old_token)["kid"] != new_kid
        assert (await create_task(client, other.id, other_old_token)).status_code == 201
        listed = await client.get(f"/api/{user.id}/tasks", headers=bearer(new_token))
        assert listed.json()["total"] == 2
        assert fetches.count == 2
        assert await jwks_requests(server) - served_before == 2


async def test_a_withdrawn_key_stops_the_tokens_it_signed_even_those_already_verified(
    start_better_auth: StartServer, make_settings: SettingsFactory
) -> None:
    server = start_better_auth()
    user = await better_auth_sign_up(server)
    old_token = await user.token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        tasks_url = f"/api/{user.id}/tasks"
        assert (await client.get(tasks_url, headers=bearer(old_token))).status_code == 200
        await rotate_key(server)
        await withdraw_key(server, old_kid)
        new_token = await user.token()
        assert jwt.get_unverified_header(new_token)["kid"] != old_kid

        # Until the keys are fetched again, the worker still knows the old key.
        clock.advance(DEFAULT_CACHE_SECONDS - 1)
        assert (await client.get(tasks_url, headers=bearer(old_token))).status_code == 200
        # Once they are stale, the next request refreshes them in the background (and is
        # served with the keys at hand); once the refresh is done, the token verified before
        # is refused, like any token of that key.
        clock.advance(2)
        assert (await client.get(tasks_url, headers=bearer(old_token))).status_code == 200

        async def old_token_refused() -> bool:
            response = await client.get(tasks_url, headers=bearer(old_token))
            if response.status_code == 200:
                return False
            assert_problem(response, 401, "invalid_token")
            return True

        await eventually(old_token_refused)
        assert fetches.count == 2
        assert (await client.get(tasks_url, headers=bearer(new_token))).status_code == 200
        assert_problem(await client.get(tasks_url, headers=bearer(old_token)), 401, "invalid_token")


async def test_keys_rotated_by_better_auth_itself_are_picked_up(
    ba_users: dict[str, BetterAuthUser],
    ba_others: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    user, other = ba_users["self_rotating"], ba_others["self_rotating"]
    # Both signed by a key that expires within a second.
    old_token, other_old_token = await user.token(), await other.token()
    async with serving(make_settings, better_auth_url=user.server.base_url) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        assert (await create_task(client, user.id, old_token)).status_code == 201

        await asyncio.sleep(1.1)  # the plugin's rotationInterval: the next token gets a new key
        new_token = await user.token()
        assert (
            jwt.get_unverified_header(new_token)["kid"]
            != (jwt.get_unverified_header(old_token)["kid"])
        )
        clock.advance(DEFAULT_COOLDOWN_SECONDS)
        assert (await create_task(client, user.id, new_token)).status_code == 201
        # The expired key is still published during the grace period.
        assert (await create_task(client, other.id, other_old_token)).status_code == 201
        assert fetches.count == 2


async def test_unknown_key_ids_cause_at_most_one_jwks_fetch(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["EdDSA"]
    server = user.server
    token = await user.token()
    url = f"/api/{user.id}/tasks"
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        served_before = await jwks_requests(server)

        async def burst() -> None:
            forged = [with_kid(token, secrets.token_urlsafe(24)) for _ in range(100)]
            responses = await asyncio.gather(*(client.get(url, headers=bearer(t)) for t in forged))
            for response in responses:
                assert_problem(response, 401, "invalid_token")

        # Cold: 100 concurrent unknown key ids share the first fetch and trigger no other.
        await burst()
        assert fetches.count == 1
        assert (await client.get(url, headers=bearer(token))).status_code == 200
        # After the cooldown: 100 more cause exactly one refetch, and 100 after those none.
        clock.advance(DEFAULT_COOLDOWN_SECONDS + 1)
        await burst()
        assert fetches.count == 2
        await burst()
        assert fetches.count == 2
        assert await jwks_requests(server) - served_before == 2
        assert (await client.get(url, headers=bearer(token))).status_code == 200


async def test_known_keys_keep_working_while_better_auth_is_down(
    start_better_auth: StartServer, make_settings: SettingsFactory
) -> None:
    server = start_better_auth()
    user, other = await better_auth_sign_up(server), await better_auth_sign_up(server)
    token, other_token = await user.token(), await other.token()
    url = f"/api/{user.id}/tasks"
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        clock, fetches = fake_clock(app), jwks_fetches(app)
        assert (await create_task(client, user.id, token)).status_code == 201
        server.stop()

        clock.advance(DEFAULT_CACHE_SECONDS + 1)  # stale: the next request tries to refresh
        # A token this app has not verified yet, signed by a key it knows.
        assert (await create_task(client, other.id, other_token)).status_code == 201
        assert fetches.count == 2
        assert (await client.get(url, headers=bearer(token))).json()["total"] == 1
        me = await client.get("/api/auth/me", headers=bearer(other_token))
        assert me.status_code == 200, me.text
        unknown = bearer(with_kid(token, "gone"))
        assert_problem(await client.get(url, headers=unknown), 401, "invalid_token")
        clock.advance(DEFAULT_COOLDOWN_SECONDS + 1)
        assert_problem(await client.get(url, headers=unknown), 401, "invalid_token")
        assert fetches.count == 3
        assert (await client.get(url, headers=bearer(token))).status_code == 200

    # A service that never obtained a key cannot verify anything: 503, not 401 and not 500.
    async with serving(make_settings, better_auth_url=server.base_url) as (_, client):
        assert_problem(await client.get(url, headers=bearer(token)), 503, "service_unavailable")


# --- A JWKS endpoint that misbehaves --------------------------------------------------------------


class JwksStub:
    """An HTTP endpoint on 127.0.0.1 that serves a JWKS document, or misbehaves as `mode` says."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.mode = "good"
        self.requests = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> "JwksStub":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api/auth/jwks"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            self.requests += 1
            await self._answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up, as it should with a huge or slow answer
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        def head(status: str, content_type: str, length: int, *extra: str) -> bytes:
            lines = [
                f"HTTP/1.1 {status}",
                f"Content-Type: {content_type}",
                f"Content-Length: {length}",
                "Connection: close",
                *extra,
            ]
            return ("\r\n".join(lines) + "\r\n\r\n").encode()

        def send(status: str, content_type: str, body: bytes, *extra: str) -> None:
            writer.write(head(status, content_type, len(body), *extra) + body)

        match self.mode:
            case "good":
                send("200 OK", "application/json", self.document)
            case "html":
                page = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
                send("200 OK", "text/html", page)
            case "server_error":
                send("500 Internal Server Error", "application/json", b'{"error":"down"}')
            case "redirect":
                send("302 Found", "text/plain", b"", "Location: http://127.0.0.1:9/jwks")
            case "no_keys":
                send("200 OK", "application/json", b'{"keys":[]}')
            case "hmac_only":
                secret = {"kty": "oct", "kid": "shared", "alg": "HS256", "k": "c2VjcmV0"}
                send("200 OK", "application/json", json.dumps({"keys": [secret]}).encode())
            case "huge":
                # Valid JSON with the right keys, padded to 10 MB.
                body = self.document[:-1] + b',"padding":"' + b"x" * 10_000_000 + b'"}'
                writer.write(head("200 OK", "application/json", len(body)))
                for start in range(0, len(body), 65536):
                    writer.write(body[start : start + 65536])
                    await writer.drain()
            case "slow":
                await asyncio.sleep(30)  # cancelled when the stub closes
                send("200 OK", "application/json", self.document)
            case "drip":
                writer.write(head("200 OK", "application/json", len(self.document)))
                for byte in self.document:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            case _:
                raise AssertionError(self.mode)
        await writer.drain()


GARBAGE = ["html", "server_error", "redirect", "no_keys", "hmac_only", "huge", "slow", "drip"]
JWKS_TIMEOUT_SECONDS = 0.3


async def _jwks_document(server: BetterAuthServer) -> bytes:
    async with _ba_client(server) as http:
        response = await http.get("/api/auth/jwks")
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.parametrize("mode", GARBAGE)
async def test_misbehaving_jwks_endpoint_keeps_the_last_good_keys(
    mode: str,
    ba_users: dict[str, BetterAuthUser],
    ba_others: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
) -> None:
    user, other = ba_users["EdDSA"], ba_others["EdDSA"]
    token, other_token = await user.token(), await other.token()
    url = f"/api/{user.id}/tasks"
    async with JwksStub(await _jwks_document(user.server)) as stub:
        settings: dict[str, Any] = {
            "better_auth_url": user.server.base_url,
            "better_auth_jwks_url": stub.url,
            "better_auth_jwks_timeout_seconds": JWKS_TIMEOUT_SECONDS,
        }
        async with serving(make_settings, **settings) as (app, client):
            clock, fetches = fake_clock(app), jwks_fetches(app)
            assert (await client.get(url, headers=bearer(token))).status_code == 200
            stub.mode = mode
            clock.advance(DEFAULT_CACHE_SECONDS + 1)

            started = time.monotonic()  # a token not verified yet: its key is looked up
            response = await client.get(f"/api/{other.id}/tasks", headers=bearer(other_token))
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < JWKS_TIMEOUT_SECONDS + 2
            assert (fetches.count, stub.requests) == (2, 2)
            unknown = await client.get(url, headers=bearer(with_kid(token, "unknown")))
            assert_problem(unknown, 401, "invalid_token")
            assert fetches.count == 2

        # Had it never answered well, nothing could be verified: 503, never 500.
        async with serving(make_settings, **settings) as (app, client):
            started = time.monotonic()
            assert_problem(await client.get(url, headers=bearer(token)), 503, "service_unavailable")
            assert time.monotonic() - started < JWKS_TIMEOUT_SECONDS + 2
            assert_problem(await client.get(url, headers=bearer(token)), 503, "service_unavailable")
            assert jwks_fetches(app).count == 1


async def test_tokens_verified_before_never_wait_for_a_slow_jwks_endpoint(
    ba_users: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = ba_users["EdDSA"]
    token = await user.token()
    url = f"/api/{user.id}/tasks"
    async with JwksStub(await _jwks_document(user.server)) as stub:
        settings: dict[str, Any] = {
            "better_auth_url": user.server.base_url,
            "better_auth_jwks_url": stub.url,
            "better_auth_jwks_timeout_seconds": 3,
        }
        async with serving(make_settings, **settings) as (app, client):
            clock, fetches = fake_clock(app), jwks_fetches(app)
            assert (await client.get(url, headers=bearer(token))).status_code == 200
            stub.mode = "slow"  # answers after 30 s: every fetch runs into the 3 s timeout
            clock.advance(DEFAULT_CACHE_SECONDS + 1)

            started = time.monotonic()
            for _ in range(5):
                assert (await client.get(url, headers=bearer(token))).status_code == 200
            assert time.monotonic() - started < 2, "a request waited for the key endpoint"

            async def refresh_gave_up() -> bool:  # one refresh in the background, timed out
                return any(
                    record.getMessage().startswith("could not refresh the Better Auth JWKS")
                    for record in caplog.records
                )

            await eventually(refresh_gave_up)
            assert (fetches.count, stub.requests) == (2, 2)
            assert (await client.get(url, headers=bearer(token))).status_code == 200


async def test_unusable_entries_in_the_jwks_are_skipped(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["ES256"]
    token = await user.token()
    good = json.loads(await _jwks_document(user.server))["keys"]
    unusable: list[Any] = [
        "not an object",
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"},
        {"kty": "EC", "crv": "P-256", "x": 5, "y": None, "kid": "numbers", "alg": "ES256"},
        {"kty": "RSA", "alg": "RS256", "n": "AQAB", "e": "AQAB", "kid": "tiny-rsa"},
        {"kty": "RSA", "alg": "EdDSA", "n": "AQAB", "e": "AQAB", "kid": "mismatch"},
        {"kty": ["OKP"], "alg": ["EdDSA"], "x": "AAAA", "kid": "lists"},
        {"kty": "oct", "alg": "HS256", "k": "c2VjcmV0", "kid": "hmac"},
        {**good[0], "kid": "private", "d": "AAAA"},
    ]
    document = json.dumps({"keys": [*unusable, *good]}).encode()
    async with (
        JwksStub(document) as stub,
        serving(
            make_settings, better_auth_url=user.server.base_url, better_auth_jwks_url=stub.url
        ) as (_, client),
    ):
        created = await create_task(client, user.id, token)
        assert created.status_code == 201, created.text


async def test_published_key_whose_algorithm_contradicts_its_curve_is_not_used(
    ba_users: dict[str, BetterAuthUser], make_settings: SettingsFactory
) -> None:
    user = ba_users["ES512"]
    token = await user.token()
    (p521_key,) = json.loads(await _jwks_document(user.server))["keys"]
    usable = json.loads(await _jwks_document(ba_users["EdDSA"].server))["keys"]
    document = json.dumps({"keys": [{**p521_key, "alg": "ES256"}, *usable]}).encode()
    async with (
        JwksStub(document) as stub,
        serving(
            make_settings, better_auth_url=user.server.base_url, better_auth_jwks_url=stub.url
        ) as (_, client),
    ):
        for candidate in (token, _reheaded(token, alg="ES256")):
            response = await client.get(f"/api/{user.id}/tasks", headers=bearer(candidate))
            assert_problem(response, 401, "invalid_token")


# --- Provisioning ---------------------------------------------------------------------------------


async def test_first_token_provisions_the_user_and_later_ones_change_nothing(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server, name="Grace Better")
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        assert await stored_user(app, user.id) is None
        me = await client.get("/api/auth/me", headers=bearer(await user.token()))
        assert me.status_code == 200, me.text
        stored = await stored_user(app, user.id)
        assert stored is not None
        assert (stored.provider, stored.email, stored.name) == (
            AuthProvider.better_auth,
            user.email,
            "Grace Better",
        )
        assert stored.password_hash is None
        first_update = stored.updated_at

        for _ in range(2):
            assert (await create_task(client, user.id, await user.token())).status_code == 201
        unchanged = await stored_user(app, user.id)
        assert unchanged is not None and unchanged.updated_at == first_update

        await user.rename("Grace Hopper")
        me = await client.get("/api/auth/me", headers=bearer(await user.token()))
        assert me.json()["name"] == "Grace Hopper"
        renamed = await stored_user(app, user.id)
        assert renamed is not None and renamed.name == "Grace Hopper"
        assert renamed.updated_at > first_update and renamed.created_at == stored.created_at


async def test_concurrent_first_requests_provision_one_user(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server)
    token = await user.token()
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        requests: list[Awaitable[httpx.Response]] = [
            *(client.get(f"/api/{user.id}/tasks", headers=bearer(token)) for _ in range(5)),
            *(create_task(client, user.id, token, f"task {n}") for n in range(5)),
        ]
        responses = await asyncio.gather(*requests)
        assert sorted(r.status_code for r in responses) == [200] * 5 + [201] * 5
        async with runtime_of(app).db.session(write=False) as session:
            rows = (await session.exec(select(User).where(User.id == user.id))).all()
        assert len(rows) == 1


async def test_first_sights_of_many_users_at_once_never_wait_on_their_own_connections(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    # Each first request reads on its own connection; if it stored the new user on a second one
    # while holding the first, a crowd as large as the pool would hold every connection and
    # wait for one more until the pool's timeout (503).
    server = better_auth["EdDSA"]
    users = await asyncio.gather(*(better_auth_sign_up(server) for _ in range(6)))
    tokens = await asyncio.gather(*(user.token() for user in users))
    async with serving(
        make_settings,
        better_auth_url=server.base_url,
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout_seconds=2,
    ) as (_app, client):
        responses = await asyncio.gather(
            *(
                client.get(f"/api/{user.id}/tasks", headers=bearer(token))
                for user, token in zip(users, tokens, strict=True)
            ),
            *(
                create_task(client, user.id, token)
                for user, token in zip(users, tokens, strict=True)
            ),
        )
        assert [r.status_code for r in responses] == [200] * 6 + [201] * 6
        for user, token in zip(users, tokens, strict=True):
            listed = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
            assert listed.json()["total"] == 1


async def test_better_auth_user_and_local_user_with_one_email_stay_apart(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    email = f"shared-{uuid.uuid4().hex[:8]}@example.com"
    ba_user = await better_auth_sign_up(server, email=email)
    ba_token = await ba_user.token()
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        local = await sign_up(client, email=email)
        me = await client.get("/api/auth/me", headers=bearer(ba_token))
        assert (me.json()["id"], me.json()["email"]) == (ba_user.id, email)
        assert (await create_task(client, ba_user.id, ba_token)).status_code == 201

        login = await client.post(
            "/api/auth/login", json={"email": email, "password": local.password}
        )
        assert login.status_code == 200 and login.json()["user"]["id"] == local.id
        listed = await client.get(local.tasks_url, headers=local.headers)
        assert listed.json()["total"] == 0
        async with runtime_of(app).db.session(write=False) as session:
            rows = (await session.exec(select(User).where(User.email == email))).all()
        assert sorted(row.provider for row in rows) == [
            AuthProvider.better_auth,
            AuthProvider.local,
        ]


async def test_better_auth_and_local_ids_never_reach_each_others_accounts(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    clashing_user = await better_auth_sign_up(server)
    provisioned_user = await better_auth_sign_up(server)
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        # A local account that happens to have a Better Auth user's id (ours are UUIDs, so this
        # cannot happen by itself): that user's tokens are refused and change nothing.
        async with runtime_of(app).db.session(write=True) as session:
            session.add(
                User(id=clashing_user.id, provider=AuthProvider.local, email="local@example.com")
            )
        token = await clashing_user.token()
        for response in (
            await client.get("/api/auth/me", headers=bearer(token)),
            await client.get(f"/api/{clashing_user.id}/tasks", headers=bearer(token)),
            await create_task(client, clashing_user.id, token),
        ):
            assert_problem(response, 401, "invalid_token")
        local = await stored_user(app, clashing_user.id)
        assert local is not None
        assert (local.provider, local.email, local.name) == (
            AuthProvider.local,
            "local@example.com",
            None,
        )

        # The other way round: one of our tokens naming a Better Auth user is refused.
        me = await client.get("/api/auth/me", headers=bearer(await provisioned_user.token()))
        assert me.status_code == 200
        ours = runtime_of(app).access_tokens.issue(provisioned_user.id).token
        assert_problem(await client.get("/api/auth/me", headers=bearer(ours)), 401, "invalid_token")


@pytest.mark.parametrize(
    ("name", "stored_name"),
    [("N" * 300, "N" * 200), ("Ada\x00Lovelace", "AdaLovelace"), ("Ada\ud800", "Ada?")],
    ids=["longer_than_our_column", "nul_character", "lone_surrogate"],
)
async def test_names_we_cannot_store_as_given_are_adapted_once(
    name: str,
    stored_name: str,
    better_auth: dict[str, BetterAuthServer],
    make_settings: SettingsFactory,
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server, name=name)
    token = await user.token()
    assert claims_of(token)["name"] == name
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        assert (await create_task(client, user.id, token)).status_code == 201
        stored = await stored_user(app, user.id)
        assert stored is not None and stored.name == stored_name
        me = await client.get("/api/auth/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["name"] == stored_name
        again = await stored_user(app, user.id)
        assert again is not None and again.updated_at == stored.updated_at


async def test_a_better_auth_user_changes_its_password_through_better_auth(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server)
    async with serving(make_settings, better_auth_url=server.base_url) as (_, client):
        response = await client.post(
            "/api/auth/password",
            json={"current_password": "correct-horse-battery-9", "new_password": "a new one, long"},
            headers=bearer(await user.token()),
        )
        assert_problem(response, 409, "password_managed_elsewhere")


async def test_a_deleted_better_auth_user_comes_back_as_a_new_empty_account(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server, name="Leaving Soon")
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        token = await user.token()
        assert (await create_task(client, user.id, token)).status_code == 201
        # Its name comes from Better Auth; its time zone is ours to keep.
        renamed = await client.patch("/api/auth/me", json={"name": "x"}, headers=bearer(token))
        assert_problem(renamed, 400, "validation_error")
        moved = await client.patch(
            "/api/auth/me", json={"time_zone": "Asia/Tokyo"}, headers=bearer(token)
        )
        assert moved.json()["time_zone"] == "Asia/Tokyo"
        first = await stored_user(app, user.id)
        assert first is not None

        with_password = await client.request(
            "DELETE", "/api/auth/me", json={"password": "x"}, headers=bearer(token)
        )
        assert_problem(with_password, 400, "validation_error")
        deleted = await client.delete("/api/auth/me", headers=bearer(token))
        assert deleted.status_code == 204, deleted.text
        assert await stored_user(app, user.id) is None
        # Its tokens from before stop at once (this one was verified and cached): they do not
        # provision the account again.
        for path in ("/api/auth/me", f"/api/{user.id}/tasks"):
            assert_problem(await client.get(path, headers=bearer(token)), 401, "invalid_token")
        assert await stored_user(app, user.id) is None

        # Signing in again through Better Auth: a new account here, with nothing in it. Its
        # tokens' `iat` has whole seconds: one from the second of the deletion is refused too.
        await asyncio.sleep(1.05 - time.time() % 1)
        again = await user.token()
        listed = await client.get(f"/api/{user.id}/tasks", headers=bearer(again))
        assert listed.status_code == 200 and listed.json()["items"] == []
        me = (await client.get("/api/auth/me", headers=bearer(again))).json()
        assert me["time_zone"] == "UTC" and me["name"] == "Leaving Soon"
        fresh = await stored_user(app, user.id)
        assert fresh is not None and fresh.created_at > first.created_at


async def test_local_accounts_can_be_turned_off_for_a_better_auth_only_deployment(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server)
    async with serving(make_settings, better_auth_url=server.base_url, local_accounts=False) as (
        _,
        client,
    ):
        body = {"email": "local@example.com", "password": "correct-horse-battery-9"}
        for path in ("signup", "login", "refresh", "logout", "password"):
            response = await client.post(f"/api/auth/{path}", json=body)
            assert_problem(response, 404, "not_found")
        document = (await client.get("/openapi.json")).json()
        assert not {"/api/auth/signup", "/api/auth/login", "/api/auth/refresh"} & set(
            document["paths"]
        )
        token = await user.token()
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
        assert (await create_task(client, user.id, token)).status_code == 201
        logout_all = await client.post("/api/auth/logout-all", headers=bearer(token))
        assert logout_all.status_code == 204


def test_turning_off_local_accounts_needs_better_auth(make_settings: SettingsFactory) -> None:
    with pytest.raises(ValueError, match="LOCAL_ACCOUNTS: false needs BETTER_AUTH_URL"):
        make_settings(local_accounts=False)


async def verify_email(user: BetterAuthUser) -> None:
    """Mark the user's email as verified on its Better Auth server."""
    async with _ba_client(user.server) as http:
        response = await http.post("/test/verify-email", params={"email": user.email})
    assert response.status_code == 200, response.text


async def test_unverified_emails_can_be_refused(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server)
    unverified = await user.token()
    async with serving(make_settings, better_auth_url=server.base_url) as (_, client):
        # Off by default: Better Auth's own setting decides who may sign in.
        assert (await client.get("/api/auth/me", headers=bearer(unverified))).status_code == 200
    async with serving(
        make_settings, better_auth_url=server.base_url, better_auth_require_verified_email=True
    ) as (_, client):
        for path in ("/api/auth/me", f"/api/{user.id}/tasks"):
            response = await client.get(path, headers=bearer(unverified))
            assert_problem(response, 403, "email_not_verified")
        await verify_email(user)
        verified = await user.token()
        assert (await client.get("/api/auth/me", headers=bearer(verified))).status_code == 200
        assert (await create_task(client, user.id, verified)).status_code == 201


async def test_a_jwks_url_with_credentials_never_reaches_the_log(
    ba_users: dict[str, BetterAuthUser],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = ba_users["EdDSA"]
    password = "jwks-basic-auth-password"
    remember_secrets(password)  # conftest fails the test if any log line holds it
    async with JwksStub(b"{}") as stub:
        stub.mode = "server_error"
        with_credentials = stub.url.replace("http://", f"http://todo:{password}@")
        async with serving(
            make_settings,
            better_auth_url=user.server.base_url,
            better_auth_jwks_url=with_credentials,
        ) as (_, client):
            response = await create_task(client, user.id, await user.token())
            assert_problem(response, 503, "service_unavailable")
    warnings = [r.getMessage() for r in caplog.records if "Better Auth JWKS" in r.getMessage()]
    assert warnings and all("todo:" not in w and "***@127.0.0.1" in w for w in warnings)


async def test_routes_that_check_the_token_in_their_statements_provision_and_rename_too(
    better_auth: dict[str, BetterAuthServer], make_settings: SettingsFactory
) -> None:
    """Create, get, replace and complete read no account first: a Better Auth user's very first
    request may be any of them, and a new name in the token still reaches the stored user."""
    server = better_auth["EdDSA"]
    user = await better_auth_sign_up(server, name="Ada Better")
    async with serving(make_settings, better_auth_url=server.base_url) as (app, client):
        created = await create_task(client, user.id, await user.token())
        assert created.status_code == 201, created.text
        stored = await stored_user(app, user.id)
        assert stored is not None and stored.name == "Ada Better"
        task_url = f"/api/{user.id}/tasks/{created.json()['id']}"

        await user.rename("Ada Lovelace")
        got = await client.get(task_url, headers=bearer(await user.token()))
        assert got.status_code == 200, got.text
        renamed = await stored_user(app, user.id)
        assert renamed is not None and renamed.name == "Ada Lovelace"

        body = {"title": "Replaced", "completed": False}
        replaced = await client.put(task_url, json=body, headers=bearer(await user.token()))
        assert replaced.status_code == 200, replaced.text
        completed = await client.patch(f"{task_url}/complete", headers=bearer(await user.token()))
        assert completed.json()["completed"] is True
