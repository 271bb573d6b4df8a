"""Tags: the rows of `task_tags` that `tag=` filters and `GET /tags` counts by index, and the
counts themselves.

A task shows its tags from its own `tags` column (the spellings, in order); `task_tags` holds
them folded (`tag_key`), one row per tag of each *live* task, led by the owner: the list's
`tag=` is a range of (user_id, key) per tag, and the counts are one ordered scan of the owner's
rows, neither touching the tasks. So the rows follow the task: written with its tags, deleted
when it goes to the trash, written again when it comes back. Every function here runs inside
the transaction of the task's own write.
"""

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import delete, func, insert, select

from backend.db import UnitOfWork, Work
from backend.models import TASK_TAGS, TASKS
from backend.schemas import TagCount, tag_key
from backend.services.task_statements import OWNER, owned

tt = TASK_TAGS.c
t = TASKS.c
_TASK = sa.bindparam("task_id", type_=tt.task_id.type)

FORGET = delete(TASK_TAGS).where(tt.user_id == OWNER, tt.task_id == _TASK)
# Before the completed tasks go to the trash (`clear_completed`).
FORGET_COMPLETED = delete(TASK_TAGS).where(
    tt.user_id == OWNER, tt.task_id.in_(select(t.id).where(owned(t.completed == sa.true())))
)
COUNTS = (
    select(tt.key, func.min(tt.name).label("name"), func.count().label("count"))
    .where(tt.user_id == OWNER)
    .group_by(tt.key)
    .order_by(tt.key)
)


@cache
def _insert(count: int) -> sa.Insert:
    """The rows of `count` tags of one task (1 to 20: one statement for each count)."""
    return insert(TASK_TAGS).values(
        [
            {
                "user_id": OWNER,
                "task_id": _TASK,
                "key": sa.bindparam(f"key_{index}", type_=tt.key.type),
                "name": sa.bindparam(f"name_{index}", type_=tt.name.type),
            }
            for index in range(count)
        ]
    )


# The number of live tasks with one tag (bound as `tag_0`): its rows, one per live task (a task
# has each key once), an index-only range; the list's total when that tag is its only filter.
TAGGED = select(func.count().label("total")).where(
    tt.user_id == OWNER, tt.key == sa.bindparam("tag_0")
)


def having_tag(index: int) -> sa.ColumnElement[bool]:
    """The list's filter for its `index`-th tag (bound as `tag_<index>`, folded)."""
    return t.id.in_(
        select(tt.task_id).where(tt.user_id == OWNER, tt.key == sa.bindparam(f"tag_{index}"))
    )


def filter_params(tags: list[str]) -> dict[str, str]:
    return {f"tag_{index}": tag_key(tag) for index, tag in enumerate(tags)}


async def remember(work: Work, owner_id: str, task_id: Any, tags: list[str]) -> None:
    """Write the rows of a live task's tags (it has none yet)."""
    if not tags:
        return
    params: dict[str, Any] = {"owner_id": owner_id, "task_id": task_id}
    for index, tag in enumerate(tags):
        params[f"key_{index}"] = tag_key(tag)
        params[f"name_{index}"] = tag
    await work.run(_insert(len(tags)), params)


async def forget(work: Work, owner_id: str, task_id: Any) -> None:
    """Delete the rows of a task's tags (it changes them, or goes to the trash)."""
    await work.run(FORGET, {"owner_id": owner_id, "task_id": task_id})


async def replace(work: Work, owner_id: str, task_id: Any, tags: list[str]) -> None:
    await forget(work, owner_id, task_id)
    await remember(work, owner_id, task_id, tags)


async def forget_completed(work: Work, owner_id: str) -> None:
    await work.run(FORGET_COMPLETED, {"owner_id": owner_id})


async def tag_counts(unit: UnitOfWork, owner_id: str) -> list[TagCount]:
    """Every tag of the owner's live tasks with how many have it, by name ignoring case."""
    rows = await (await unit.read()).rows(COUNTS, {"owner_id": owner_id})
    return [TagCount(name=row["name"], count=row["count"]) for row in rows]
