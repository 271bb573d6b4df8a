"""Sessions: refresh with rotation and reuse detection, logout, logout everywhere, password
change, token types, expiry and purging, and the cookie transport."""

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select, update

from backend.cli import purge
from backend.config import Settings
from backend.models import RefreshToken, utcnow
from tests.conftest import (
    TEST_PASSWORD,
    SignedUp,
    WithSettings,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import NEW_PASSWORD, assert_problem, bearer, login, me_status, refresh

pytestmark = pytest.mark.pgbouncer


async def test_login_and_signup_return_a_refresh_token(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    for body in (user.body, await login(client, user)):
        token = body["refresh_token"]
        assert len(token) >= 43  # 32 random bytes, base64url
        assert body["refresh_expires_in"] == 7 * 24 * 3600  # the idle lifetime comes first
    async with app.state.runtime.db.session(write=False) as session:
        stored = (await session.exec(select(RefreshToken.token_hash))).all()
    assert hashlib.sha256(user.body["refresh_token"].encode()).hexdigest() in stored
    assert user.body["refresh_token"] not in str(stored)


async def test_refresh_rotates_and_the_old_token_is_then_reuse(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    first = user.body["refresh_token"]
    response = await refresh(client, first)
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) == set(user.body)
    assert rotated["user"]["id"] == user.id
    assert rotated["refresh_token"] != first
    assert rotated["access_token"] != user.token
    assert await me_status(client, rotated["access_token"]) == 200

    reused = await refresh(client, first)
    assert_problem(reused, 401, "refresh_token_reused")
    # The whole family is now ended: the rotated token stops working too.
    assert_problem(await refresh(client, rotated["refresh_token"]), 401, "invalid_refresh_token")


async def test_refresh_chain_keeps_working(client: httpx.AsyncClient, user: SignedUp) -> None:
    token = user.body["refresh_token"]
    for _ in range(5):
        response = await refresh(client, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]


async def test_reuse_ends_only_that_session(client: httpx.AsyncClient, user: SignedUp) -> None:
    other_session = await login(client, user)
    first = user.body["refresh_token"]
    await refresh(client, first)
    assert_problem(await refresh(client, first), 401, "refresh_token_reused")
    assert (await refresh(client, other_session["refresh_token"])).status_code == 200


async def test_two_concurrent_refreshes_with_one_token_exactly_one_succeeds(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    token = user.body["refresh_token"]
    responses = await asyncio.gather(refresh(client, token), refresh(client, token))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 401]


async def test_logout_ends_the_family(client: httpx.AsyncClient, user: SignedUp) -> None:
    rotated = (await refresh(client, user.body["refresh_token"])).json()
    response = await client.post(
        "/api/auth/logout", json={"refresh_token": user.body["refresh_token"]}
    )
    assert response.status_code == 204
    assert_problem(await refresh(client, rotated["refresh_token"]), 401, "invalid_refresh_token")
    again = await client.post("/api/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 204
    unknown = await client.post("/api/auth/logout", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204


@pytest.mark.parametrize("body", [{}, {"refresh_token": ""}, {"refresh_token": 5}, {"x": "y"}])
async def test_refresh_and_logout_need_a_token(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    for path in ("/api/auth/refresh", "/api/auth/logout"):
        assert_problem(await client.post(path, json=body), 400, "validation_error")


async def test_logout_all_ends_every_session_and_access_token_at_once(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    second = await login(client, user)
    response = await client.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204
    for access in (user.token, second["access_token"]):
        assert_problem(
            await client.get("/api/auth/me", headers=bearer(access)), 401, "invalid_token"
        )
        assert_problem(
            await client.get(user.tasks_url, headers=bearer(access)), 401, "invalid_token"
        )
    for token in (user.body["refresh_token"], second["refresh_token"]):
        assert_problem(await refresh(client, token), 401, "invalid_refresh_token")
    # Logging in again right away works, within the same second.
    fresh = await login(client, user)
    assert await me_status(client, fresh["access_token"]) == 200
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


async def test_logout_all_twice_in_one_second_covers_tokens_issued_in_between(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    await client.post("/api/auth/logout-all", headers=user.headers)
    between = await login(client, user)
    assert await me_status(client, between["access_token"]) == 200
    response = await client.post("/api/auth/logout-all", headers=bearer(between["access_token"]))
    assert response.status_code == 204
    assert await me_status(client, between["access_token"]) == 401
    assert await me_status(client, (await login(client, user))["access_token"]) == 200


async def test_logout_all_needs_a_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/api/auth/logout-all"), 401, "missing_token")


async def test_password_change_ends_every_earlier_session(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    other_device = await login(client, user)
    response = await client.post(
        "/api/auth/password",
        json={"current_password": user.password, "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert response.status_code == 200
    fresh = response.json()
    assert set(fresh) == set(user.body)
    for access in (user.token, other_device["access_token"]):
        assert await me_status(client, access) == 401
    for token in (user.body["refresh_token"], other_device["refresh_token"]):
        assert_problem(await refresh(client, token), 401, "invalid_refresh_token")
    assert await me_status(client, fresh["access_token"]) == 200
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200
    old = await client.post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(old, 401, "invalid_credentials")
    await login(client, user, NEW_PASSWORD)


async def test_password_change_refusals(client: httpx.AsyncClient, user: SignedUp) -> None:
    wrong = await client.post(
        "/api/auth/password",
        json={"current_password": "not it", "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert_problem(wrong, 400, "wrong_password")
    weak = await client.post(
        "/api/auth/password",
        json={"current_password": user.password, "new_password": "password123"},
        headers=user.headers,
    )
    assert_problem(weak, 400, "weak_password")
    short = await client.post(
        "/api/auth/password",
        json={"current_password": user.password, "new_password": "short"},
        headers=user.headers,
    )
    assert_problem(short, 400, "validation_error")
    anonymous = await client.post(
        "/api/auth/password", json={"current_password": user.password, "new_password": NEW_PASSWORD}
    )
    assert_problem(anonymous, 401, "missing_token")
    # Nothing changed: the old password and token still work.
    assert await me_status(client, user.token) == 200
    await login(client, user)


async def test_refresh_and_access_tokens_are_not_interchangeable(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    as_bearer = await client.get("/api/auth/me", headers=bearer(user.body["refresh_token"]))
    assert_problem(as_bearer, 401, "invalid_token")
    assert_problem(await refresh(client, user.token), 401, "invalid_refresh_token")


async def test_tampered_and_expired_refresh_tokens_are_refused(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    token = user.body["refresh_token"]
    family, _, secret = token.partition(".")
    other_family = ("0" if family[0] != "0" else "1") + family[1:]
    assert_problem(await refresh(client, f"{other_family}.{secret}"), 401, "invalid_refresh_token")
    assert_problem(await refresh(client, "never-issued"), 401, "invalid_refresh_token")
    async with app.state.runtime.db.session(write=True) as session:
        await session.exec(
            update(RefreshToken)
            .where(col(RefreshToken.user_id) == user.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_problem(await refresh(client, token), 401, "invalid_refresh_token")


async def test_an_altered_token_of_a_live_session_ends_it(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    # Only a holder of one of its tokens knows a session's id: a token that names the session
    # but is not its current one was copied (or altered), like a reused one.
    token = user.body["refresh_token"]
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert_problem(await refresh(client, altered), 401, "refresh_token_reused")
    assert_problem(await refresh(client, token), 401, "invalid_refresh_token")


async def test_a_session_is_one_row_however_often_it_is_refreshed(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    token = user.body["refresh_token"]
    first = token
    for _ in range(30):
        response = await refresh(client, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    assert await session_rows(app, user.id) == 1
    # However many rotations ago, a token of the session is recognised as reused.
    assert_problem(await refresh(client, first), 401, "refresh_token_reused")
    assert_problem(await refresh(client, token), 401, "invalid_refresh_token")
    assert await session_rows(app, user.id) == 0


async def test_sessions_per_user_are_bounded_and_the_oldest_ends(
    with_settings: WithSettings,
) -> None:
    async with with_settings(max_sessions_per_user=3) as (client, user):
        app_sessions = [user.body] + [await login(client, user) for _ in range(4)]
        statuses = [
            (await refresh(client, body["refresh_token"])).status_code for body in app_sessions
        ]
        assert statuses == [401, 401, 200, 200, 200]


async def session_rows(app: FastAPI, user_id: str) -> int:
    async with app.state.runtime.db.session(write=False) as session:
        rows = await session.exec(select(RefreshToken.id).where(RefreshToken.user_id == user_id))
        return len(rows.all())


async def test_a_refreshed_token_never_outlives_the_session(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    async with app.state.runtime.db.session(write=True) as session:
        await session.exec(
            update(RefreshToken)
            .where(col(RefreshToken.user_id) == user.id)
            .values(family_expires_at=utcnow() + timedelta(hours=1))
        )
    rotated = (await refresh(client, user.body["refresh_token"])).json()
    assert 3590 <= rotated["refresh_expires_in"] <= 3600


async def test_purge_deletes_expired_tokens_only(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, user: SignedUp
) -> None:
    used = user.body["refresh_token"]
    await refresh(client, used)  # its session lives on, with its next token
    expired_session = await login(client, user)
    async with app.state.runtime.db.session(write=True) as session:
        await session.exec(
            update(RefreshToken)
            .where(
                col(RefreshToken.token_hash)
                == hashlib.sha256(expired_session["refresh_token"].encode()).hexdigest()
            )
            .values(expires_at=utcnow() - timedelta(days=1))
        )
    assert (await purge(settings))["expired refresh token(s)"] == 1
    assert (await purge(settings))["expired refresh token(s)"] == 0
    assert_problem(await refresh(client, used), 401, "refresh_token_reused")


async def test_refresh_token_in_an_httponly_cookie(make_settings: Any) -> None:
    settings = make_settings(refresh_token_cookie=True)
    async with (
        running_app(settings) as app,
        client_for(app, base_url="https://testserver") as client,
    ):
        user = await sign_up(client)
        assert user.body["refresh_token"] is None
        cookie = user.body and client.cookies.get("todo_refresh")
        assert cookie
        signup = await client.post(
            "/api/auth/login", json={"email": user.email, "password": TEST_PASSWORD}
        )
        header = signup.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/api/auth"):
            assert attribute.lower() in header.lower()
        rotated = await client.post("/api/auth/refresh", json={})
        assert rotated.status_code == 200
        assert rotated.json()["refresh_token"] is None
        logout = await client.post("/api/auth/logout", json={})
        assert logout.status_code == 204
        assert "todo_refresh" not in client.cookies
        assert_problem(await client.post("/api/auth/refresh", json={}), 400, "validation_error")


async def test_cookies_are_ignored_unless_configured(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    client.cookies.set("todo_refresh", user.body["refresh_token"])
    assert_problem(await client.post("/api/auth/refresh", json={}), 400, "validation_error")
