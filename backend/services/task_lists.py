"""The list statements, built once per shape of query (which filters, which sort) on the owner's
live tasks: the count, the page by offset, and the pages after a cursor's position (keyset).

The total of a list with no filter but its status is not counted: it comes from the owner's row,
which keeps the numbers of live and of live completed tasks (`users.task_count`, kept by the
services under the cap, and `users.completed_count`, kept by triggers), read with the account at
the start of the request (`kept_total`). A list filtered by one tag alone counts that tag's rows
(`tags.TAGGED`). Other filters are counted by the index that serves them.

A list's order is total: the sort key, then the id, both in the sort's direction; tasks without
a due date come last in either direction. The page after a position is the rows strictly after
it in that order, as a row comparison `(key, id) > (:after_key, :after_id)` (`<` descending),
which both databases run as a range of the list's index (user_id, key, id). A NULL due date
compares to nothing, so sorting by due date takes up to two statements: the dated rows after
the position (`KEYED`), then the undated ones (`UNDATED`, or `UNDATED_AFTER` an undated
position). The trash pages the same way by (deleted_at, id), latest first.

Search (`q`) matches the folded texts through an index (`text_search` picks how, per query):
PostgreSQL's trigram GIN indexes serve the LIKE itself; SQLite's take the FTS5 table
`tasks_search`, queried with GLOB, when the query has a run of three characters it can look up,
and the LIKE over the owner's tasks otherwise.
"""

import re
from enum import StrEnum
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import func, select

from backend.models import TASK_ROWID, TASKS, TASKS_SEARCH
from backend.schemas import TaskSort, TaskStatus, TaskView
from backend.services.tags import TAGGED, having_tag
from backend.services.task_statements import COLUMNS, owned, owned_trash

t = TASKS.c
SORT_COLUMNS: dict[str, Any] = {
    "created_at": t.created_at,
    "updated_at": t.updated_at,
    "title": func.lower(t.title),  # case-insensitive; the index holds lower(title)
    "due_date": t.due_date,
    "priority": t.priority,
    "position": t.position,
}
# Statements are built for the shapes queries actually take (filters, a view, how many tags,
# the sort), at most this many kept.
SHAPES = 1024
# The title's sort key as the database computes it (lower() differs between databases and from
# Python's): the page statements of the title sorts return it, for the next cursor.
SORT_KEY = "sort_key"
LIMIT: sa.BindParameter[int] = sa.bindparam("limit")
AFTER_ID = sa.bindparam("after_id", type_=t.id.type)


class After(StrEnum):
    """Which rows a page after a position takes."""

    KEYED = "keyed"  # (key, id) strictly after the position's (a key that is not NULL)
    UNDATED = "undated"  # every task without a due date (after the dated ones)
    UNDATED_AFTER = "undated_after"  # the tasks without a due date after the position's id


class Search(StrEnum):
    """How a list matches `q`: the same tasks either way."""

    LIKE = "like"  # LIKE on the folded texts (on PostgreSQL, through their trigram indexes)
    FTS = "fts"  # SQLite: the owner's tasks among those `tasks_search` finds


_GLOB_SPECIAL = "*?["
# What FTS5's trigram tokenizer looks up of a GLOB pattern: its runs between metacharacters, those
# of at least 3 bytes. It finds nothing for a run of 3 bytes or more but fewer than 3 characters
# ("漢" alone), and scans every row of every user for a pattern with no run of 3 characters.
_LITERAL_RUNS = re.compile(f"[^{re.escape(_GLOB_SPECIAL)}]+")


def _trigrams_find(folded: str) -> bool:
    runs = _LITERAL_RUNS.findall(folded)
    usable = any(len(run) >= 3 for run in runs)
    return usable and all(len(run) >= 3 or len(run.encode()) < 3 for run in runs)


def text_search(q: str, dialect: str) -> tuple[Search, dict[str, str]]:
    """How a list on `dialect` searches for `q`, and the parameters of its statements."""
    folded = q.casefold()
    if dialect == "sqlite" and _trigrams_find(folded):
        escaped = "".join(f"[{char}]" if char in _GLOB_SPECIAL else char for char in folded)
        return Search.FTS, {"glob": f"*{escaped}*"}
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Search.LIKE, {"pattern": f"%{escaped}%"}


def _matches(search: Search) -> ColumnElement[bool]:
    if search is Search.LIKE:
        pattern: sa.BindParameter[str] = sa.bindparam("pattern")
        return sa.or_(
            t.title_folded.like(pattern, escape="\\"),
            t.description_folded.like(pattern, escape="\\"),
        )
    glob: sa.BindParameter[str] = sa.bindparam("glob")
    found = TASKS_SEARCH.c
    # One GLOB per column: a pattern never spans the title and the description.
    return TASK_ROWID.in_(
        sa.union(
            select(found.rowid).where(found.title_folded.op("GLOB", is_comparison=True)(glob)),
            select(found.rowid).where(
                found.description_folded.op("GLOB", is_comparison=True)(glob)
            ),
        )
    )


# Today, in the time zone of the user (or of the request's `tz`): what the views compare to.
TODAY = sa.bindparam("today", type_=t.due_date.type)


def _view(view: TaskView) -> ColumnElement[bool]:
    if view is TaskView.today:
        return t.due_date == TODAY
    if view is TaskView.overdue:
        return sa.and_(t.due_date < TODAY, t.completed == sa.false())
    if view is TaskView.upcoming:
        return t.due_date > TODAY
    return t.due_date.is_(None)


