"""The buses that carry "user U's tasks changed" from the worker that wrote to every worker that
may hold one of U's streams: PostgreSQL LISTEN/NOTIFY, Redis pub/sub, or in-process (SQLite, one
worker).

A message is the user id and nothing else: the streams read what changed from the changes feed,
so a message lost (a bus outage) or merged with others loses nothing. Publishing never waits: ids
are queued, and one task per worker sends what has gathered in one round trip. One listening
connection per worker, whatever the number of streams; when it has to reconnect, every stream
of the worker looks at the feed again (`on_gap`), since messages sent meanwhile are gone.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg
import redis.asyncio

from backend.config import Settings
from backend.database_url import PostgresTarget

logger = logging.getLogger("backend.events")

CHANNEL = "todo_api_task_changes"
# Waits between reconnection attempts, in seconds, growing to the last.
_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)

Deliver = Callable[[str], None]


class Bus(Protocol):
    async def start(self, deliver: Deliver, on_gap: Callable[[], None]) -> None: ...

    def publish(self, user_id: str) -> None: ...

    async def close(self) -> None: ...


class LocalBus:
    """Within one process: what SQLite's single worker needs."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_gap: Callable[[], None]) -> None:
        self._deliver = deliver

    def publish(self, user_id: str) -> None:
        if self._deliver is not None:
            self._deliver(user_id)

    async def close(self) -> None:
        self._deliver = None


class _RemoteBus(ABC):
    """What the PostgreSQL and Redis buses share: the queue of ids to publish, the task that
    sends them, and the task that keeps the listening connection up."""

    name = "bus"

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliver: Deliver = lambda _user_id: None
        self._on_gap: Callable[[], None] = lambda: None
        self._up = asyncio.Event()

    async def start(self, deliver: Deliver, on_gap: Callable[[], None]) -> None:
        self._deliver, self._on_gap = deliver, on_gap
        self._tasks = [
            asyncio.create_task(self._keep_listening(), name=f"{self.name}-listen"),
            asyncio.create_task(self._keep_publishing(), name=f"{self.name}-publish"),
        ]
        # Streams work without the bus (the periodic check finds changes), so starting does
        # not wait long for it.
        try:
            await asyncio.wait_for(self._up.wait(), timeout=2)
        except TimeoutError:
            logger.warning("live updates: the %s is not up yet; retrying", self.name)

    def publish(self, user_id: str) -> None:
        self._pending.add(user_id)
        self._wanted.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._disconnect()

    async def _keep_publishing(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            batch, self._pending = sorted(self._pending), set()
            try:
                await self._send(batch)
            except Exception as exc:  # the streams' periodic check covers what is lost
                logger.warning("live updates: publishing on the %s failed: %s", self.name, exc)

    async def _keep_listening(self) -> None:
        attempt = 0
        while True:
            try:
                lost = await self._listen()
                attempt = 0
                self._up.set()
                self._on_gap()
                await lost.wait()
                logger.warning("live updates: the %s connection was lost; reconnecting", self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("live updates: cannot listen on the %s: %s", self.name, exc)
            self._up.clear()
            await self._disconnect()
            await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
            attempt += 1

    @abstractmethod
    async def _listen(self) -> asyncio.Event:
        """Connect and subscribe; the event is set when the connection is lost."""

    @abstractmethod
    async def _send(self, user_ids: list[str]) -> None:
        """Publish one message per user id."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Drop the listening connection, if any."""


# Every id of the batch in one statement (asyncpg runs one query at a time per connection).
_NOTIFY = "SELECT pg_notify($1, user_id) FROM unnest($2::text[]) AS user_id"


class PostgresBus(_RemoteBus):
    """LISTEN/NOTIFY on a connection of its own, outside the pool (a session: not through a
    transaction-mode pooler, hence `DATABASE_LISTEN_URL`)."""

    name = "PostgreSQL bus"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._target = PostgresTarget.parse(settings.database_listen_url or settings.database_url)
        self._timeout = settings.db_connect_timeout_seconds
        self._connection: Any = None

    async def _listen(self) -> asyncio.Event:
        url = self._target.url
        args = self._target.connect_args(
            timeout_seconds=self._timeout, application_name="todo-api-events"
        )
        # A NOTIFY commits a transaction of its own: without waiting for its flush to disk (a
        # crash can lose only messages, which the streams' periodic check makes up for).
        args["server_settings"] = {**args["server_settings"], "synchronous_commit": "off"}
        connection = await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            statement_cache_size=0,
            **args,
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, self._notified)
        self._connection = connection
        return lost

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._deliver(payload)

    async def _send(self, user_ids: list[str]) -> None:
        if self._connection is None or self._connection.is_closed():
            raise ConnectionError("not connected")
        await self._connection.execute(_NOTIFY, CHANNEL, user_ids)

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()


class RedisBus(_RemoteBus):
    """Redis pub/sub, one subscribed connection per worker."""

    name = "Redis bus"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        assert settings.redis_url is not None
        self._client = redis.asyncio.Redis.from_url(
            settings.redis_url.removeprefix("async+"),
            socket_connect_timeout=1.0,
            socket_timeout=None,  # the subscribed connection waits for messages indefinitely
            health_check_interval=15,
        )
        self._publisher = redis.asyncio.Redis.from_url(
            settings.redis_url.removeprefix("async+"),
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
        )
        # Services sharing one Redis keep apart by their key prefix, as their counters do.
        self._channel = f"{settings.rate_limit_key_prefix}:{CHANNEL}"
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def _listen(self) -> asyncio.Event:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._pubsub = pubsub
        lost = asyncio.Event()
        self._reader = asyncio.create_task(self._read(pubsub, lost), name="redis-bus-read")
        return lost

    async def _read(self, pubsub: Any, lost: asyncio.Event) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    self._deliver(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("live updates: reading the Redis bus failed: %s", exc)
        finally:
            lost.set()

    async def _send(self, user_ids: list[str]) -> None:
        async with self._publisher.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.publish(self._channel, user_id)
            await pipe.execute()

    async def _disconnect(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception as exc:  # a connection already gone
                logger.debug("closing the Redis subscription: %s", exc)

    async def close(self) -> None:
        await super().close()
        await self._client.aclose()
        await self._publisher.aclose()


def bus_for(settings: Settings) -> Bus:
    kind = settings.live_bus
    if kind == "postgres":
        return PostgresBus(settings)
    if kind == "redis":
        return RedisBus(settings)
    return LocalBus()
