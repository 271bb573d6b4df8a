"""The task routes, all under /api/{user_id}/tasks and all owner-scoped; the list is
`task_list.py`'s."""

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from backend.dependencies import OwnerId, TaskId, UnitDep
from backend.errors import ValidationFailed
from backend.infrastructure import SettingsDep
from backend.openapi import (
    BODY_ERRORS,
    INVALID_ID,
    OWNER_ERRORS,
    RATE_LIMIT_HEADERS,
    TASK_WRITE_LIMITED,
    link,
    not_modified,
    problem_responses,
    success_response,
)
from backend.preconditions import (
    IfMatch,
    IfNoneMatch,
    if_match_versions,
    none_match,
    task_etag,
)
from backend.responses import json_response
from backend.routes.task_bodies import CompleteBody, TaskCreateBody, TaskPatchBody, TaskReplaceBody
from backend.routing import OwnerScopedRoute, checks_token_in_statements
from backend.schemas import (
    COMPLETED_TASK_EXAMPLE,
    TASK_EXAMPLE,
    TaskRead,
)
from backend.services import tasks

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    route_class=OwnerScopedRoute,
)


class _TaskIdSegment(Convertor[str]):
    """`{task_id:task_id}`: any path segment but the names of the task collection's own routes
    (`/tasks/clear-completed`), so that another method on those is 405, not a malformed id."""

    regex = r"(?!clear-completed$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", _TaskIdSegment())


# What a client can do next with a task it received: the links the stateful tests follow too.
_TASK_LINKS = {
    name: link(
        operation_id, description, user_id="$response.body#/user_id", task_id="$response.body#/id"
    )
    for name, operation_id, description in (
        ("GetTask", "getTask", "Read this task again."),
        ("ReplaceTask", "replaceTask", "Replace this task."),
        ("PatchTask", "patchTask", "Change some fields of this task."),
        ("CompleteTask", "completeTask", "Complete, reopen or toggle this task."),
        ("DeleteTask", "deleteTask", "Delete this task."),
    )
}


