"""The `total` of a list with no filter but its status comes from counts the owner's row keeps
(`users.task_count`, and `users.completed_count`, kept by triggers): after every kind of write,
they equal what counting the tasks gives, on both engines."""

import random
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import SignedUp
from tests.helpers import create

STATUSES = ("all", "pending", "completed")


async def _counted(database_url: str, owner: str) -> dict[str, Any]:
    """What counting the owner's rows gives, and what the owner's row keeps."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            live = (
                await connection.execute(
                    sa.text(
                        "SELECT count(*), coalesce(sum(CASE WHEN completed THEN 1 ELSE 0 END), 0) "
                        "FROM tasks WHERE user_id = :owner AND deleted_at IS NULL"
                    ),
                    {"owner": owner},
                )
            ).one()
            kept = (
                await connection.execute(
                    sa.text("SELECT task_count, completed_count FROM users WHERE id = :owner"),
                    {"owner": owner},
                )
            ).one()
    finally:
        await engine.dispose()
    return {"counted": (live[0], int(live[1])), "kept": (kept[0], kept[1])}


async def _totals(client: httpx.AsyncClient, user: SignedUp) -> dict[str, int]:
    totals = {}
    for status in STATUSES:
        response = await client.get(user.tasks_url, params={"status": status, "limit": 100})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) == page["total"]  # fewer than 100: the page is everything
        totals[status] = page["total"]
    return totals


async def _some_write(
    client: httpx.AsyncClient, user: SignedUp, rng: random.Random, trashed: list[str]
) -> str:
    """One write of a random kind; its name."""
    listed = (await client.get(user.tasks_url, params={"limit": 100})).json()["items"]
    ids = [task["id"] for task in listed]
    kinds = ["create", "create"]
    if ids:
        kinds += ["toggle", "complete", "replace", "merge", "delete", "clear"]
    if trashed:
        kinds += ["restore", "purge_one", "empty"]
    kind = rng.choice(kinds)
    task_id = rng.choice(ids) if ids else None
    base = user.tasks_url
    if kind == "create":
        await create(client, user, completed=rng.random() < 0.5)
        return kind
    if kind == "toggle":
        response = await client.patch(f"{base}/{task_id}/complete")
    elif kind == "complete":
        response = await client.patch(
            f"{base}/{task_id}/complete", json={"completed": rng.random() < 0.5}
        )
    elif kind == "replace":
        body = {"title": "Replaced", "completed": rng.random() < 0.5}
        response = await client.put(f"{base}/{task_id}", json=body)
    elif kind == "merge":
        response = await client.patch(
            f"{base}/{task_id}",
            json={"completed": rng.random() < 0.5},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    elif kind == "delete":
        response = await client.delete(f"{base}/{task_id}")
        assert task_id is not None
        trashed.append(task_id)
    elif kind == "clear":
        response = await client.post(f"{base}/clear-completed")
        trashed.extend(task["id"] for task in listed if task["completed"])
    elif kind == "restore":
        restored = trashed.pop(rng.randrange(len(trashed)))
        response = await client.post(f"{base.removesuffix('/tasks')}/trash/{restored}/restore")
    elif kind == "purge_one":
        purged = trashed.pop(rng.randrange(len(trashed)))
        response = await client.delete(f"{base.removesuffix('/tasks')}/trash/{purged}")
    else:
        response = await client.delete(f"{base.removesuffix('/tasks')}/trash")
        trashed.clear()
    assert response.status_code < 300, (kind, response.text)
    return kind


async def test_kept_counts_follow_every_kind_of_write(
    client: httpx.AsyncClient, user: SignedUp, database_url: str
) -> None:
    client.headers.update(user.headers)
    rng = random.Random(24)
    trashed: list[str] = []
    kinds = set()
    for _ in range(90):
        kinds.add(await _some_write(client, user, rng, trashed))
        counts = await _counted(database_url, user.id)
        assert counts["kept"] == counts["counted"], kinds
        live, completed = counts["counted"]
        assert await _totals(client, user) == {
            "all": live,
            "pending": live - completed,
            "completed": completed,
        }
    # Every kind of write ran at least once, so each kept the counts.
    assert kinds == {
        "create", "toggle", "complete", "replace", "merge", "delete", "clear", "restore",
        "purge_one", "empty",
    }  # fmt: skip


async def test_another_users_writes_leave_the_counts_alone(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp, database_url: str
) -> None:
    mine, theirs = user, other_user
    for _ in range(3):
        await create(client, mine, completed=True)
    task = await create(client, theirs, completed=True)
    await client.patch(f"{theirs.tasks_url}/{task['id']}/complete", headers=theirs.headers)
    await client.delete(f"{theirs.tasks_url}/{task['id']}", headers=theirs.headers)
    assert (await _counted(database_url, mine.id))["kept"] == (3, 3)
    assert (await _counted(database_url, theirs.id))["kept"] == (0, 0)
