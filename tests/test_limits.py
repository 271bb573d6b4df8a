"""Rate limits, with the real Redis and with process memory: per-account login lockout, per-IP
login and signup limits that a spoofed X-Forwarded-For cannot get around, task writes per user,
and the 429 they answer."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from limits import parse as parse_rate

from backend.ratelimit import client_ip, parse_networks
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    client_for,
    remember_secrets,
    running_app,
    sign_up,
)
from tests.helpers import assert_problem


@pytest.fixture(params=["memory", "redis"])
def limits_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for where the counters live: process memory, or the real Redis."""
    if request.param == "memory":
        return {}
    settings: dict[str, Any] = request.getfixturevalue("redis_settings")
    return settings


@asynccontextmanager
async def limited_client(
    make_settings: SettingsFactory, backend: dict[str, Any], **limits: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(**backend, **limits)) as app, client_for(app) as client:
        yield client


async def login(
    client: httpx.AsyncClient, email: str, password: str, ip: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": ip} if ip else {}
    return await client.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )


def assert_limited(response: httpx.Response) -> None:
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-limit"]) >= 1


async def test_eleventh_failed_login_is_429_from_any_ip_even_with_the_right_password(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, login_lockout="10/15minutes", trusted_proxies="127.0.0.1"
    ) as client:
        user = await sign_up(client)
        bystander = await sign_up(client)
        for attempt in range(10):
            response = await login(client, user.email, "wrong password", ip=f"203.0.113.{attempt}")
            assert_problem(response, 401, "invalid_credentials")
        eleventh = await login(client, user.email, "wrong password", ip="198.51.100.7")
        assert_limited(eleventh)
        assert "failed logins" in eleventh.json()["detail"]
        assert 800 < int(eleventh.headers["retry-after"]) <= 900
        right = await login(client, user.email, user.password, ip="192.0.2.99")
        assert_limited(right)
        # Another account is not affected; nor is an unknown email told apart from a locked one.
        assert (await login(client, bystander.email, bystander.password)).status_code == 200


