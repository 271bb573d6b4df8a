"""The task statements, built once with SQLModel on the tables themselves (Core, not ORM
entities), with bind parameters for every value: building a statement and computing its cache
key costs more than running it, and these run on every request. The list statements depend on
the shape of the query (which filters, which sort) and are built once per shape.

Every statement is scoped by its owner (`owned`, `owned_trash`, `owned_any`), which binds the
`owner_id` parameter that every execution must supply (`backend/services/tasks.py`), so a task
id alone never reaches a row. Live tasks are those with no `deleted_at`; the trash, the others.

Every write stamps the task with the owner's next revision, taken from the owner's row in the
same transaction (the changes feed's clock: see `backend/services/changes.py`). On PostgreSQL
the revision comes from a WITH clause that bumps it (`Stamped.postgresql`: the whole write is
one statement); SQLite has no UPDATE inside WITH, so there the write runs after `BUMP`, in the
transaction, with the revision as a parameter (`Stamped.sqlite`). A write that also writes the
rows of the task's tags (`backend/services/tags.py`) runs in a transaction on both.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import delete, insert, select, update

from backend.models import TASKS, USERS, AuthProvider, UTCDateTime

t = TASKS.c
u = USERS.c
WRITABLE = ("title", "description", "completed", "priority", "due_date", "tags")
# Written with the text they fold, read only by search.
FOLDED = ("title_folded", "description_folded")
COLUMNS = tuple(column for column in TASKS.columns if column.name not in FOLDED)
NOW = sa.bindparam("now", type_=UTCDateTime())
OWNER: sa.BindParameter[str] = sa.bindparam("owner_id", type_=sa.String())
BY_ID = t.id == sa.bindparam("task_id")


def owned(*criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    """The owner's live tasks: the scope of every read and write but the trash's."""
    return sa.and_(t.user_id == OWNER, t.deleted_at.is_(None), *criteria)


def owned_trash(*criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    return sa.and_(t.user_id == OWNER, t.deleted_at.is_not(None), *criteria)


def owned_any(*criteria: ColumnElement[bool]) -> ColumnElement[bool]:
    return sa.and_(t.user_id == OWNER, *criteria)


# --- conditional requests --------------------------------------------------------------------

# If-Match, as the versions it lists, comma-separated ("3,5"); None when there is no condition
# (no header, or `*`). One text parameter, so the statement stays the same whatever the list.
_VERSIONS = sa.bindparam("versions", type_=sa.String())


def _text(sql: str) -> ColumnElement[str]:
    return sa.literal_column(sql, sa.String())


MATCHES = sa.or_(
    _VERSIONS.is_(None),
    (_text("','") + _VERSIONS + _text("','")).like(
        _text("'%,'") + sa.cast(t.version, sa.String()) + _text("',%'")
    ),
)

# --- the token's standing -------------------------------------------------------------------

# A route that checks the token inside its own statements (`backend/routing.py`) gives them the
# token's provider, the instant it was issued and, for Better Auth, the profile it carries (as
# stored: `users.standing`). The owner's row then passes only if it is that provider's, has not
# revoked the tokens issued at that instant (logout-all, a new password) and holds that profile;
# otherwise the statement finds nothing, and the pipeline asks why. Without them (None: the
# pipeline has read the account already) the row passes.
STANDING_PROVIDER = sa.bindparam("standing_provider", value=None, type_=sa.String())
STANDING_ISSUED_AT = sa.bindparam("standing_issued_at", value=None, type_=UTCDateTime())
STANDING_EMAIL = sa.bindparam("standing_email", value=None, type_=sa.String())
STANDING_NAME = sa.bindparam("standing_name", value=None, type_=sa.String())
IN_STANDING = sa.or_(
    STANDING_PROVIDER.is_(None),
    sa.and_(
        u.provider == STANDING_PROVIDER,
        sa.or_(u.tokens_valid_after.is_(None), u.tokens_valid_after <= STANDING_ISSUED_AT),
        sa.or_(
            u.provider == AuthProvider.local,
            sa.and_(
                u.email.is_not_distinct_from(STANDING_EMAIL),
                u.name.is_not_distinct_from(STANDING_NAME),
            ),
        ),
    ),
)

# --- the revision ---------------------------------------------------------------------------

# The owner's next revision (SQLite: run first, in the write's transaction). The row stays
# locked until the transaction ends, so revisions are taken, and committed, one after another.
BUMP = (
    update(USERS)
    .where(u.id == OWNER, IN_STANDING)
    .values(revision=u.revision + 1)
    .returning(u.revision)
)
_BUMPED = BUMP.returning(u.id.label("owner")).cte("bumped")


@dataclass(frozen=True, slots=True)
class Stamped:
    """One write, for each database: PostgreSQL's bumps the revision itself; SQLite's takes it
    as the `revision` parameter, from `BUMP` run just before."""

    postgresql: Executable
    sqlite: Executable

    @classmethod
    def build(cls, write: Callable[[ColumnElement[int]], Any]) -> "Stamped":
        # PostgreSQL's joins the bumped row by its owner (one row: the statement's own user).
        postgresql = write(_BUMPED.c.revision).where(t.user_id == _BUMPED.c.owner)
        return cls(postgresql, write(sa.bindparam("revision", type_=sa.BigInteger)))


# --- reads ----------------------------------------------------------------------------------

GET = select(*COLUMNS).where(owned(BY_ID), sa.exists().where(u.id == OWNER, IN_STANDING))
GET_ANY = select(*COLUMNS).where(owned_any(BY_ID))

# --- create ---------------------------------------------------------------------------------

NEW_TASK_COLUMNS = (
    "id",
    *WRITABLE,
    *FOLDED,
    "position",
    "completed_at",
    "created_at",
    "updated_at",
)
FIRST_POSITION = select(sa.func.min(t.position).label("position")).where(owned())
# Counting, capping and taking the revision in one UPDATE keeps the cap exact under concurrent
# creates, and the owner's row locked until the task is stored. It also returns the owner's first
# position (read under that lock: new tasks go before it), which saves a round trip.
_COUNTED = (
    update(USERS)
    .where(u.id == OWNER, u.task_count < sa.bindparam("cap"), IN_STANDING)
    .values(task_count=u.task_count + 1, revision=u.revision + 1)
)
COUNT_ONE_MORE = _COUNTED.returning(u.revision, FIRST_POSITION.scalar_subquery().label("first"))
INSERT = insert(TASKS)

# --- change ---------------------------------------------------------------------------------

# The search text of each text field: what search compares, folded as the query is.
FOLDS = {"title_folded": "title", "description_folded": "description"}


def folded(values: dict[str, Any]) -> dict[str, str | None]:
    """The search text of the text fields among `values`: Unicode full case folding, the same
    for the query (`list_tasks`)."""
    return {
        folded: None if values[name] is None else values[name].casefold()
        for folded, name in FOLDS.items()
        if name in values
    }


# Parameters of UPDATE ... SET are named new_*: SQLAlchemy keeps the column names for itself.
# A field is written when its set_* flag is true (a PUT sets every one, a PATCH those it has),
# and keeps its value otherwise; its search text with it.
_NEW = {name: sa.bindparam(f"new_{name}", type_=t[name].type) for name in (*WRITABLE, *FOLDED)}
_SETS = {name: sa.bindparam(f"set_{name}", type_=sa.Boolean()) for name in WRITABLE}
_AFTER = {
    name: sa.case((_SETS[FOLDS.get(name, name)], _NEW[name]), else_=t[name])
    for name in (*WRITABLE, *FOLDED)
}
# SET expressions see the row as it was: whether the write changes anything (nullable fields
# compared null-safely), and whether the task was completed already.
_UNCHANGED = sa.and_(*(t[name].is_not_distinct_from(_AFTER[name]) for name in WRITABLE))


def _update(revision: ColumnElement[int]) -> Executable:
    """A write of some fields that keeps the task as it was (`updated_at`, `version` and
    `revision` included) when it changes nothing."""
    return (
        update(TASKS)
        .where(owned(BY_ID, MATCHES))
        .values(
            {
                **_AFTER,
                "completed_at": sa.case(
                    (sa.not_(_AFTER["completed"]), sa.null()),
                    (t.completed, t.completed_at),
                    else_=NOW,
                ),
                "updated_at": sa.case((_UNCHANGED, t.updated_at), else_=NOW),
                "version": sa.case((_UNCHANGED, t.version), else_=t.version + 1),
                "revision": sa.case((_UNCHANGED, t.revision), else_=revision),
            }
        )
        .returning(*COLUMNS)
    )


UPDATE = Stamped.build(_update)
TOGGLE = Stamped.build(
    lambda revision: (
        update(TASKS)
        .where(owned(BY_ID, MATCHES))
        .values(
            completed=sa.not_(t.completed),
            completed_at=sa.case((t.completed, sa.null()), else_=NOW),
            updated_at=NOW,
            version=t.version + 1,
            revision=revision,
        )
        .returning(*COLUMNS)
    )
)

# --- the trash ------------------------------------------------------------------------------

TRASH = Stamped.build(
    lambda revision: (
        update(TASKS)
        .where(owned(BY_ID, MATCHES))
        .values(deleted_at=NOW, version=t.version + 1, revision=revision)
        .returning(t.id)
    )
)
TRASH_COMPLETED = (
    update(TASKS)
    .where(owned(t.completed == sa.true()))
    .values(deleted_at=NOW, version=t.version + 1, revision=sa.bindparam("revision"))
)
COUNT_FEWER = (
    update(USERS).where(u.id == OWNER).values(task_count=u.task_count - sa.bindparam("fewer"))
)
# Restoring counts the task again, capped, and takes the revision, in one UPDATE.
COUNT_RESTORED = _COUNTED.returning(u.revision)
RESTORE = (
    update(TASKS)
    .where(owned_trash(BY_ID))
    .values(deleted_at=None, version=t.version + 1, revision=sa.bindparam("revision"))
    .returning(*COLUMNS)
)
IN_TRASH = select(t.id).where(owned_trash(BY_ID))
TRASH_COUNT = select(sa.func.count().label("total")).select_from(TASKS).where(owned_trash())
TRASH_PAGE = (
    select(*COLUMNS)
    .where(owned_trash())
    .order_by(t.deleted_at.desc(), t.id.desc())
    .limit(sa.bindparam("limit"))
    .offset(sa.bindparam("offset"))
)
# Purging forgets deletions: the owner's sync horizon moves up to the newest one purged.
PURGE_ONE = delete(TASKS).where(owned_trash(BY_ID)).returning(t.revision)
PURGE_ALL = delete(TASKS).where(owned_trash()).returning(t.revision)
_CUTOFF = sa.bindparam("cutoff", type_=UTCDateTime())
# The owner's trash beyond its cap (the oldest deletions) and past its retention.
_BEYOND = (
    select(t.id)
    .where(owned_trash())
    .order_by(t.deleted_at.desc(), t.id.desc())
    .offset(sa.bindparam("cap"))
    .scalar_subquery()
)
PURGE_EXPIRED = (
    delete(TASKS)
    .where(owned_trash(sa.or_(t.deleted_at < _CUTOFF, t.id.in_(_BEYOND))))
    .returning(t.revision)
)
_HORIZON = sa.bindparam("horizon", type_=sa.BigInteger)
MOVE_HORIZON = (
    update(USERS).where(u.id == OWNER, u.sync_horizon < _HORIZON).values(sync_horizon=_HORIZON)
)
# Every user whose trash has expired tasks or is over the cap (for `todo-api purge`).
OWNERS_TO_PURGE = (
    select(t.user_id)
    .where(t.deleted_at.is_not(None))
    .group_by(t.user_id)
    .having(sa.or_(sa.func.min(t.deleted_at) < _CUTOFF, sa.func.count() > sa.bindparam("cap")))
)
