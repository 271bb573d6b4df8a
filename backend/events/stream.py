"""One live-update stream's events: the changes of the feed after the stream's position, then
each new change as its user's writes commit, as Server-Sent Events (sse-starlette).

Each event's id is the feed cursor just after its change, so `Last-Event-ID` resumes exactly
where the client stopped (no gap, no repeat), and can be given to the feed itself. A position
whose deletions purging has forgotten gives `event: reset` (the client syncs again from the
start) with the id of the present, from which the stream goes on.
"""

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy import exc as sa_exc
from sqlmodel import select
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus, SendTimeoutError
from starlette.types import Receive, Scope, Send

from backend.db import Database
from backend.errors import SyncExpired
from backend.events.hub import Hub, Stream
from backend.models import USERS
from backend.schemas import Change
from backend.services.changes import Changed, Position, live_position, read_changes

logger = logging.getLogger("backend.events")

# Changes read from the feed at once while catching up.
PAGE = 500
_CHANGE: TypeAdapter[Any] = TypeAdapter(Change)
_REVISION = select(USERS.c.revision).where(USERS.c.id == sa.bindparam("owner_id"))

# The hub ends streams on shutdown itself (`backend/events/hub.py`), so that their leases are
# given back; sse-starlette's own exit handling would cancel them instead.
AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]


async def events(
    database: Database, stream: Stream, position: Position
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events until it ends (its token, the account, shutdown, or the client).

    The database work is shielded from the response's cancellation (a client that goes away
    cancels the response's tasks, again at every await): cut short, it could leave a pooled
    connection, or SQLite's write lock, taken for good. Only the wait for a change is
    cancelled."""
    try:
        while stream.ended is None:
            stream.wake.clear()
            target = stream.target
            with anyio.CancelScope(shield=True):
                page, more, reset = await _read(database, stream, position)
            if reset is not None:
                position = reset
                yield ServerSentEvent(
                    data='{"code":"sync_expired"}', event="reset", id=position.cursor()
                )
                continue
            for changed in page:
                position = changed.position
                data = _CHANGE.dump_json(_CHANGE.validate_python(changed.change))
                yield ServerSentEvent(data=data.decode(), event="change", id=position.cursor())
            stream.seen = max(stream.seen, position.revision, target)
            if not more:
                await stream.wake.wait()
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        # The client reconnects with its last event's id, and misses nothing.
        logger.warning("live updates: a stream ended, the database failed: %s", exc)


async def _read(
    database: Database, stream: Stream, position: Position
) -> tuple[list[Changed], bool, Position | None]:
    """The changes after `position`, whether more wait, and the position to go on from
    instead when purging has forgotten what `position` has not seen (a reset)."""
    async with database.reading() as work:
        try:
            page, more = await read_changes(work, stream.user_id, position, limit=PAGE)
        except SyncExpired:
            rows = await work.rows(_REVISION, {"owner_id": stream.user_id})
            revision = int(rows[0]["revision"]) if rows else 0
            stream.seen = max(stream.seen, revision)
            return [], False, live_position(revision)
    return page, more, None


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(EventSourceResponse):
    """An event stream of a hub's stream: it drops a reader too slow to take an event within
    the send timeout (it resumes from its last event) instead of buffering for it without
    bound, and gives the stream back to the hub however it ends (even when it never began)."""

    def __init__(
        self,
        hub: Hub,
        stream: Stream,
        content: AsyncIterator[ServerSentEvent],
        *,
        heartbeat_seconds: float,
        send_timeout_seconds: float,
    ) -> None:
        super().__init__(
            content,
            headers=STREAM_HEADERS,
            ping=heartbeat_seconds,
            send_timeout=send_timeout_seconds,
        )
        self._hub, self._stream = hub, stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            logger.warning("live updates: a reader too slow to keep up was dropped")
        finally:
            with anyio.CancelScope(shield=True):
                await self._hub.close(self._stream)
