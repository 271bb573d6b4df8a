"""The fan-out of one worker: its open streams by user, woken by the bus when their user's tasks
change, and checked every `EVENTS_CHECK_SECONDS` against the database.

The check is one query for all the worker's streams: a user whose revision moved past what a
stream has seen wakes it (a message the bus lost), a revoked token (logout everywhere, a new
password), a deleted account or an expired token ends it, and the worker's leases are renewed.
On shutdown (SIGTERM or SIGINT, or the lifespan's end) every stream ends at once, so the server's
graceful shutdown does not wait for them.
"""

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from backend.auth.tokens import Principal
from backend.config import Settings
from backend.db import Database, UnitOfWork
from backend.events.buses import Bus, bus_for
from backend.services import streams

logger = logging.getLogger("backend.events")

# Lapsed leases (of workers that died) are deleted every this many checks.
_PURGE_EVERY = 30


@dataclass(eq=False, slots=True)
class Stream:
    """One open stream: whose, until when its token holds, how far it has read."""

    id: uuid.UUID
    user_id: str
    issued_at: float
    expires_at: float
    # The user's revision up to which this stream has read every change.
    seen: int
    # The user's revision the last check found (read before the stream's next read).
    target: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the stream must end (None while it may go on).
    ended: str | None = None
    closed: bool = False

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self.wake.set()


class Hub:
    def __init__(self, settings: Settings, database: Database, bus: Bus | None = None) -> None:
        self._settings = settings
        self._database = database
        self._bus = bus or bus_for(settings)
        self._streams: dict[str, set[Stream]] = {}
        # This worker's leases carry this id (`backend/services/streams.py`).
        self._worker = uuid.uuid4()
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._signals: dict[int, Any] = {}

    @property
    def open_streams(self) -> int:
        return sum(len(group) for group in self._streams.values())

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        await self._bus.start(self._deliver, self._wake_all)
        self._watcher = asyncio.create_task(self._watch(), name="events-watch")
        self._hook_signals()

    async def stop(self) -> None:
        self.shut_down("shutdown")
        self._unhook_signals()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self._bus.close()

    def shut_down(self, reason: str) -> None:
        """End every stream now (they end their responses cleanly)."""
        self._closing = True
        for group in self._streams.values():
            for stream in group:
                stream.end(reason)

    def changed(self, user_id: str) -> None:
        """Tell every worker that `user_id`'s tasks changed (after the change's commit)."""
        self._bus.publish(user_id)

    async def open(self, unit: UnitOfWork, principal: Principal, *, seen: int) -> Stream:
        """Count and register a new stream of the principal's user (429 beyond the limit)."""
        stream = Stream(
            uuid.uuid4(),
            principal.subject,
            principal.issued_at,
            principal.expires_at,
            seen=seen,
            target=seen,
        )
        await streams.claim_stream(
            unit,
            stream.user_id,
            stream.id,
            worker=self._worker,
            max_streams=self._settings.max_streams_per_user,
        )
        self._streams.setdefault(stream.user_id, set()).add(stream)
        if self._closing:
            stream.end("shutdown")
        return stream

    async def close(self, stream: Stream) -> None:
        """Forget an ended stream and give its lease back (once)."""
        if stream.closed:
            return
        stream.closed = True
        stream.end("closed")
        group = self._streams.get(stream.user_id)
        if group is not None:
            group.discard(stream)
            if not group:
                del self._streams[stream.user_id]
        try:
            await streams.release_stream(self._database, stream.user_id, stream.id)
        except Exception as exc:  # the lease lapses by itself
            logger.warning("live updates: could not release a stream's lease: %s", exc)

    def _deliver(self, user_id: str) -> None:
        for stream in self._streams.get(user_id, ()):
            stream.wake.set()

    def _wake_all(self) -> None:
        for group in self._streams.values():
            for stream in group:
                stream.wake.set()

    async def _watch(self) -> None:
        checks = 0
        while True:
            await asyncio.sleep(self._settings.events_check_seconds)
            checks += 1
            try:
                await self._check()
                if checks % _PURGE_EVERY == 0:
                    await streams.purge_lapsed_streams(self._database)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage: streams go on, checked later
                logger.warning("live updates: checking the open streams failed: %s", exc)

    async def _check(self) -> None:
        if not self._streams:
            return
        # Renewed first: a lease found lapsed (a long outage) ends its stream below.
        await streams.renew_streams(self._database, self._worker)
        users = await streams.users_of_streams(self._database, self._worker)
        now = time.time()
        for user_id, group in list(self._streams.items()):
            user = users.get(user_id)
            for stream in list(group):
                if user is None:
                    stream.end("gone")  # the account, or the lease (an outage)
                elif _revoked(stream, user["tokens_valid_after"]):
                    stream.end("token_revoked")
                elif now >= stream.expires_at:
                    stream.end("token_expired")
                elif user["revision"] > stream.seen:
                    stream.target = max(stream.target, user["revision"])
                    stream.wake.set()

    def _hook_signals(self) -> None:
        """End the streams as soon as the server is told to stop: uvicorn waits for open
        responses before it ends the lifespan, so the lifespan's end would come too late."""
        try:
            for number in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(number)
                signal.signal(number, self._on_signal(previous))
                self._signals[number] = previous
        except ValueError:  # not the main thread: no signals here (tests, embedded servers)
            self._signals.clear()

    def _unhook_signals(self) -> None:
        for number, previous in self._signals.items():
            signal.signal(number, previous)
        self._signals.clear()

    def _on_signal(self, previous: Any) -> Callable[[int, FrameType | None], None]:
        loop = asyncio.get_running_loop()

        def handle(number: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.shut_down, "shutdown")
            if callable(previous):
                previous(number, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(number, signal.SIG_DFL)
                signal.raise_signal(number)

        return handle


def _revoked(stream: Stream, tokens_valid_after: Any) -> bool:
    return tokens_valid_after is not None and stream.issued_at < tokens_valid_after.timestamp()
