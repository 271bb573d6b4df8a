"""Manual order: where a new task goes (first), and moving a task before or after another.

A move writes the moved task alone: a key between its new neighbours' (`positions`). It runs in
a transaction that first takes the owner's next revision, which locks the owner's row, so moves
and creates of one owner never compute keys from neighbours that are changing meanwhile. When
no short key fits (`POSITION_MAX_LENGTH`), the owner's tasks are rebalanced first, with that
same revision: the move and the rebalance are one change in the feed.
"""

import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import func, select, update

from backend.db import UnitOfWork, Work
from backend.errors import NotFound, PreconditionFailed, ValidationFailed
from backend.models import TASKS, utcnow
from backend.schemas import TaskRead
from backend.services import positions
from backend.services import task_statements as q

t = TASKS.c
_NEIGHBOUR = select(t.id, t.position).where(q.owned(q.BY_ID))
_MOVED = sa.bindparam("moved_id", type_=t.id.type)
_ROW = sa.tuple_(t.position, t.id)
_AT = sa.tuple_(
    sa.bindparam("at_position", type_=t.position.type), sa.bindparam("at_id", type_=t.id.type)
)
# The task just before (after) a position, the moved task left out.
_PREVIOUS = (
    select(t.id, t.position)
    .where(q.owned(_ROW < _AT, t.id != _MOVED))
    .order_by(t.position.desc(), t.id.desc())
    .limit(1)
)
_NEXT = (
    select(t.id, t.position)
    .where(q.owned(_ROW > _AT, t.id != _MOVED))
    .order_by(t.position, t.id)
    .limit(1)
)
_LIVE_COUNT = select(func.count().label("total")).select_from(TASKS).where(q.owned())
_PLACE = (
    update(TASKS)
    .where(q.owned(q.BY_ID))
    .values(
        position=sa.bindparam("new_position", type_=t.position.type),
        version=t.version + 1,
        revision=sa.bindparam("revision", type_=sa.BigInteger),
        updated_at=q.NOW,
    )
    .returning(*q.COLUMNS)
)


async def _rows(work: Work, statement: Any, owner_id: str, **params: Any) -> list[dict[str, Any]]:
    return await work.rows(statement, {"owner_id": owner_id, **params})


async def rebalance(work: Work, owner_id: str, revision: int) -> None:
    """Give the owner's live tasks short, evenly spaced keys in their order (one revision)."""
    total: int = (await _rows(work, _LIVE_COUNT, owner_id))[0]["total"]
    statement = positions.rebalance_statement(positions.rebalance_width(total))
    await work.run(statement, {"owner_id": owner_id, "revision": revision})


async def first_position(
    work: Work, owner_id: str, revision: int, max_length: int, first: str | None
) -> str:
    """The key of a new task: before every live task of the owner, the first of which is at
    `first` (read in the transaction that took `revision`)."""
    for _ in range(2):
        key = positions.key_between(None, first)
        if key is not None and len(key) <= max_length:
            return key
        await rebalance(work, owner_id, revision)
        first = (await _rows(work, q.FIRST_POSITION, owner_id))[0]["position"]
    raise AssertionError("a rebalanced list always has room before its first task")


def _versions(if_match: str | None) -> set[str] | None:
    return None if if_match is None else set(if_match.split(","))


async def _beside(
    work: Work, owner_id: str, task_id: uuid.UUID, neighbour: dict[str, Any], before: bool
) -> dict[str, Any] | None:
    """The task just before (after) the neighbour, the moved task left out."""
    at = {"at_position": neighbour["position"], "at_id": neighbour["id"], "moved_id": task_id}
    rows = await _rows(work, _PREVIOUS if before else _NEXT, owner_id, **at)
    return rows[0] if rows else None


def _in_place(
    moved: dict[str, Any], neighbour: dict[str, Any], beside: dict[str, Any] | None, before: bool
) -> bool:
    """Whether the moved task is already right before (after) its neighbour."""
    own = (moved["position"], moved["id"])
    at = (neighbour["position"], neighbour["id"])
    other = None if beside is None else (beside["position"], beside["id"])
    if before:
        return own < at and (other is None or other < own)
    return own > at and (other is None or own < other)


async def move_task(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    *,
    neighbour_id: uuid.UUID,
    before: bool,
    if_match: str | None,
    max_length: int,
) -> TaskRead:
    """Put the task just before (`before`) or just after the task `neighbour_id`: 404 when
    either is not one of the owner's live tasks, 412 when `if_match` does not list the moved
    task's version. A move that leaves the order as it is changes nothing."""
    if neighbour_id == task_id:
        raise ValidationFailed(
            "a task cannot move next to itself",
            loc=("body", "before" if before else "after"),
        )
    async with unit.transaction() as work:
        revision = (await _rows(work, q.BUMP, owner_id))[0]["revision"]
        moved_rows = await _rows(work, q.GET, owner_id, task_id=task_id)
        if not moved_rows:
            raise NotFound("No task with this id.")
        moved = moved_rows[0]
        versions = _versions(if_match)
        if versions is not None and str(moved["version"]) not in versions:
            raise PreconditionFailed(TaskRead.model_validate(moved))
        for attempt in range(2):
            found = await _rows(work, _NEIGHBOUR, owner_id, task_id=neighbour_id)
            if not found:
                raise NotFound("No task with this id to move next to.")
            neighbour = found[0]
            beside = await _beside(work, owner_id, task_id, neighbour, before)
            if attempt == 0 and _in_place(moved, neighbour, beside, before):
                return TaskRead.model_validate(moved)
            other = None if beside is None else beside["position"]
            low, high = (other, neighbour["position"]) if before else (neighbour["position"], other)
            key = positions.key_between(low, high)
            if key is not None and len(key) <= max_length:
                break
            await rebalance(work, owner_id, revision)
        else:
            raise AssertionError("a rebalanced list always has room between two tasks")
        rows = await _rows(
            work,
            _PLACE,
            owner_id,
            task_id=task_id,
            new_position=key,
            revision=revision,
            now=utcnow(),
        )
    return TaskRead.model_validate(rows[0])
