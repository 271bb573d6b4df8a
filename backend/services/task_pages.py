"""Pages of the task list and of the trash: by offset, or after a cursor (keyset paging).

A page's `next_cursor` (on every page that has rows after it: one row more than the limit is
read to know) holds the page's last row's position in the list's total order (its sort key and
id), what the list is (its filters and sort), the limit, and how many rows the walk has given so
far (the next page's `offset`). The page after a cursor is the rows strictly after its position
(`task_lists.after_statement`), so a task that does not change is never repeated nor skipped,
whatever else is added or deleted meanwhile; an offset would move with them.

A cursor is opaque (`cursors`, kind `tasks` or `trash`) and validated: one of another kind, one
that does not decode to a position of its list, one sent with `offset`, or with filters or a
sort other than its own, is 400 `invalid_cursor`.
"""

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError
from sqlalchemy.sql import Executable

from backend.db import UnitOfWork, Work
from backend.errors import InvalidCursor
from backend.models import Priority
from backend.schemas import TaskListQuery, TaskPage, TaskView, TrashPage, TrashQuery
from backend.services import cursors, tags
from backend.services import task_statements as q
from backend.services.task_lists import (
    DEEP_OFFSET,
    SORT_KEY,
    TRASH_AFTER,
    After,
    after_statement,
    deep_page_statement,
    kept_total,
    list_statements,
    text_search,
)

TASKS_KIND = "tasks"
TRASH_KIND = "trash"
# What a task-list cursor remembers of its query (the limit too, as a default).
FILTERS = ("status", "q", "priority", "due_before", "due_after", "view", "tz", "tag", "sort")


@dataclass(frozen=True, slots=True)
class Position:
    """After which row a page starts: its sort key (JSON-ready: an ISO date or timestamp, a
    title's sort key, a priority; None for no due date) and its id."""

    key: Any
    task_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A task-list page to read: the list (the query's filters and sort, or its cursor's), the
    limit, and where the page starts: after `position`, or at `passed` (the offset)."""

    query: TaskListQuery
    limit: int
    passed: int
    position: Position | None = None

    @property
    def filters(self) -> dict[str, Any]:
        return self.query.model_dump(mode="json", include=set(FILTERS), exclude_defaults=True)

    def cursor(self, position: Position, passed: int) -> str:
        """The cursor of the page after `position`, `passed` rows into the walk."""
        return cursors.encode(
            TASKS_KIND,
            f=self.filters,
            l=self.limit,
            o=passed,
            a=position.key,
            i=position.task_id.hex,
        )

    def fingerprint(self, today: date) -> str:
        """What the page's content depends on besides the data (for the list's ETag): with a
        view, the day too."""
        position = None if self.position is None else [self.position.key, self.position.task_id]
        day = None if self.query.view is None else today
        return orjson.dumps([self.filters, self.limit, self.passed, position, day]).decode()

    def time_zone(self, default: str) -> ZoneInfo:
        """The zone that says what today is: the query's `tz`, else the user's (`default`)."""
        return ZoneInfo(self.query.tz or default)


def today_in(zone: ZoneInfo, now: datetime) -> date:
    """The date in `zone` at the instant `now`."""
    return now.astimezone(zone).date()


def _task_id(fields: dict[str, Any]) -> uuid.UUID:
    text = fields.get("i")
    if not isinstance(text, str) or len(text) != 32:
        raise InvalidCursor()
    try:
        return uuid.UUID(hex=text)
    except ValueError as exc:
        raise InvalidCursor() from exc


def _timestamp(value: Any) -> str:
    """An ISO timestamp with its zone, as a cursor holds it."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidCursor()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCursor() from exc
    if moment.tzinfo is None:
        raise InvalidCursor()
    return value


