"""Tags: the rules of a task's tags, `tag=` on the list, and `GET /api/{user_id}/tags`, on both
databases."""

from typing import Any

import httpx
import pytest

from tests.conftest import SignedUp, sign_up
from tests.helpers import assert_problem, create


def tags_url(user: SignedUp) -> str:
    return f"/api/{user.id}/tags"


async def listed(client: httpx.AsyncClient, user: SignedUp, **params: Any) -> list[str]:
    """The titles of the list with these parameters (`tag` may be a list)."""
    response = await client.get(
        user.tasks_url, params={"sort": "title", **params}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()["items"]]


async def counts(client: httpx.AsyncClient, user: SignedUp) -> list[dict[str, Any]]:
    response = await client.get(tags_url(user), headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: list[dict[str, Any]] = response.json()
    return body


# --- the rules of a task's tags ---------------------------------------------------------------


async def test_tags_are_trimmed_kept_in_order_and_unique_ignoring_case(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(
        client, user, tags=["  Work ", "home", "WORK", "Straße", "strasse", "errands", "HOME"]
    )
    assert task["tags"] == ["Work", "home", "Straße", "errands"]
    fetched = await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    assert fetched.json()["tags"] == ["Work", "home", "Straße", "errands"]
    assert (await create(client, user))["tags"] == []


@pytest.mark.parametrize(
    "tags",
    [
        [f"tag {n}" for n in range(21)],
        [""],
        ["   "],
        ["x" * 41],
        [7],
        [None],
        "work",
        None,
        ["a\x00b"],
    ],
)
async def test_invalid_tags_are_400(
    client: httpx.AsyncClient, user: SignedUp, tags: object
) -> None:
    response = await client.post(
        user.tasks_url, json={"title": "Tagged", "tags": tags}, headers=user.headers
    )
    assert_problem(response, 400, "validation_error")


async def test_a_tag_that_is_not_unicode_text_is_400(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.post(
        user.tasks_url,
        content=b'{"title": "Tagged", "tags": ["\\ud800"]}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "validation_error")


async def test_twenty_tags_of_forty_characters_are_fine(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    tags = [f"{n:02d}" + "x" * 38 for n in range(20)]
    assert (await create(client, user, tags=tags))["tags"] == tags


async def test_put_resets_tags_left_out_and_patch_merges(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, tags=["a", "b"])
    url = f"{user.tasks_url}/{task['id']}"
    patched = await client.patch(url, json={"title": "Renamed"}, headers=user.headers)
    assert patched.json()["tags"] == ["a", "b"]
    patched = await client.patch(url, json={"tags": ["c", "C", "a"]}, headers=user.headers)
    assert patched.json()["tags"] == ["c", "a"]
    assert patched.json()["version"] == 3
    same = await client.patch(url, json={"tags": ["c", "a"]}, headers=user.headers)
    assert same.json()["version"] == 3  # changes nothing
    assert_problem(
        await client.patch(url, json={"tags": None}, headers=user.headers), 400, "validation_error"
    )
    put = await client.put(url, json={"title": "Replaced", "tags": ["z"]}, headers=user.headers)
    assert put.json()["tags"] == ["z"]
    put = await client.put(url, json={"title": "Replaced"}, headers=user.headers)
    assert put.json()["tags"] == []
    assert await listed(client, user, tag="z") == []
    assert await counts(client, user) == []


# --- tag= on the list -------------------------------------------------------------------------


async def test_tag_filters_by_every_tag_given_in_any_spelling(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    await create(client, user, title="both", tags=["Work", "urgent"])
    await create(client, user, title="work only", tags=["work"], priority="high")
    await create(client, user, title="street", tags=["Straße"])
    await create(client, user, title="untagged")
    await create(client, other_user, title="someone else's", tags=["work"])
    assert await listed(client, user, tag="WORK") == ["both", "work only"]
    assert await listed(client, user, tag=["work", "Urgent"]) == ["both"]
    assert await listed(client, user, tag=["work", "missing"]) == []
    assert await listed(client, user, tag=" strasse ") == ["street"]
    assert await listed(client, user, tag="work", priority="high") == ["work only"]
    assert await listed(client, user, tag="work", q="only") == ["work only"]
    response = await client.get(user.tasks_url, params={"tag": "work"}, headers=user.headers)
    assert response.json()["total"] == 2


@pytest.mark.parametrize(
    "params",
    [{"tag": ""}, {"tag": "  "}, {"tag": "x" * 41}, {"tag": [f"t{n}" for n in range(21)]}],
)
async def test_a_bad_tag_parameter_is_400(
    client: httpx.AsyncClient, user: SignedUp, params: dict[str, Any]
) -> None:
    response = await client.get(user.tasks_url, params=params, headers=user.headers)
    assert_problem(response, 400, "validation_error")


async def test_a_cursor_remembers_its_tags(client: httpx.AsyncClient, user: SignedUp) -> None:
    for n in range(5):
        await create(client, user, title=f"tagged {n}", tags=["a", "b"])
        await create(client, user, title=f"other {n}", tags=["a"])
    first = await client.get(
        user.tasks_url, params={"tag": ["a", "b"], "limit": 2}, headers=user.headers
    )
    seen = [task["title"] for task in first.json()["items"]]
    cursor = first.json()["next_cursor"]
    while cursor is not None:
        page = await client.get(user.tasks_url, params={"cursor": cursor}, headers=user.headers)
        seen += [task["title"] for task in page.json()["items"]]
        cursor = page.json()["next_cursor"]
    assert sorted(seen) == [f"tagged {n}" for n in range(5)]
    other = await client.get(
        user.tasks_url,
        params={"cursor": first.json()["next_cursor"], "tag": "a"},
        headers=user.headers,
    )
    assert_problem(other, 400, "invalid_cursor")


# --- GET /tags --------------------------------------------------------------------------------


async def test_tags_counts_live_tasks_by_name_ignoring_case(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    assert await counts(client, user) == []
    await create(client, user, tags=["work", "Errands"])
    await create(client, user, tags=["Work"])
    done = await create(client, user, tags=["WORK", "zebra"], completed=True)
    trashed = await create(client, user, tags=["alpha"])
    await create(client, other_user, tags=["work", "secret"])
    await client.delete(f"{user.tasks_url}/{trashed['id']}", headers=user.headers)
    assert await counts(client, user) == [
        {"name": "Errands", "count": 1},
        {"name": "WORK", "count": 3},  # the first spelling by code point
        {"name": "zebra", "count": 1},
    ]
    restored = await client.post(
        f"/api/{user.id}/trash/{trashed['id']}/restore", headers=user.headers
    )
    assert restored.json()["tags"] == ["alpha"]
    assert (await counts(client, user))[0] == {"name": "alpha", "count": 1}
    assert await listed(client, user, tag="alpha") == ["A task"]
    cleared = await client.post(f"{user.tasks_url}/clear-completed", headers=user.headers)
    assert cleared.json() == {"deleted": 1}
    assert {row["name"]: row["count"] for row in await counts(client, user)} == {
        "alpha": 1,
        "Errands": 1,
        "Work": 2,
    }
    assert await listed(client, user, tag="zebra") == []
    assert done["tags"] == ["WORK", "zebra"]


async def test_tags_is_owner_scoped(client: httpx.AsyncClient, user: SignedUp) -> None:
    other = await sign_up(client)
    assert_problem(await client.get(tags_url(other), headers=user.headers), 403, "forbidden")
    assert_problem(await client.get(tags_url(user)), 401, "missing_token")


# --- tags in every representation -------------------------------------------------------------


async def test_tags_and_position_appear_in_the_feed_the_trash_and_the_export(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    kept = await create(client, user, title="kept", tags=["x", "Y"])
    gone = await create(client, user, title="gone", tags=["z"])
    await client.delete(f"{user.tasks_url}/{gone['id']}", headers=user.headers)
    feed = (await client.get(f"/api/{user.id}/changes", headers=user.headers)).json()
    (upsert,) = [change for change in feed["changes"] if change["op"] == "upsert"]
    assert upsert["task"]["tags"] == ["x", "Y"]
    assert upsert["task"]["position"] == kept["position"]
    trash = (await client.get(f"/api/{user.id}/trash", headers=user.headers)).json()
    assert trash["items"][0]["tags"] == ["z"]
    assert trash["items"][0]["position"] == gone["position"]
    export = (await client.get(f"/api/{user.id}/export", headers=user.headers)).json()
    exported = {task["title"]: task for task in export["tasks"]}
    assert exported["kept"]["tags"] == ["x", "Y"]
    assert exported["gone"]["tags"] == ["z"]
    assert exported["gone"]["position"] == gone["position"]
