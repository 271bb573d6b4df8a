"""Live-update streams in the database: the leases that count a user's open streams across
every worker and machine, and what a worker checks about the users of its streams.

A stream holds a lease (a row of `event_streams`, marked with its worker's id) from its start to
its end; its worker renews the leases of all its streams at each check, in one statement, so the
rows of a worker that died lapse by themselves after `LEASE`.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import delete, insert, select, update

from backend.db import Database, UnitOfWork
from backend.errors import TooManyStreams
from backend.models import EVENT_STREAMS, USERS, UTCDateTime, utcnow

s = EVENT_STREAMS.c
u = USERS.c
# How long a lease outlives its last renewal (many checks: a slow one does not end streams).
LEASE = timedelta(seconds=30)

_OWNER = sa.bindparam("owner_id", type_=sa.String())
_NOW = sa.bindparam("now", type_=UTCDateTime())
_LOCK_OWNER = select(u.id).where(u.id == _OWNER).with_for_update()
_DROP_LAPSED = delete(EVENT_STREAMS).where(s.user_id == _OWNER, s.expires_at < _NOW)
_COUNT = select(sa.func.count().label("open")).select_from(EVENT_STREAMS).where(s.user_id == _OWNER)
_CLAIM = insert(EVENT_STREAMS)
_RELEASE = delete(EVENT_STREAMS).where(s.user_id == _OWNER, s.id == sa.bindparam("stream_id"))
_WORKER = sa.bindparam("worker", type_=sa.Uuid())
_RENEW = (
    update(EVENT_STREAMS)
    .where(s.worker == _WORKER)
    .values(expires_at=sa.bindparam("until", type_=UTCDateTime()))
)
_PURGE_LAPSED = delete(EVENT_STREAMS).where(s.expires_at < _NOW)
# The users of a worker's streams, found through their leases (a deleted user's are gone).
_USERS = select(u.id, u.revision, u.tokens_valid_after).where(
    u.id.in_(select(s.user_id).where(s.worker == _WORKER))
)


async def claim_stream(
    unit: UnitOfWork, owner_id: str, stream_id: uuid.UUID, *, worker: uuid.UUID, max_streams: int
) -> None:
    """Count a new stream of the owner, unless `max_streams` are open already (429)."""
    now = utcnow()
    async with unit.transaction() as work:
        # One opening at a time per user, on every worker (SQLite's write lock does the same).
        await work.rows(_LOCK_OWNER, {"owner_id": owner_id})
        await work.run(_DROP_LAPSED, {"owner_id": owner_id, "now": now})
        open_streams = (await work.rows(_COUNT, {"owner_id": owner_id}))[0]["open"]
        if open_streams >= max_streams:
            raise TooManyStreams(max_streams)
        await work.run(
            _CLAIM,
            {"id": stream_id, "user_id": owner_id, "worker": worker, "expires_at": now + LEASE},
        )


async def release_stream(database: Database, owner_id: str, stream_id: uuid.UUID) -> None:
    async with database.unit(write=True) as unit, unit.statement() as work:
        await work.run(_RELEASE, {"owner_id": owner_id, "stream_id": stream_id})


async def renew_streams(database: Database, worker: uuid.UUID) -> None:
    async with database.unit(write=True) as unit, unit.statement() as work:
        await work.run(_RENEW, {"worker": worker, "until": utcnow() + LEASE})


async def purge_lapsed_streams(database: Database, *, now: datetime | None = None) -> int:
    """Delete the leases of streams whose worker stopped renewing them; how many."""
    async with database.unit(write=True) as unit, unit.statement() as work:
        return await work.run(_PURGE_LAPSED, {"now": now or utcnow()})


async def users_of_streams(database: Database, worker: uuid.UUID) -> dict[str, Any]:
    """The revision and the revocation instant of the users of the worker's streams, by id."""
    async with database.reading() as work:
        return {row["id"]: row for row in await work.rows(_USERS, {"worker": worker})}
