"""The changes feed: what changed in a user's tasks since a cursor, oldest change first, each
task once in its latest state (an upsert, or a delete for a task in the trash or gone).

Every change to a user's tasks takes the user's next revision in the same transaction (the
writes of `backend/services/tasks.py`), and a task keeps the revision of its last change; the
feed reads tasks in (revision, id) order after the cursor's position. Revisions are taken while
the user's row is locked, so revision N + 1 is never committed while N is still invisible: a
reader that has seen N + 1 has seen everything before it.

A feed without a cursor is a full sync: every live task, and the deletions that happen while
it is being read (those before its start never reached the client: its cursor's `s`). Purging
the trash forgets deletions; the user's sync horizon is the newest one forgotten, and a cursor
that has not seen that far is 410 `sync_expired` (the client does a full sync again).
"""

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from backend.db import UnitOfWork, Work
from backend.errors import InvalidCursor, SyncExpired
from backend.models import TASKS, USERS
from backend.schemas import ChangesPage
from backend.services import cursors
from backend.services.task_statements import COLUMNS, OWNER

_KIND = "changes"
_NO_ID = uuid.UUID(int=0)
# After every task of a revision: (revision, _LAST_ID) is past all of the revision's changes.
_LAST_ID = uuid.UUID(int=(1 << 128) - 1)
t = TASKS.c
_AFTER_REVISION = sa.bindparam("after_revision", type_=sa.BigInteger)
_FEED = (
    select(*COLUMNS)
    .where(
        t.user_id == OWNER,
        # A row comparison: an index bound on (user_id, revision, id) even in a generic plan.
        sa.tuple_(t.revision, t.id)
        > sa.tuple_(_AFTER_REVISION, sa.bindparam("after_id", type_=sa.Uuid)),
        sa.or_(t.deleted_at.is_(None), t.revision > sa.bindparam("start", type_=sa.BigInteger)),
    )
    .order_by(t.revision, t.id)
    .limit(sa.bindparam("limit"))
)
_HORIZON = select(USERS.c.sync_horizon).where(USERS.c.id == OWNER)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a feed reader is: after the change of (`revision`, `task_id`); `start` is the
    user's revision when its full sync began (0 for none)."""

    revision: int
    task_id: uuid.UUID
    start: int

    def cursor(self) -> str:
        return cursors.encode(_KIND, r=self.revision, i=self.task_id.hex, s=self.start)

    @classmethod
    def parse(cls, text: str) -> "Position":
        fields = cursors.decode(text, _KIND)
        task_id = fields.get("i")
        if not isinstance(task_id, str) or len(task_id) != 32:
            raise InvalidCursor()
        try:
            parsed = uuid.UUID(hex=task_id)
        except ValueError as exc:
            raise InvalidCursor() from exc
        return cls(cursors.integer(fields, "r"), parsed, cursors.integer(fields, "s"))


@dataclass(frozen=True, slots=True)
class Changed:
    """One change of the feed, and the position just after it (a live event's id)."""

    position: Position
    change: dict[str, Any]


async def read_changes(
    work: Work, owner_id: str, position: Position, *, limit: int
) -> tuple[list[Changed], bool]:
    """Up to `limit` changes after `position`, oldest first, and whether more are waiting;
    410 `sync_expired` when purging has forgotten deletions `position` has not seen."""
    rows = await work.rows(
        _FEED,
        {
            "owner_id": owner_id,
            "after_revision": position.revision,
            "after_id": position.task_id,
            "start": position.start,
            "limit": limit + 1,
        },
    )
    # Read after the changes: a purge that took a deletion away before they were read has
    # moved the horizon by then.
    horizon: int = (await work.rows(_HORIZON, {"owner_id": owner_id}))[0]["sync_horizon"]
    if horizon > max(position.revision, position.start):
        raise SyncExpired()
    changed = [
        Changed(Position(row["revision"], row["id"], position.start), _change(row))
        for row in rows[:limit]
    ]
    return changed, len(rows) > limit


async def changes(
    unit: UnitOfWork, owner_id: str, *, revision: int, since: str | None, limit: int
) -> ChangesPage:
    """A page of the feed after `since` (a full sync without it; `revision` is the user's, read
    before this)."""
    position = Position(0, _NO_ID, revision) if since is None else Position.parse(since)
    page, has_more = await read_changes(await unit.read(), owner_id, position, limit=limit)
    if page:
        position = page[-1].position
    return ChangesPage.model_validate(
        {
            "changes": [changed.change for changed in page],
            "next": position.cursor(),
            "has_more": has_more,
        }
    )


def live_position(revision: int) -> Position:
    """The position of a reader that has seen everything up to `revision`, and wants only
    what comes after (a live stream opened without a cursor)."""
    return Position(revision, _LAST_ID, revision)


def _change(row: dict[str, Any]) -> dict[str, Any]:
    if row["deleted_at"] is not None:
        return {"op": "delete", "id": row["id"]}
    return {"op": "upsert", "task": row}
