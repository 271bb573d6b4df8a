"""The routes that check the token inside their own statements (create, get, replace, patch,
complete: `routing.checks_token_in_statements`) read no account first; a revoked token, or the
token of a deleted account, is still 401 on each of them, before anything else the route would
answer (404, 409, 412, 400), on both engines."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import SignedUp, WithSettings
from tests.helpers import assert_problem, bearer, create, login

Call = Callable[[httpx.AsyncClient, SignedUp, str, dict[str, str]], Awaitable[httpx.Response]]
MISSING = "00000000-0000-4000-8000-000000000000"


def _calls(task_id: str) -> dict[str, Call]:
    """Each route, on an existing task and on a missing one, with a good and a bad body."""

    calls: dict[str, Any] = {
        "create": lambda c, u, _, h: c.post(u.tasks_url, json={"title": "x"}, headers=h),
        "create, invalid body": lambda c, u, _, h: c.post(u.tasks_url, json={}, headers=h),
        "get": lambda c, u, t, h: c.get(f"{u.tasks_url}/{t}", headers=h),
        "replace": lambda c, u, t, h: c.put(f"{u.tasks_url}/{t}", json={"title": "y"}, headers=h),
        "replace, stale If-Match": lambda c, u, t, h: c.put(
            f"{u.tasks_url}/{t}", json={"title": "y"}, headers={**h, "If-Match": '"99"'}
        ),
        "patch": lambda c, u, t, h: c.patch(
            f"{u.tasks_url}/{t}",
            json={"priority": "high"},
            headers={**h, "Content-Type": "application/merge-patch+json"},
        ),
        "complete": lambda c, u, t, h: c.patch(f"{u.tasks_url}/{t}/complete", headers=h),
        "complete, invalid body": lambda c, u, t, h: c.patch(
            f"{u.tasks_url}/{t}/complete", json={"completed": "maybe"}, headers=h
        ),
    }
    return calls


ROUTES = list(_calls(MISSING))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("which", ["existing", "missing"])
async def test_a_revoked_token_is_401_whatever_else_the_route_would_say(
    client: httpx.AsyncClient, user: SignedUp, route: str, which: str
) -> None:
    task = await create(client, user)
    old = user.headers
    response = await client.post("/api/auth/logout-all", headers=old)
    assert response.status_code == 204, response.text
    task_id = task["id"] if which == "existing" else MISSING
    answer = await _calls(task_id)[route](client, user, task_id, old)
    assert_problem(answer, 401, "invalid_token")
    # Nothing was written with the revoked token.
    fresh = bearer((await login(client, user))["access_token"])
    listed = (await client.get(user.tasks_url, headers=fresh)).json()
    assert [item["id"] for item in listed["items"]] == [task["id"]]
    assert listed["items"][0]["version"] == 1


@pytest.mark.parametrize("route", ["create", "get", "replace", "complete"])
async def test_the_token_of_a_deleted_account_is_401(
    client: httpx.AsyncClient, user: SignedUp, route: str
) -> None:
    task = await create(client, user)
    deleted = await client.request(
        "DELETE", "/api/auth/me", json={"password": user.password}, headers=user.headers
    )
    assert deleted.status_code == 204, deleted.text
    answer = await _calls(task["id"])[route](client, user, task["id"], user.headers)
    assert_problem(answer, 401, "invalid_token")


async def test_refusals_with_a_good_token_stand(
    with_settings: WithSettings,
) -> None:
    """The account check after a refusal passes: the route's own answer is kept."""
    async with with_settings(max_tasks_per_user=1) as (client, user):
        task = await create(client, user)
        calls = _calls(MISSING)
        assert_problem(await calls["get"](client, user, MISSING, user.headers), 404, "not_found")
        stale = await _calls(task["id"])["replace, stale If-Match"](
            client, user, task["id"], user.headers
        )
        assert_problem(stale, 412, "precondition_failed")
        full = await calls["create"](client, user, MISSING, user.headers)
        assert_problem(full, 409, "too_many_tasks")
        invalid = await calls["complete, invalid body"](client, user, task["id"], user.headers)
        assert_problem(invalid, 400, "validation_error")
