"""The export of a user's data: GET /api/{user_id}/export, owner-scoped."""

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from backend.dependencies import CurrentUser, OwnerId
from backend.infrastructure import DatabaseDep
from backend.models import utcnow
from backend.openapi import BEARER_ERRORS, problem_responses, success_response
from backend.routing import OwnerScopedRoute
from backend.schemas import TASK_EXAMPLE, USER_EXAMPLE, ExportDocument
from backend.services import accounts, sessions

router = APIRouter(prefix="/api/{user_id}", tags=["tasks"], route_class=OwnerScopedRoute)

_EXPORT_EXAMPLE = {
    "format": accounts.EXPORT_FORMAT,
    "exported_at": "2026-12-10T09:30:00.000Z",
    "user": USER_EXAMPLE,
    "tasks": [{**TASK_EXAMPLE, "deleted_at": None}],
}


@router.get(
    "/export",
    response_model=ExportDocument,
    summary="Export everything of the user",
    operation_id="exportData",
    responses={
        **success_response(
            200,
            description="The user and every task, as one JSON document to save "
            "(`Content-Disposition: attachment`).",
            example=_EXPORT_EXAMPLE,
            headers=("Content-Disposition",),
        ),
        **problem_responses("validation_error", *BEARER_ERRORS, "forbidden"),
    },
)
async def export(_owner: OwnerId, account: CurrentUser, database: DatabaseDep) -> Response:
    """The user's data to take away: `{"format": "todo-api/1", "exported_at", "user", "tasks"}`
    with every task (all fields, oldest first), as a file download.

    The document is streamed as it is read, in batches: any number of tasks costs the server
    little memory, and the client can write it to disk as it comes."""
    user = sessions.user_read(account)
    filename = f"todo-export-{utcnow().date().isoformat()}.json"
    return StreamingResponse(
        accounts.export(database, user),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
