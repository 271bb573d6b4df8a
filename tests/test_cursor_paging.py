"""Paging by cursor, on both databases: the task list under every shape of query and the trash
give exactly what paging by offset gives when nothing changes; a cursor is refused (400
`invalid_cursor`) when malformed, of another kind or query, or sent with `offset`; and, the
acceptance property, a walk by cursor while others insert, change and delete never repeats nor
skips a task that stayed unchanged through the walk."""

import base64
import random
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.schemas import TaskSort
from tests.conftest import SignedUp, sign_up
from tests.helpers import assert_problem, create

TITLES = ["alpha", "Beta", "gamma", "Alpha", "beta two", "ALPHA"]
DUE_DATES = [None, None, "2026-12-01", "2026-12-24", "2027-03-03"]
# Shapes of query: a filter of each kind, and none.
SHAPES = [
    {},
    {"status": "pending"},
    {"status": "completed", "priority": "high"},
    {"q": "alpha"},
    {"due_after": "2026-12-02"},
    {"due_before": "2027-01-01", "status": "pending"},
]


async def page_of(
    client: httpx.AsyncClient, user: SignedUp, path: str = "tasks", /, **params: Any
) -> dict[str, Any]:
    response = await client.get(f"/api/{user.id}/{path}", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def walk(
    client: httpx.AsyncClient, user: SignedUp, path: str = "tasks", /, **params: Any
) -> list[dict[str, Any]]:
    """Every page from the first (asked with `params`) on, by cursor; their items."""
    page = await page_of(client, user, path, **params)
    items = list(page["items"])
    while page["next_cursor"] is not None:
        assert len(page["items"]) == page["limit"]
        page = await page_of(client, user, path, cursor=page["next_cursor"])
        assert page["offset"] == len(items)
        items += page["items"]
    return items


async def tasks_with_ties(client: httpx.AsyncClient, user: SignedUp, count: int) -> None:
    rng = random.Random(count)
    for _ in range(count):
        task = await create(
            client,
            user,
            title=rng.choice(TITLES),
            priority=rng.choice(["low", "medium", "high"]),
            due_date=rng.choice(DUE_DATES),
            completed=rng.random() < 0.4,
        )
        if rng.random() < 0.3:  # updated_at apart from created_at
            await client.patch(f"{user.tasks_url}/{task['id']}/complete", headers=user.headers)


async def test_paging_by_cursor_gives_the_offset_listing_under_every_shape(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    await tasks_with_ties(client, user, 23)
    for sort in TaskSort:
        for shape in SHAPES:
            query = {**shape, "sort": sort.value}
            everything = await page_of(client, user, **query, limit=100)
            assert everything["next_cursor"] is None
            by_cursor = await walk(client, user, **query, limit=4)
            assert ids(by_cursor) == ids(everything["items"]), query
            assert by_cursor == everything["items"]


async def test_every_page_that_has_more_gives_a_cursor_an_offset_page_too(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    await tasks_with_ties(client, user, 9)
    everything = ids((await page_of(client, user, limit=100))["items"])
    second = await page_of(client, user, limit=3, offset=3)
    assert ids(second["items"]) == everything[3:6] and second["next_cursor"] is not None
    third = await page_of(client, user, cursor=second["next_cursor"])  # switching to cursors
    assert ids(third["items"]) == everything[6:9]
    assert (third["offset"], third["limit"], third["total"]) == (6, 3, 9)
    assert third["next_cursor"] is None  # nothing after it: no cursor
    last = await page_of(client, user, limit=3, offset=6)
    assert last["next_cursor"] is None
    # A cursor remembers the limit; `limit` changes it.
    bigger = await page_of(client, user, cursor=second["next_cursor"], limit=2)
    assert ids(bigger["items"]) == everything[6:8] and bigger["limit"] == 2
    rest = await page_of(client, user, cursor=bigger["next_cursor"])
    assert ids(rest["items"]) == everything[8:] and rest["limit"] == 2
    assert (await page_of(client, user, offset=9))["next_cursor"] is None
    empty = await sign_up(client)
    assert (await page_of(client, empty))["next_cursor"] is None


async def test_a_cursor_with_the_same_filters_is_accepted_and_other_ones_are_400(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    await tasks_with_ties(client, user, 12)
    query: dict[str, Any] = {"status": "pending", "sort": "-priority", "q": "A", "limit": 2}
    first = await page_of(client, user, **query)
    cursor = first["next_cursor"]
    assert cursor is not None
    alone = await page_of(client, user, cursor=cursor)
    assert await page_of(client, user, **query, cursor=cursor) == alone
    assert await page_of(client, user, status="pending", cursor=cursor) == alone
    for other in (
        {"status": "all"},
        {"status": "completed"},
        {"sort": "priority"},
        {"sort": "-created_at"},  # the default, but not this cursor's sort
        {"q": "beta"},
        {"priority": "low"},
        {"due_before": "2027-01-01"},
        {"offset": "0"},
        {"offset": "2"},
    ):
        response = await client.get(
            user.tasks_url, params={"cursor": cursor, **other}, headers=user.headers
        )
        assert_problem(response, 400, "invalid_cursor")


def _encoded(fields: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()


def _forged(**changes: Any) -> str:
    """A task-list cursor (the default list, after some task), with some fields changed."""
    fields = {
        "v": 1,
        "k": "tasks",
        "f": {},
        "l": 20,
        "o": 20,
        "a": "2026-11-26T20:22:38.427000+00:00",
        "i": "3f0c8a526d1e4b7a9c2f8e5d4a3b2c1d",
    }
    return _encoded({**fields, **changes})


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "not base64 !",
        "%%%",
        _encoded([1, 2]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _forged(v=2),
        _forged(k="changes"),
        _forged(k="trash"),
        _forged(f={"sort": "colour"}),
        _forged(f={"status": "pending", "unknown": 1}),
        _forged(f={"due_after": "2027-01-02", "due_before": "2027-01-01"}),
        _forged(f=[]),
        _forged(l=0),
        _forged(l=101),
        _forged(l="20"),
        _forged(o=-1),
        _forged(o=True),
        _forged(a=None),  # created_at is never missing
        _forged(a="2026-11-26"),  # not a timestamp
        _forged(a="2026-11-26T20:22:38"),  # no zone
        _forged(a=12),
        _forged(f={"sort": "priority"}, a="urgent"),
        _forged(f={"sort": "due_date"}, a="2026-13-01"),
        _forged(f={"sort": "title"}, a=["alpha"]),
        _forged(i="zz" * 16),
        _forged(i="3f0c8a52-6d1e-4b7a-9c2f-8e5d4a3b2c1d"),
        _forged(i=None),
    ],
)
async def test_a_malformed_cursor_is_400_invalid_cursor(
    client: httpx.AsyncClient, user: SignedUp, cursor: str
) -> None:
    response = await client.get(user.tasks_url, params={"cursor": cursor}, headers=user.headers)
    assert_problem(response, 400, "invalid_cursor")


async def test_a_cursor_of_another_kind_is_400_everywhere(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    for _ in range(3):
        task = await create(client, user)
        await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
        await create(client, user)
    list_cursor = (await page_of(client, user, limit=1))["next_cursor"]
    trash_cursor = (await page_of(client, user, "trash", limit=1))["next_cursor"]
    feed_cursor = (await page_of(client, user, "changes"))["next"]
    assert list_cursor and trash_cursor and feed_cursor
    refused = [
        ("tasks", {"cursor": trash_cursor}),
        ("tasks", {"cursor": feed_cursor}),
        ("trash", {"cursor": list_cursor}),
        ("trash", {"cursor": feed_cursor}),
        ("trash", {"cursor": trash_cursor, "offset": "1"}),
        ("changes", {"since": list_cursor}),
        ("changes", {"since": trash_cursor}),
    ]
    for path, params in refused:
        response = await client.get(f"/api/{user.id}/{path}", params=params, headers=user.headers)
        assert_problem(response, 400, "invalid_cursor")
    # An empty cursor is no cursor at all: a bad query.
    response = await client.get(user.tasks_url, params={"cursor": ""}, headers=user.headers)
    assert_problem(response, 400, "validation_error")


async def test_the_list_etag_follows_the_cursor(client: httpx.AsyncClient, user: SignedUp) -> None:
    await tasks_with_ties(client, user, 5)
    first = await client.get(user.tasks_url, params={"limit": 2}, headers=user.headers)
    cursor = first.json()["next_cursor"]
    second = await client.get(user.tasks_url, params={"cursor": cursor}, headers=user.headers)
    assert second.status_code == 200 and second.headers["etag"] != first.headers["etag"]
    etag = second.headers["etag"]
    # The same page asked with the cursor's own filters is the same page: the same tag.
    same = await client.get(
        user.tasks_url,
        params={"cursor": cursor, "sort": "-created_at", "limit": 2},
        headers=user.headers,
    )
    assert same.headers["etag"] == etag and same.json() == second.json()
    # A larger page after the same cursor is another page.
    larger = await client.get(
        user.tasks_url, params={"cursor": cursor, "limit": 3}, headers=user.headers
    )
    assert larger.headers["etag"] != etag
    unchanged = await client.get(
        user.tasks_url,
        params={"cursor": cursor},
        headers={**user.headers, "If-None-Match": etag},
    )
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag
    await create(client, user)
    changed = await client.get(
        user.tasks_url,
        params={"cursor": cursor},
        headers={**user.headers, "If-None-Match": etag},
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    # A bad cursor is a 400 even to a condition that matches anything.
    bad = await client.get(
        user.tasks_url,
        params={"cursor": _forged(k="trash")},
        headers={**user.headers, "If-None-Match": "*"},
    )
    assert_problem(bad, 400, "invalid_cursor")


async def test_the_longest_cursor_is_accepted(client: httpx.AsyncClient, user: SignedUp) -> None:
    # The filters and the last title both travel in the cursor: the longest search and title,
    # of characters that JSON escapes, make it longer than 3 KiB.
    text = "\x01" * 199 + "a"
    for _ in range(3):
        await create(client, user, title=text, description=text)
    query = {"q": text, "sort": "-title", "status": "all", "due_after": "2000-01-01"}
    first = await page_of(client, user, q=text, sort="-title", limit=1)
    cursor = first["next_cursor"]
    assert cursor is not None and len(cursor) > 2048
    rest = await walk(client, user, q=text, sort="-title", limit=1)
    assert len(rest) == 3
    response = await client.get(
        user.tasks_url, params={**query, "cursor": cursor}, headers=user.headers
    )
    assert_problem(response, 400, "invalid_cursor")  # due_after is not the cursor's


# --- the trash ---------------------------------------------------------------------------------


async def test_the_trash_by_cursor_is_the_trash_by_offset(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    tasks = [await create(client, user, title=f"t{n}") for n in range(11)]
    for task in tasks:
        await client.delete(f"{user.tasks_url}/{task['id']}", headers=user.headers)
    everything = await page_of(client, user, "trash", limit=100)
    assert everything["total"] == 11 and everything["next_cursor"] is None
    by_cursor = await walk(client, user, "trash", limit=3)
    assert by_cursor == everything["items"]
    second = await page_of(client, user, "trash", limit=4, offset=4)
    third = await page_of(client, user, "trash", cursor=second["next_cursor"])
    assert ids(third["items"]) == ids(everything["items"])[8:]
    assert third["offset"] == 8 and third["limit"] == 4 and third["next_cursor"] is None
    for bad in ("x", _forged(k="trash", a="yesterday"), _forged(k="trash", l=0)):
        response = await client.get(
            f"/api/{user.id}/trash", params={"cursor": bad}, headers=user.headers
        )
        assert_problem(response, 400, "invalid_cursor")


async def test_the_trash_by_cursor_while_others_come_and_go(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    rng = random.Random(7)
    live = [(await create(client, user, title=f"t{n}"))["id"] for n in range(40)]
    for task_id in live[:25]:
        await client.delete(f"{user.tasks_url}/{task_id}", headers=user.headers)
    before = ids((await page_of(client, user, "trash", limit=100))["items"])
    live, trash, touched = live[25:], list(before), set()
    page = await page_of(client, user, "trash", limit=3)
    seen = ids(page["items"])
    while page["next_cursor"] is not None:
        for _ in range(rng.randint(0, 2)):
            action = rng.choice(["delete", "restore", "purge"])
            if action == "delete" and live:
                task_id = live.pop(rng.randrange(len(live)))
                await client.delete(f"{user.tasks_url}/{task_id}", headers=user.headers)
                trash.append(task_id)
            elif action in ("restore", "purge") and trash:
                task_id = trash.pop(rng.randrange(len(trash)))
                touched.add(task_id)
                if action == "restore":
                    url = f"/api/{user.id}/trash/{task_id}/restore"
                    assert (await client.post(url, headers=user.headers)).status_code == 200
                else:
                    url = f"/api/{user.id}/trash/{task_id}"
                    assert (await client.delete(url, headers=user.headers)).status_code == 204
        page = await page_of(client, user, "trash", cursor=page["next_cursor"])
        seen += ids(page["items"])
    unchanged = [task_id for task_id in before if task_id not in touched]
    assert [task_id for task_id in seen if task_id in set(unchanged)] == unchanged
    assert touched and len(unchanged) > 5


# --- the acceptance property: no task that stays unchanged is repeated or skipped --------------

FIELDS = st.fixed_dictionaries(
    {
        "title": st.sampled_from(TITLES),
        "priority": st.sampled_from(["low", "medium", "high"]),
        "due_date": st.sampled_from(DUE_DATES),
        "completed": st.booleans(),
    }
)
QUERIES = st.builds(
    lambda sort, limit, filters: {"sort": sort, "limit": limit, **filters},
    st.sampled_from([sort.value for sort in TaskSort]),
    st.integers(1, 4),
    st.sampled_from([{}, {}, *SHAPES[1:], {"status": "completed"}, {"priority": "medium"}]),
)
# What others do between two page fetches: create, patch some fields, toggle, delete.
CHANGES = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["create", "patch", "toggle", "delete"]),
            st.integers(0, 1000),  # which task (modulo how many are live)
            FIELDS,
            st.sets(st.sampled_from(["title", "priority", "due_date", "completed"]), min_size=1),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=12,
)


async def _apply(
    client: httpx.AsyncClient, user: SignedUp, live: list[str], change: tuple[Any, ...]
) -> None:
    action, pick, fields, names = change
    if action == "create" or not live:
        live.append((await create(client, user, **fields))["id"])
        return
    task_id = live[pick % len(live)]
    url = f"{user.tasks_url}/{task_id}"
    if action == "patch":
        patch = {name: fields[name] for name in names}
        assert (await client.patch(url, json=patch, headers=user.headers)).status_code == 200
    elif action == "toggle":
        assert (await client.patch(f"{url}/complete", headers=user.headers)).status_code == 200
    else:
        assert (await client.delete(url, headers=user.headers)).status_code == 204
        live.remove(task_id)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=st.lists(FIELDS, min_size=2, max_size=25), query=QUERIES, changes=CHANGES)
async def test_a_walk_by_cursor_never_repeats_or_skips_an_unchanged_task(
    client: httpx.AsyncClient,
    initial: list[dict[str, Any]],
    query: dict[str, Any],
    changes: list[list[tuple[Any, ...]]],
) -> None:
    user = await sign_up(client)
    for fields in initial:
        await create(client, user, **fields)
    everything = {"limit": 100, **{k: v for k, v in query.items() if k != "limit"}}
    before = {
        task["id"]: task["version"]
        for task in (await page_of(client, user, limit=100, sort="created_at"))["items"]
    }
    live = list(before)
    page = await page_of(client, user, **query)
    seen = ids(page["items"])
    pending = list(changes)
    pages = 1
    while page["next_cursor"] is not None:
        for change in pending.pop(0) if pending else []:
            await _apply(client, user, live, change)
        page = await page_of(client, user, cursor=page["next_cursor"])
        seen += ids(page["items"])
        pages += 1
        assert pages <= 200
    after = await page_of(client, user, **everything)
    versions = {task["id"]: task["version"] for task in after["items"]}
    unchanged = {task_id for task_id, version in before.items() if versions.get(task_id) == version}
    # The unchanged tasks that the list holds, in the list's order: each seen once, in order.
    expected = [task_id for task_id in ids(after["items"]) if task_id in unchanged]
    assert [task_id for task_id in seen if task_id in unchanged] == expected
