"""The task routes, all under /api/{user_id}/tasks and all owner-scoped."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from backend.dependencies import OwnerId, OwnerScopedRoute, SessionDep, runtime_of
from backend.openapi import problem_responses
from backend.responses import json_response
from backend.schemas import (
    CompleteRequest,
    TaskCreate,
    TaskListQuery,
    TaskPage,
    TaskRead,
    TaskReplace,
)
from backend.services import tasks

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    route_class=OwnerScopedRoute,
)

TaskId = Annotated[uuid.UUID, Path(description="The task's id (a UUID).")]


@router.get(
    "",
    response_model=TaskPage,
    summary="List tasks",
    operation_id="listTasks",
    responses=problem_responses(401, 403),
)
async def list_tasks(
    owner: OwnerId, session: SessionDep, query: Annotated[TaskListQuery, Query()]
) -> Response:
    """The caller's tasks, filtered, sorted and paged.

    `total` counts every task that matches the filters. The order is total (ties are broken by
    id), so paging through an unchanging list never repeats or skips a task; tasks without a due
    date come last in either direction.
    """
    return json_response(await tasks.list_tasks(session, owner, query))


@router.post(
    "",
    status_code=201,
    response_model=TaskRead,
    summary="Create a task",
    operation_id="createTask",
    responses=problem_responses(
        401, 403, 409, descriptions={409: "The account's task limit is reached (`too_many_tasks`)."}
    ),
)
async def create_task(
    owner: OwnerId, session: SessionDep, body: TaskCreate, request: Request
) -> Response:
    """Create a task. The answer's `Location` header is the new task's URL."""
    settings = runtime_of(request).settings
    task = await tasks.create_task(session, owner, body, max_tasks=settings.max_tasks_per_user)
    location = f"/api/{owner}/tasks/{task.id}"
    return json_response(task, status_code=201, headers={"Location": location})


@router.get(
    "/{task_id}",
    response_model=TaskRead,
    summary="Get a task",
    operation_id="getTask",
    responses=problem_responses(401, 403, 404),
)
async def get_task(owner: OwnerId, session: SessionDep, task_id: TaskId) -> Response:
    """One task. A task that does not exist and another user's task are both 404."""
    return json_response(await tasks.get_task(session, owner, task_id))


@router.put(
    "/{task_id}",
    response_model=TaskRead,
    summary="Replace a task",
    operation_id="replaceTask",
    responses=problem_responses(401, 403, 404),
)
async def replace_task(
    owner: OwnerId, session: SessionDep, task_id: TaskId, body: TaskReplace
) -> Response:
    """Replace every writable field; fields left out are reset to their defaults.

    Idempotent: repeating a PUT gives the same task, and a PUT that changes nothing leaves
    `updated_at` as it was. `completed_at` is kept by the server.
    """
    return json_response(await tasks.replace_task(session, owner, task_id, body))


@router.delete(
    "/{task_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a task",
    operation_id="deleteTask",
    responses=problem_responses(401, 403),
)
async def delete_task(owner: OwnerId, session: SessionDep, task_id: TaskId) -> Response:
    """Delete a task. Idempotent: 204 whether or not the task existed, and never a sign of
    whether another user has a task with this id."""
    await tasks.delete_task(session, owner, task_id)
    return Response(status_code=204)


@router.patch(
    "/{task_id}/complete",
    response_model=TaskRead,
    summary="Complete, reopen or toggle a task",
    operation_id="completeTask",
    responses=problem_responses(401, 403, 404),
)
async def complete_task(
    owner: OwnerId,
    session: SessionDep,
    task_id: TaskId,
    body: Annotated[
        CompleteRequest | None,
        Body(description="Leave the body out to toggle; send {completed: bool} to set."),
    ] = None,
) -> Response:
    """Without a body, toggle the task's state; with `{"completed": true|false}`, set it
    (idempotent). `{}` is a 400. `completed_at` follows the state."""
    completed = None if body is None else body.completed
    return json_response(await tasks.set_completed(session, owner, task_id, completed))