async def test_a_successful_login_clears_earlier_failures(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(make_settings, limits_backend, login_lockout="3/hour") as client:
        user = await sign_up(client)
        for _ in range(2):
            await login(client, user.email, "wrong")
        assert (await login(client, user.email, user.password)).status_code == 200
        for _ in range(2):
            assert (await login(client, user.email, "wrong")).status_code == 401
        assert (await login(client, user.email, user.password)).status_code == 200


async def test_unknown_emails_lock_like_real_ones(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(make_settings, limits_backend, login_lockout="2/hour") as client:
        for _ in range(2):
            assert (await login(client, "ghost@example.com", "x")).status_code == 401
        assert_limited(await login(client, "ghost@example.com", "x"))


async def test_rotating_x_forwarded_for_does_not_bypass_the_ip_limit(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(make_settings, limits_backend, login_rate_limit="5/minute") as client:
        statuses = [
            (await login(client, "a@example.com", "x", ip=f"10.0.0.{i}")).status_code
            for i in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2


async def test_behind_a_trusted_proxy_each_client_has_its_own_ip_limit(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, login_rate_limit="2/minute", trusted_proxies="127.0.0.0/8"
    ) as client:
        for ip in ("198.51.100.1", "198.51.100.2"):
            assert (await login(client, "a@example.com", "x", ip=ip)).status_code == 401
            assert (await login(client, "a@example.com", "x", ip=ip)).status_code == 401
            assert_limited(await login(client, "a@example.com", "x", ip=ip))
        # A client cannot pose as another one by prepending addresses of its own.
        spoof = await login(client, "a@example.com", "x", ip="198.51.100.3, 198.51.100.1")
        assert_limited(spoof)


async def test_signups_are_limited_per_ip(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, signup_rate_limit="3/minute"
    ) as client:
        for _ in range(3):
            await sign_up(client)
        response = await client.post(
            "/api/auth/signup", json={"email": "late@example.com", "password": "long enough pw"}
        )
        assert_limited(response)


async def test_task_writes_are_limited_per_user_and_reads_are_not(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, task_write_rate_limit="3/minute"
    ) as client:
        user, other = await sign_up(client), await sign_up(client)
        created = await client.post(user.tasks_url, json={"title": "a"}, headers=user.headers)
        assert created.headers["ratelimit-limit"] == "3"
        assert created.headers["ratelimit-remaining"] == "2"
        task_url = f"{user.tasks_url}/{created.json()['id']}"
        assert (await client.patch(f"{task_url}/complete", headers=user.headers)).status_code == 200
        assert (
            await client.put(task_url, json={"title": "b"}, headers=user.headers)
        ).status_code == 200
        assert_limited(await client.delete(task_url, headers=user.headers))
        assert_limited(await client.post(user.tasks_url, json={"title": "c"}, headers=user.headers))
        assert (await client.get(task_url, headers=user.headers)).json()["title"] == "b"
        assert (await client.get(user.tasks_url, headers=user.headers)).status_code == 200
        assert (
            await client.post(other.tasks_url, json={"title": "x"}, headers=other.headers)
        ).status_code == 201


async def test_limits_hold_under_concurrency(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, task_write_rate_limit="10/minute"
    ) as client:
        user = await sign_up(client)
        responses = await asyncio.gather(
            *(
                client.post(user.tasks_url, json={"title": "t"}, headers=user.headers)
                for _ in range(25)
            )
        )
        assert sorted(r.status_code for r in responses) == [201] * 10 + [429] * 15


async def test_an_unreachable_redis_falls_back_to_memory_limits(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    redis_password = "redis-password-that-stays-out-of-the-logs"
    remember_secrets(redis_password)
    async with limited_client(
        make_settings,
        {"redis_url": f"redis://:{redis_password}@127.0.0.1:1/0"},
        login_rate_limit="2/minute",
    ) as client:
        statuses = [(await login(client, "a@example.com", "x")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert any("fall back to process memory" in r.getMessage() for r in caplog.records)


def test_client_ip_rules() -> None:
    trusted = parse_networks(["10.0.0.0/8", "::1"])
    headers = {"x-forwarded-for": "203.0.113.9, 10.1.1.1"}
    assert client_ip("198.51.100.4", headers, trusted) == "198.51.100.4"  # peer not a proxy
    assert client_ip("10.0.0.2", headers, trusted) == "203.0.113.9"
    assert client_ip("10.0.0.2", {"x-forwarded-for": "evil, 203.0.113.9"}, trusted) == "203.0.113.9"
    assert client_ip("10.0.0.2", {"x-forwarded-for": "not-an-ip"}, trusted) == "10.0.0.2"
    assert client_ip("10.0.0.2", {}, trusted) == "10.0.0.2"
    assert client_ip("::1", {"x-forwarded-for": "2001:db8::5"}, trusted) == "2001:db8::5"
    assert client_ip("10.0.0.2", headers, ()) == "10.0.0.2"


async def test_openapi_documents_413_415_429_and_503(app: Any) -> None:
    document = app.openapi()
    create = document["paths"]["/api/{user_id}/tasks"]["post"]["responses"]
    login_responses = document["paths"]["/api/auth/login"]["post"]["responses"]
    for status in ("400", "413", "415", "429", "503"):
        assert status in create and status in login_responses
        assert "application/problem+json" in create[status]["content"]
    assert "429" not in document["paths"]["/api/{user_id}/tasks"]["get"]["responses"]


async def test_limit_headers_are_readable_by_browsers(
    make_settings: SettingsFactory, user: SignedUp
) -> None:
    async with running_app(make_settings()) as app, client_for(app) as client:
        response = await client.post(
            "/api/auth/login",
            json={"email": "x@example.com", "password": "y"},
            headers={"Origin": "http://localhost:3000"},
        )
    exposed = response.headers["access-control-expose-headers"].lower()
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"):
        assert header in exposed


async def test_memory_counters_survive_a_clear_during_their_expiry_sweep() -> None:
    from limits.aio.strategies import MovingWindowRateLimiter

    from backend.ratelimit import _MemoryStorage

    storage = _MemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = parse_rate("5/minute")
    await limiter.hit(item, "login-failures", "a@example.com")
    key = next(iter(storage.events))
    lock = storage.locks[key]
    await lock.acquire()
    sweep = asyncio.create_task(storage._MemoryStorage__expire_events())
    await asyncio.sleep(0)  # the sweep now waits for the key's lock
    await limiter.clear(item, "login-failures", "a@example.com")  # a successful login
    lock.release()
    await sweep  # limits 5.8.0's own sweep raises KeyError here
    assert await limiter.test(item, "login-failures", "a@example.com")


async def test_memory_expiry_sweeps_run_at_most_once_an_interval_and_free_expired_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    from backend.ratelimit import _MemoryStorage

    sweeps = 0
    expire_events = _MemoryStorage._MemoryStorage__expire_events

    async def counted(self: _MemoryStorage) -> None:
        nonlocal sweeps
        sweeps += 1
        await expire_events(self)

    monkeypatch.setattr(_MemoryStorage, "_MemoryStorage__expire_events", counted)
    monkeypatch.setattr(_MemoryStorage, "SWEEP_INTERVAL_SECONDS", 0.3)
    storage = _MemoryStorage()
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse_rate("1000/second")
    for user in range(200):
        assert await limiter.hit(item, "task-writes", f"user-{user}")
        await asyncio.sleep(0)
    assert sweeps == 1  # not one per hit, as limits 5.8.0 schedules them
    assert storage.storage  # the counters, alive for two seconds
    await asyncio.sleep(2.1)
    assert await limiter.hit(item, "task-writes", "user-0")  # schedules the next sweep
    await asyncio.sleep(0.05)
    assert sweeps == 2
    assert set(storage.storage) <= {key for key in storage.storage if "user-0" in key}
    assert await limiter.hit(item, "task-writes", "user-1")  # counts afresh after expiry


async def change_password(
    client: httpx.AsyncClient, user: SignedUp, current: str, new: str = "a new passphrase, longer"
) -> httpx.Response:
    return await client.post(
        "/api/auth/password",
        json={"current_password": current, "new_password": new},
        headers=user.headers,
    )


async def test_wrong_current_passwords_lock_the_account_like_failed_logins(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(make_settings, limits_backend, login_lockout="5/15minutes") as client:
        user = await sign_up(client)
        for _ in range(3):
            assert_problem(
                await change_password(client, user, "a wrong guess"), 400, "wrong_password"
            )
        assert (await login(client, user.email, "another wrong guess")).status_code == 401
        assert_problem(await change_password(client, user, "a wrong guess"), 400, "wrong_password")
        # Five failures, by either route: now even the right password is refused, on both.
        assert_limited(await change_password(client, user, user.password))
        assert_limited(await login(client, user.email, user.password))
        assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200


async def test_password_changes_are_limited_per_user(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, password_change_rate_limit="2/hour"
    ) as client:
        user, other = await sign_up(client), await sign_up(client)
        assert_problem(await change_password(client, user, "a wrong guess"), 400, "wrong_password")
        assert_problem(await change_password(client, user, "a wrong guess"), 400, "wrong_password")
        assert_limited(await change_password(client, user, user.password))
        assert (await change_password(client, other, other.password)).status_code == 200


async def test_refreshes_are_limited_per_client_ip(
    make_settings: SettingsFactory, limits_backend: dict[str, Any]
) -> None:
    async with limited_client(
        make_settings, limits_backend, refresh_rate_limit="3/minute", trusted_proxies="127.0.0.1"
    ) as client:
        user = await sign_up(client)
        token = user.body["refresh_token"]
        for _ in range(3):
            response = await client.post(
                "/api/auth/refresh",
                json={"refresh_token": token},
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
            assert response.status_code == 200, response.text
            assert int(response.headers["ratelimit-limit"]) == 3
            token = response.json()["refresh_token"]
        limited = await client.post(
            "/api/auth/refresh",
            json={"refresh_token": token},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        assert_limited(limited)
        # Refused before the token was looked at: it still works from elsewhere.
        elsewhere = await client.post(
            "/api/auth/refresh",
            json={"refresh_token": token},
            headers={"X-Forwarded-For": "198.51.100.9"},
        )
        assert elsewhere.status_code == 200, elsewhere.text
