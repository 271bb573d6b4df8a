"""Safe writes: task versions and ETags, conditional requests (If-Match, If-None-Match), and
ids chosen by the client. On both databases."""

import asyncio
import uuid

import httpx
import orjson
import pytest

from tests.conftest import SignedUp
from tests.helpers import assert_problem, create

pytestmark = pytest.mark.pgbouncer


def etag_of(response: httpx.Response) -> str:
    etag: str = response.headers["etag"]
    return etag


async def test_every_answer_with_a_task_carries_its_version_as_a_strong_etag(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    created = await client.post(user.tasks_url, json={"title": "v"}, headers=user.headers)
    assert created.json()["version"] == 1
    assert etag_of(created) == '"1"'
    url = f"{user.tasks_url}/{created.json()['id']}"
    got = await client.get(url, headers=user.headers)
    assert etag_of(got) == '"1"'
    replaced = await client.put(url, json={"title": "w"}, headers=user.headers)
    assert (replaced.json()["version"], etag_of(replaced)) == (2, '"2"')
    patched = await client.patch(url, json={"priority": "high"}, headers=user.headers)
    assert (patched.json()["version"], etag_of(patched)) == (3, '"3"')
    toggled = await client.patch(f"{url}/complete", headers=user.headers)
    assert (toggled.json()["version"], etag_of(toggled)) == (4, '"4"')


async def test_a_write_that_changes_nothing_keeps_version_and_updated_at(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="same", priority="high")
    url = f"{user.tasks_url}/{task['id']}"
    for method, path, body in [
        ("PUT", url, {"title": "same", "priority": "high"}),
        ("PATCH", url, {"title": " same "}),
        ("PATCH", f"{url}/complete", {"completed": False}),
    ]:
        response = await client.request(method, path, json=body, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.json() == task
        assert etag_of(response) == '"1"'


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", {"title": "theirs"}),
        ("PATCH", "", {"title": "theirs"}),
        ("PATCH", "/complete", None),
        ("PATCH", "/complete", {"completed": True}),
        ("DELETE", "", None),
    ],
)
async def test_if_match_with_another_version_is_412_with_the_task_as_it_is(
    client: httpx.AsyncClient, user: SignedUp, method: str, suffix: str, body: object
) -> None:
    task = await create(client, user, title="mine")
    url = f"{user.tasks_url}/{task['id']}"
    changed = (await client.put(url, json={"title": "changed"}, headers=user.headers)).json()
    stale = {**user.headers, "If-Match": '"1"'}
    content = None if body is None else orjson.dumps(body)
    json_type = {"Content-Type": "application/json"} if body is not None else {}
    refused = await client.request(
        method, url + suffix, headers={**stale, **json_type}, content=content
    )
    problem = assert_problem(refused, 412, "precondition_failed")
    assert problem["current"] == changed
    assert etag_of(refused) == '"2"'
    assert (await client.get(url, headers=user.headers)).json() == changed  # nothing done
    # The current version, a list that holds it, or `*`: the write goes through.
    for condition in ('"2"', '"7", "2"', "*"):
        if method == "DELETE" and condition != "*":
            continue
        current = (await client.get(url, headers=user.headers)).json()
        condition = condition.replace('"2"', f'"{current["version"]}"')
        allowed = await client.request(
            method,
            url + suffix,
            headers={**user.headers, **json_type, "If-Match": condition},
            content=content,
        )
        assert allowed.status_code in (200, 204), allowed.text


