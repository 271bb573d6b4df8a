"""Safe retries: the store of idempotency keys (the pipeline's side is `backend/safe_retries.py`).

The contract: a POST or PATCH under /api/{user_id}/ may carry an `Idempotency-Key` (1 to 255
printable ASCII characters), which belongs to the user. The first request with a key runs; its
answer is kept for `IDEMPOTENCY_TTL_HOURS` and given again to a repeat of the same request (same
method, path and body: the *fingerprint*), with nothing done. Another request with the key is
refused (422), and so is a repeat while the first still runs (409). Answers a retry must not get
again are not kept: 400, 401, 403 and 429 (nothing ran) and 5xx (something failed).

Everything lives in the database, so it holds across workers and instances:

- `claim`: one atomic statement, committed at once (an INSERT that does nothing when the key is
  there), so every worker sees the claim as soon as it is made. The INSERT takes the existing
  record over instead when it has expired, or when it is a claim of the same request left
  running past its lease (`IDEMPOTENCY_LEASE_SECONDS`: its worker is deemed gone): ON CONFLICT
  DO UPDATE ... WHERE, so of any number of requests that try, exactly one gets it. A request that
  does not get the claim reads the record: another fingerprint is 422, a claim still running
  409, and an answer is given again.
- `record` and `release`: the request that holds the claim keeps its answer, or lets the key go
  (a repeat then runs anew). Both touch only the record of its own claim (`claim`, an id of its
  own), so a request that outlived its lease never overwrites what the one that took over does.
- Expired records are deleted by `todo-api purge` (`purge_expired`) and now and then by the
  service (`purge_now_and_then`): after about one new answer in `PURGE_EVERY`, at most
  `PURGE_BATCH` expired records, many more than are made meanwhile, so the store stays bounded by
  what `IDEMPOTENCY_TTL_HOURS` of traffic makes.

Statements are built once with bind parameters and run on the unit of work's `Work`.
"""

import hashlib
import random
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable
from sqlmodel import delete, select, update

from backend.config import Settings
from backend.db import UnitOfWork
from backend.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from backend.models import IDEMPOTENCY_KEYS, UTCDateTime, utcnow

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The methods a key is taken on (under /api/{user_id}/): PUT and DELETE are idempotent already.
METHODS = frozenset({"POST", "PATCH"})
KEY = re.compile(r"[\x20-\x7e]{1,255}")
# A repeat runs anew after these: the request was refused before it ran, or failed (and 5xx).
_NOT_KEPT = frozenset({400, 401, 403, 429})
# How often a claim is tried again when the record it lost to is gone before it could be read
# (its request failed and let the key go); then the repeat is told to come back.
CLAIM_ATTEMPTS = 3
PURGE_EVERY = 100
PURGE_BATCH = 500


def is_kept(status: int) -> bool:
    """Whether an answer with this status is given again to a repeat."""
    return status < 500 and status not in _NOT_KEPT


def fingerprint(method: str, target: str, body: bytes) -> str:
    """What makes two requests the same request: the method, the path (and query) and the body,
    byte for byte."""
    digest = hashlib.sha256()
    for part in (method.encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Policy:
    """How long an answer is kept, and how long a running request holds its key."""

    ttl: timedelta
    lease: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            lease=timedelta(seconds=settings.idempotency_lease_seconds),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer exactly as it was sent."""

    status: int
    body: bytes
    content_type: str | None = None
    location: str | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's hold on its key: it runs, and then records its answer or lets the key go."""

    user_id: str
    key: str
    id: uuid.UUID


# --- Statements -------------------------------------------------------------------------------

_k = IDEMPOTENCY_KEYS.c


def _param(name: str, column: str | None = None) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=_k[column or name].type)


_NOW = sa.bindparam("now", type_=UTCDateTime())
_THIS_KEY = sa.and_(_k.user_id == _param("user_id"), _k.key == _param("key"))
# The record of one claim, while it runs.
_OWN_CLAIM = sa.and_(_THIS_KEY, _k.claim == _param("claim"), _k.status.is_(None))
_ANSWER = ("status", "body", "content_type", "location", "etag")


def _claim_statement(insert: Any) -> Executable:
    """INSERT the claim; when the key is there, take its record over only if it has expired, or
    if it is this same request's claim left running past its lease. RETURNING: the claim, or
    nothing when the key stays another's."""
    new = insert(IDEMPOTENCY_KEYS).values(
        user_id=_param("user_id"),
        key=_param("key"),
        fingerprint=_param("fingerprint"),
        claim=_param("claim"),
        claimed_at=_NOW,
        expires_at=_param("expires_at"),
    )
    taken = {name: new.excluded[name] for name in ("fingerprint", "claim", "claimed_at")}
    upsert: Executable = new.on_conflict_do_update(
        index_elements=[_k.user_id, _k.key],
        set_={
            **taken,
            "expires_at": new.excluded.expires_at,
            **dict.fromkeys(_ANSWER, sa.null()),
        },
        where=sa.or_(
            _k.expires_at <= _NOW,
            sa.and_(
                _k.status.is_(None),
                _k.claimed_at <= sa.bindparam("abandoned_before", type_=UTCDateTime()),
                _k.fingerprint == new.excluded.fingerprint,
            ),
        ),
    ).returning(_k.claim)
    return upsert


