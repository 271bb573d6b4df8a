"""Organizing, owner-scoped: moving a task in the user's own order, and the user's tags."""

from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import TypeAdapter

from backend.dependencies import OwnerId, TaskId, UnitDep
from backend.infrastructure import SettingsDep
from backend.openapi import OWNER_ERRORS, body_examples, problem_responses, success_response
from backend.preconditions import IfMatch, if_match_versions
from backend.routes.tasks import changed_task_responses, task_answer
from backend.routing import OwnerScopedRoute
from backend.schemas import MoveRequest, TagCount, TaskRead
from backend.services import moves, tags

router = APIRouter(prefix="/api/{user_id}", tags=["tasks"], route_class=OwnerScopedRoute)

_TAG_COUNTS = TypeAdapter(list[TagCount])
_NEIGHBOUR = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
MoveBody = Annotated[
    MoveRequest,
    Body(
        openapi_examples=body_examples(
            before=("Just before another task", {"before": _NEIGHBOUR}),
            after=("Just after another task", {"after": _NEIGHBOUR}),
        )
    ),
]


@router.post(
    "/tasks/{task_id:task_id}/move",
    response_model=TaskRead,
    summary="Move a task in the user's order",
    operation_id="moveTask",
    responses=changed_task_responses(
        "The task in its new place (`position`).",
        invalid_input="Invalid input: a malformed id, a body other than exactly one of "
        "`{before: id}` or `{after: id}`, or the task's own id as its neighbour.",
        invalid=(["body"], "send exactly one of before, after (a task id)", "value_error"),
    ),
)
async def move_task(
    owner: OwnerId,
    unit: UnitDep,
    task_id: TaskId,
    body: MoveBody,
    settings: SettingsDep,
    if_match: IfMatch = None,
) -> Response:
    """Put the task just before or just after another of the user's tasks, in the order that
    `sort=position` lists. Only the moved task changes (its `position`, `version` + 1), so a
    drag is one write; a move that leaves the order as it is changes nothing. A missing
    task or neighbour, or another user's, is 404."""
    task = await moves.move_task(
        unit,
        owner,
        task_id,
        neighbour_id=body.neighbour,
        before=body.before is not None,
        if_match=if_match_versions(if_match),
        max_length=settings.position_max_length,
    )
    return task_answer(task)


@router.get(
    "/tags",
    response_model=list[TagCount],
    summary="The user's tags",
    operation_id="listTags",
    responses={
        **success_response(
            200,
            description="Every tag of the user's live tasks, by name ignoring case.",
            example=[{"name": "errands", "count": 3}, {"name": "Work", "count": 12}],
        ),
        **problem_responses(*OWNER_ERRORS),
    },
)
async def list_tags(owner: OwnerId, unit: UnitDep) -> Response:
    """Every tag of the user's live tasks (the trash is not counted) with how many tasks have
    it, by name. Tags compare ignoring case: the spellings of one tag are counted together,
    under the first of them by code point."""
    counts = await tags.tag_counts(unit, owner)
    return Response(_TAG_COUNTS.dump_json(counts), media_type="application/json")
