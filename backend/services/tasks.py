"""Tasks: list, get, create, replace, patch, delete, complete.

Every statement is scoped by its owner through `_owned()`, which binds the `owner_id` parameter
that every execution must supply (`_execute`), so a task id alone never reaches a row; another
user's task and a missing task are indistinguishable.

The statements are built with SQLModel once, on the tables themselves (Core, not ORM entities),
with bind parameters for every value: building a statement and computing its cache key costs
more than running it, and these run on every request. The list statements depend on the shape
of the query (which filters, which sort) and are built once per shape. They run on the
request's unit of work (`backend/db/unit.py`: compiled once and run on the driver directly
where they may); rows become response models through pydantic's validator, faster than
constructing them in Python.

Each function asks its unit of work for what it needs: reads, one atomic statement, or a
transaction. Every write here is one statement on PostgreSQL (`unit.statement()`, no
transaction around it): create and delete keep the owner's task counter in the same statement
(a WITH clause), which SQLite cannot do; there they are two statements in a transaction.
"""

import uuid
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import delete, func, insert, select, update

from backend.db import UnitOfWork, Work
from backend.errors import NotFound, TooManyTasks
from backend.models import TASKS, USERS, UTCDateTime, utcnow
from backend.schemas import (
    TaskListQuery,
    TaskPage,
    TaskPatch,
    TaskRead,
    TaskSort,
    TaskStatus,
    TaskWrite,
)

_t = TASKS.c
_WRITABLE = ("title", "description", "completed", "priority", "due_date")
# Written with the text they fold, read only by search.
_FOLDED = ("title_folded", "description_folded")
_COLUMNS = tuple(column for column in TASKS.columns if column.name not in _FOLDED)
_SORT_COLUMNS: dict[str, Any] = {
    "created_at": _t.created_at,
    "updated_at": _t.updated_at,
    "title": func.lower(_t.title),  # case-insensitive; the index holds lower(title)
    "due_date": _t.due_date,
    "priority": _t.priority,
}
_NOW = sa.bindparam("now", type_=UTCDateTime())


