"""What clients that stay in sync need beyond the task routes, all owner-scoped: the changes
feed, the trash (list, restore, purge) and clearing the completed tasks."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from backend.dependencies import CurrentUser, OwnerId, TaskId, UnitDep, query_model
from backend.infrastructure import SettingsDep
from backend.openapi import (
    INVALID_ID,
    INVALID_QUERY,
    OWNER_ERRORS,
    RATE_LIMIT_HEADERS,
    TASK_WRITE_LIMITED,
    problem_responses,
    query_parameters,
    success_response,
)
from backend.preconditions import task_etag
from backend.responses import json_response
from backend.routing import OwnerScopedRoute
from backend.schemas import (
    TASK_EXAMPLE,
    ChangesPage,
    ChangesQuery,
    ClearedTasks,
    TaskRead,
    TrashPage,
    TrashQuery,
)
from backend.services import changes, task_pages, tasks

router = APIRouter(prefix="/api/{user_id}", tags=["sync"], route_class=OwnerScopedRoute)


_TRASHED_EXAMPLE = {**TASK_EXAMPLE, "version": 2, "deleted_at": "2026-11-28T10:00:00.000Z"}

_changes_query = query_model(ChangesQuery)
_trash_query = query_model(TrashQuery)


@router.get(
    "/changes",
    response_model=ChangesPage,
    summary="What changed since a cursor",
    operation_id="listChanges",
    openapi_extra={"parameters": query_parameters(ChangesQuery)},
    responses={
        **success_response(
            200,
            description="The changes after `since`, oldest first, each task once.",
            example={
                "changes": [
                    {"op": "upsert", "task": TASK_EXAMPLE},
                    {"op": "delete", "id": "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"},
                ],
                "next": "eyJ2IjoxLCJrIjoiY2hhbmdlcyIsInIiOjQyLCJpIjoiIiwicyI6MH0",
                "has_more": False,
            },
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "invalid_cursor",
            "sync_expired",
            descriptions={400: "A bad query, or a `since` that is not a cursor of this feed."},
            invalid=INVALID_QUERY,
        ),
    },
)
async def list_changes(
    _owner: OwnerId,
    user: CurrentUser,
    unit: UnitDep,
    query: Annotated[ChangesQuery, Depends(_changes_query)],
) -> Response:
    """Every change to the caller's tasks after the cursor `since`, oldest first: `upsert`
    with the task as it is now, or `delete` with its id; a task changed several times appears
    once. Store `next` and ask with it later: nothing is ever missed, whatever the timing of
    concurrent writes. `has_more` says that more are waiting now.

    Without `since`, a full sync: every live task as an upsert (and the deletions that happen
    while the pages are read). A cursor older than what purging the trash has kept is 410
    `sync_expired`: sync again without `since`.
    """
    page = await changes.changes(
        unit, user.id, revision=user.revision, since=query.since, limit=query.limit
    )
    return json_response(page)


@router.get(
    "/trash",
    response_model=TrashPage,
    summary="List the trash",
    operation_id="listTrash",
    openapi_extra={"parameters": query_parameters(TrashQuery)},
    responses={
        **success_response(
            200,
            description="One page of the trash, latest deletion first.",
            example={
                "items": [_TRASHED_EXAMPLE],
                "total": 1,
                "limit": 20,
                "offset": 0,
                "next_cursor": None,
            },
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "invalid_cursor",
            descriptions={
                400: "A bad query, or a `cursor` that is not one of the trash's or comes with "
                "`offset`."
            },
            invalid=INVALID_QUERY,
        ),
    },
)
async def list_trash(
    owner: OwnerId, unit: UnitDep, query: Annotated[TrashQuery, Depends(_trash_query)]
) -> Response:
    """The deleted tasks, with `deleted_at`, latest deletion first. A task stays in the trash
    `TRASH_RETENTION_DAYS`; the trash holds at most `MAX_TASKS_PER_USER` tasks (the oldest
    deletions are purged beyond). Pages by `offset`, or by `cursor` (a page's `next_cursor`),
    which never repeats or skips a task while others are deleted or restored."""
    return json_response(await task_pages.list_trash(unit, owner, query))


@router.post(
    "/trash/{task_id}/restore",
    response_model=TaskRead,
    summary="Restore a task from the trash",
    operation_id="restoreTask",
    responses={
        **success_response(
            200,
            description="The task, back among the live ones (its version one more).",
            example={**TASK_EXAMPLE, "version": 3},
            headers=("ETag", *RATE_LIMIT_HEADERS),
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "not_found",
            "too_many_tasks",
            "rate_limited",
            descriptions={
                404: "The trash has no task with this id.",
                409: "The account's task limit is reached (`MAX_TASKS_PER_USER`).",
                **TASK_WRITE_LIMITED,
            },
            invalid=INVALID_ID,
        ),
    },
)
async def restore_task(
    owner: OwnerId, unit: UnitDep, task_id: TaskId, settings: SettingsDep
) -> Response:
    """Bring a deleted task back; it counts against the task limit again."""
    task = await tasks.restore_task(unit, owner, task_id, max_tasks=settings.max_tasks_per_user)
    return json_response(task, headers={"ETag": task_etag(task.version)})


_PURGED = {
    **success_response(204, description="Purged (or never there).", headers=RATE_LIMIT_HEADERS),
    **problem_responses(
        *OWNER_ERRORS, "rate_limited", descriptions=TASK_WRITE_LIMITED, invalid=INVALID_ID
    ),
}


@router.delete(
    "/trash/{task_id}",
    status_code=204,
    response_class=Response,
    summary="Purge a task from the trash",
    operation_id="purgeTask",
    responses=_PURGED,
)
async def purge_task(owner: OwnerId, unit: UnitDep, task_id: TaskId) -> Response:
    """Delete a task of the trash for good. Idempotent: 204 whether or not it was there."""
    await tasks.purge_task(unit, owner, task_id)
    return Response(status_code=204)


@router.delete(
    "/trash",
    status_code=204,
    response_class=Response,
    summary="Empty the trash",
    operation_id="emptyTrash",
    responses=_PURGED,
)
async def empty_trash(owner: OwnerId, unit: UnitDep) -> Response:
    """Delete every task of the trash for good."""
    await tasks.empty_trash(unit, owner)
    return Response(status_code=204)


@router.post(
    "/tasks/clear-completed",
    response_model=ClearedTasks,
    summary="Move the completed tasks to the trash",
    operation_id="clearCompleted",
    responses={
        **success_response(
            200,
            description="How many tasks went to the trash.",
            example={"deleted": 3},
            headers=RATE_LIMIT_HEADERS,
        ),
        **problem_responses(*OWNER_ERRORS, "rate_limited", descriptions=TASK_WRITE_LIMITED),
    },
)
async def clear_completed(owner: OwnerId, unit: UnitDep, settings: SettingsDep) -> Response:
    """Move every completed task to the trash, as one change."""
    deleted = await tasks.clear_completed(
        unit,
        owner,
        retention=timedelta(days=settings.trash_retention_days),
        trash_cap=settings.max_tasks_per_user,
    )
    return json_response(ClearedTasks(deleted=deleted))
