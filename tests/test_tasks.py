"""The task routes: fields and their validation, access rules in the contract's order, PUT,
DELETE and PATCH semantics, and concurrency."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from backend.models import Task, User
from tests.conftest import SignedUp, sign_up
from tests.helpers import assert_problem, bearer, create, mint

pytestmark = pytest.mark.pgbouncer


def parse_time(value: str) -> datetime:
    assert value.endswith("Z")
    return datetime.fromisoformat(value)


# --- create and read ---------------------------------------------------------------------------


async def test_create_returns_the_task_with_defaults_and_location(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.post(
        user.tasks_url, json={"title": "  Buy milk  "}, headers=user.headers
    )
    assert response.status_code == 201
    task = response.json()
    assert set(task) == {
        "id", "user_id", "title", "description", "completed", "completed_at",
        "priority", "due_date", "created_at", "updated_at", "tags", "position", "version",
    }  # fmt: skip
    assert task["tags"] == []
    assert uuid.UUID(task["id"]).version == 4
    assert task["user_id"] == user.id
    assert task["title"] == "Buy milk"
    assert task["description"] is None
    assert task["completed"] is False
    assert task["completed_at"] is None
    assert task["priority"] == "medium"
    assert task["due_date"] is None
    assert task["created_at"] == task["updated_at"]
    assert len(task["created_at"]) == len("2026-11-26T20:22:38.427Z")
    assert abs((parse_time(task["created_at"]) - datetime.now(UTC)).total_seconds()) < 60
    assert response.headers["location"] == f"/api/{user.id}/tasks/{task['id']}"
    fetched = await client.get(response.headers["location"], headers=user.headers)
    assert fetched.json() == task


async def test_create_with_every_field(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(
        client,
        user,
        title="Plan trip",
        description="  spaces kept  ",
        completed=True,
        priority="high",
        due_date="2026-12-01",
    )
    assert task["description"] == "  spaces kept  "
    assert task["completed"] is True
    assert task["completed_at"] == task["created_at"]
    assert task["priority"] == "high"
    assert task["due_date"] == "2026-12-01"


async def test_unicode_and_limits_round_trip(client: httpx.AsyncClient, user: SignedUp) -> None:
    title = "日本語のタスク 🦊" + "x" * (200 - 9)
    assert len(title) == 200
    task = await create(client, user, title=title, description="é" * 2000)
    fetched = (await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)).json()
    assert fetched["title"] == title
    assert fetched["description"] == "é" * 2000


INVALID_BODIES: dict[str, Any] = {
    "missing title": {},
    "empty title": {"title": ""},
    "whitespace title": {"title": "   \t\n "},
    "title too long": {"title": "x" * 201},
    "title not a string": {"title": 42},
    "description too long": {"title": "t", "description": "x" * 2001},
    "description not a string": {"title": "t", "description": ["x"]},
    "completed as string": {"title": "t", "completed": "true"},
    "completed as number": {"title": "t", "completed": 1},
    "unknown priority": {"title": "t", "priority": "urgent"},
    "priority wrong case": {"title": "t", "priority": "HIGH"},
    "due date not a date": {"title": "t", "due_date": "tomorrow"},
    "due date with time": {"title": "t", "due_date": "2026-12-01T00:00:00Z"},
    "due date impossible": {"title": "t", "due_date": "2026-02-30"},
    "due date as number": {"title": "t", "due_date": 20261201},
    "unknown field": {"title": "t", "colour": "red"},
    "id not a UUID": {"title": "t", "id": "x"},
    "read-only user_id": {"title": "t", "user_id": "someone"},
    "read-only created_at": {"title": "t", "created_at": "2026-11-26T20:22:38.427Z"},
    "read-only updated_at": {"title": "t", "updated_at": "2026-11-26T20:22:38.427Z"},
    "read-only completed_at": {"title": "t", "completed_at": None},
    "not an object": ["title"],
    "null": None,
}


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
async def test_invalid_task_bodies_are_400_for_create_and_replace(
    client: httpx.AsyncClient, user: SignedUp, case: str
) -> None:
    task = await create(client, user, title="Original")
    body = INVALID_BODIES[case]
    created = await client.post(user.tasks_url, json=body, headers=user.headers)
    replaced = await client.put(f"{user.tasks_url}/{task['id']}", json=body, headers=user.headers)
    for response in (created, replaced):
        problem = assert_problem(response, 400, "validation_error")
        assert problem["errors"]
    listed = (await client.get(user.tasks_url, headers=user.headers)).json()
    assert listed["items"] == [task]


async def test_read_only_fields_are_named_in_the_error(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    # A new task's id may be chosen by its client; never a stored task's.
    response = await client.post(
        user.tasks_url,
        json={"title": "t", "user_id": "x", "created_at": "y"},
        headers=user.headers,
    )
    problem = assert_problem(response, 400, "validation_error")
    assert "read-only" in str(problem["detail"])
    assert "created_at, user_id" in str(problem["detail"])
    task = await create(client, user)
    replaced = await client.put(
        f"{user.tasks_url}/{task['id']}",
        json={"title": "t", "id": task["id"]},
        headers=user.headers,
    )
    assert "read-only field(s) cannot be set: id" in str(
        assert_problem(replaced, 400, "validation_error")["detail"]
    )


async def test_whitespace_title_says_it_must_not_be_empty(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.post(user.tasks_url, json={"title": "   "}, headers=user.headers)
    problem = assert_problem(response, 400, "validation_error")
    assert problem["errors"] == [
        {"loc": ["body", "title"], "msg": "must not be empty", "type": "value_error"}
    ]


async def test_malformed_task_id_is_400(client: httpx.AsyncClient, user: SignedUp) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        suffix = "/complete" if method == "PATCH" else ""
        response = await client.request(
            method,
            f"{user.tasks_url}/not-a-uuid{suffix}",
            headers=user.headers,
            json={"title": "t"} if method == "PUT" else None,
        )
        assert_problem(response, 400, "validation_error")


async def test_missing_task_is_404(client: httpx.AsyncClient, user: SignedUp) -> None:
    missing = f"{user.tasks_url}/{uuid.uuid4()}"
    assert_problem(await client.get(missing, headers=user.headers), 404, "not_found")
    assert_problem(
        await client.put(missing, json={"title": "t"}, headers=user.headers), 404, "not_found"
    )
    assert_problem(
        await client.patch(f"{missing}/complete", headers=user.headers), 404, "not_found"
    )


# --- access rules ------------------------------------------------------------------------------


async def test_task_routes_need_a_token(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    for method, path in [
        ("GET", user.tasks_url),
        ("POST", user.tasks_url),
        ("GET", url),
        ("PUT", url),
        ("DELETE", url),
        ("PATCH", f"{url}/complete"),
    ]:
        response = await client.request(method, path, json={"title": "x"})
        assert_problem(response, 401, "missing_token")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_401_comes_before_400_even_for_a_malformed_body(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.post(
        user.tasks_url, content=b"{broken", headers={"content-type": "application/json"}
    )
    assert_problem(response, 401, "missing_token")
    expired = mint(user.id, exp=1_000_000, iat=999_000)
    response = await client.post(
        user.tasks_url,
        content=b"{broken",
        headers={"content-type": "application/json", **bearer(expired)},
    )
    assert_problem(response, 401, "token_expired")


async def test_403_comes_before_400_and_404(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    their = other_user.tasks_url
    checks = [
        await client.get(f"{their}?limit=0", headers=user.headers),
        await client.get(f"{their}/not-a-uuid", headers=user.headers),
        await client.get(f"{their}/{uuid.uuid4()}", headers=user.headers),
        await client.post(
            their, content=b"{broken", headers={"content-type": "application/json", **user.headers}
        ),
        await client.put(f"{their}/{uuid.uuid4()}", json={}, headers=user.headers),
    ]
    for response in checks:
        assert_problem(response, 403, "forbidden")


async def test_400_comes_before_404(client: httpx.AsyncClient, user: SignedUp) -> None:
    response = await client.put(f"{user.tasks_url}/{uuid.uuid4()}", json={}, headers=user.headers)
    assert_problem(response, 400, "validation_error")


async def test_another_user_can_neither_see_nor_touch_my_tasks(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    task = await create(client, user, title="Mine", priority="high")
    mine = f"{user.tasks_url}/{task['id']}"
    # On my path, with their token: 403 for everything.
    for method, path in [
        ("GET", user.tasks_url),
        ("POST", user.tasks_url),
        ("GET", mine),
        ("PUT", mine),
        ("DELETE", mine),
        ("PATCH", f"{mine}/complete"),
    ]:
        response = await client.request(
            method, path, json={"title": "hijack"}, headers=other_user.headers
        )
        assert_problem(response, 403, "forbidden")
    # On their own path, with my task's id: 404 (as if it did not exist), and 204 for DELETE.
    theirs = f"{other_user.tasks_url}/{task['id']}"
    assert_problem(await client.get(theirs, headers=other_user.headers), 404, "not_found")
    assert_problem(
        await client.put(theirs, json={"title": "hijack"}, headers=other_user.headers),
        404,
        "not_found",
    )
    assert_problem(
        await client.patch(f"{theirs}/complete", headers=other_user.headers), 404, "not_found"
    )
    assert (await client.delete(theirs, headers=other_user.headers)).status_code == 204
    their_list = (await client.get(other_user.tasks_url, headers=other_user.headers)).json()
    assert their_list["items"] == [] and their_list["total"] == 0
    # And my task is exactly as it was.
    assert (await client.get(mine, headers=user.headers)).json() == task


async def test_missing_and_foreign_tasks_get_the_same_404(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    task = await create(client, user)
    foreign = await client.get(f"{other_user.tasks_url}/{task['id']}", headers=other_user.headers)
    missing = await client.get(f"{other_user.tasks_url}/{uuid.uuid4()}", headers=other_user.headers)
    assert foreign.status_code == missing.status_code == 404
    assert {k: v for k, v in foreign.json().items() if k != "request_id"} == {
        k: v for k, v in missing.json().items() if k != "request_id"
    }


# --- PUT ---------------------------------------------------------------------------------------


async def test_put_replaces_every_writable_field(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(
        client, user, title="Old", description="d", priority="high", due_date="2026-12-01"
    )
    response = await client.put(
        f"{user.tasks_url}/{task['id']}", json={"title": "New"}, headers=user.headers
    )
    assert response.status_code == 200
    replaced = response.json()
    assert replaced["title"] == "New"
    assert replaced["description"] is None
    assert replaced["priority"] == "medium"
    assert replaced["due_date"] is None
    assert replaced["completed"] is False
    assert replaced["created_at"] == task["created_at"]
    assert parse_time(replaced["updated_at"]) > parse_time(task["updated_at"])


async def test_put_is_idempotent_and_a_no_op_keeps_updated_at(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="Same")
    body = {"title": "Changed", "priority": "low", "due_date": "2027-01-02", "completed": True}
    url = f"{user.tasks_url}/{task['id']}"
    first = (await client.put(url, json=body, headers=user.headers)).json()
    second = (await client.put(url, json=body, headers=user.headers)).json()
    assert first == second
    assert first["completed_at"] is not None
    # A client that read the task and sends back its writable fields changes nothing.
    writable = {k: first[k] for k in ("title", "description", "completed", "priority", "due_date")}
    third = (await client.put(url, json=writable, headers=user.headers)).json()
    assert third == first


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"description": None}, {"description": "now with one"}),
        ({"description": "d"}, {"description": None}),
        ({"due_date": None}, {"due_date": "2026-12-01"}),
        ({"due_date": "2026-12-01"}, {"due_date": None}),
        ({"priority": "low"}, {"priority": "high"}),
        ({"title": "Case"}, {"title": "case"}),
    ],
)
async def test_put_that_changes_one_field_moves_updated_at_and_only_then(
    client: httpx.AsyncClient, user: SignedUp, before: dict[str, Any], after: dict[str, Any]
) -> None:
    body = {"title": "T", **before}
    task = await create(client, user, **body)
    url = f"{user.tasks_url}/{task['id']}"
    same = (await client.put(url, json=body, headers=user.headers)).json()
    assert same == task
    changed = (await client.put(url, json={**body, **after}, headers=user.headers)).json()
    assert {key: changed[key] for key in after} == after
    assert parse_time(changed["updated_at"]) > parse_time(task["updated_at"])
    assert changed["created_at"] == task["created_at"]


async def test_put_keeps_completed_at_while_completed_and_clears_it_on_reopen(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, completed=True)
    url = f"{user.tasks_url}/{task['id']}"
    renamed = (
        await client.put(url, json={"title": "Renamed", "completed": True}, headers=user.headers)
    ).json()
    assert renamed["completed_at"] == task["completed_at"]
    reopened = (await client.put(url, json={"title": "Renamed"}, headers=user.headers)).json()
    assert reopened["completed"] is False
    assert reopened["completed_at"] is None


# --- PATCH (partial update) --------------------------------------------------------------------


async def test_patch_changes_only_the_fields_it_has(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(
        client, user, title="Old", description="d", priority="high", due_date="2026-12-01"
    )
    url = f"{user.tasks_url}/{task['id']}"
    response = await client.patch(url, json={"title": "  New  "}, headers=user.headers)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched == {
        **task,
        "title": "New",
        "updated_at": patched["updated_at"],
        "version": task["version"] + 1,
    }
    assert parse_time(patched["updated_at"]) > parse_time(task["updated_at"])
    assert (await client.get(url, headers=user.headers)).json() == patched


async def test_patch_with_null_clears_a_nullable_field(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, description="d", due_date="2026-12-01")
    url = f"{user.tasks_url}/{task['id']}"
    cleared = (
        await client.patch(url, json={"description": None, "due_date": None}, headers=user.headers)
    ).json()
    assert (cleared["description"], cleared["due_date"]) == (None, None)
    assert cleared["title"] == task["title"]


async def test_patch_that_changes_nothing_keeps_updated_at(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="Same", priority="low")
    url = f"{user.tasks_url}/{task['id']}"
    for patch in ({"title": "Same"}, {"priority": "low", "description": None}):
        same = (await client.patch(url, json=patch, headers=user.headers)).json()
        assert same == task


async def test_patch_completes_and_reopens_with_completed_at(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    done = (await client.patch(url, json={"completed": True}, headers=user.headers)).json()
    assert done["completed"] is True and done["completed_at"] is not None
    renamed = (await client.patch(url, json={"title": "Renamed"}, headers=user.headers)).json()
    assert renamed["completed_at"] == done["completed_at"]
    reopened = (await client.patch(url, json={"completed": False}, headers=user.headers)).json()
    assert (reopened["completed"], reopened["completed_at"]) == (False, None)


async def test_patch_search_text_follows_the_new_title(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user, title="Groceries", description="Milk")
    url = f"{user.tasks_url}/{task['id']}"
    await client.patch(url, json={"title": "STRASSE"}, headers=user.headers)
    found = (await client.get(user.tasks_url, params={"q": "straße"}, headers=user.headers)).json()
    assert [item["id"] for item in found["items"]] == [task["id"]]
    by_description = (
        await client.get(user.tasks_url, params={"q": "milk"}, headers=user.headers)
    ).json()
    assert by_description["total"] == 1  # the description it kept is still found


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"title": None}, "title"),
        ({"completed": None}, "completed"),
        ({"priority": None}, "priority"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"priority": "urgent"}, "priority"),
        ({"due_date": "tomorrow"}, "due_date"),
        ({"completed": "yes"}, "completed"),
        ({"id": str(uuid.uuid4())}, None),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_patches_are_400_and_change_nothing(
    client: httpx.AsyncClient, user: SignedUp, body: dict[str, Any], field: str | None
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    problem = assert_problem(
        await client.patch(url, json=body, headers=user.headers), 400, "validation_error"
    )
    if field is not None:
        errors = problem["errors"]
        assert isinstance(errors, list)
        assert any(error["loc"] == ["body", field] for error in errors), errors
    assert (await client.get(url, headers=user.headers)).json() == task


async def test_patch_of_a_missing_or_foreign_task_is_404(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    foreign = await create(client, other_user)
    for task_id in (foreign["id"], str(uuid.uuid4())):
        response = await client.patch(
            f"{user.tasks_url}/{task_id}", json={"title": "Mine now"}, headers=user.headers
        )
        assert_problem(response, 404, "not_found")
    url = f"{other_user.tasks_url}/{foreign['id']}"
    assert (await client.get(url, headers=other_user.headers)).json() == foreign


async def test_patch_accepts_the_merge_patch_media_type(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    response = await client.patch(
        f"{user.tasks_url}/{task['id']}",
        content=b'{"priority": "high"}',
        headers={**user.headers, "Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["priority"] == "high"


# --- DELETE ------------------------------------------------------------------------------------


async def test_delete_is_idempotent(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}"
    first = await client.delete(url, headers=user.headers)
    second = await client.delete(url, headers=user.headers)
    never = await client.delete(f"{user.tasks_url}/{uuid.uuid4()}", headers=user.headers)
    assert [r.status_code for r in (first, second, never)] == [204, 204, 204]
    assert first.content == b""
    assert_problem(await client.get(url, headers=user.headers), 404, "not_found")


async def test_delete_frees_room_under_the_task_cap(with_settings: Any) -> None:
    async with with_settings(max_tasks_per_user=2) as (client, user):
        first = await create(client, user)
        await create(client, user)
        blocked = await client.post(user.tasks_url, json={"title": "third"}, headers=user.headers)
        problem = assert_problem(blocked, 409, "too_many_tasks")
        assert "2" in str(problem["detail"])
        await client.delete(f"{user.tasks_url}/{first['id']}", headers=user.headers)
        await client.delete(f"{user.tasks_url}/{first['id']}", headers=user.headers)
        await create(client, user)
        assert (
            await client.post(user.tasks_url, json={"title": "x"}, headers=user.headers)
        ).status_code == 409


# --- PATCH .../complete ------------------------------------------------------------------------


async def test_patch_without_body_toggles(client: httpx.AsyncClient, user: SignedUp) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}/complete"
    done = (await client.patch(url, headers=user.headers)).json()
    assert done["completed"] is True
    assert done["completed_at"] == done["updated_at"]
    reopened = (await client.patch(url, headers=user.headers)).json()
    assert reopened["completed"] is False
    assert reopened["completed_at"] is None


async def test_patch_with_a_state_sets_it_idempotently(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}/complete"
    first = (await client.patch(url, json={"completed": True}, headers=user.headers)).json()
    second = (await client.patch(url, json={"completed": True}, headers=user.headers)).json()
    assert first == second
    assert first["completed"] is True
    unset = (await client.patch(url, json={"completed": False}, headers=user.headers)).json()
    assert unset["completed"] is False and unset["completed_at"] is None


@pytest.mark.parametrize(
    "body", [{}, {"completed": "yes"}, {"completed": None}, {"completed": True, "x": 1}, [True]]
)
async def test_patch_with_a_bad_body_is_400(
    client: httpx.AsyncClient, user: SignedUp, body: Any
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}/complete"
    assert_problem(
        await client.patch(url, json=body, headers=user.headers), 400, "validation_error"
    )
    assert (await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)).json() == task


@pytest.mark.parametrize("body", [b"null", b" null\n"])
async def test_patch_with_a_null_body_is_400_not_a_toggle(
    client: httpx.AsyncClient, user: SignedUp, body: bytes
) -> None:
    # Only a body left out toggles; `null` is a body, and not `{completed: bool}`.
    task = await create(client, user)
    response = await client.patch(
        f"{user.tasks_url}/{task['id']}/complete",
        content=body,
        headers={**user.headers, "content-type": "application/json"},
    )
    problem = assert_problem(response, 400, "validation_error")
    assert problem["errors"] == [
        {"loc": ["body"], "msg": "must be {completed: bool}, or left out", "type": "model_type"}
    ]
    assert (await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)).json() == task


# --- concurrency -------------------------------------------------------------------------------


async def test_50_concurrent_creates_lose_nothing(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(user.tasks_url, json={"title": f"task {i}"}, headers=user.headers)
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [201] * 50
    listed = (await client.get(f"{user.tasks_url}?limit=100", headers=user.headers)).json()
    assert listed["total"] == 50
    assert {t["title"] for t in listed["items"]} == {f"task {i}" for i in range(50)}


async def test_50_concurrent_toggles_lose_nothing(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    task = await create(client, user)
    url = f"{user.tasks_url}/{task['id']}/complete"
    responses = await asyncio.gather(*(client.patch(url, headers=user.headers) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    # Each toggle saw the previous one: exactly 25 answered "completed", 25 "reopened".
    assert sum(r.json()["completed"] for r in responses) == 25
    final = (await client.get(f"{user.tasks_url}/{task['id']}", headers=user.headers)).json()
    assert final["completed"] is False and final["completed_at"] is None


async def test_concurrent_creates_respect_the_task_cap(with_settings: Any) -> None:
    async with with_settings(max_tasks_per_user=10) as (client, user):
        responses = await asyncio.gather(
            *(
                client.post(user.tasks_url, json={"title": "t"}, headers=user.headers)
                for _ in range(30)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 10 + [409] * 20
        assert (await client.get(user.tasks_url, headers=user.headers)).json()["total"] == 10


async def test_task_counter_matches_the_tasks(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    tasks = [await create(client, user) for _ in range(5)]
    for task in tasks[:2]:
        await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    async with app.state.runtime.db.session(write=False) as session:
        stored = (await session.exec(select(User).where(User.id == user.id))).one()
        rows = (await session.exec(select(Task).where(Task.user_id == user.id))).all()
    live = [row for row in rows if row.deleted_at is None]
    assert stored.task_count == len(live) == 3
    assert len(rows) == 5  # two in the trash


async def test_concurrent_deletes_of_one_task_count_it_once(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    tasks = [await create(client, user) for _ in range(3)]
    url = f"{user.tasks_url}/{tasks[0]['id']}"
    responses = await asyncio.gather(*(client.delete(url, headers=user.headers) for _ in range(10)))
    assert [r.status_code for r in responses] == [204] * 10
    async with app.state.runtime.db.session(write=False) as session:
        stored = (await session.exec(select(User).where(User.id == user.id))).one()
    assert stored.task_count == 2


async def test_deleting_a_user_deletes_their_tasks(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    await create(client, user)
    async with app.state.runtime.db.session(write=True) as session:
        await session.delete((await session.exec(select(User).where(User.id == user.id))).one())
    async with app.state.runtime.db.session(write=False) as session:
        assert (await session.exec(select(Task).where(Task.user_id == user.id))).all() == []


async def test_a_new_user_sees_an_empty_list(client: httpx.AsyncClient) -> None:
    user = await sign_up(client)
    page = (await client.get(user.tasks_url, headers=user.headers)).json()
    assert page == {"items": [], "total": 0, "limit": 20, "offset": 0, "next_cursor": None}


@pytest.mark.parametrize(
    ("title", "accepted"),
    [("\x1d", True), ("\x85x", True), ("\u3000", False), ("\ufeff \t", False), ("\u2028", False)],
)
async def test_titles_are_trimmed_as_the_documented_pattern_reads_them(
    client: httpx.AsyncClient, user: SignedUp, title: str, accepted: bool
) -> None:
    """JSON Schema's `\\s` (ECMAScript's) decides what counts as blank, not Python's isspace."""
    response = await client.post(user.tasks_url, json={"title": title}, headers=user.headers)
    if accepted:
        assert response.status_code == 201
        assert response.json()["title"] == title
    else:
        assert_problem(response, 400, "validation_error")