# ON CONFLICT is each dialect's own construct.
_CLAIM = {
    "postgresql": _claim_statement(postgresql.insert),
    "sqlite": _claim_statement(sqlite.insert),
}

_FIND = select(_k.fingerprint, *(_k[name] for name in _ANSWER)).where(_THIS_KEY)

# Parameters of UPDATE ... SET are named new_*: SQLAlchemy keeps the column names for itself.
_RECORD = (
    update(IDEMPOTENCY_KEYS)
    .where(_OWN_CLAIM)
    .values({name: _param(f"new_{name}", name) for name in _ANSWER})
)

_RELEASE = delete(IDEMPOTENCY_KEYS).where(_OWN_CLAIM)

_EXPIRED = _k.expires_at <= _NOW

_PURGE = delete(IDEMPOTENCY_KEYS).where(_EXPIRED)

# At most `batch` expired records (PostgreSQL has no DELETE ... LIMIT), oldest first, found
# through the index on expires_at.
_PURGE_SOME = delete(IDEMPOTENCY_KEYS).where(
    sa.tuple_(_k.user_id, _k.key).in_(
        select(_k.user_id, _k.key)
        .where(_EXPIRED)
        .order_by(_k.expires_at)
        .limit(sa.bindparam("batch"))
    )
)


# --- The store --------------------------------------------------------------------------------


async def claim(
    unit: UnitOfWork, *, user_id: str, key: str, fingerprint: str, policy: Policy
) -> Claim | Answer:
    """Claim `key` for a request (`fingerprint`), committed at once: the `Claim` when this
    request is to run, or the answer kept for it. 422 `idempotency_key_reused` when the key is
    another request's, 409 `idempotency_key_in_progress` while the first one runs."""
    for _ in range(CLAIM_ATTEMPTS):
        now = utcnow()
        claim_id = uuid.uuid4()
        async with unit.statement() as work:
            claimed = await work.rows(
                _CLAIM[work.dialect],
                {
                    "user_id": user_id,
                    "key": key,
                    "fingerprint": fingerprint,
                    "claim": claim_id,
                    "now": now,
                    "expires_at": now + policy.ttl,
                    "abandoned_before": now - policy.lease,
                },
            )
        if claimed:
            return Claim(user_id, key, claim_id)
        found = await (await unit.read()).rows(_FIND, {"user_id": user_id, "key": key})
        if found:
            return _existing(found[0], fingerprint)
    raise IdempotencyKeyInProgress()


def _existing(row: dict[str, Any], fingerprint: str) -> Answer:
    """The answer kept for this request, or why there is none to give."""
    if row["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused()
    if row["status"] is None:
        raise IdempotencyKeyInProgress()
    return Answer(**{name: row[name] for name in _ANSWER})


async def record(unit: UnitOfWork, claim: Claim, answer: Answer) -> bool:
    """Keep the answer of a claimed request for its repeats; False if the claim was lost (taken
    over after its lease, or its user deleted)."""
    async with unit.statement() as work:
        recorded = await work.run(
            _RECORD,
            {
                "user_id": claim.user_id,
                "key": claim.key,
                "claim": claim.id,
                **{f"new_{name}": getattr(answer, name) for name in _ANSWER},
            },
        )
    return recorded == 1


async def release(unit: UnitOfWork, claim: Claim) -> None:
    """Let the key go: a repeat runs anew."""
    async with unit.statement() as work:
        await work.run(_RELEASE, {"user_id": claim.user_id, "key": claim.key, "claim": claim.id})


async def purge_expired(unit: UnitOfWork, *, now: datetime | None = None) -> int:
    """Delete every expired record; how many."""
    async with unit.statement() as work:
        return await work.run(_PURGE, {"now": now or utcnow()})


async def purge_now_and_then(unit: UnitOfWork) -> int:
    """After about one call in `PURGE_EVERY`, delete at most `PURGE_BATCH` expired records; how
    many. (A draw rather than a count: nothing to keep per process.)"""
    if random.randrange(PURGE_EVERY):  # noqa: S311 (not a secret)
        return 0
    async with unit.statement() as work:
        return await work.run(_PURGE_SOME, {"now": utcnow(), "batch": PURGE_BATCH})
