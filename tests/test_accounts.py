"""Accounts a person controls: the profile (name, time zone), the export of everything, and the
deletion of the account with every row of it."""

import asyncio
import json
import os
import tracemalloc
import uuid
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlmodel import SQLModel, insert

from backend.models import TASKS, Priority, utcnow
from backend.runtime import Runtime
from backend.services import streams
from backend.services.positions import rebalanced_key
from tests.conftest import SettingsFactory, SignedUp, WithSettings, sign_up
from tests.helpers import assert_problem, create, login, me_status, refresh


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


# --- Profile ----------------------------------------------------------------------------------


async def patch_me(client: httpx.AsyncClient, user: SignedUp, body: Any) -> httpx.Response:
    return await client.patch("/api/auth/me", json=body, headers=user.headers)


async def test_a_new_user_is_in_utc_and_can_set_a_time_zone_and_a_name(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    assert user.body["user"]["time_zone"] == "UTC"
    changed = await patch_me(client, user, {"time_zone": "Europe/Paris", "name": " Ada "})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        **user.body["user"],
        "time_zone": "Europe/Paris",
        "name": "Ada",
    }
    assert (await client.get("/api/auth/me", headers=user.headers)).json() == changed.json()
    # A field left out is kept; null (or blank) clears the name.
    kept = await patch_me(client, user, {"name": None})
    assert kept.json()["time_zone"] == "Europe/Paris" and kept.json()["name"] is None
    assert (await login(client, user))["user"] == kept.json()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"time_zone": "Mars/Olympus_Mons"},
        {"time_zone": "europe/paris"},
        {"time_zone": None},
        {"time_zone": ""},
        {"email": "new@example.com"},
        {"name": "x" * 101},
        [],
    ],
)
async def test_invalid_profile_changes_are_400(
    client: httpx.AsyncClient, user: SignedUp, body: Any
) -> None:
    assert_problem(await patch_me(client, user, body), 400, "validation_error")
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json() == user.body["user"]


