"""Safe retries: the `Idempotency-Key` of POST and PATCH under /api/{user_id}/, on both databases.

The first request with a key runs; a repeat (same method, path and body) gets its answer again,
byte for byte, with `Idempotent-Replayed: true` and nothing done; another request with the key is
422, a repeat while the first runs 409. Refusals that ran nothing (400, 401, 403, 429) and
failures (5xx) are not kept. Keys belong to their user, hold across app instances, expire, are
purged, and go with their user.
"""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from backend.cli import purge
from backend.config import Settings
from backend.db import Database
from backend.errors import ServiceUnavailable
from backend.models import IDEMPOTENCY_KEYS, utcnow
from backend.services import idempotency, tasks
from tests.conftest import SettingsFactory, SignedUp, WithSettings, client_for, running_app, sign_up
from tests.helpers import assert_problem, create

pytestmark = pytest.mark.pgbouncer

KEY = "create-buy-milk-0001"
MILK = {"title": "Buy milk", "priority": "high"}
MILK_BYTES = b'{"title":"Buy milk","priority":"high"}'


def keyed(user: SignedUp, key: str = KEY) -> dict[str, str]:
    return {**user.headers, "Idempotency-Key": key}


def keyed_json(user: SignedUp, key: str = KEY) -> dict[str, str]:
    return {**keyed(user, key), "Content-Type": "application/json"}


def database_of(app: FastAPI) -> Database:
    database: Database = app.state.runtime.db
    return database


async def total(client: httpx.AsyncClient, user: SignedUp) -> int:
    page = await client.get(user.tasks_url, headers=user.headers)
    count: int = page.json()["total"]
    return count


async def records(app: FastAPI, user: SignedUp) -> list[dict[str, Any]]:
    """The user's idempotency records, as stored."""
    async with database_of(app).engine.connect() as connection:
        rows = await connection.execute(
            sa.select(IDEMPOTENCY_KEYS).where(IDEMPOTENCY_KEYS.c.user_id == user.id)
        )
        return [dict(row._mapping) for row in rows]


async def change_records(app: FastAPI, user: SignedUp, **values: Any) -> None:
    async with database_of(app).engine.begin() as connection:
        await connection.execute(
            sa.update(IDEMPOTENCY_KEYS)
            .where(IDEMPOTENCY_KEYS.c.user_id == user.id)
            .values(**values)
        )


async def store_claim(app: FastAPI, user: SignedUp, key: str, **values: Any) -> None:
    """A record written as a request would have left it."""
    now = utcnow()
    row = {
        "user_id": user.id,
        "key": key,
        "fingerprint": "0" * 64,
        "claim": uuid.uuid4(),
        "claimed_at": now,
        "expires_at": now + timedelta(hours=24),
        **values,
    }
    async with database_of(app).engine.begin() as connection:
        await connection.execute(sa.insert(IDEMPOTENCY_KEYS).values(**row))


def assert_replayed(again: httpx.Response, first: httpx.Response) -> None:
    """The same answer again, byte for byte, saying it is a replay."""
    assert again.status_code == first.status_code
    assert again.content == first.content
    for name in ("content-type", "location", "etag"):
        assert again.headers.get(name) == first.headers.get(name), name
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