def _sort_key(field: str, value: Any) -> Any:
    """A cursor's sort key, checked to be one of `field`'s (InvalidCursor otherwise)."""
    try:
        if field in ("created_at", "updated_at"):
            return _timestamp(value)
        if field == "due_date":
            if value is None:
                return None
            if not isinstance(value, str) or len(value) != 10:
                raise InvalidCursor()
            date.fromisoformat(value)
            return value
        if field == "priority":
            return Priority(value).value
        if field == "position":
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                raise InvalidCursor()
            return value
    except ValueError as exc:
        raise InvalidCursor() from exc
    if not isinstance(value, str) or len(value) > 1000:  # a title's sort key
        raise InvalidCursor()
    return value


def _bound(field: str, key: Any) -> Any:
    """A cursor's sort key as the statement binds it."""
    if key is None or field in ("title", "priority", "position"):
        return key
    if field == "due_date":
        return date.fromisoformat(key)
    return datetime.fromisoformat(key)


def _row_key(field: str, row: dict[str, Any]) -> Any:
    """A row's sort key, JSON-ready."""
    if field == "title":
        return row[SORT_KEY]
    value = row[field]
    if value is None or isinstance(value, str):  # no due date; a priority (a str enum)
        return None if value is None else str(value)
    return value.isoformat()


def list_request(query: TaskListQuery) -> ListRequest:
    """The page a task-list query asks for, its cursor decoded and checked against the query."""
    if query.cursor is None:
        return ListRequest(query, query.limit, query.offset)
    given = query.model_fields_set
    if "offset" in given:
        raise InvalidCursor()
    fields = cursors.decode(query.cursor, TASKS_KIND)
    filters = fields.get("f")
    if not isinstance(filters, dict) or not filters.keys() <= set(FILTERS):
        raise InvalidCursor()
    try:
        listed = TaskListQuery.model_validate(filters)
    except ValidationError as exc:
        raise InvalidCursor() from exc
    if any(getattr(query, name) != getattr(listed, name) for name in given & set(FILTERS)):
        raise InvalidCursor()
    limit = cursors.integer(fields, "l")
    if not 1 <= limit <= 100:
        raise InvalidCursor()
    position = Position(_sort_key(listed.sort.field, fields.get("a")), _task_id(fields))
    limit = query.limit if "limit" in given else limit
    return ListRequest(listed, limit, cursors.integer(fields, "o"), position)


async def _rows(work: Work, statement: Any, owner_id: str, **params: Any) -> list[dict[str, Any]]:
    return await work.rows(statement, {"owner_id": owner_id, **params})


def _statement_inputs(
    query: TaskListQuery, today: date, dialect: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What the list's statements depend on (which filters, how it searches on `dialect`, which
    view, how many tags, the sort: `task_lists.list_statements`), and the filters' values as
    they bind them."""
    search, search_params = (None, {}) if query.q is None else text_search(query.q, dialect)
    shape = (
        query.status,
        search,
        query.priority is not None,
        query.due_before is not None,
        query.due_after is not None,
        query.view,
        len(query.tag),
        query.sort,
    )
    params: dict[str, Any] = {**tags.filter_params(query.tag), **search_params}
    if query.view is not None and query.view is not TaskView.no_date:
        params["today"] = today
    for name in ("priority", "due_before", "due_after"):
        if (value := getattr(query, name)) is not None:
            params[name] = value
    return shape, params


def explainable_statements(
    query: TaskListQuery, owner_id: str, today: date, dialect: str
) -> list[tuple[str, Executable, dict[str, Any]]]:
    """The statements a page of the list runs first (its count, its rows), with their
    parameters: for the benchmark's plans (`bench/scale.py`)."""
    request = list_request(query)
    shape, params = _statement_inputs(request.query, today, dialect)
    params = {"owner_id": owner_id, **params}
    count, page = list_statements(*shape)
    wanted = request.limit + 1
    if request.position is None:
        if request.passed >= DEEP_OFFSET:
            page = deep_page_statement(*shape)
        rows = page, {**params, "limit": wanted, "offset": request.passed}
    else:
        field = request.query.sort.field
        after = {"after_id": request.position.task_id, "limit": wanted, **params}
        if request.position.key is None:
            rows = after_statement(*shape, After.UNDATED_AFTER), after
        else:
            key = _bound(field, request.position.key)
            rows = after_statement(*shape, After.KEYED), {**after, "after_key": key}
    counted = [] if count is None else [("count", count, params)]
    return [*counted, ("page", *rows)]


