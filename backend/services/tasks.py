"""Tasks: list, get, create, replace, delete, complete. Every statement is scoped by its owner
through `_owned()`, so a task id alone never reaches a row; another user's task and a missing
task are indistinguishable.

Statements are built with SQLModel on the tables themselves (Core, not ORM entities): reads
return plain rows with no objects to hydrate, and writes skip the ORM's session bookkeeping.
Writes are single UPDATE/INSERT/DELETE statements, atomic under concurrent requests. Rows become
response models without validation: they come from our own schema.
"""

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import delete, func, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import casefold_contains, like_pattern
from backend.errors import NotFound, TooManyTasks
from backend.models import TASKS, USERS, UTCDateTime, utcnow
from backend.schemas import (
    TaskListQuery,
    TaskPage,
    TaskRead,
    TaskSort,
    TaskStatus,
    TaskWrite,
)

_t = TASKS.c
_COLUMNS = tuple(TASKS.columns)
_WRITABLE = ("title", "description", "completed", "priority", "due_date")
_SORT_COLUMNS: dict[str, Any] = {
    "created_at": _t.created_at,
    "updated_at": _t.updated_at,
    "title": func.lower(_t.title),  # case-insensitive; the index holds lower(title)
    "due_date": _t.due_date,
    "priority": _t.priority,
}


def _owned(owner_id: str, *criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    """The owner scope that every task statement goes through."""
    return sa.and_(_t.user_id == owner_id, *criteria)


def _read(row: Row[Any]) -> TaskRead:
    return TaskRead.model_construct(**row._mapping)


def _filters(query: TaskListQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.status is TaskStatus.pending:
        filters.append(_t.completed == sa.false())
    elif query.status is TaskStatus.completed:
        filters.append(_t.completed == sa.true())
    if query.q:
        pattern = like_pattern(query.q)
        filters.append(
            sa.or_(
                casefold_contains(_t.title, pattern),
                casefold_contains(_t.description, pattern),
            )
        )
    if query.priority is not None:
        filters.append(_t.priority == query.priority)
    if query.due_before is not None:
        filters.append(_t.due_date <= query.due_before)
    if query.due_after is not None:
        filters.append(_t.due_date >= query.due_after)
    return filters


def _order_by(sort: TaskSort) -> list[Any]:
    """A total order: the sort key, then the id. Tasks without a due date come last either way."""
    column = _SORT_COLUMNS[sort.field]
    key = column.desc() if sort.descending else column.asc()
    tie = _t.id.desc() if sort.descending else _t.id.asc()
    if sort.field == "due_date":
        key = key.nulls_last()
    return [key, tie]


async def list_tasks(session: AsyncSession, owner_id: str, query: TaskListQuery) -> TaskPage:
    where = _owned(owner_id, *_filters(query))
    total = (await session.exec(select(func.count()).select_from(TASKS).where(where))).one()
    items: list[TaskRead] = []
    if query.offset < total:
        rows = await session.exec(
            select(*_COLUMNS)
            .where(where)
            .order_by(*_order_by(query.sort))
            .limit(query.limit)
            .offset(query.offset)
        )
        items = [_read(row) for row in rows]
    return TaskPage(items=items, total=total, limit=query.limit, offset=query.offset)


async def _find(session: AsyncSession, owner_id: str, task_id: uuid.UUID) -> Row[Any]:
    row: Row[Any] | None = (
        await session.exec(select(*_COLUMNS).where(_owned(owner_id, _t.id == task_id)))
    ).first()
    if row is None:
        raise NotFound("No task with this id.")
    return row


async def get_task(session: AsyncSession, owner_id: str, task_id: uuid.UUID) -> TaskRead:
    return _read(await _find(session, owner_id, task_id))


async def create_task(
    session: AsyncSession, owner_id: str, data: TaskWrite, *, max_tasks: int
) -> TaskRead:
    # Counting and capping in one UPDATE keeps the cap exact under concurrent creates.
    counted = await session.exec(
        update(USERS)
        .where(USERS.c.id == owner_id, USERS.c.task_count < max_tasks)
        .values(task_count=USERS.c.task_count + 1)
    )
    if counted.rowcount == 0:
        raise TooManyTasks(f"An account can hold at most {max_tasks} tasks; delete some first.")
    now = utcnow()
    values = {
        "id": uuid.uuid4(),
        "user_id": owner_id,
        **data.model_dump(include=set(_WRITABLE)),
        "completed_at": now if data.completed else None,
        "created_at": now,
        "updated_at": now,
    }
    await session.exec(insert(TASKS).values(**values))
    return TaskRead.model_construct(**values)


async def replace_task(
    session: AsyncSession, owner_id: str, task_id: uuid.UUID, data: TaskWrite
) -> TaskRead:
    current = (
        await session.exec(
            select(*_COLUMNS).where(_owned(owner_id, _t.id == task_id)).with_for_update()
        )
    ).first()
    if current is None:
        raise NotFound("No task with this id.")
    new_values = data.model_dump(include=set(_WRITABLE))
    if all(getattr(current, name) == value for name, value in new_values.items()):
        return _read(current)  # nothing changes, so updated_at does not either
    now = utcnow()
    if not data.completed:
        completed_at = None
    elif current.completed:
        completed_at = current.completed_at
    else:
        completed_at = now
    row = (
        await session.exec(
            update(TASKS)
            .where(_owned(owner_id, _t.id == task_id))
            .values(**new_values, completed_at=completed_at, updated_at=now)
            .returning(*_COLUMNS)
        )
    ).one()
    return _read(row)


async def delete_task(session: AsyncSession, owner_id: str, task_id: uuid.UUID) -> None:
    """Delete the task if the owner has it; deleting a missing task is not an error."""
    deleted = await session.exec(delete(TASKS).where(_owned(owner_id, _t.id == task_id)))
    if deleted.rowcount:
        await session.exec(
            update(USERS)
            .where(USERS.c.id == owner_id)
            .values(task_count=USERS.c.task_count - deleted.rowcount)
        )


async def set_completed(
    session: AsyncSession, owner_id: str, task_id: uuid.UUID, completed: bool | None
) -> TaskRead:
    """Toggle (`completed` None) or set the completed state, atomically."""
    now = sa.literal(utcnow(), UTCDateTime())
    statement = update(TASKS).returning(*_COLUMNS)
    if completed is None:
        statement = statement.where(_owned(owner_id, _t.id == task_id)).values(
            completed=sa.not_(_t.completed),
            completed_at=sa.case((_t.completed, sa.null()), else_=now),
            updated_at=now,
        )
    else:
        # Setting the state it already has changes nothing, not even updated_at.
        statement = statement.where(
            _owned(owner_id, _t.id == task_id, _t.completed != completed)
        ).values(completed=completed, completed_at=now if completed else None, updated_at=now)
    row = (await session.exec(statement)).first()
    if row is None:
        row = await _find(session, owner_id, task_id)
    return _read(row)
