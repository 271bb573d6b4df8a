"""Live updates: the user's changes pushed as Server-Sent Events, as they commit."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from backend.dependencies import CurrentUser, OwnerId, UnitDep, request_context
from backend.events import STREAM_HEADERS, EventStreamResponse, events
from backend.infrastructure import DatabaseDep, HubDep, SettingsDep
from backend.middleware import HEAD_REQUEST
from backend.openapi import OWNER_ERRORS, problem_responses
from backend.routing import OwnerScopedRoute
from backend.services.changes import Position, live_position

router = APIRouter(prefix="/api/{user_id}", tags=["sync"], route_class=OwnerScopedRoute)

_CURSOR_TEXT = "A cursor: the `id` of an event of this stream, or a `next` of the changes feed."
_EXAMPLE = """\
id: eyJ2IjoxLCJrIjoiY2hhbmdlcyIsInIiOjQzLCJpIjoiOWExYjJjM2Q0ZTVmNGE2YjhjN2QwZTFmMmEzYjRjNWQifQ
event: change
data: {"op":"delete","id":"9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"}

: ping - 2026-12-03 08:00:15.000000+00:00

"""


@router.get(
    "/events",
    summary="Live updates (Server-Sent Events)",
    operation_id="streamEvents",
    response_class=Response,
    responses={
        200: {
            "description": "An endless `text/event-stream`: one `change` event per change, "
            "with the feed's cursor as its `id`; `reset` when the cursor is too old; a comment "
            "line at least every `EVENTS_HEARTBEAT_SECONDS` (15).",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        **problem_responses(
            *OWNER_ERRORS,
            "invalid_cursor",
            "too_many_streams",
            descriptions={
                400: "A `Last-Event-ID` or `since` that is not a cursor of this feed.",
                429: "`MAX_STREAMS_PER_USER` (5) streams of this account are open already.",
            },
            invalid=(["query", "since"], "String should have at most 2048 characters", "x"),
        ),
    },
)
async def stream_events(
    request: Request,
    _owner: OwnerId,
    user: CurrentUser,
    unit: UnitDep,
    hub: HubDep,
    database: DatabaseDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=2048, description=_CURSOR_TEXT)
    ] = None,
    since: Annotated[
        str | None, Query(min_length=1, max_length=2048, description=_CURSOR_TEXT)
    ] = None,
) -> Response:
    """Every change to the caller's tasks as it commits, whichever worker or machine made it,
    within a second: `event: change`, `data:` the change as the changes feed gives it
    (`upsert` with the task, or `delete` with its id), `id:` the cursor after it.

    Without a cursor the stream starts from now. With `Last-Event-ID` (which `EventSource` and
    fetch-based clients send when they reconnect) or `since`, the changes after that cursor
    come first, then the live ones: nothing is missed or repeated. A cursor older than what
    purging the trash has kept gives `event: reset` (`data: {"code":"sync_expired"}`): sync
    again from the start with the changes feed; the reset's `id` is the present, from which
    the stream goes on.

    The stream ends when the access token expires or is revoked (logout everywhere, a new
    password, the account deleted), within a few seconds, and when the server shuts down:
    reconnect with a fresh token and the last event's id. A reader too slow to keep up is
    dropped, and resumes the same way. Authenticate with the `Authorization` header (a
    fetch-based client such as `@microsoft/fetch-event-source`; the browser's `EventSource`
    cannot send it).
    """
    cursor = last_event_id or since
    position = Position.parse(cursor) if cursor else live_position(user.revision)
    if request.scope.get(HEAD_REQUEST):  # the headers a stream would have, and no stream
        return Response(media_type="text/event-stream", headers=STREAM_HEADERS)
    principal = request_context(request).principal
    assert principal is not None  # the pipeline authenticated the owner's route
    stream = await hub.open(unit, principal, seen=position.revision)
    content = events(
        database, stream, position, heartbeat_seconds=settings.events_heartbeat_seconds
    )
    return EventStreamResponse(
        hub, stream, content, send_timeout_seconds=settings.events_send_timeout_seconds
    )