@dataclass(frozen=True, slots=True)
class KeptCounts:
    """The owner's live tasks and completed ones among them, as its row keeps them (read with
    the account): the total of a list filtered by status alone."""

    live: int
    completed: int


async def list_tasks(
    unit: UnitOfWork, owner_id: str, request: ListRequest, *, today: date, kept: KeptCounts
) -> TaskPage:
    """A page of the list; `today` is what its view compares to."""
    query = request.query
    work = await unit.read()
    shape, params = _statement_inputs(query, today, work.dialect)
    count, page = list_statements(*shape)
    total: int
    if count is None:
        total = kept_total(query.status, kept.live, kept.completed)
    else:
        total = (await _rows(work, count, owner_id, **params))[0]["total"]
    wanted = request.limit + 1  # one more than the page: whether another page follows
    rows: list[dict[str, Any]] = []
    position = request.position
    field = query.sort.field
    if position is None:
        if request.passed >= DEEP_OFFSET:
            page = deep_page_statement(*shape)
        if request.passed < total:
            rows = await _rows(work, page, owner_id, limit=wanted, offset=request.passed, **params)
    elif total > 0:
        after = {"after_id": position.task_id, **params}
        if position.key is None:  # among the tasks without a due date
            undated = after_statement(*shape, After.UNDATED_AFTER)
            rows = await _rows(work, undated, owner_id, limit=wanted, **after)
        else:
            keyed = after_statement(*shape, After.KEYED)
            key = _bound(field, position.key)
            rows = await _rows(work, keyed, owner_id, limit=wanted, after_key=key, **after)
            # Then the tasks without a due date, unless a bound on the due date leaves them out.
            bounded = query.due_before is not None or query.due_after is not None
            if field == "due_date" and len(rows) < wanted and not bounded:
                undated = after_statement(*shape, After.UNDATED)
                more = wanted - len(rows)
                rows += await _rows(work, undated, owner_id, limit=more, **params)
    items = rows[: request.limit]
    next_cursor = None
    if len(rows) > request.limit:
        last = items[-1]
        next_cursor = request.cursor(
            Position(_row_key(field, last), last["id"]), request.passed + len(items)
        )
    return TaskPage.model_validate(
        {
            "items": items,
            "total": total,
            "limit": request.limit,
            "offset": request.passed,
            "next_cursor": next_cursor,
        }
    )


async def list_trash(unit: UnitOfWork, owner_id: str, query: TrashQuery) -> TrashPage:
    """A page of the trash, latest deletion first, by offset or after a cursor."""
    limit, passed, position = query.limit, query.offset, None
    if query.cursor is not None:
        if "offset" in query.model_fields_set:
            raise InvalidCursor()
        fields = cursors.decode(query.cursor, TRASH_KIND)
        position = Position(_timestamp(fields.get("a")), _task_id(fields))
        passed = cursors.integer(fields, "o")
        remembered = cursors.integer(fields, "l")
        if not 1 <= remembered <= 100:
            raise InvalidCursor()
        if "limit" not in query.model_fields_set:
            limit = remembered
    work = await unit.read()
    total: int = (await _rows(work, q.TRASH_COUNT, owner_id))[0]["total"]
    rows: list[dict[str, Any]] = []
    if position is not None:
        if total > 0:
            after_key = datetime.fromisoformat(position.key)
            rows = await _rows(
                work,
                TRASH_AFTER,
                owner_id,
                limit=limit + 1,
                after_key=after_key,
                after_id=position.task_id,
            )
    elif passed < total:
        rows = await _rows(work, q.TRASH_PAGE, owner_id, limit=limit + 1, offset=passed)
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = cursors.encode(
            TRASH_KIND,
            l=limit,
            o=passed + len(items),
            a=last["deleted_at"].isoformat(),
            i=last["id"].hex,
        )
    return TrashPage.model_validate(
        {
            "items": items,
            "total": total,
            "limit": limit,
            "offset": passed,
            "next_cursor": next_cursor,
        }
    )