async def test_profile_changes_need_a_token(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/auth/me", json={"time_zone": "UTC"})
    assert_problem(response, 401, "missing_token")


# --- Deletion ---------------------------------------------------------------------------------


async def delete_me(
    client: httpx.AsyncClient, user: SignedUp, body: Any = None, token: str | None = None
) -> httpx.Response:
    return await client.request(
        "DELETE",
        "/api/auth/me",
        headers={"Authorization": f"Bearer {token or user.token}"},
        **({} if body is None else {"json": body}),
    )


async def every_row(app: FastAPI) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the models declare, as text."""
    async with runtime_of(app).db.engine.connect() as connection:
        return {
            table.name: [
                {key: str(value) for key, value in row._mapping.items()}
                for row in await connection.execute(sa.select(table))
            ]
            for table in SQLModel.metadata.sorted_tables
        }


def mentioning(rows: dict[str, list[dict[str, Any]]], values: set[str]) -> dict[str, int]:
    return {
        table: count
        for table, table_rows in rows.items()
        if (count := sum(1 for row in table_rows if values & set(row.values())))
    }


async def test_deletion_leaves_no_row_of_the_user_in_any_table(
    make_settings: SettingsFactory,
) -> None:
    from tests.conftest import client_for, running_app

    async with running_app(make_settings()) as app, client_for(app) as client:
        user, other = await sign_up(client), await sign_up(client)
        for owner in (user, other):
            for title in ("one", "two"):
                await create(client, owner, title=title, tags=["home"])
            keyed = {**owner.headers, "Idempotency-Key": "the-third"}  # a kept answer
            third = await client.post(owner.tasks_url, json={"title": "three"}, headers=keyed)
            assert third.status_code == 201, third.text
            await login(client, owner)  # a second session
            await client.post("/api/auth/password/forgot", json={"email": owner.email})
            # An open live-update stream's lease (a stream itself needs a real server).
            async with runtime_of(app).db.unit(write=True) as unit:
                await streams.claim_stream(
                    unit, owner.id, uuid.uuid4(), worker=uuid.uuid4(), max_streams=5
                )
        await runtime_of(app).background.drain()

        before = await every_row(app)
        ids = {user.id} | {t["id"] for t in before["tasks"] if t["user_id"] == user.id}
        # Every table that can hold a row of a user holds one now, so none is checked vacuously.
        holding = mentioning(before, ids)
        referring = {
            table.name
            for table in SQLModel.metadata.sorted_tables
            if table.name == "users"
            or any(fk.column.table.name == "users" for fk in table.foreign_keys)
        }
        assert referring <= holding.keys(), referring - holding.keys()

        assert (await delete_me(client, user, {"password": user.password})).status_code == 204

        after = await every_row(app)
        assert mentioning(after, ids) == {}
        others = {other.id} | {t["id"] for t in before["tasks"] if t["user_id"] == other.id}
        assert mentioning(after, others) == mentioning(before, others)


async def test_every_token_of_a_deleted_user_stops_at_once_and_the_email_is_free_again(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    session = await login(client, user)
    # Both access tokens have been verified (and cached: TOKEN_CACHE_SIZE) before the deletion.
    for token in (user.token, session["access_token"]):
        assert await me_status(client, token) == 200
    assert (await delete_me(client, user, {"password": user.password})).status_code == 204

    for token in (user.token, session["access_token"]):
        assert_problem(
            await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}),
            401,
            "invalid_token",
        )
        listed = await client.get(user.tasks_url, headers={"Authorization": f"Bearer {token}"})
        assert_problem(listed, 401, "invalid_token")
    assert_problem(await delete_me(client, user, {"password": user.password}), 401, "invalid_token")
    for refresh_token in (user.body["refresh_token"], session["refresh_token"]):
        assert_problem(await refresh(client, refresh_token), 401, "invalid_refresh_token")
    gone = await client.post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(gone, 401, "invalid_credentials")
    again = await sign_up(client, email=user.email)
    assert again.id != user.id
    listed = await client.get(again.tasks_url, headers=again.headers)
    assert listed.json()["items"] == []


async def test_a_local_account_is_deleted_only_with_its_password(
    with_settings: WithSettings,
) -> None:
    async with with_settings(login_lockout="2/minute") as (client, user):
        for body in (None, {}, {"password": "not the password"}):
            response = await delete_me(client, user, body)
            if body == {}:
                assert_problem(response, 400, "validation_error")
            else:
                assert_problem(response, 400, "wrong_password")
        wrong = await delete_me(client, user, {"password": "also wrong"})
        assert_problem(wrong, 400, "wrong_password")
        # The wrong passwords counted with failed logins: the account is now locked.
        assert_problem(
            await delete_me(client, user, {"password": user.password}), 429, "rate_limited"
        )
        assert await me_status(client, user.token) == 200


# --- Export -----------------------------------------------------------------------------------


async def test_export_holds_the_user_and_every_task_as_a_download(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    created = [
        await create(client, user, title=f"task {n}", due_date="2026-12-01") for n in range(3)
    ]
    done = await client.patch(f"{user.tasks_url}/{created[1]['id']}/complete", headers=user.headers)
    created[1] = done.json()
    trashed = await create(client, user, title="in the trash")
    await client.delete(f"{user.tasks_url}/{trashed['id']}", headers=user.headers)
    await create(client, other_user, title="not mine")

    response = await client.get(f"/api/{user.id}/export", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    today = utcnow().date().isoformat()
    assert response.headers["content-disposition"] == (
        f'attachment; filename="todo-export-{today}.json"'
    )
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert set(document) == {"format", "exported_at", "user", "tasks"}
    assert document["format"] == "todo-api/1"
    assert document["user"] == user.body["user"]
    assert document["exported_at"].endswith("Z")
    exported = document["tasks"]
    assert exported[:3] == [{**task, "deleted_at": None} for task in created]  # oldest first
    assert exported[3]["id"] == trashed["id"]
    assert exported[3]["deleted_at"] is not None
    assert exported[3]["version"] == trashed["version"] + 1
    assert len(exported) == 4


async def test_export_of_a_user_without_tasks_and_its_refusals(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    empty = await client.get(f"/api/{user.id}/export", headers=user.headers)
    assert empty.json()["tasks"] == []
    assert_problem(
        await client.get(f"/api/{other_user.id}/export", headers=user.headers), 403, "forbidden"
    )
    assert_problem(await client.get(f"/api/{user.id}/export"), 401, "missing_token")


def _rss_bytes() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def seed_tasks(app: FastAPI, owner_id: str, count: int) -> None:
    start = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": owner_id,
            "title": f"Task number {n} with a title of ordinary length",
            "title_folded": f"task number {n} with a title of ordinary length",
            "description": "A description of a few words, as people write them." * 2,
            "description_folded": "a description of a few words, as people write them." * 2,
            "completed": n % 3 == 0,
            "completed_at": start if n % 3 == 0 else None,
            "priority": Priority.high,
            "due_date": (start + timedelta(days=n % 40)).date(),
            "created_at": start + timedelta(milliseconds=n),
            "updated_at": start + timedelta(milliseconds=n),
            "position": rebalanced_key(count - 1 - n, 4),  # newest first
        }
        for n in range(count)
    ]
    async with runtime_of(app).db.engine.begin() as connection:
        for offset in range(0, count, 2000):
            await connection.execute(insert(TASKS), rows[offset : offset + 2000])
        await connection.execute(
            sa.update(sa.table("users", sa.column("id"), sa.column("task_count")))
            .where(sa.column("id") == owner_id)
            .values(task_count=count)
        )


async def test_exporting_10000_tasks_streams_in_bounded_memory(
    app: FastAPI, user: SignedUp, tmp_path: Path
) -> None:
    await seed_tasks(app, user.id, 10_000)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/{user.id}/export",
        "raw_path": f"/api/{user.id}/export".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {user.token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    output = (tmp_path / "export.json").open("wb")
    started: list[int] = []
    chunks = 0
    rss_peak = 0

    finished = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # the client stays until the whole download has come
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal chunks, rss_peak
        if message["type"] == "http.response.start":
            started.append(message["status"])
        elif message.get("body"):
            output.write(message["body"])  # to disk, as a browser saves a download
            chunks += 1
            rss_peak = max(rss_peak, _rss_bytes())
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    await asyncio.sleep(0)
    rss_before = _rss_bytes()
    tracemalloc.start()
    try:
        await app(scope, receive, send)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        output.close()
    assert started == [200]
    size = (tmp_path / "export.json").stat().st_size
    document = json.loads((tmp_path / "export.json").read_bytes())
    assert len(document["tasks"]) == 10_000
    assert len({task["id"] for task in document["tasks"]}) == 10_000
    print(
        f"export of 10000 tasks: {size / 1e6:.1f} MB in {chunks} chunks; traced peak "
        f"{traced_peak / 1e6:.1f} MB; RSS growth {(rss_peak - rss_before) / 1e6:.1f} MB"
    )
    assert chunks > 10  # streamed in pieces, not built whole
    assert traced_peak < 20 * 1024 * 1024
    assert rss_peak - rss_before < 20 * 1024 * 1024
