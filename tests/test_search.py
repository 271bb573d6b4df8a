"""Search (`q`): the same tasks on both databases, those Python finds (`q.casefold()` in the
folded title or description), through the search index, which follows every write."""

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.models import TASKS, utcnow
from backend.schemas import TaskSort, TaskStatus
from backend.services.positions import rebalanced_key
from backend.services.task_lists import (
    After,
    Search,
    after_statement,
    list_statements,
    text_search,
)
from tests.conftest import SignedUp, sign_up
from tests.helpers import create, engine_of, plan, vacuum

LONG = "Lorem ipsum dolor sit amet, consectetur adipiscing elit; " * 8
CORPUS: list[tuple[str, str | None]] = [
    ("Straße fegen", "mit dem BESEN"),
    ("STRASSE 5", None),
    ("ẞ capital sharp", "GROẞ und groß"),
    ("İstanbul trip", "\u0131slak I\u011fd\u0131r"),  # U+0131: dotless i
    ("ΟΔΟΣ", "Ὀδυσσεύς ΣΑΣ"),
    ("café au lait", "cafe\u0301 combining"),
    ("emoji 😀🎉 party", "🎉🎉🎉"),
    ("漢字テスト", "日本語の説明"),
    ("100% done", "50%_off"),
    ("snake_case names", "back\\slash"),
    ("glob *star* ?mark", "[brackets] and ]close["),
    ("quotes 'single' \"double\"", "it's"),
    ("abc*漢字 mix", "d[漢字]?"),
    ("plumber call", None),
    ("call the", "plumber tomorrow"),
    ("ﬁle ligature", "Kelvin \u212a sign"),
    ("a", "ab"),
    ("x" * 200, ""),
    ("long", LONG),
    ("line", "one\ntwo"),
]
QUERIES = [
    # one character
    "s", "ß", "%", "_", "\\", "*", "?", "[", "]", "'", "😀", "漢", "é", "\u0301", "k", "\u0131",
    # two
    "ss", "ab", "σς", "50", "%_", "漢字", "fi", "xx", "e\u0301",
    # three and more
    "strasse", "STRASSE", "straße", "groß", "GROSS", "ss c", "İstanbul", "ISTANBUL", "\u0131slak",
    "ΟΔΟΣ", "οδος", "ὀδυσσεύς", "σας", "café", "cafe\u0301", "afé", "😀🎉", "🎉🎉🎉", "漢字テ",
    "日本語", "100%", "0%_", "_case", "k\\s", "*star*", "?mark", "[brackets]", "]close[",
    "s] a", "abc*漢字", "bc*漢", "d[漢", "[漢字]?", "'single'", "\"double\"", "it's", "plumber",
    "the plumber", "theplumber", "call the plumber", "callthe", "ﬁle", "FILE", "kelvin k",
    "nowhere", "e one", "one\ntwo", "x" * 3, "x" * 200, "x" * 199 + "y", LONG[100:160],
    "elit; lorem",
]  # fmt: skip
TRASHED = [("plumber in the trash", "straße"), ("Straße im Papierkorb", None)]


def found_by_python(tasks: list[dict[str, Any]], q: str) -> set[str]:
    folded = q.casefold()
    return {
        task["id"]
        for task in tasks
        if folded in task["title"].casefold()
        or (task["description"] is not None and folded in task["description"].casefold())
    }


