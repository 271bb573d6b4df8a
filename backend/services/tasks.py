"""Tasks: list, get, create, replace, patch, delete, complete.

The statements are built once, in `task_statements.py` (`q`). Every one is scoped by its owner
through `q.owned()`, which binds the `owner_id` parameter that every execution here must supply
(`_execute`, `_rows`), so a task id alone never reaches a row; another user's task and a missing
task are indistinguishable. They run on the request's unit of work (`backend/db/unit.py`:
compiled once and run on the driver directly where they may); rows become response models
through pydantic's validator, faster than constructing them in Python.

Each function asks its unit of work for what it needs: reads, one atomic statement, or a
transaction. Every write here is one statement on PostgreSQL (`unit.statement()`, no
transaction around it): create and delete keep the owner's task counter in the same statement
(a WITH clause), which SQLite cannot do; there they are two statements in a transaction.
"""

import uuid
from typing import Any

from sqlalchemy.sql import Executable

from backend.db import UnitOfWork, Work
from backend.errors import NotFound, TooManyTasks
from backend.models import utcnow
from backend.schemas import TaskListQuery, TaskPage, TaskPatch, TaskRead, TaskWrite
from backend.services import task_statements as q


async def _execute(work: Work, statement: Executable, owner_id: str, **params: Any) -> int:
    """Run a statement for its effect; the number of rows it touched."""
    return await work.run(statement, {"owner_id": owner_id, **params})


async def _rows(
    work: Work, statement: Executable, owner_id: str, **params: Any
) -> list[dict[str, Any]]:
    """Run a statement for its rows."""
    return await work.rows(statement, {"owner_id": owner_id, **params})


def _read(row: dict[str, Any]) -> TaskRead:
    return TaskRead.model_validate(row)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_tasks(unit: UnitOfWork, owner_id: str, query: TaskListQuery) -> TaskPage:
    work = await unit.read()
    count, page = q.list_statements(
        query.status,
        query.q is not None,
        query.priority is not None,
        query.due_before is not None,
        query.due_after is not None,
        query.sort,
    )
    params: dict[str, Any] = {}
    if query.q is not None:
        params["pattern"] = _like_pattern(query.q.casefold())
    for name in ("priority", "due_before", "due_after"):
        if (value := getattr(query, name)) is not None:
            params[name] = value
    total: int = (await _rows(work, count, owner_id, **params))[0]["total"]
    rows: list[dict[str, Any]] = []
    if query.offset < total:
        rows = await _rows(work, page, owner_id, limit=query.limit, offset=query.offset, **params)
    return TaskPage.model_validate(
        {"items": rows, "total": total, "limit": query.limit, "offset": query.offset}
    )


async def _find(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> dict[str, Any]:
    rows = await _rows(await unit.read(), q.GET, owner_id, task_id=task_id)
    if not rows:
        raise NotFound("No task with this id.")
    return rows[0]


async def get_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> TaskRead:
    return _read(await _find(unit, owner_id, task_id))


async def create_task(
    unit: UnitOfWork, owner_id: str, data: TaskWrite, *, max_tasks: int
) -> TaskRead:
    """Create a task unless the owner holds `max_tasks` already; one statement on PostgreSQL,
    two in a transaction on SQLite."""
    now = utcnow()
    writable = data.model_dump(include=set(q.WRITABLE))
    values = {
        "id": uuid.uuid4(),
        **writable,
        **q.folded(writable),
        "completed_at": now if data.completed else None,
        "created_at": now,
        "updated_at": now,
    }
    if unit.dialect == "postgresql":
        async with unit.statement() as work:
            created = await _execute(work, q.INSERT_COUNTED, owner_id, cap=max_tasks, **values)
    else:
        async with unit.transaction() as work:
            created = await _execute(work, q.COUNT_ONE_MORE, owner_id, cap=max_tasks)
            if created:
                await work.run(q.INSERT, {"user_id": owner_id, **values})
    if created == 0:
        raise TooManyTasks(f"An account can hold at most {max_tasks} tasks; delete some first.")
    return TaskRead.model_validate({"user_id": owner_id, **values})


async def _update(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, values: dict[str, Any]
) -> TaskRead:
    """Write `values` (some writable fields) in one UPDATE ... RETURNING: a write that changes
    nothing leaves `updated_at` as it was; `completed_at` is kept while the task stays
    completed, set when it becomes completed, cleared when it is reopened."""
    new = dict.fromkeys((*q.WRITABLE, *q.FOLDED)) | values | q.folded(values)
    async with unit.statement() as work:
        rows = await _rows(
            work,
            q.UPDATE,
            owner_id,
            task_id=task_id,
            now=utcnow(),
            **{f"set_{name}": name in values for name in q.WRITABLE},
            **{f"new_{name}": value for name, value in new.items()},
        )
    if not rows:
        raise NotFound("No task with this id.")
    return _read(rows[0])


async def replace_task(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, data: TaskWrite
) -> TaskRead:
    """Replace every writable field, in one statement."""
    return await _update(unit, owner_id, task_id, data.model_dump(include=set(q.WRITABLE)))


async def patch_task(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, patch: TaskPatch
) -> TaskRead:
    """Write the fields the patch has, keep the others (JSON merge patch), in one statement."""
    return await _update(unit, owner_id, task_id, patch.model_dump(include=patch.model_fields_set))


async def delete_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> None:
    """Delete the task if the owner has it; deleting a missing task is not an error. One
    statement on PostgreSQL, two in a transaction on SQLite."""
    if unit.dialect == "postgresql":
        async with unit.statement() as work:
            await _execute(work, q.DELETE_COUNTED, owner_id, task_id=task_id)
        return
    async with unit.transaction() as work:
        deleted = await _execute(work, q.DELETE, owner_id, task_id=task_id)
        if deleted:
            await _execute(work, q.COUNT_FEWER, owner_id, deleted=deleted)


async def set_completed(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, completed: bool | None
) -> TaskRead:
    """Toggle (`completed` None) or set the completed state, in one statement. Setting the state
    the task has already changes nothing, and answers the task as it is."""
    now = utcnow()
    async with unit.statement() as work:
        if completed is None:
            rows = await _rows(work, q.TOGGLE, owner_id, task_id=task_id, now=now)
        else:
            rows = await _rows(
                work,
                q.SET_COMPLETED,
                owner_id,
                task_id=task_id,
                new_completed=completed,
                new_completed_at=now if completed else None,
                now=now,
            )
    return _read(rows[0] if rows else await _find(unit, owner_id, task_id))
