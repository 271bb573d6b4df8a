"""The task statements, built once with SQLModel on the tables themselves (Core, not ORM
entities), with bind parameters for every value: building a statement and computing its cache
key costs more than running it, and these run on every request. The list statements depend on
the shape of the query (which filters, which sort) and are built once per shape.

Every statement is scoped by its owner through `owned()`, which binds the `owner_id` parameter
that every execution must supply (`backend/services/tasks.py`), so a task id alone never reaches
a row.
"""

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import delete, func, insert, select, update

from backend.models import TASKS, USERS, UTCDateTime
from backend.schemas import TaskSort, TaskStatus

columns = TASKS.c


WRITABLE = ("title", "description", "completed", "priority", "due_date")


# Written with the text they fold, read only by search.
FOLDED = ("title_folded", "description_folded")


COLUMNS = tuple(column for column in TASKS.columns if column.name not in FOLDED)


SORT_COLUMNS: dict[str, Any] = {
    "created_at": columns.created_at,
    "updated_at": columns.updated_at,
    "title": func.lower(columns.title),  # case-insensitive; the index holds lower(title)
    "due_date": columns.due_date,
    "priority": columns.priority,
}


NOW = sa.bindparam("now", type_=UTCDateTime())


def owned(*criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    """The owner scope that every task statement goes through."""
    return sa.and_(columns.user_id == sa.bindparam("owner_id"), *criteria)


BY_ID = columns.id == sa.bindparam("task_id")


@cache
def list_statements(
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
        filters.append(columns.completed == sa.false())
    elif status is TaskStatus.completed:
        filters.append(columns.completed == sa.true())
    if search:
        pattern: sa.BindParameter[str] = sa.bindparam("pattern")
        filters.append(
            sa.or_(
                columns.title_folded.like(pattern, escape="\\"),
                columns.description_folded.like(pattern, escape="\\"),
            )
        )
    if priority:
        filters.append(columns.priority == sa.bindparam("priority"))
    if due_before:
        filters.append(columns.due_date <= sa.bindparam("due_before"))
    if due_after:
        filters.append(columns.due_date >= sa.bindparam("due_after"))
    where = owned(*filters)
    count = select(func.count().label("total")).select_from(TASKS).where(where)
    page = (
        select(*COLUMNS)
        .where(where)
        .order_by(*order_by(sort))
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )
    return count, page


def order_by(sort: TaskSort) -> list[Any]:
    """A total order: the sort key, then the id. Tasks without a due date come last either way."""
    column = SORT_COLUMNS[sort.field]
    key = column.desc() if sort.descending else column.asc()
    tie = columns.id.desc() if sort.descending else columns.id.asc()
    if sort.field == "due_date":
        key = key.nulls_last()
    return [key, tie]


GET = select(*COLUMNS).where(owned(BY_ID))


# Counting and capping in one UPDATE keeps the cap exact under concurrent creates.
COUNT_ONE_MORE = (
    update(USERS)
    .where(USERS.c.id == sa.bindparam("owner_id"), USERS.c.task_count < sa.bindparam("cap"))
    .values(task_count=USERS.c.task_count + 1)
)


INSERT = insert(TASKS)


NEW_TASK_COLUMNS = ("id", *WRITABLE, *FOLDED, "completed_at", "created_at", "updated_at")


# The same two in one statement, where the database can: the insert takes its owner from the
# counting UPDATE (a WITH clause), so it inserts nothing when the cap is reached. One statement
# is atomic on its own: no BEGIN and COMMIT around it, and the owner's row is locked for the
# statement only. PostgreSQL runs this; SQLite has no UPDATE inside WITH.
COUNTED = COUNT_ONE_MORE.returning(USERS.c.id.label("owner")).cte("counted")


INSERT_COUNTED = insert(TASKS).from_select(
    ["user_id", *NEW_TASK_COLUMNS],
    select(
        COUNTED.c.owner,
        *(sa.bindparam(name, type_=columns[name].type) for name in NEW_TASK_COLUMNS),
    ),
)


# The search text of each text field: what search compares, folded as the query is.
FOLDS = {"title_folded": "title", "description_folded": "description"}


def folded(values: dict[str, Any]) -> dict[str, str | None]:
    """The search text of the text fields among `values`: Unicode full case folding, the same
    for the query (`list_tasks`)."""
    return {
        folded: None if values[name] is None else values[name].casefold()
        for folded, name in FOLDS.items()
        if name in values
    }


# Parameters of UPDATE ... SET are named new_*: SQLAlchemy keeps the column names for itself.
# A field is written when its set_* flag is true (a PUT sets every one, a PATCH those it has),
# and keeps its value otherwise; its search text with it.
NEW = {name: sa.bindparam(f"new_{name}", type_=columns[name].type) for name in (*WRITABLE, *FOLDED)}


SETS = {name: sa.bindparam(f"set_{name}", type_=sa.Boolean()) for name in WRITABLE}


AFTER = {
    name: sa.case((SETS[FOLDS.get(name, name)], NEW[name]), else_=columns[name])
    for name in (*WRITABLE, *FOLDED)
}


# SET expressions see the row as it was: whether the write changes anything (nullable fields
# compared null-safely), and whether the task was completed already.
UNCHANGED = sa.and_(*(columns[name].is_not_distinct_from(AFTER[name]) for name in WRITABLE))


UPDATE = (
    update(TASKS)
    .where(owned(BY_ID))
    .values(
        {
            **AFTER,
            "completed_at": sa.case(
                (sa.not_(AFTER["completed"]), sa.null()),
                (columns.completed, columns.completed_at),
                else_=NOW,
            ),
            "updated_at": sa.case((UNCHANGED, columns.updated_at), else_=NOW),
        }
    )
    .returning(*COLUMNS)
)


DELETE = delete(TASKS).where(owned(BY_ID))


COUNT_FEWER = (
    update(USERS)
    .where(USERS.c.id == sa.bindparam("owner_id"))
    .values(task_count=USERS.c.task_count - sa.bindparam("deleted"))
)


# The same two in one statement on PostgreSQL (as `INSERT_COUNTED`): the counter goes down
# for the row the DELETE (a WITH clause) returns, so by nothing when there was none.
GONE = DELETE.returning(columns.user_id.label("owner")).cte("gone")


DELETE_COUNTED = (
    update(USERS).where(USERS.c.id == GONE.c.owner).values(task_count=USERS.c.task_count - 1)
)


TOGGLE = (
    update(TASKS)
    .where(owned(BY_ID))
    .values(
        completed=sa.not_(columns.completed),
        completed_at=sa.case((columns.completed, sa.null()), else_=NOW),
        updated_at=NOW,
    )
    .returning(*COLUMNS)
)


# Setting the state a task already has changes nothing, not even updated_at.
SET_COMPLETED = (
    update(TASKS)
    .where(owned(BY_ID, columns.completed != sa.bindparam("new_completed")))
    .values(
        completed=sa.bindparam("new_completed"),
        completed_at=sa.bindparam("new_completed_at", type_=UTCDateTime()),
        updated_at=NOW,
    )
    .returning(*COLUMNS)
)
