"""The task list, GET /api/{user_id}/tasks: filtered, sorted, paged by offset or by cursor, with
a weak ETag (304 to `If-None-Match` while nothing changed)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from backend.dependencies import CurrentUser, OwnerId, UnitDep, query_model
from backend.infrastructure import ClockDep
from backend.openapi import (
    INVALID_QUERY,
    OWNER_ERRORS,
    not_modified,
    problem_responses,
    query_parameters,
    success_response,
)
from backend.preconditions import IfNoneMatch, list_etag, none_match
from backend.responses import json_response
from backend.routing import OwnerScopedRoute
from backend.schemas import TASK_PAGE_EXAMPLE, TaskListQuery, TaskPage
from backend.services import task_pages

router = APIRouter(prefix="/api/{user_id}/tasks", tags=["tasks"], route_class=OwnerScopedRoute)


_list_query = query_model(TaskListQuery)


@router.get(
    "",
    response_model=TaskPage,
    summary="List tasks",
    operation_id="listTasks",
    openapi_extra={"parameters": query_parameters(TaskListQuery)},
    responses={
        **success_response(
            200,
            description="One page of the caller's tasks.",
            example=TASK_PAGE_EXAMPLE,
            headers=("ETag",),
        ),
        **not_modified("No task of the caller's has changed, and the query is the same: the list"),
        **problem_responses(
            *OWNER_ERRORS,
            "invalid_cursor",
            descriptions={
                400: "A bad query: an unknown parameter, `status`, `view` or `sort`, a `limit` "
                "out of range, a bad date, `due_after` later than `due_before`, a `tz` that is "
                "not an IANA time zone, a `tag` that is blank or longer than 40 characters (or "
                "more than 20 of them), or a `cursor` that is not one of this list's or comes "
                "with `offset`."
            },
            invalid=INVALID_QUERY,
        ),
    },
)
async def list_tasks(
    owner: OwnerId,
    user: CurrentUser,
    unit: UnitDep,
    clock: ClockDep,
    query: Annotated[TaskListQuery, Depends(_list_query)],
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The caller's tasks, filtered, sorted and paged.

    `q` matches a substring of the title or description, ignoring case by Unicode full case
    folding (`straße` matches `STRASSE`). `total` counts every task that matches the filters.
    The order is total (ties are broken by id); tasks without a due date come last in either
    direction. A query parameter not listed here is refused (400), and so are `due_after` and
    `due_before` in the wrong order.

    `view` lists the tasks of a day: `today` (due today), `overdue` (due before today, not
    completed), `upcoming` (due after today), `no_date`. Today is the date in the user's
    `time_zone` (`PATCH /api/auth/me`), or in `tz`. `tag` (repeatable) keeps the tasks that
    have every one of the tags, in any spelling. `sort=position` is the user's own order.

    Every page that has tasks after it gives `next_cursor`: send it as `cursor` (alone, or with
    `limit`) for the next page. Paging by cursor never repeats or skips a task that does not
    change meanwhile, while others are added or deleted (paging by `offset` can).

    The answer's weak `ETag` changes whenever any of the caller's tasks changes, or the query
    does: with `If-None-Match`, an unchanged list is 304, without running the query.
    """
    request = task_pages.list_request(query)  # a bad cursor is 400 before any 304
    today = task_pages.today_in(request.time_zone(user.time_zone), clock())
    etag = list_etag(user.revision, request.fingerprint(today))
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    kept = task_pages.KeptCounts(user.task_count, user.completed_count)
    page = await task_pages.list_tasks(unit, owner, request, today=today, kept=kept)
    return json_response(page, headers={"ETag": etag})
