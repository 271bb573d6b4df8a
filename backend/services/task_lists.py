"""The list statements: one count and one page statement per shape of query (which filters,
which sort), built once per shape, on the owner's live tasks."""

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import func, select

from backend.models import TASKS
from backend.schemas import TaskSort, TaskStatus
from backend.services.task_statements import COLUMNS, owned

t = TASKS.c
SORT_COLUMNS: dict[str, Any] = {
    "created_at": t.created_at,
    "updated_at": t.updated_at,
    "title": func.lower(t.title),  # case-insensitive; the index holds lower(title)
    "due_date": t.due_date,
    "priority": t.priority,
}


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
        filters.append(t.completed == sa.false())
    elif status is TaskStatus.completed:
        filters.append(t.completed == sa.true())
    if search:
        pattern: sa.BindParameter[str] = sa.bindparam("pattern")
        filters.append(
            sa.or_(
                t.title_folded.like(pattern, escape="\\"),
                t.description_folded.like(pattern, escape="\\"),
            )
        )
    if priority:
        filters.append(t.priority == sa.bindparam("priority"))
    if due_before:
        filters.append(t.due_date <= sa.bindparam("due_before"))
    if due_after:
        filters.append(t.due_date >= sa.bindparam("due_after"))
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
    tie = t.id.desc() if sort.descending else t.id.asc()
    if sort.field == "due_date":
        key = key.nulls_last()
    return [key, tie]
