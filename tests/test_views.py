"""The list's views (`view=today|overdue|upcoming|no_date`), computed from the date in the user's
time zone or in `tz=`, with the clock injected; on both databases."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.infrastructure import get_clock
from tests.conftest import SignedUp
from tests.helpers import assert_problem, create

# 23:30 on 3 December in Kiritimati (UTC+14), when it is 22:30 on 2 December in Pago Pago
# (UTC-11); and 25 hours later, 23:30 on 3 December in Pago Pago, 00:30 on 5 December in
# Kiritimati.
KIRITIMATI_2330 = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
PAGO_PAGO_2330 = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)


@pytest.fixture
def set_now(app: FastAPI) -> Callable[[datetime], None]:
    """Make the app's clock say `instant`."""

    def set_to(instant: datetime) -> None:
        app.dependency_overrides[get_clock] = lambda: lambda: instant

    return set_to


async def viewed(client: httpx.AsyncClient, user: SignedUp, **params: Any) -> list[str]:
    response = await client.get(
        user.tasks_url, params={"sort": "due_date", **params}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()["items"]]


async def seed_days(client: httpx.AsyncClient, user: SignedUp) -> None:
    for day in ("02", "03", "04", "05"):
        await create(client, user, title=f"Dec {day}", due_date=f"2026-12-{day}")
    await create(client, user, title="Dec 02 done", due_date="2026-12-02", completed=True)
    await create(client, user, title="undated")


async def set_time_zone(client: httpx.AsyncClient, user: SignedUp, zone: str) -> None:
    response = await client.patch("/api/auth/me", json={"time_zone": zone}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["time_zone"] == zone


async def test_today_at_2330_in_kiritimati_and_pago_pago_differs_and_both_are_right(
    client: httpx.AsyncClient, user: SignedUp, set_now: Callable[[datetime], None]
) -> None:
    await seed_days(client, user)
    set_now(KIRITIMATI_2330)
    await set_time_zone(client, user, "Pacific/Kiritimati")
    assert await viewed(client, user, view="today") == ["Dec 03"]
    assert await viewed(client, user, view="overdue") == ["Dec 02"]
    assert await viewed(client, user, view="upcoming") == ["Dec 04", "Dec 05"]
    await set_time_zone(client, user, "Pacific/Pago_Pago")
    assert sorted(await viewed(client, user, view="today")) == ["Dec 02", "Dec 02 done"]
    assert await viewed(client, user, view="overdue") == []
    assert await viewed(client, user, view="upcoming") == ["Dec 03", "Dec 04", "Dec 05"]

    set_now(PAGO_PAGO_2330)
    assert await viewed(client, user, view="today") == ["Dec 03"]
    assert await viewed(client, user, view="overdue") == ["Dec 02"]
    await set_time_zone(client, user, "Pacific/Kiritimati")
    assert await viewed(client, user, view="today") == ["Dec 05"]
    assert await viewed(client, user, view="overdue") == ["Dec 02", "Dec 03", "Dec 04"]
    assert await viewed(client, user, view="upcoming") == []


async def test_tz_overrides_the_user_s_time_zone_for_one_request(
    client: httpx.AsyncClient, user: SignedUp, set_now: Callable[[datetime], None]
) -> None:
    await seed_days(client, user)
    set_now(KIRITIMATI_2330)
    assert await viewed(client, user, view="today") == ["Dec 03"]  # UTC: 09:30 on the 3rd
    assert await viewed(client, user, view="today", tz="Pacific/Kiritimati") == ["Dec 03"]
    assert sorted(await viewed(client, user, view="today", tz="Pacific/Pago_Pago")) == [
        "Dec 02",
        "Dec 02 done",
    ]
    assert await viewed(client, user, view="no_date") == ["undated"]


@pytest.mark.parametrize(
    "params",
    [
        {"view": "tomorrow"},
        {"view": "today", "tz": "Mars/Olympus_Mons"},
        {"view": "today", "tz": "pacific/kiritimati"},
        {"tz": ""},
    ],
)
async def test_an_unknown_view_or_zone_is_400(
    client: httpx.AsyncClient, user: SignedUp, params: dict[str, str]
) -> None:
    response = await client.get(user.tasks_url, params=params, headers=user.headers)
    assert_problem(response, 400, "validation_error")


async def test_views_combine_with_filters_sorts_and_paging(
    client: httpx.AsyncClient, user: SignedUp, set_now: Callable[[datetime], None]
) -> None:
    set_now(KIRITIMATI_2330)
    for n in range(5):
        await create(
            client, user, title=f"today {n}", due_date="2026-12-03", tags=["work"] if n % 2 else []
        )
    await create(client, user, title="today done", due_date="2026-12-03", completed=True)
    await create(client, user, title="tomorrow", due_date="2026-12-04", tags=["work"])
    assert await viewed(client, user, view="today", tag="work", sort="title") == [
        "today 1",
        "today 3",
    ]
    assert await viewed(client, user, view="today", status="completed") == ["today done"]
    assert await viewed(client, user, view="today", sort="-title", offset=4, limit=1) == ["today 1"]
    assert await viewed(client, user, view="today", sort="position", limit=2) == [
        "today done",
        "today 4",
    ]
    seen: list[str] = []
    params: dict[str, Any] = {"view": "today", "tz": "Pacific/Kiritimati", "limit": 2}
    first = None
    while True:
        response = await client.get(user.tasks_url, params=params, headers=user.headers)
        page = response.json()
        first = first or page
        seen += [task["title"] for task in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"cursor": page["next_cursor"]}
    assert sorted(seen) == sorted([f"today {n}" for n in range(5)] + ["today done"])
    for other in ({"view": "upcoming"}, {"tz": "UTC"}):
        response = await client.get(
            user.tasks_url,
            params={"cursor": first["next_cursor"], **other},
            headers=user.headers,
        )
        assert_problem(response, 400, "invalid_cursor")


async def test_the_list_etag_of_a_view_changes_with_the_day(
    client: httpx.AsyncClient, user: SignedUp, set_now: Callable[[datetime], None]
) -> None:
    await create(client, user, title="due", due_date="2026-12-03")
    set_now(KIRITIMATI_2330)
    params = {"view": "today", "tz": "Pacific/Pago_Pago"}
    first = await client.get(user.tasks_url, params=params, headers=user.headers)
    etag = first.headers["etag"]
    again = await client.get(
        user.tasks_url, params=params, headers={**user.headers, "If-None-Match": etag}
    )
    assert again.status_code == 304
    set_now(PAGO_PAGO_2330)
    later = await client.get(
        user.tasks_url, params=params, headers={**user.headers, "If-None-Match": etag}
    )
    assert later.status_code == 200
    assert [task["title"] for task in later.json()["items"]] == ["due"]
