"""One live-update stream: the changes of the feed after the stream's position, then each new
change as its user's writes commit, sent as Server-Sent Events.

Each event's id is the feed cursor just after its change, so `Last-Event-ID` resumes exactly
where the client stopped (no gap, no repeat), and can be given to the feed itself. A position
whose deletions purging has forgotten gives `event: reset` (the client syncs again from the
start) with the id of the present, from which the stream goes on.

The response is a plain ASGI callable rather than a library's: an idle stream is one request
task waiting on its stream's event plus one task listening for the client's disconnect, which
keeps thousands of open streams cheap (`bench/RESULTS.md`, "Live updates"). A client too slow
to take an event within `EVENTS_SEND_TIMEOUT_SECONDS` is dropped (the server's write buffer is
bounded: uvicorn's send waits while it is full) and resumes from its last event.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy import exc as sa_exc
from sqlmodel import select
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

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
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_HEARTBEAT = b": heartbeat\n\n"
_RESET_DATA = '{"code":"sync_expired"}'


def _event(kind: str, cursor: str, data: str) -> bytes:
    # Cursors are base64url and the data is JSON on one line: nothing to escape.
    return f"id: {cursor}\nevent: {kind}\ndata: {data}\n\n".encode()


async def events(
    database: Database, stream: Stream, position: Position, *, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    """The stream's events, and a comment whenever `heartbeat_seconds` pass without one, until
    the stream ends (its token, the account, shutdown, or the client)."""
    while stream.ended is None:
        stream.wake.clear()
        target = stream.target
        page, more, reset = await _read(database, stream, position)
        if reset is not None:
            position = reset
            yield _event("reset", position.cursor(), _RESET_DATA)
            continue
        for changed in page:
            position = changed.position
            data = _CHANGE.dump_json(_CHANGE.validate_python(changed.change)).decode()
            yield _event("change", position.cursor(), data)
        stream.seen = max(stream.seen, position.revision, target)
        if more:
            continue
        while not stream.wake.is_set():
            try:
                await asyncio.wait_for(stream.wake.wait(), heartbeat_seconds)
            except TimeoutError:
                yield _HEARTBEAT


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


class EventStreamResponse(StreamingResponse):
    """The `text/event-stream` answer of one hub stream. It gives the stream back to the hub
    however it ends, and drops a client that does not take an event within `send_timeout`."""

    def __init__(
        self,
        hub: Hub,
        stream: Stream,
        content: AsyncIterator[bytes],
        *,
        send_timeout_seconds: float,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._hub, self._stream, self._content = hub, stream, content
        self._send_timeout = send_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listening = asyncio.create_task(self._until_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self._content:
                await self._send(
                    send, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            logger.warning("live updates: a reader too slow to keep up was dropped")
        except OSError:
            pass  # the client went away while an event was sent
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            # The client reconnects with its last event's id, and misses nothing.
            logger.warning("live updates: a stream ended, the database failed: %s", exc)
        finally:
            listening.cancel()
            await self._hub.close(self._stream)

    async def _send(self, send: Send, message: Message) -> None:
        async with asyncio.timeout(self._send_timeout):
            await send(message)

    async def _until_disconnected(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._stream.end("disconnected")