@asynccontextmanager
async def held(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """`tasks.<name>` waits, once it is called, until the test lets it go: (started, go on)."""
    started, go_on = asyncio.Event(), asyncio.Event()
    original = getattr(tasks, name)

    async def waiting(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await go_on.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(tasks, name, waiting)
    try:
        yield started, go_on
    finally:
        go_on.set()


def failing_once(
    monkeypatch: pytest.MonkeyPatch, name: str, error: BaseException
) -> Callable[[], int]:
    """`tasks.<name>` raises `error` at its first call, then works; how often it was called."""
    original = getattr(tasks, name)
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return await original(*args, **kwargs)

    monkeypatch.setattr(tasks, name, failing)
    return lambda: calls


# --- A repeat is answered again, and nothing is done --------------------------------------------


async def test_a_retried_create_makes_one_task_and_gets_the_same_answer(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    first = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"{user.tasks_url}/{first.json()['id']}"
    for _ in range(2):
        again = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert_replayed(again, first)
        assert "ratelimit-remaining" in again.headers  # the limit counted it
    assert await total(client, user) == 1
    # Another key is another request.
    other = await client.post(user.tasks_url, json=MILK, headers=keyed(user, "another"))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert await total(client, user) == 2


async def test_a_retried_toggle_does_not_flip_the_task_back(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}/complete"
    first = await client.patch(url, headers=keyed(user, "toggle-1"))
    assert first.status_code == 200 and first.json()["completed"] is True
    again = await client.patch(url, headers=keyed(user, "toggle-1"))
    assert_replayed(again, first)
    fetched = await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    assert fetched.json() == first.json()
    # A new toggle is a new key.
    reopened = await client.patch(url, headers=keyed(user, "toggle-2"))
    assert reopened.json()["completed"] is False


async def test_a_retried_patch_changes_nothing_after_a_later_change(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="Old")
    url = f"{user.tasks_url}/{task['id']}"
    first = await client.patch(url, json={"title": "New"}, headers=keyed(user))
    assert first.status_code == 200, first.text
    later = await client.patch(url, json={"title": "Newer"}, headers=user.headers)
    assert later.json()["title"] == "Newer"
    assert_replayed(await client.patch(url, json={"title": "New"}, headers=keyed(user)), first)
    assert (await client.get(url, headers=user.headers)).json() == later.json()


async def test_a_kept_refusal_is_answered_again_as_it_was(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    """A 404 ran (and found nothing): a repeat gets that 404 again, its request id included,
    even once the path would answer otherwise."""
    task_id = uuid.uuid4()
    url = f"{user.tasks_url}/{task_id}/complete"
    first = await client.patch(url, json={"completed": True}, headers=keyed(user))
    body = assert_problem(first, 404, "not_found")
    again = await client.patch(url, json={"completed": True}, headers=keyed(user))
    assert_replayed(again, first)
    assert again.json()["request_id"] == body["request_id"] != again.headers["x-request-id"]


async def test_a_task_limit_refusal_is_kept_too(with_settings: WithSettings) -> None:
    async with with_settings(max_tasks_per_user=1) as (client, user):
        task = await create(client, user)
        refused = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert_problem(refused, 409, "too_many_tasks")
        await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
        assert_replayed(await client.post(user.tasks_url, json=MILK, headers=keyed(user)), refused)
        assert await total(client, user) == 0


# --- The same key for another request ---------------------------------------------------------


async def test_the_key_of_another_request_is_422(client: httpx.AsyncClient, user: SignedUp) -> None:
    first = await client.post(user.tasks_url, content=MILK_BYTES, headers=keyed_json(user))
    assert first.status_code == 201
    task_url = f"{user.tasks_url}/{first.json()['id']}"
    for method, url, body in (
        ("POST", user.tasks_url, b'{"title":"Buy bread"}'),  # another body
        ("POST", user.tasks_url, b'{"title": "Buy milk", "priority": "high"}'),  # other bytes
        ("PATCH", task_url, MILK_BYTES),  # another method and path
        ("PATCH", f"{task_url}/complete", b""),
        ("POST", f"{user.tasks_url}?x=1", MILK_BYTES),  # another query
    ):
        response = await client.request(method, url, content=body, headers=keyed_json(user))
        assert_problem(response, 422, "idempotency_key_reused")
        assert "idempotent-replayed" not in response.headers
    assert await total(client, user) == 1
    task = (await client.get(task_url, headers=user.headers)).json()
    assert task == first.json()  # nothing was patched nor completed


async def test_keys_belong_to_their_user(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    mine = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    theirs = await client.post(other_user.tasks_url, json=MILK, headers=keyed(other_user))
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["user_id"] == other_user.id != mine.json()["user_id"]
    # Another user's path with my key is 403, before any key is looked at.
    foreign = await client.post(other_user.tasks_url, json=MILK, headers=keyed(user))
    assert_problem(foreign, 403, "forbidden")


# --- Malformed keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"", b"k" * 256, "clé".encode(), b"a\x01b", b"tab\tkey", b"del\x7f"],
    ids=["empty", "256 characters", "not ASCII", "control", "tab", "DEL"],
)
async def test_a_malformed_key_is_400_and_nothing_is_done(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, key: bytes
) -> None:
    headers = [*((name.encode(), value.encode()) for name, value in user.headers.items())]
    headers.append((b"Idempotency-Key", key))
    response = await client.post(user.tasks_url, json=MILK, headers=headers)
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [
        {
            "loc": ["header", "idempotency-key"],
            "msg": "must be one key of 1 to 255 printable ASCII characters",
            "type": "idempotency_key",
        }
    ]
    assert await total(client, user) == 0
    assert await records(app, user) == []


async def test_keys_of_255_printable_characters_and_one_key_only(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    longest = "~ !" + "k" * 252
    response = await client.post(user.tasks_url, json=MILK, headers=keyed(user, longest))
    assert response.status_code == 201, response.text
    twice = [*user.headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    assert_problem(
        await client.post(user.tasks_url, json=MILK, headers=twice), 400, "validation_error"
    )


async def test_a_bad_key_comes_after_the_token_and_the_owner(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    bad = {"Idempotency-Key": ""}
    assert_problem(await client.post(user.tasks_url, json=MILK, headers=bad), 401, "missing_token")
    response = await client.post(other_user.tasks_url, json=MILK, headers={**keyed(user), **bad})
    assert_problem(response, 403, "forbidden")


async def test_other_methods_and_routes_ignore_the_header(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    bad = keyed(user, "")
    put = await client.put(url, json={"title": "Replaced"}, headers=bad)
    assert put.status_code == 200, put.text
    assert (await client.get(url, headers=bad)).status_code == 200
    assert (await client.delete(url, headers=bad)).status_code == 204
    signup = await client.post(
        "/api/auth/signup",
        json={"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": user.password},
        headers={"Idempotency-Key": ""},
    )
    assert signup.status_code == 201
    assert await records(app, user) == []


# --- What is not kept: the retry runs anew --------------------------------------------------


async def test_a_400_is_not_kept_so_the_fixed_retry_runs(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    refused = await client.post(user.tasks_url, json={"title": ""}, headers=keyed(user))
    assert_problem(refused, 400, "validation_error")
    assert await records(app, user) == []
    fixed = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers
    # A body that only the route refuses (a toggle's body must be {completed: bool} or none).
    task_url = f"{user.tasks_url}/{fixed.json()['id']}/complete"
    bad = await client.patch(task_url, json={}, headers=keyed(user, "complete-1"))
    assert_problem(bad, 400, "validation_error")
    done = await client.patch(task_url, headers=keyed(user, "complete-1"))
    assert done.status_code == 200 and done.json()["completed"] is True


async def test_a_401_is_not_kept(app: FastAPI, client: httpx.AsyncClient, user: SignedUp) -> None:
    await client.post("/api/auth/logout-all", headers=user.headers)  # the token is revoked
    response = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert_problem(response, 401, "invalid_token")
    assert await records(app, user) == []


async def test_a_429_is_not_kept_and_a_replay_counts_against_the_limit(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(task_write_rate_limit="2/minute")
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        first = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert first.status_code == 201
        again = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert_replayed(again, first)
        assert again.headers["ratelimit-remaining"] == "0"
        refused = await client.post(user.tasks_url, json=MILK, headers=keyed(user, "new"))
        assert_problem(refused, 429, "rate_limited")
        assert [record["key"] for record in await records(app, user)] == [KEY]


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("a bug"), 500), (ServiceUnavailable(), 503)],
    ids=["500", "503"],
)
async def test_a_failure_is_not_kept_so_the_retry_runs(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: SignedUp,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    status: int,
) -> None:
    calls = failing_once(monkeypatch, "create_task", error)
    failed = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert failed.status_code == status
    assert await records(app, user) == []
    retried = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert calls() == 2 and await total(client, user) == 1


async def test_a_conflict_run_again_by_the_pipeline_keeps_its_claim(
    client: httpx.AsyncClient, user: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit of work the database rolled back for a conflict runs again: with the key it holds
    (not a 409 against itself), and its answer is kept."""

    class Deadlock(Exception):
        sqlstate = "40P01"

    calls = failing_once(
        monkeypatch, "create_task", sa_exc.DBAPIError("INSERT ...", None, Deadlock())
    )
    first = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert first.status_code == 201, first.text
    assert calls() == 2
    assert_replayed(await client.post(user.tasks_url, json=MILK, headers=keyed(user)), first)
    assert await total(client, user) == 1


# --- While the first request runs -------------------------------------------------------------


async def test_a_repeat_while_the_first_runs_is_409_with_retry_after(
    client: httpx.AsyncClient, user: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held(monkeypatch, "create_task") as (started, go_on):
        first = asyncio.create_task(client.post(user.tasks_url, json=MILK, headers=keyed(user)))
        await started.wait()  # it holds the key
        running = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert_problem(running, 409, "idempotency_key_in_progress")
        assert running.headers["retry-after"] == "1"
        other = await client.post(user.tasks_url, json={"title": "Other"}, headers=keyed(user))
        assert_problem(other, 422, "idempotency_key_reused")
        go_on.set()
        answered = await first
    assert answered.status_code == 201
    assert_replayed(await client.post(user.tasks_url, json=MILK, headers=keyed(user)), answered)
    assert await total(client, user) == 1


async def test_a_claim_abandoned_past_its_lease_is_taken_over_by_a_retry(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose worker is gone holds its key only for its lease; then a retry runs. The
    request that lost its claim (here: still running after all) cannot overwrite the answer of
    the one that took over."""
    async with held(monkeypatch, "create_task") as (started, go_on):
        lost = asyncio.create_task(client.post(user.tasks_url, json=MILK, headers=keyed(user)))
        await started.wait()
        await change_records(app, user, claimed_at=utcnow() - timedelta(seconds=59))
        within = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert_problem(within, 409, "idempotency_key_in_progress")
        await change_records(app, user, claimed_at=utcnow() - timedelta(seconds=61))
        # Another request with the key does not take it over.
        other = await client.post(user.tasks_url, json={"title": "Other"}, headers=keyed(user))
        assert_problem(other, 422, "idempotency_key_reused")
        monkeypatch.undo()  # the retry runs straight through
        retry = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
        go_on.set()
        late = await lost
    assert late.status_code == 201 and late.json()["id"] != retry.json()["id"]
    assert_replayed(await client.post(user.tasks_url, json=MILK, headers=keyed(user)), retry)


async def test_only_one_retry_takes_an_abandoned_claim_over(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    fingerprint = idempotency.fingerprint("POST", user.tasks_url, MILK_BYTES)
    abandoned = utcnow() - timedelta(minutes=5)
    await store_claim(app, user, KEY, fingerprint=fingerprint, claimed_at=abandoned)
    answers = await asyncio.gather(
        *(
            client.post(user.tasks_url, content=MILK_BYTES, headers=keyed_json(user))
            for _ in range(10)
        )
    )
    ran = [answer for answer in answers if "idempotent-replayed" not in answer.headers]
    assert [answer.status_code for answer in ran if answer.status_code != 409] == [201]
    # The one that ran is not always the first sent (a 409 may be): on two instances, seldom.
    (created,) = [answer for answer in ran if answer.status_code == 201]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "idempotency_key_in_progress")
        elif answer is not created:
            assert answer.content == created.content
    assert await total(client, user) == 1


# --- Expiry, purge, deletion ------------------------------------------------------------------


async def test_an_expired_answer_is_not_given_again(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    first = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    await change_records(app, user, expires_at=utcnow() - timedelta(seconds=1))
    # The key is free again, for any request.
    again = await client.post(user.tasks_url, json={"title": "Other"}, headers=keyed(user))
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    [record] = await records(app, user)
    assert record["expires_at"] > utcnow() + timedelta(hours=23)


async def test_records_are_kept_for_the_ttl(
    make_settings: SettingsFactory, database_url: str
) -> None:
    async with (
        running_app(make_settings(idempotency_ttl_hours=2)) as app,
        client_for(app) as client,
    ):
        user = await sign_up(client)
        before = utcnow()
        await client.post(user.tasks_url, json=MILK, headers=keyed(user))
        [record] = await records(app, user)
    assert record["status"] == 201 and record["location"].startswith(user.tasks_url)
    assert timedelta(hours=2) <= record["expires_at"] - before <= timedelta(hours=2, seconds=5)


async def test_todo_api_purge_deletes_expired_records(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, user: SignedUp
) -> None:
    for key in ("old-1", "old-2"):
        await store_claim(app, user, key, expires_at=utcnow() - timedelta(minutes=1), status=201)
    await client.post(user.tasks_url, json=MILK, headers=keyed(user))
    assert (await purge(settings))["expired idempotency record(s)"] == 2
    assert (await purge(settings))["expired idempotency record(s)"] == 0
    assert [record["key"] for record in await records(app, user)] == [KEY]


async def test_the_service_purges_expired_records_now_and_then_a_batch_at_a_time(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await store_claim(app, user, f"old-{n}", expires_at=utcnow() - timedelta(minutes=n + 1))
    await client.post(user.tasks_url, json=MILK, headers=keyed(user, "new-1"))
    assert len(await records(app, user)) == 4  # not this time (at random: 1 in PURGE_EVERY)
    monkeypatch.setattr(idempotency, "PURGE_EVERY", 1)
    monkeypatch.setattr(idempotency, "PURGE_BATCH", 2)
    await client.post(user.tasks_url, json=MILK, headers=keyed(user, "new-2"))
    left = sorted(record["key"] for record in await records(app, user))
    assert left == ["new-1", "new-2", "old-0"]  # the two oldest went first
    await client.post(user.tasks_url, json=MILK, headers=keyed(user, "new-3"))
    assert sorted(record["key"] for record in await records(app, user)) == [
        "new-1",
        "new-2",
        "new-3",
    ]


async def test_records_go_with_their_user(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    for owner in (user, other_user):
        await client.post(owner.tasks_url, json=MILK, headers=keyed(owner))
    export = await client.get(f"/api/{user.id}/export", headers=user.headers)
    assert KEY not in export.text  # bookkeeping, not the user's data
    deleted = await client.request(
        "DELETE", "/api/auth/me", json={"password": user.password}, headers=user.headers
    )
    assert deleted.status_code == 204
    assert await records(app, user) == []
    assert len(await records(app, other_user)) == 1


async def test_browsers_may_send_the_key_and_read_the_replay_header(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    origin = "http://localhost:3000"
    preflight = await client.options(
        user.tasks_url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200, preflight.text
    answer = await client.post(user.tasks_url, json=MILK, headers={**keyed(user), "Origin": origin})
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "idempotent-replayed" in exposed


# --- Across instances -------------------------------------------------------------------------


async def fifty_posts(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], user: SignedUp
) -> list[httpx.Response]:
    sends: list[Awaitable[httpx.Response]] = [
        clients[n % 2].post(user.tasks_url, json=MILK, headers=keyed(user)) for n in range(50)
    ]
    return list(await asyncio.gather(*sends))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_fifty_concurrent_posts_with_one_key_on_two_instances_make_one_task(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with (
        running_app(settings) as one,
        running_app(settings) as two,
        client_for(one) as first_client,
        client_for(two) as second_client,
    ):
        clients = (first_client, second_client)
        user = await sign_up(first_client)
        answers = await fifty_posts(clients, user)
        statuses = Counter(answer.status_code for answer in answers)
        assert set(statuses) <= {201, 409}, statuses
        created = [answer for answer in answers if answer.status_code == 201]
        assert len({answer.content for answer in created}) == 1
        assert sum("idempotent-replayed" not in answer.headers for answer in created) == 1
        for answer in answers:
            if answer.status_code == 409:
                assert_problem(answer, 409, "idempotency_key_in_progress")
                assert answer.headers["retry-after"] == "1"
        # Afterwards, both instances give the same answer again.
        for client in clients:
            again = await client.post(user.tasks_url, json=MILK, headers=keyed(user))
            assert again.status_code == 201 and again.content == created[0].content
        assert await total(first_client, user) == 1
