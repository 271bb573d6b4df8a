"""Manual order: new tasks go first, `POST …/tasks/{id}/move`, `sort=position`, and rebalancing,
on both databases."""

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import SignedUp, WithSettings
from tests.helpers import assert_problem, create


async def order(client: httpx.AsyncClient, user: SignedUp, sort: str = "position") -> list[str]:
    response = await client.get(
        user.tasks_url, params={"sort": sort, "limit": 100}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()["items"]]


async def move(
    client: httpx.AsyncClient, user: SignedUp, task: dict[str, Any], **body: Any
) -> httpx.Response:
    headers = {**user.headers, **body.pop("headers", {})}
    json = {
        key: str(value["id"]) if isinstance(value, dict) else value for key, value in body.items()
    }
    return await client.post(f"{user.tasks_url}/{task['id']}/move", json=json, headers=headers)


async def list_etag(client: httpx.AsyncClient, user: SignedUp) -> int:
    """The user's revision, as the list's weak ETag shows it."""
    etag = (await client.get(user.tasks_url, headers=user.headers)).headers["etag"]
    return int(etag.removeprefix('W/"').split(".")[0])


async def test_new_tasks_go_first(client: httpx.AsyncClient, user: SignedUp) -> None:
    for title in ("one", "two", "three"):
        await create(client, user, title=title)
    assert await order(client, user) == ["three", "two", "one"]
    assert await order(client, user, "-position") == ["one", "two", "three"]


async def test_position_is_written_by_moves_only(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(client, user)
    sent = {"title": "Moved by hand", "position": "0"}
    for response in (
        await client.post(user.tasks_url, json=sent, headers=user.headers),
        await client.put(f"{user.tasks_url}/{task['id']}", json=sent, headers=user.headers),
        await client.patch(f"{user.tasks_url}/{task['id']}", json=sent, headers=user.headers),
    ):
        assert_problem(response, 400, "validation_error")


async def test_a_move_writes_the_moved_task_alone(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    c, b, a = [await create(client, user, title=title) for title in ("c", "b", "a")]
    before = {task["id"]: task for task in (a, b, c)}
    revision = await list_etag(client, user)
    response = await move(client, user, a, after=c)
    assert response.status_code == 200, response.text
    moved = response.json()
    assert response.headers["etag"] == '"2"'
    assert moved["version"] == 2
    assert moved["updated_at"] >= a["updated_at"]
    assert await order(client, user) == ["b", "c", "a"]
    assert await list_etag(client, user) == revision + 1
    for task in (b, c):
        now = (await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)).json()
        assert now == before[task["id"]]
    response = await move(client, user, a, before=b)
    assert response.status_code == 200
    assert await order(client, user) == ["a", "b", "c"]
    response = await move(client, user, c, before=b)
    assert await order(client, user) == ["a", "c", "b"]
    response = await move(client, user, a, after=b)
    assert await order(client, user) == ["c", "b", "a"]


async def test_a_move_that_keeps_the_order_changes_nothing(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    b, a = await create(client, user, title="b"), await create(client, user, title="a")
    for body in ({"before": b}, {"after": a}):
        task = a if "before" in body else b
        response = await move(client, user, task, **body)
        assert response.status_code == 200
        assert response.json() == task
    assert await order(client, user) == ["a", "b"]


async def test_a_move_is_in_the_changes_feed(client: httpx.AsyncClient, user: SignedUp) -> None:
    b, a = await create(client, user, title="b"), await create(client, user, title="a")
    since = (await client.get(f"/api/{user.id}/changes", headers=user.headers)).json()["next"]
    moved = (await move(client, user, a, after=b)).json()
    feed = await client.get(
        f"/api/{user.id}/changes", params={"since": since}, headers=user.headers
    )
    assert feed.json()["changes"] == [{"op": "upsert", "task": moved}]


async def test_missing_foreign_and_trashed_tasks_are_404(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    a, b = await create(client, user, title="a"), await create(client, user, title="b")
    gone = await create(client, user, title="gone")
    await client.delete(f"{user.tasks_url}/{gone['id']}", headers=user.headers)
    foreign = await create(client, other_user, title="theirs")
    nowhere = {"id": str(uuid.uuid4())}
    for neighbour in (nowhere, foreign, gone):
        assert_problem(await move(client, user, a, before=neighbour), 404, "not_found")
    for task in (nowhere, foreign, gone):
        assert_problem(await move(client, user, task, after=b), 404, "not_found")
    assert await order(client, user) == ["b", "a"]
    assert (await client.get(f"{user.tasks_url}/{a['id']}", headers=user.headers)).json() == a


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"before": None},
        {"before": "B", "after": "B"},
        {"before": "not-a-uuid"},
        {"before": "B", "position": "a0"},
        {"after": "A"},
        [],
    ],
)
async def test_a_move_needs_exactly_one_other_task(
    client: httpx.AsyncClient, user: SignedUp, body: Any
) -> None:
    a, b = await create(client, user, title="a"), await create(client, user, title="b")
    if isinstance(body, dict):
        body = {key: {"A": a["id"], "B": b["id"]}.get(value, value) for key, value in body.items()}
    response = await client.post(
        f"{user.tasks_url}/{a['id']}/move", json=body, headers=user.headers
    )
    assert_problem(response, 400, "validation_error")