def _where(
    status: TaskStatus,
    search: Search | None,
    priority: bool,
    due_before: bool,
    due_after: bool,
    view: TaskView | None,
    tags: int,
) -> ColumnElement[bool]:
    filters: list[ColumnElement[bool]] = []
    if status is TaskStatus.pending:
        filters.append(t.completed == sa.false())
    elif status is TaskStatus.completed:
        filters.append(t.completed == sa.true())
    if search is not None:
        filters.append(_matches(search))
    if priority:
        filters.append(t.priority == sa.bindparam("priority"))
    if due_before:
        filters.append(t.due_date <= sa.bindparam("due_before"))
    if due_after:
        filters.append(t.due_date >= sa.bindparam("due_after"))
    if view is not None:
        filters.append(_view(view))
    filters.extend(having_tag(index) for index in range(tags))
    return owned(*filters)


def _columns(sort: TaskSort) -> list[Any]:
    columns: list[Any] = list(COLUMNS)
    if sort.field == "title":
        columns.append(SORT_COLUMNS["title"].label(SORT_KEY))
    return columns


def kept_total(status: TaskStatus, live: int, completed: int) -> int:
    """The number of the owner's live tasks of a status, from the counts its row keeps."""
    if status is TaskStatus.pending:
        return live - completed
    return completed if status is TaskStatus.completed else live


@lru_cache(maxsize=SHAPES)
def list_statements(
    status: TaskStatus,
    search: Search | None,
    priority: bool,
    due_before: bool,
    due_after: bool,
    view: TaskView | None,
    tags: int,
    sort: TaskSort,
) -> tuple[Executable | None, Executable]:
    """The count and page statements for one shape of query; no count for a list filtered by
    status alone (`kept_total`)."""
    where = _where(status, search, priority, due_before, due_after, view, tags)
    count: Executable | None = None
    others = bool(search or priority or due_before or due_after or view is not None)
    if tags == 1 and not others and status is TaskStatus.all:
        count = TAGGED
    elif others or tags:
        count = select(func.count().label("total")).select_from(TASKS).where(where)
    return count, _by_offset(select(*_columns(sort)).where(where), sort)


def _by_offset(rows: Select[Any], sort: TaskSort) -> Select[Any]:
    """`rows` in the list's order, `limit` of them from `offset` on."""
    return rows.order_by(*order_by(sort)).limit(LIMIT).offset(sa.bindparam("offset"))


# From this offset on, a page is read by `deep_page_statement`.
DEEP_OFFSET = 200


@lru_cache(maxsize=SHAPES)
def deep_page_statement(
    status: TaskStatus,
    search: Search | None,
    priority: bool,
    due_before: bool,
    due_after: bool,
    view: TaskView | None,
    tags: int,
    sort: TaskSort,
) -> Executable:
    """The page at a deep offset, for one shape of query: the ids of the rows the offset skips
    and of the page are read from the list's index (an index-only scan where the index holds
    what the filters read), and only the page's rows from the table. A plain OFFSET reads every
    skipped row from the table too: at 10,000 tasks in, ten times slower."""
    where = _where(status, search, priority, due_before, due_after, view, tags)
    ids = _by_offset(select(t.id).where(where), sort)
    page: Executable = select(*_columns(sort)).where(owned(t.id.in_(ids))).order_by(*order_by(sort))
    return page


@lru_cache(maxsize=SHAPES)
def after_statement(
    status: TaskStatus,
    search: Search | None,
    priority: bool,
    due_before: bool,
    due_after: bool,
    view: TaskView | None,
    tags: int,
    sort: TaskSort,
    after: After,
) -> Executable:
    """The page after a position, for one shape of query: `limit` rows after (`after_key`,
    `after_id`) (`after` says which rows: see `After`)."""
    column = SORT_COLUMNS[sort.field]
    if after is After.KEYED:
        key = sa.bindparam("after_key", type_=column.type)
        row = sa.tuple_(column, t.id)
        position = sa.tuple_(key, AFTER_ID)
        criterion = row < position if sort.descending else row > position
        if sort.field == "title":
            # SQLite ranges an index by a row value of columns, not of lower(title): the key's
            # own bound lets it (redundant, and harmless, on PostgreSQL).
            bound = column <= key if sort.descending else column >= key
            criterion = sa.and_(bound, criterion)
    else:
        criterion = t.due_date.is_(None)
        if after is After.UNDATED_AFTER:
            beyond = t.id < AFTER_ID if sort.descending else t.id > AFTER_ID
            criterion = sa.and_(criterion, beyond)
    where = sa.and_(_where(status, search, priority, due_before, due_after, view, tags), criterion)
    # Every row has a due date, or none has: the index's own order (NULLs first ascending on
    # SQLite, descending on PostgreSQL) is the list's, and either database scans it either way.
    key = column.desc() if sort.descending else column.asc()
    tie = t.id.desc() if sort.descending else t.id.asc()
    page: Executable = select(*_columns(sort)).where(where).order_by(key, tie).limit(LIMIT)
    return page


def order_by(sort: TaskSort) -> list[Any]:
    """A total order: the sort key, then the id. Tasks without a due date come last either way."""
    column = SORT_COLUMNS[sort.field]
    key = column.desc() if sort.descending else column.asc()
    tie = t.id.desc() if sort.descending else t.id.asc()
    if sort.field == "due_date":
        key = key.nulls_last()
    return [key, tie]


# The trash, latest deletion first: by offset (`task_statements.TRASH_PAGE`), or after a
# position.
_DELETED_AFTER = sa.tuple_(t.deleted_at, t.id) < sa.tuple_(
    sa.bindparam("after_key", type_=t.deleted_at.type), AFTER_ID
)
TRASH_AFTER = (
    select(*COLUMNS)
    .where(owned_trash(_DELETED_AFTER))
    .order_by(t.deleted_at.desc(), t.id.desc())
    .limit(LIMIT)
)
