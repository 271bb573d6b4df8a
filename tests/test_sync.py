"""Sync: the trash (soft delete, restore, purge, clear completed) and the changes feed, on both
databases; the feed under concurrent writers; the migration of existing data."""

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from backend.cli import purge
from backend.config import Settings
from backend.db import Database
from backend.models import TASKS, USERS
from backend.services import tasks as task_service
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    WithSettings,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import assert_problem, create

pytestmark = pytest.mark.pgbouncer


def database_of(app: FastAPI) -> Database:
    database: Database = app.state.runtime.db
    return database


async def feed(
    client: httpx.AsyncClient, user: SignedUp, since: str | None = None, **params: Any
) -> dict[str, Any]:
    query = {**params, **({} if since is None else {"since": since})}
    response = await client.get(f"/api/{user.id}/changes", params=query, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def catch_up(
    client: httpx.AsyncClient, user: SignedUp, since: str | None, copy: dict[str, Any]
) -> str:
    """Apply the feed after `since` to `copy` (id -> task) until nothing waits; the cursor."""
    while True:
        page = await feed(client, user, since, limit=7)
        for change in page["changes"]:
            if change["op"] == "upsert":
                copy[change["task"]["id"]] = change["task"]
            else:
                copy.pop(change["id"], None)
        since = page["next"]
        if not page["has_more"]:
            assert since is not None
            return since


async def live_tasks(client: httpx.AsyncClient, user: SignedUp) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    while True:
        response = await client.get(
            user.tasks_url, params={"limit": 100, "offset": len(items)}, headers=user.headers
        )
        page = response.json()
        items += page["items"]
        if len(items) >= page["total"]:
            return {task["id"]: task for task in items}


# --- the trash ------------------------------------------------------------------------------


async def test_a_deleted_task_leaves_every_read_and_waits_in_the_trash(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    kept = await create(client, user, title="kept")
    gone = await create(client, user, title="gone")
    url = f"{user.tasks_url}/{gone['id']}"
    assert (await client.delete(url, headers=user.headers)).status_code == 204
    assert_problem(await client.get(url, headers=user.headers), 404, "not_found")
    assert_problem(
        await client.put(url, json={"title": "x"}, headers=user.headers), 404, "not_found"
    )
    listed = (await client.get(user.tasks_url, headers=user.headers)).json()
    assert (listed["total"], [t["id"] for t in listed["items"]]) == (1, [kept["id"]])
    searched = await client.get(user.tasks_url, params={"q": "gone"}, headers=user.headers)
    assert searched.json()["total"] == 0
    trash = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert trash["total"] == 1
    [item] = trash["items"]
    assert item == {**gone, "version": 2, "deleted_at": item["deleted_at"]}
    assert datetime.fromisoformat(item["deleted_at"]) <= datetime.now(UTC)
    # Deleting again is still 204, and changes nothing.
    assert (await client.delete(url, headers=user.headers)).status_code == 204
    again = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert again["items"] == [item]


async def test_restore_brings_a_task_back_with_one_more_version(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="back")
    await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    restored = await client.post(f"/api/{user.id}/trash/{task['id']}/restore", headers=user.headers)
    assert restored.status_code == 200, restored.text
    assert restored.json() == {**task, "version": 3}
    assert restored.headers["etag"] == '"3"'
    got = await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    assert got.json() == restored.json()
    trash = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert trash["total"] == 0
    missing = await client.post(f"/api/{user.id}/trash/{task['id']}/restore", headers=user.headers)
    assert_problem(missing, 404, "not_found")


async def test_the_trash_is_not_counted_by_the_cap_but_restoring_is(
    with_settings: WithSettings,
) -> None:
    async with with_settings(max_tasks_per_user=2) as (client, user):
        first, second = [await create(client, user) for _ in range(2)]
        await client.delete(f"{user.tasks_url}/{first['id']}", headers=user.headers)
        third = await create(client, user)  # the trash does not count
        restore = await client.post(
            f"/api/{user.id}/trash/{first['id']}/restore", headers=user.headers
        )
        assert_problem(restore, 409, "too_many_tasks")
        await client.delete(f"{user.tasks_url}/{third['id']}", headers=user.headers)
        restored = await client.post(
            f"/api/{user.id}/trash/{first['id']}/restore", headers=user.headers
        )
        assert restored.status_code == 200
        listed = (await client.get(user.tasks_url, headers=user.headers)).json()
        assert {t["id"] for t in listed["items"]} == {first["id"], second["id"]}


async def test_clear_completed_and_purging_the_trash(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    done = [await create(client, user, completed=True) for _ in range(3)]
    pending = await create(client, user)
    theirs = await create(client, other_user, completed=True)
    cleared = await client.post(f"/api/{user.id}/tasks/clear-completed", headers=user.headers)
    assert cleared.status_code == 200
    assert cleared.json() == {"deleted": 3}
    live = (await client.get(user.tasks_url, headers=user.headers)).json()
    assert [t["id"] for t in live["items"]] == [pending["id"]]
    trash = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert {t["id"] for t in trash["items"]} == {t["id"] for t in done}
    nothing = await client.post(f"/api/{user.id}/tasks/clear-completed", headers=user.headers)
    assert nothing.json() == {"deleted": 0}

    one = done[0]["id"]
    assert (await client.delete(f"/api/{user.id}/trash/{one}", headers=user.headers)).status_code
    after = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert after["total"] == 2
    emptied = await client.delete(f"/api/{user.id}/trash", headers=user.headers)
    assert emptied.status_code == 204
    assert (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()["total"] == 0
    # The other user's completed task and trash are untouched.
    their_task = await client.get(
        f"{other_user.tasks_url}/{theirs['id']}", headers=other_user.headers
    )
    assert their_task.json() == theirs
    # A purged id stays taken by nobody: it can be created again.
    reused = await client.post(
        user.tasks_url, json={"id": one, "title": "again"}, headers=user.headers
    )
    assert reused.status_code == 201


async def test_the_trash_is_purged_past_its_retention_and_beyond_its_cap(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, settings: Settings
) -> None:
    trashed = [await create(client, user, title=f"t{n}") for n in range(5)]
    for task in trashed:
        await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    database = database_of(app)
    async with database.unit(write=True) as unit:
        capped = await task_service.purge_expired(
            unit, user.id, retention=timedelta(days=30), trash_cap=3
        )
    assert capped == 2  # the two oldest deletions
    trash = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert {t["title"] for t in trash["items"]} == {"t2", "t3", "t4"}
    # Past the retention: `todo-api purge` purges every user's.
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.update(TASKS)
            .where(TASKS.c.user_id == user.id, TASKS.c.deleted_at.is_not(None))
            .values(deleted_at=datetime.now(UTC) - timedelta(days=31))
        )
    counts = await purge(settings)
    assert counts["task(s) past the trash's retention"] == 3
    assert (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()["total"] == 0


# --- the changes feed -----------------------------------------------------------------------


async def test_a_full_sync_then_exactly_what_changed(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    a = await create(client, user, title="a")
    b = await create(client, user, title="b")
    c = await create(client, user, title="c")
    await client.delete(f"{user.tasks_url}/{c['id']}", headers=user.headers)
    await create(client, other_user, title="not mine")
    full = await feed(client, user)
    assert full["has_more"] is False
    assert [change["task"] for change in full["changes"]] == [a, b]  # no deletions before it
    assert all(change["op"] == "upsert" for change in full["changes"])
    cursor = full["next"]
    assert (await feed(client, user, cursor))["changes"] == []

    patched = (
        await client.patch(
            f"{user.tasks_url}/{a['id']}", json={"title": "a2"}, headers=user.headers
        )
    ).json()
    await client.patch(f"{user.tasks_url}/{a['id']}/complete", headers=user.headers)
    await client.delete(f"{user.tasks_url}/{b['id']}", headers=user.headers)
    d = await create(client, user, title="d")
    page = await feed(client, user, cursor)
    completed = (await client.get(f"{user.tasks_url}/{a['id']}", headers=user.headers)).json()
    assert page["changes"] == [
        {"op": "upsert", "task": completed},  # once, in its latest state
        {"op": "delete", "id": b["id"]},
        {"op": "upsert", "task": d},
    ]
    assert patched["version"] < completed["version"]
    restored = await client.post(f"/api/{user.id}/trash/{b['id']}/restore", headers=user.headers)
    later = await feed(client, user, page["next"])
    assert later["changes"] == [{"op": "upsert", "task": restored.json()}]


async def test_the_feed_pages_by_limit_and_each_task_comes_once(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    created = [await create(client, user, title=f"t{n}") for n in range(12)]
    copy: dict[str, Any] = {}
    cursor = await catch_up(client, user, None, copy)
    assert copy == {task["id"]: task for task in created}
    first = await feed(client, user, None, limit=5)
    assert (len(first["changes"]), first["has_more"]) == (5, True)
    assert (await feed(client, user, cursor))["has_more"] is False


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(orjson.dumps([1, 2])).decode(),
        base64.urlsafe_b64encode(orjson.dumps({"v": 1, "k": "tasks", "r": 1})).decode(),
        base64.urlsafe_b64encode(
            orjson.dumps({"v": 1, "k": "changes", "r": -1, "i": "0" * 32, "s": 0})
        ).decode(),
        base64.urlsafe_b64encode(
            orjson.dumps({"v": 1, "k": "changes", "r": True, "i": "0" * 32, "s": 0})
        ).decode(),
        base64.urlsafe_b64encode(
            orjson.dumps({"v": 2, "k": "changes", "r": 1, "i": "0" * 32, "s": 0})
        ).decode(),
        base64.urlsafe_b64encode(
            orjson.dumps({"v": 1, "k": "changes", "r": 1, "i": "zz" * 16, "s": 0})
        ).decode(),
    ],
)
async def test_a_malformed_cursor_is_400_invalid_cursor(
    client: httpx.AsyncClient, user: SignedUp, cursor: str
) -> None:
    response = await client.get(
        f"/api/{user.id}/changes", params={"since": cursor}, headers=user.headers
    )
    assert_problem(response, 400, "invalid_cursor")


async def test_a_cursor_older_than_a_purge_is_410_and_a_full_sync_recovers(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    old = (await feed(client, user))["next"]
    await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    seen = (await feed(client, user, old))["next"]  # this reader saw the deletion
    assert (await client.delete(f"/api/{user.id}/trash", headers=user.headers)).status_code == 204
    expired = await client.get(
        f"/api/{user.id}/changes", params={"since": old}, headers=user.headers
    )
    assert_problem(expired, 410, "sync_expired")
    assert (await feed(client, user, seen))["changes"] == []  # saw it: nothing was lost
    assert (await feed(client, user))["changes"] == []  # a full sync starts over


async def test_the_feed_is_owner_scoped(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    response = await client.get(f"/api/{other_user.id}/changes", headers=user.headers)
    assert_problem(response, 403, "forbidden")
    mine = await feed(client, user)
    await create(client, other_user)
    assert (await feed(client, user, mine["next"]))["changes"] == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_reader_polling_during_concurrent_writes_never_misses_a_change(
    make_settings: SettingsFactory,
) -> None:
    """Many connections write one user's tasks at once while a reader polls the feed: the
    reader's copy ends equal to the server's, and every version it saw of a task only grew."""
    settings = make_settings(db_pool_size=8, task_write_rate_limit="100000/minute")
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        ids = [(await create(client, user, title=f"t{n}"))["id"] for n in range(8)]
        stop = asyncio.Event()

        async def writer(number: int) -> None:
            for step in range(25):
                task_id = ids[(number + step) % len(ids)]
                url = f"{user.tasks_url}/{task_id}"
                match step % 5:
                    case 0:
                        new = await create(client, user, title=f"w{number}-{step}")
                        ids.append(new["id"])
                    case 1 | 2:
                        await client.patch(
                            url, json={"title": f"{number}-{step}"}, headers=user.headers
                        )
                    case 3:
                        await client.patch(f"{url}/complete", headers=user.headers)
                    case _:
                        await client.delete(url, headers=user.headers)
                        await client.post(
                            f"/api/{user.id}/trash/{task_id}/restore", headers=user.headers
                        )

        copy: dict[str, Any] = {}
        versions: dict[str, int] = {}

        async def reader() -> str | None:
            cursor: str | None = None
            while True:
                # Whether every write had been answered before this poll began: only a poll
                # that began after them is sure to see them all.
                finished = stop.is_set()
                page = await feed(client, user, cursor, limit=5)
                for change in page["changes"]:
                    if change["op"] == "upsert":
                        task = change["task"]
                        assert task["version"] > versions.get(task["id"], 0)
                        versions[task["id"]] = task["version"]
                        copy[task["id"]] = task
                    else:
                        copy.pop(change["id"], None)
                cursor = page["next"]
                if finished and not page["has_more"]:
                    return cursor
                await asyncio.sleep(0)

        polling = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(8)))
        stop.set()
        await polling
        assert copy == await live_tasks(client, user)


# --- the migration --------------------------------------------------------------------------


def test_existing_tasks_get_versions_and_revisions_in_the_order_they_changed(
    fresh_database_url: str,
) -> None:
    from alembic import command

    from backend.migrations import alembic_config

    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0006_deleted_subjects")
    now = datetime.now(UTC)
    users = [("u1", 3), ("u2", 1), ("u3", 0)]
    ids = {name: uuid.uuid4() for name in ("a", "b", "c", "d")}

    async def store() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(fresh_database_url)
        async with engine.begin() as connection:
            for user_id, count in users:
                await connection.execute(
                    sa.text(
                        "INSERT INTO users (id, provider, email, task_count, time_zone, "
                        "created_at, updated_at) VALUES (:id, 'local', :email, :count, 'UTC', "
                        ":now, :now)"
                    ),
                    {"id": user_id, "email": f"{user_id}@example.com", "count": count, "now": now},
                )
            # u1's tasks last changed in the order b, c, a; u2 has d.
            for name, owner, minutes in (
                ("a", "u1", 3),
                ("b", "u1", 1),
                ("c", "u1", 2),
                ("d", "u2", 0),
            ):
                await connection.execute(
                    sa.text(
                        "INSERT INTO tasks (id, user_id, title, title_folded, completed, priority, "
                        "created_at, updated_at) VALUES (:id, :owner, :title, :title, false, 2, "
                        ":created, :updated)"
                    ),
                    {
                        "id": ids[name] if "postgresql" in fresh_database_url else ids[name].hex,
                        "owner": owner,
                        "title": name,
                        "created": now,
                        "updated": now + timedelta(minutes=minutes),
                    },
                )
        await engine.dispose()

    async def read() -> tuple[dict[str, tuple[int, int, Any]], dict[str, tuple[int, int]]]:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(fresh_database_url)
        async with engine.connect() as connection:
            task_rows = await connection.execute(
                sa.select(TASKS.c.title, TASKS.c.version, TASKS.c.revision, TASKS.c.deleted_at)
            )
            user_rows = await connection.execute(
                sa.select(USERS.c.id, USERS.c.revision, USERS.c.sync_horizon)
            )
            result = (
                {row[0]: (row[1], row[2], row[3]) for row in task_rows},
                {row[0]: (row[1], row[2]) for row in user_rows},
            )
        await engine.dispose()
        return result

    asyncio.run(store())
    command.upgrade(config, "head")
    stored_tasks, stored_users = asyncio.run(read())
    assert stored_tasks == {
        "b": (1, 1, None),
        "c": (1, 2, None),
        "a": (1, 3, None),
        "d": (1, 1, None),
    }
    assert stored_users == {"u1": (3, 0), "u2": (1, 0), "u3": (0, 0)}


async def test_clear_completed_takes_post_only(client: httpx.AsyncClient, user: SignedUp) -> None:
    """`/tasks/clear-completed` is not a task id: other methods are 405, not a malformed id."""
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = await client.request(
            method, f"{user.tasks_url}/clear-completed", headers=user.headers
        )
        assert_problem(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"
    malformed = await client.get(f"{user.tasks_url}/clear-completed-not", headers=user.headers)
    assert_problem(malformed, 400, "validation_error")