async def test_if_match_applies_to_a_move(client: httpx.AsyncClient, user: SignedUp) -> None:
    b, a = await create(client, user, title="b"), await create(client, user, title="a")
    stale = await move(client, user, a, after=b, headers={"If-Match": '"7"'})
    body = assert_problem(stale, 412, "precondition_failed")
    assert body["current"] == a
    assert await order(client, user) == ["a", "b"]
    fresh = await move(client, user, a, after=b, headers={"If-Match": '"1", "9"'})
    assert fresh.status_code == 200
    assert await order(client, user) == ["b", "a"]


async def test_a_repeated_move_with_an_idempotency_key_is_answered_again(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    c, b, a = [await create(client, user, title=title) for title in ("c", "b", "a")]
    keyed = {"Idempotency-Key": "drag-1"}
    first = await move(client, user, a, after=c, headers=keyed)
    await move(client, user, c, before=b)  # the order changes meanwhile
    again = await move(client, user, a, after=c, headers=keyed)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await order(client, user) == ["c", "b", "a"]
    reused = await move(client, user, a, before=c, headers=keyed)
    assert_problem(reused, 422, "idempotency_key_reused")


async def test_position_pages_by_cursor(client: httpx.AsyncClient, user: SignedUp) -> None:
    tasks = [await create(client, user, title=f"t{n:02d}") for n in range(7)]
    await move(client, user, tasks[0], before=tasks[6])
    expected = await order(client, user)
    seen: list[str] = []
    params: dict[str, Any] = {"sort": "position", "limit": 3}
    while True:
        page = (await client.get(user.tasks_url, params=params, headers=user.headers)).json()
        seen += [task["title"] for task in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"cursor": page["next_cursor"]}
    assert seen == expected


async def test_a_restored_task_keeps_its_place(client: httpx.AsyncClient, user: SignedUp) -> None:
    c, b, _a = [await create(client, user, title=title) for title in ("c", "b", "a")]
    await client.delete(f"{user.tasks_url}/{b['id']}", headers=user.headers)
    assert await order(client, user) == ["a", "c"]
    await client.post(f"/api/{user.id}/trash/{b['id']}/restore", headers=user.headers)
    assert await order(client, user) == ["a", "b", "c"]
    assert (await move(client, user, c, before=b)).status_code == 200
    assert await order(client, user) == ["a", "c", "b"]


async def test_keys_past_the_bound_are_rebalanced_as_one_change(
    with_settings: WithSettings,
) -> None:
    async with with_settings(position_max_length=8) as (client, user):
        tasks = [await create(client, user, title=f"t{n:02d}") for n in range(6)]
        expected = await order(client, user)
        last, first = tasks[0], tasks[-1]
        revisions = []
        # Each move goes into the same gap, right after the first task: keys grow, then the
        # list is rebalanced.
        for n in range(40):
            moving = tasks[1 + n % 4]
            revision = await list_etag(client, user)
            response = await move(client, user, moving, after=first)
            assert response.status_code == 200, response.text
            assert await list_etag(client, user) == revision + 1
            title = moving["title"]
            expected.remove(title)
            expected.insert(1, title)
            assert await order(client, user) == expected
            page = await client.get(
                user.tasks_url, params={"sort": "position"}, headers=user.headers
            )
            items = page.json()["items"]
            assert all(len(task["position"]) <= 8 for task in items)
            revisions.append(max(task["version"] for task in items if task["id"] == last["id"]))
        # The untouched last task's version moved only with rebalances: at least one happened.
        assert revisions[-1] > 1
