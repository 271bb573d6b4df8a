"""With 10,000 tasks for a user (and as many for another), `tag=` on the list and `GET /tags` read
`task_tags` by its index, never by scanning it: shown with the plans the databases choose
(PostgreSQL's EXPLAIN, after ANALYZE; SQLite's EXPLAIN QUERY PLAN) for the very statements the
service runs, and the answers checked."""

import uuid
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.models import TASK_TAGS, TASKS, utcnow
from backend.schemas import TaskSort, TaskStatus
from backend.services.positions import rebalanced_key
from backend.services.tags import COUNTS
from backend.services.task_lists import list_statements
from tests.conftest import SignedUp, sign_up
from tests.helpers import engine_of, plan, vacuum

COUNT = 10_000
# Every task has "common" and one of 50 others; one task in a hundred has "rare".
TAGS = [f"topic {n}" for n in range(50)]


async def seed(engine: AsyncEngine, owner_id: str) -> None:
    start = utcnow()
    tasks: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    for n in range(COUNT):
        task_id = uuid.uuid4()
        names = ["common", TAGS[n % 50], *(["Rare"] if n % 100 == 0 else [])]
        tasks.append(
            {
                "id": task_id,
                "user_id": owner_id,
                "title": f"Task {n}",
                "title_folded": f"task {n}",
                "completed": False,
                "priority": "medium",
                "created_at": start + timedelta(milliseconds=n),
                "updated_at": start + timedelta(milliseconds=n),
                "tags": names,
                "position": rebalanced_key(COUNT - 1 - n, 3),
            }
        )
        tags += [
            {"user_id": owner_id, "key": name.casefold(), "name": name, "task_id": task_id}
            for name in names
        ]
    async with engine.begin() as connection:
        for offset in range(0, COUNT, 2000):
            await connection.execute(sa.insert(TASKS), tasks[offset : offset + 2000])
        for offset in range(0, len(tags), 5000):
            await connection.execute(sa.insert(TASK_TAGS), tags[offset : offset + 5000])
    await vacuum(engine)


def assert_reads_task_tags_by_index(text: str, dialect: str) -> None:
    if dialect == "postgresql":
        assert "pk_task_tags" in text, text
        assert "Seq Scan on task_tags" not in text, text
        assert "Seq Scan on tasks" not in text, text
    else:
        assert "USING COVERING INDEX pk_task_tags" in text or "sqlite_autoindex_task_tags" in text
        assert "SCAN task_tags\n" not in text + "\n", text
        assert "SCAN tasks\n" not in text + "\n", text


# Nine more users with 10,000 tasks each (PostgreSQL): the owner's rows are a tenth of the
# tables, as they would be a tiny part of them in production. With the owner's rows half of a
# table, a scan of it is the cheaper plan, and PostgreSQL rightly takes it.
_BULK = (
    "INSERT INTO users (id, provider, email, task_count, revision, sync_horizon, time_zone, "
    "created_at, updated_at) SELECT 'bulk-' || u, 'local', 'bulk-' || u || '@example.com', "
    "10000, 0, 0, 'UTC', now(), now() FROM generate_series(1, 9) AS u",
    "INSERT INTO tasks (id, user_id, title, title_folded, completed, priority, created_at, "
    "updated_at, tags, position, version, revision) SELECT gen_random_uuid(), "
    "'bulk-' || (n % 9 + 1), 'Task', 'task', false, 2, now(), now(), '[]', 'a0', 1, 0 "
    "FROM generate_series(1, 90000) AS n",
    "INSERT INTO task_tags (user_id, key, name, task_id) SELECT user_id, tag, tag, id FROM tasks, "
    "LATERAL (VALUES ('common'), ('topic ' || (abs(hashtext(id::text)) % 50))) AS t(tag) "
    "WHERE user_id LIKE 'bulk-%'",
)


async def test_tag_lists_and_tag_counts_read_task_tags_by_its_index(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    engine = engine_of(app)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        async with engine.begin() as connection:
            for bulk in _BULK:
                await connection.exec_driver_sql(bulk)
    else:
        await seed(engine, (await sign_up(client)).id)
    await seed(engine, user.id)

    for tag, total in (("rare", 100), ("topic 7", 200)):
        count, page = list_statements(
            TaskStatus.all, None, False, False, False, None, 1, TaskSort.created_at_desc
        )
        params = {"owner_id": user.id, "tag_0": tag, "limit": 21, "offset": 0}
        for statement in (count, page):
            assert_reads_task_tags_by_index(await plan(engine, statement, params), dialect)
        response = await client.get(
            user.tasks_url, params={"tag": tag.upper(), "limit": 5}, headers=user.headers
        )
        assert response.json()["total"] == total

    text = await plan(engine, COUNTS, {"owner_id": user.id})
    assert_reads_task_tags_by_index(text, dialect)
    if dialect == "postgresql":
        assert "Index Only Scan using pk_task_tags" in text, text
    response = await client.get(f"/api/{user.id}/tags", headers=user.headers)
    counted = {row["name"]: row["count"] for row in response.json()}
    assert counted["common"] == COUNT
    assert counted["Rare"] == 100
    assert counted["topic 7"] == 200
    assert len(counted) == 52