def _owned(*criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    """The owner scope that every task statement goes through."""
    return sa.and_(_t.user_id == sa.bindparam("owner_id"), *criteria)


_BY_ID = _t.id == sa.bindparam("task_id")


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


# --- listing -----------------------------------------------------------------------------------


@cache
def _list_statements(
    status: TaskStatus,
    search: bool,
    priority: bool,
    due_before: bool,
    due_after: bool,
    sort: TaskSort,
) -> tuple[Executable, Executable]:
    """The count and page statements for one shape of query (at most 480 shapes)."""
    filters: list[ColumnElement[bool]] = []
    if status is TaskStatus.pending:
        filters.append(_t.completed == sa.false())
    elif status is TaskStatus.completed:
        filters.append(_t.completed == sa.true())
    if search:
        pattern: sa.BindParameter[str] = sa.bindparam("pattern")
        filters.append(
            sa.or_(
                _t.title_folded.like(pattern, escape="\\"),
                _t.description_folded.like(pattern, escape="\\"),
            )
        )
    if priority:
        filters.append(_t.priority == sa.bindparam("priority"))
    if due_before:
        filters.append(_t.due_date <= sa.bindparam("due_before"))
    if due_after:
        filters.append(_t.due_date >= sa.bindparam("due_after"))
    where = _owned(*filters)
    count = select(func.count().label("total")).select_from(TASKS).where(where)
    page = (
        select(*_COLUMNS)
        .where(where)
        .order_by(*_order_by(sort))
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )
    return count, page


def _order_by(sort: TaskSort) -> list[Any]:
    """A total order: the sort key, then the id. Tasks without a due date come last either way."""
    column = _SORT_COLUMNS[sort.field]
    key = column.desc() if sort.descending else column.asc()
    tie = _t.id.desc() if sort.descending else _t.id.asc()
    if sort.field == "due_date":
        key = key.nulls_last()
    return [key, tie]


async def list_tasks(unit: UnitOfWork, owner_id: str, query: TaskListQuery) -> TaskPage:
    work = await unit.read()
    count, page = _list_statements(
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


# --- one task ----------------------------------------------------------------------------------

_GET = select(*_COLUMNS).where(_owned(_BY_ID))


async def _find(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> dict[str, Any]:
    rows = await _rows(await unit.read(), _GET, owner_id, task_id=task_id)
    if not rows:
        raise NotFound("No task with this id.")
    return rows[0]


async def get_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> TaskRead:
    return _read(await _find(unit, owner_id, task_id))


# Counting and capping in one UPDATE keeps the cap exact under concurrent creates.
_COUNT_ONE_MORE = (
    update(USERS)
    .where(USERS.c.id == sa.bindparam("owner_id"), USERS.c.task_count < sa.bindparam("cap"))
    .values(task_count=USERS.c.task_count + 1)
)
_INSERT = insert(TASKS)
_NEW_TASK_COLUMNS = ("id", *_WRITABLE, *_FOLDED, "completed_at", "created_at", "updated_at")
# The same two in one statement, where the database can: the insert takes its owner from the
# counting UPDATE (a WITH clause), so it inserts nothing when the cap is reached. One statement
# is atomic on its own: no BEGIN and COMMIT around it, and the owner's row is locked for the
# statement only. PostgreSQL runs this; SQLite has no UPDATE inside WITH.
_COUNTED = _COUNT_ONE_MORE.returning(USERS.c.id.label("owner")).cte("counted")
_INSERT_COUNTED = insert(TASKS).from_select(
    ["user_id", *_NEW_TASK_COLUMNS],
    select(
        _COUNTED.c.owner,
        *(sa.bindparam(name, type_=_t[name].type) for name in _NEW_TASK_COLUMNS),
    ),
)


async def create_task(
    unit: UnitOfWork, owner_id: str, data: TaskWrite, *, max_tasks: int
) -> TaskRead:
    """Create a task unless the owner holds `max_tasks` already; one statement on PostgreSQL,
    two in a transaction on SQLite."""
    now = utcnow()
    writable = data.model_dump(include=set(_WRITABLE))
    values = {
        "id": uuid.uuid4(),
        **writable,
        **_folded(writable),
        "completed_at": now if data.completed else None,
        "created_at": now,
        "updated_at": now,
    }
    if unit.dialect == "postgresql":
        async with unit.statement() as work:
            created = await _execute(work, _INSERT_COUNTED, owner_id, cap=max_tasks, **values)
    else:
        async with unit.transaction() as work:
            created = await _execute(work, _COUNT_ONE_MORE, owner_id, cap=max_tasks)
            if created:
                await work.run(_INSERT, {"user_id": owner_id, **values})
    if created == 0:
        raise TooManyTasks(f"An account can hold at most {max_tasks} tasks; delete some first.")
    return TaskRead.model_validate({"user_id": owner_id, **values})


# The search text of each text field: what search compares, folded as the query is.
_FOLDS = {"title_folded": "title", "description_folded": "description"}


def _folded(values: dict[str, Any]) -> dict[str, str | None]:
    """The search text of the text fields among `values`: Unicode full case folding, the same
    for the query (`list_tasks`)."""
    return {
        folded: None if values[name] is None else values[name].casefold()
        for folded, name in _FOLDS.items()
        if name in values
    }


# Parameters of UPDATE ... SET are named new_*: SQLAlchemy keeps the column names for itself.
# A field is written when its set_* flag is true (a PUT sets every one, a PATCH those it has),
# and keeps its value otherwise; its search text with it.
_NEW = {name: sa.bindparam(f"new_{name}", type_=_t[name].type) for name in (*_WRITABLE, *_FOLDED)}
_SETS = {name: sa.bindparam(f"set_{name}", type_=sa.Boolean()) for name in _WRITABLE}
_AFTER = {
    name: sa.case((_SETS[_FOLDS.get(name, name)], _NEW[name]), else_=_t[name])
    for name in (*_WRITABLE, *_FOLDED)
}
# SET expressions see the row as it was: whether the write changes anything (nullable fields
# compared null-safely), and whether the task was completed already.
_UNCHANGED = sa.and_(*(_t[name].is_not_distinct_from(_AFTER[name]) for name in _WRITABLE))
_UPDATE = (
    update(TASKS)
    .where(_owned(_BY_ID))
    .values(
        {
            **_AFTER,
            "completed_at": sa.case(
                (sa.not_(_AFTER["completed"]), sa.null()),
                (_t.completed, _t.completed_at),
                else_=_NOW,
            ),
            "updated_at": sa.case((_UNCHANGED, _t.updated_at), else_=_NOW),
        }
    )
    .returning(*_COLUMNS)
)


async def _update(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, values: dict[str, Any]
) -> TaskRead:
    """Write `values` (some writable fields) in one UPDATE ... RETURNING: a write that changes
    nothing leaves `updated_at` as it was; `completed_at` is kept while the task stays
    completed, set when it becomes completed, cleared when it is reopened."""
    new = dict.fromkeys((*_WRITABLE, *_FOLDED)) | values | _folded(values)
    async with unit.statement() as work:
        rows = await _rows(
            work,
            _UPDATE,
            owner_id,
            task_id=task_id,
            now=utcnow(),
            **{f"set_{name}": name in values for name in _WRITABLE},
            **{f"new_{name}": value for name, value in new.items()},
        )
    if not rows:
        raise NotFound("No task with this id.")
    return _read(rows[0])


async def replace_task(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, data: TaskWrite
) -> TaskRead:
    """Replace every writable field, in one statement."""
    return await _update(unit, owner_id, task_id, data.model_dump(include=set(_WRITABLE)))


async def patch_task(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, patch: TaskPatch
) -> TaskRead:
    """Write the fields the patch has, keep the others (JSON merge patch), in one statement."""
    return await _update(unit, owner_id, task_id, patch.model_dump(include=patch.model_fields_set))


_DELETE = delete(TASKS).where(_owned(_BY_ID))
_COUNT_FEWER = (
    update(USERS)
    .where(USERS.c.id == sa.bindparam("owner_id"))
    .values(task_count=USERS.c.task_count - sa.bindparam("deleted"))
)
# The same two in one statement on PostgreSQL (as `_INSERT_COUNTED`): the counter goes down
# for the row the DELETE (a WITH clause) returns, so by nothing when there was none.
_GONE = _DELETE.returning(_t.user_id.label("owner")).cte("gone")
_DELETE_COUNTED = (
    update(USERS).where(USERS.c.id == _GONE.c.owner).values(task_count=USERS.c.task_count - 1)
)


async def delete_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> None:
    """Delete the task if the owner has it; deleting a missing task is not an error. One
    statement on PostgreSQL, two in a transaction on SQLite."""
    if unit.dialect == "postgresql":
        async with unit.statement() as work:
            await _execute(work, _DELETE_COUNTED, owner_id, task_id=task_id)
        return
    async with unit.transaction() as work:
        deleted = await _execute(work, _DELETE, owner_id, task_id=task_id)
        if deleted:
            await _execute(work, _COUNT_FEWER, owner_id, deleted=deleted)


_TOGGLE = (
    update(TASKS)
    .where(_owned(_BY_ID))
    .values(
        completed=sa.not_(_t.completed),
        completed_at=sa.case((_t.completed, sa.null()), else_=_NOW),
        updated_at=_NOW,
    )
    .returning(*_COLUMNS)
)
# Setting the state a task already has changes nothing, not even updated_at.
_SET_COMPLETED = (
    update(TASKS)
    .where(_owned(_BY_ID, _t.completed != sa.bindparam("new_completed")))
    .values(
        completed=sa.bindparam("new_completed"),
        completed_at=sa.bindparam("new_completed_at", type_=UTCDateTime()),
        updated_at=_NOW,
    )
    .returning(*_COLUMNS)
)


async def set_completed(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, completed: bool | None
) -> TaskRead:
    """Toggle (`completed` None) or set the completed state, in one statement. Setting the state
    the task has already changes nothing, and answers the task as it is."""
    now = utcnow()
    async with unit.statement() as work:
        if completed is None:
            rows = await _rows(work, _TOGGLE, owner_id, task_id=task_id, now=now)
        else:
            rows = await _rows(
                work,
                _SET_COMPLETED,
                owner_id,
                task_id=task_id,
                new_completed=completed,
                new_completed_at=now if completed else None,
                now=now,
            )
    return _read(rows[0] if rows else await _find(unit, owner_id, task_id))