async def searched(client: httpx.AsyncClient, user: SignedUp, q: str) -> tuple[set[str], int]:
    response = await client.get(user.tasks_url, params={"q": q, "limit": 100}, headers=user.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    return {task["id"] for task in page["items"]}, page["total"]


async def test_search_finds_what_python_finds_on_both_databases(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    # Both ways of searching SQLite are tried (PostgreSQL's is one statement).
    assert {text_search(q, "sqlite")[0] for q in QUERIES} == set(Search)
    tasks = [
        await create(client, user, title=title, description=description)
        for title, description in CORPUS
    ]
    for title, description in CORPUS:
        await create(client, other_user, title=title, description=description)
    for title, description in TRASHED:
        trashed = await create(client, user, title=title, description=description)
        response = await client.delete(f"{user.tasks_url}/{trashed['id']}", headers=user.headers)
        assert response.status_code == 204

    for q in QUERIES:
        expected = found_by_python(tasks, q)
        assert await searched(client, user, q) == (expected, len(expected)), q


async def test_search_pages_by_cursor_through_the_index(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    wanted = {(await create(client, user, title=f"plumber {n}"))["id"] for n in range(5)}
    wanted.add((await create(client, user, title="x", description="a PLUMBER"))["id"])
    await create(client, user, title="electrician")
    for sort in ("title", "-created_at"):
        seen: list[str] = []
        params: dict[str, Any] = {"q": "plumber", "limit": 2, "sort": sort}
        while True:
            page = (await client.get(user.tasks_url, params=params, headers=user.headers)).json()
            assert page["total"] == len(wanted)
            seen += [task["id"] for task in page["items"]]
            if page["next_cursor"] is None:
                break
            params = {"cursor": page["next_cursor"]}
        assert sorted(seen) == sorted(wanted), sort


async def assert_index_matches_the_tasks(engine: AsyncEngine) -> None:
    """SQLite: FTS5 compares its index with `tasks` itself (an error when they differ)."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO tasks_search (tasks_search, rank) VALUES ('integrity-check', 1)"
        )


async def test_search_follows_edits_trash_restores_and_purges(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    engine = engine_of(app)

    async def finds(q: str) -> set[str]:
        found, total = await searched(client, user, q)
        assert total == len(found)
        await assert_index_matches_the_tasks(engine)
        return found

    task = await create(client, user, title="Fix the sink", description="call a plumber")
    url = f"{user.tasks_url}/{task['id']}"
    assert await finds("plumber") == await finds("SINK") == {task["id"]}

    replaced = await client.put(url, json={"title": "Fix the boiler"}, headers=user.headers)
    assert replaced.status_code == 200
    assert await finds("plumber") == await finds("sink") == set()
    assert await finds("boiler") == {task["id"]}

    edited = await client.patch(url, json={"description": "An ELECTRICIAN"}, headers=user.headers)
    assert edited.status_code == 200
    assert await finds("electrician") == {task["id"]}
    completed = await client.patch(f"{url}/complete", headers=user.headers)
    assert completed.status_code == 200
    assert await finds("electrician") == {task["id"]}

    assert (await client.delete(url, headers=user.headers)).status_code == 204
    assert await finds("boiler") == set()
    restore = f"/api/{user.id}/trash/{task['id']}/restore"
    assert (await client.post(restore, headers=user.headers)).status_code == 200
    assert await finds("boiler") == {task["id"]}

    assert (await client.delete(url, headers=user.headers)).status_code == 204
    purge = await client.delete(f"/api/{user.id}/trash/{task['id']}", headers=user.headers)
    assert purge.status_code == 204
    assert await finds("boiler") == set()
    again = await create(client, user, title="Fix the boiler")
    assert await finds("boiler") == {again["id"]}

    await create(client, user, title="one more boiler")
    trashed = await create(client, user, title="a trashed boiler")
    await client.delete(f"{user.tasks_url}/{trashed['id']}", headers=user.headers)
    emptied = await client.delete(f"/api/{user.id}/trash", headers=user.headers)
    assert emptied.status_code == 204
    assert len(await finds("boiler")) == 2


async def test_a_deleted_account_leaves_nothing_in_the_search_index(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp
) -> None:
    for owner in (user, other_user):
        await create(client, owner, title="Fix the boiler", description="plumber")
    deleted = await client.request(
        "DELETE", "/api/auth/me", headers=user.headers, json={"password": user.password}
    )
    assert deleted.status_code == 204
    engine = engine_of(app)
    await assert_index_matches_the_tasks(engine)
    if engine.dialect.name == "sqlite":
        async with engine.connect() as connection:
            result = await connection.exec_driver_sql(
                "SELECT count(*) FROM tasks_search WHERE title_folded GLOB '*boiler*'"
            )
            assert result.scalar_one() == 1
    assert len((await searched(client, other_user, "plumber"))[0]) == 1


# --- the index is used, by a user with 10,000 tasks -------------------------------------------

COUNT = 10_000
PLUMBERS = 100  # one task in a hundred: 50 by title, 50 by description


async def seed(engine: AsyncEngine, owner_id: str) -> None:
    start = utcnow()
    tasks = [
        {
            "id": uuid.uuid4(),
            "user_id": owner_id,
            "title": title,
            "title_folded": title.casefold(),
            "description": description,
            "description_folded": description.casefold(),
            "completed": False,
            "priority": "medium",
            "created_at": start + timedelta(milliseconds=n),
            "updated_at": start + timedelta(milliseconds=n),
            "tags": [],
            "position": rebalanced_key(COUNT - 1 - n, 3),
        }
        for n in range(COUNT)
        for title, description in [
            (
                f"Call the plumber, job {n}" if n % 200 == 0 else f"Task number {n}",
                f"the plumber said {n}" if n % 200 == 100 else f"details of task {n}",
            )
        ]
    ]
    async with engine.begin() as connection:
        for offset in range(0, COUNT, 2000):
            await connection.execute(sa.insert(TASKS), tasks[offset : offset + 2000])
    await vacuum(engine)


# PostgreSQL: nine more users with 10,000 tasks each, the owner's rows a tenth of the table (as in
# tests/test_tag_indexes.py), with plumbers of their own.
_BULK_USERS = (
    "INSERT INTO users (id, provider, email, task_count, revision, sync_horizon, time_zone, "
    "created_at, updated_at) SELECT 'bulk-' || u, 'local', 'bulk-' || u || '@example.com', "
    "10000, 0, 0, 'UTC', now(), now() FROM generate_series(1, 9) AS u"
)
# One user's at a time: within the service's statement timeout.
_BULK_TASKS = (
    "INSERT INTO tasks (id, user_id, title, title_folded, description, description_folded, "
    "completed, priority, created_at, updated_at, tags, position, version, revision) "
    "SELECT gen_random_uuid(), $1, 'Task ' || n, 'task ' || n, d.text, d.text, false, 2, now(), "
    "now(), '[]', 'a0', 1, 0 FROM generate_series(1, 10000) AS n, LATERAL "
    "(SELECT CASE WHEN n % 100 = 0 THEN 'the plumber ' ELSE 'details ' END || n) AS d(text)"
)


def assert_searches_by_index(text: str, dialect: str) -> None:
    if dialect == "postgresql":
        assert "Bitmap Index Scan on ix_tasks_user_title_trgm" in text, text
        assert "Bitmap Index Scan on ix_tasks_user_description_trgm" in text, text
        assert "Seq Scan" not in text, text
    else:
        assert "SCAN tasks_search VIRTUAL TABLE INDEX" in text, text
        assert "SCAN tasks\n" not in text + "\n", text
        assert "SCAN tasks USING" not in text, text


@pytest.mark.parametrize("sort", [TaskSort.created_at_desc, TaskSort.title_asc])
async def test_a_heavy_users_search_reads_the_search_index(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp, sort: TaskSort
) -> None:
    engine = engine_of(app)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        async with engine.begin() as connection:
            await connection.exec_driver_sql(_BULK_USERS)
        for n in range(1, 10):
            async with engine.begin() as connection:
                await connection.exec_driver_sql(_BULK_TASKS, (f"bulk-{n}",))
    else:
        await seed(engine, (await sign_up(client)).id)
    await seed(engine, user.id)

    search, search_params = text_search("Plumber", dialect)
    shape = (TaskStatus.all, search, False, False, False, None, 0, sort)
    count, page = list_statements(*shape)
    params = {**search_params, "owner_id": user.id, "limit": 21, "offset": 0}
    for statement in (count, page):
        assert_searches_by_index(await plan(engine, statement, params), dialect)
    # A cursor's page, after a position (bound as the driver takes it).
    keyed = after_statement(*shape, After.KEYED)
    moment, task_id = utcnow(), uuid.uuid4()
    if dialect == "postgresql":
        after: dict[str, Any] = {"after_key": moment, "after_id": task_id}
    else:
        after = {"after_key": moment.replace(tzinfo=None).isoformat(" "), "after_id": task_id.hex}
    if sort is TaskSort.title_asc:
        after["after_key"] = "call the plumber, job 5000"
    assert_searches_by_index(await plan(engine, keyed, params | after), dialect)

    response = await client.get(
        user.tasks_url, params={"q": "PLUMBER", "limit": 5, "sort": sort}, headers=user.headers
    )
    assert response.json()["total"] == PLUMBERS