async def test_if_match_compares_strongly_and_refuses_what_is_not_a_list_of_etags(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    weak = await client.put(url, json={"title": "x"}, headers={**user.headers, "If-Match": 'W/"1"'})
    assert_problem(weak, 412, "precondition_failed")
    for malformed in ("1", '"1', 'W/"1" x', ",", '"a"b"'):
        response = await client.put(
            url, json={"title": "x"}, headers={**user.headers, "If-Match": malformed}
        )
        problem = assert_problem(response, 400, "validation_error")
        errors = problem["errors"]
        assert isinstance(errors, list)
        assert [error["loc"] for error in errors] == [["header", "If-Match"]]
    assert (await client.get(url, headers=user.headers)).json()["version"] == 1


async def test_if_match_on_a_missing_task_keeps_the_v1_answer(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    theirs = await create(client, other_user)
    headers = {**user.headers, "If-Match": '"1"'}
    for task_id in (str(uuid.uuid4()), theirs["id"]):
        url = f"{user.tasks_url}/{task_id}"
        put = await client.put(url, json={"title": "x"}, headers=headers)
        assert_problem(put, 404, "not_found")
        assert (await client.delete(url, headers=headers)).status_code == 204
    other_url = f"{other_user.tasks_url}/{theirs['id']}"
    assert (await client.get(other_url, headers=other_user.headers)).json() == theirs


async def test_if_none_match_on_a_task_is_304_while_it_is_unchanged(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    for condition in ('"1"', 'W/"1"', '"9", "1"', "*"):
        cached = await client.get(url, headers={**user.headers, "If-None-Match": condition})
        assert cached.status_code == 304
        assert cached.content == b""
        assert etag_of(cached) == '"1"'
    await client.patch(url, json={"title": "new"}, headers=user.headers)
    fresh = await client.get(url, headers={**user.headers, "If-None-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.json()["title"] == "new"


async def test_the_list_etag_moves_with_any_change_and_with_the_query(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    task = await create(client, user)
    listed = await client.get(user.tasks_url, headers=user.headers)
    etag = etag_of(listed)
    assert etag.startswith('W/"')
    polled = await client.get(user.tasks_url, headers={**user.headers, "If-None-Match": etag})
    assert polled.status_code == 304
    assert polled.content == b""
    other = await client.get(
        user.tasks_url,
        params={"status": "pending"},
        headers={**user.headers, "If-None-Match": etag},
    )
    assert other.status_code == 200
    await create(client, other_user)  # another user's change is not this list's
    assert (
        await client.get(user.tasks_url, headers={**user.headers, "If-None-Match": etag})
    ).status_code == 304
    url = f"{user.tasks_url}/{task['id']}"
    changes = [
        ("PATCH", url, {"title": "t2"}),
        ("PATCH", f"{url}/complete", None),
        ("POST", user.tasks_url, {"title": "another"}),
        ("DELETE", url, None),
    ]
    seen = {etag}
    for method, path, body in changes:
        changed = await client.request(
            method,
            path,
            headers={**user.headers, "Content-Type": "application/json"},
            content=None if body is None else orjson.dumps(body),
        )
        assert changed.status_code in (200, 201, 204), changed.text
        response = await client.get(user.tasks_url, headers={**user.headers, "If-None-Match": etag})
        assert response.status_code == 200
        etag = etag_of(response)
        assert etag not in seen
        seen.add(etag)


async def test_a_task_created_with_the_client_s_id_keeps_it_and_an_id_is_never_reused(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    chosen = str(uuid.uuid4())
    created = await client.post(
        user.tasks_url, json={"id": chosen, "title": "offline"}, headers=user.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == chosen
    assert created.headers["location"] == f"{user.tasks_url}/{chosen}"
    again = await client.post(
        user.tasks_url, json={"id": chosen, "title": "again"}, headers=user.headers
    )
    assert_problem(again, 409, "task_exists")
    await client.delete(f"{user.tasks_url}/{chosen}", headers=user.headers)
    in_trash = await client.post(
        user.tasks_url, json={"id": chosen, "title": "again"}, headers=user.headers
    )
    assert_problem(in_trash, 409, "task_exists")
    theirs = await client.post(
        other_user.tasks_url, json={"id": chosen, "title": "x"}, headers=other_user.headers
    )
    assert_problem(theirs, 409, "task_exists")
    listed = await client.get(user.tasks_url, headers=user.headers)
    assert listed.json()["total"] == 0  # the refusals stored nothing, counted nothing
    assert (await client.get(other_user.tasks_url, headers=other_user.headers)).json()["total"] == 0


async def test_two_writers_with_the_same_if_match_one_wins_one_gets_412(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    """Fifty times: two clients edit the same version of a task at the same moment; exactly
    one edit lands, the other is told (the check and the write are one step)."""
    for round_ in range(50):
        task = await create(client, user, title=f"round {round_}")
        url = f"{user.tasks_url}/{task['id']}"
        headers = {**user.headers, "If-Match": '"1"'}
        first, second = await asyncio.gather(
            client.put(url, json={"title": "first"}, headers=headers),
            client.patch(url, json={"title": "second"}, headers=headers),
        )
        assert sorted((first.status_code, second.status_code)) == [200, 412], (
            first.text,
            second.text,
        )
        winner = first if first.status_code == 200 else second
        loser = second if winner is first else first
        assert loser.json()["current"] == winner.json()
        assert winner.json()["version"] == 2
        assert (await client.get(url, headers=user.headers)).json() == winner.json()