def changed_task_responses(
    description: str,
    *,
    invalid_input: str | None = None,
    invalid: tuple[list[str], str, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """What a route that changes one task answers: the task, or one of the owner's errors."""
    descriptions = dict(TASK_WRITE_LIMITED)
    if invalid_input is not None:
        descriptions[400] = invalid_input
    return {
        **success_response(
            200,
            description=description,
            example=COMPLETED_TASK_EXAMPLE,
            headers=("ETag", *RATE_LIMIT_HEADERS),
            links={"GetTask": _TASK_LINKS["GetTask"], "DeleteTask": _TASK_LINKS["DeleteTask"]},
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "not_found",
            "precondition_failed",
            "rate_limited",
            *BODY_ERRORS,
            descriptions=descriptions,
            **({} if invalid is None else {"invalid": invalid}),
        ),
    }


def task_answer(task: TaskRead, *, status_code: int = 200, **headers: str) -> Response:
    """A response carrying one task, with its ETag."""
    return json_response(
        task, status_code=status_code, headers={"ETag": task_etag(task.version), **headers}
    )


@router.post(
    "",
    status_code=201,
    response_model=TaskRead,
    summary="Create a task",
    operation_id="createTask",
    responses={
        **success_response(
            201,
            description="The task is created; `Location` is its URL.",
            example=TASK_EXAMPLE,
            headers=("Location", "ETag", *RATE_LIMIT_HEADERS),
            links=_TASK_LINKS,
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "too_many_tasks",
            "task_exists",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                409: "The account's task limit is reached (`MAX_TASKS_PER_USER`), or a task "
                "with the `id` the client chose exists (in the trash too).",
                429: "Too many task changes by this user (`TASK_WRITE_RATE_LIMIT`).",
            },
        ),
    },
)
@checks_token_in_statements
async def create_task(
    owner: OwnerId, unit: UnitDep, body: TaskCreateBody, settings: SettingsDep
) -> Response:
    """Create a task, first in the user's order (`sort=position`). The answer's `Location`
    header is the new task's URL."""
    task = await tasks.create_task(
        unit,
        owner,
        body,
        max_tasks=settings.max_tasks_per_user,
        max_position_length=settings.position_max_length,
    )
    return task_answer(task, status_code=201, Location=f"/api/{owner}/tasks/{task.id}")


@router.get(
    "/{task_id:task_id}",
    response_model=TaskRead,
    summary="Get a task",
    operation_id="getTask",
    responses={
        **success_response(200, description="The task.", example=TASK_EXAMPLE, headers=("ETag",)),
        **not_modified("The task"),
        **problem_responses(*OWNER_ERRORS, "not_found", invalid=INVALID_ID),
    },
)
@checks_token_in_statements
async def get_task(
    owner: OwnerId, unit: UnitDep, task_id: TaskId, if_none_match: IfNoneMatch = None
) -> Response:
    """One task. A task that does not exist and another user's task are both 404. With
    `If-None-Match` naming its current ETag, 304 and no body."""
    task = await tasks.get_task(unit, owner, task_id)
    if none_match(if_none_match, etag := task_etag(task.version)):
        return Response(status_code=304, headers={"ETag": etag})
    return task_answer(task)


@router.put(
    "/{task_id:task_id}",
    response_model=TaskRead,
    summary="Replace a task",
    operation_id="replaceTask",
    responses=changed_task_responses("The task as it now is."),
)
@checks_token_in_statements
async def replace_task(
    owner: OwnerId,
    unit: UnitDep,
    task_id: TaskId,
    body: TaskReplaceBody,
    if_match: IfMatch = None,
) -> Response:
    """Replace every writable field; fields left out are reset to their defaults.

    Idempotent: repeating a PUT gives the same task, and a PUT that changes nothing leaves
    `updated_at` as it was. `completed_at` is kept by the server.
    """
    versions = if_match_versions(if_match)
    return task_answer(await tasks.replace_task(unit, owner, task_id, body, if_match=versions))


@router.patch(
    "/{task_id:task_id}",
    response_model=TaskRead,
    summary="Change some fields of a task",
    operation_id="patchTask",
    responses=changed_task_responses(
        "The task as it now is.",
        invalid_input="Invalid input: a malformed id, an empty patch (`{}`), `null` for `title`, "
        "`completed` or `priority`, or an invalid value.",
        invalid=(["body", "title"], "may be left out, but not null", "not_null"),
    ),
)
@checks_token_in_statements
async def patch_task(
    owner: OwnerId,
    unit: UnitDep,
    task_id: TaskId,
    body: TaskPatchBody,
    if_match: IfMatch = None,
) -> Response:
    """Change the fields the body has and keep the others (JSON merge patch, RFC 7396).

    `null` clears `description` or `due_date`; `title`, `completed` and `priority` cannot be
    null, and `{}` is a 400. A patch that changes nothing leaves `updated_at` as it was.
    """
    versions = if_match_versions(if_match)
    return task_answer(await tasks.patch_task(unit, owner, task_id, body, if_match=versions))


@router.delete(
    "/{task_id:task_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a task",
    operation_id="deleteTask",
    responses={
        **success_response(
            204,
            description="The task is in the trash (or was never there).",
            headers=RATE_LIMIT_HEADERS,
        ),
        **problem_responses(
            *OWNER_ERRORS,
            "precondition_failed",
            "rate_limited",
            descriptions=TASK_WRITE_LIMITED,
            invalid=INVALID_ID,
        ),
    },
)
async def delete_task(
    owner: OwnerId,
    unit: UnitDep,
    task_id: TaskId,
    settings: SettingsDep,
    if_match: IfMatch = None,
) -> Response:
    """Move a task to the trash. Idempotent: 204 whether or not the task existed, and never a
    sign of whether another user has a task with this id."""
    await tasks.delete_task(
        unit,
        owner,
        task_id,
        if_match=if_match_versions(if_match),
        retention=timedelta(days=settings.trash_retention_days),
        trash_cap=settings.max_tasks_per_user,
    )
    return Response(status_code=204)


@router.patch(
    "/{task_id:task_id}/complete",
    response_model=TaskRead,
    summary="Complete, reopen or toggle a task",
    operation_id="completeTask",
    responses=changed_task_responses(
        "The task with its new state.",
        invalid_input="Invalid input: a malformed id, or a body other than "
        "`{completed: bool}` (`{}` included).",
        invalid=(["body", "completed"], "Field required", "missing"),
    ),
)
@checks_token_in_statements
async def complete_task(
    owner: OwnerId,
    unit: UnitDep,
    task_id: TaskId,
    request: Request,
    body: CompleteBody = None,
    if_match: IfMatch = None,
) -> Response:
    """Without a body, toggle the task's state; with `{"completed": true|false}`, set it
    (idempotent). `{}` is a 400. `completed_at` follows the state."""
    if body is None and await request.body():
        # FastAPI reads the body `null` as no body at all; only a body left out toggles.
        raise ValidationFailed(
            "must be {completed: bool}, or left out", loc=("body",), type_="model_type"
        )
    completed = None if body is None else body.completed
    versions = if_match_versions(if_match)
    return task_answer(
        await tasks.set_completed(unit, owner, task_id, completed, if_match=versions)
    )
