"""What a person does with their own account: change the profile, take their data with them
(export), and leave (deletion).

Deletion removes every row that belongs to the user, in one transaction, after locking the
user's row (the lock order of `sessions`: the user first), so it runs after, or before, a
concurrent refresh or task write, never into a deadlock with one. Which rows belong to the user
is read from the metadata: every table with a foreign key to `users`, and every table with a
foreign key to one of those, so a table added later is covered without a change here.

The export holds the user and the tasks: the user's data. Other rows of the user are the
service's bookkeeping, deleted with the user but not exported: sessions, reset tokens, and the
answers kept for `Idempotency-Key` retries (`idempotency_keys`, gone within a day anyway).
"""

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import SQLModel, delete, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.passwords import PasswordHasher
from backend.db import Database
from backend.errors import InvalidToken, ValidationFailed, WrongPassword
from backend.models import DELETED_SUBJECTS, TASKS, USERS, AuthProvider, utcnow
from backend.ratelimit import LoginLockout
from backend.schemas import ProfileUpdate, UserRead, format_timestamp
from backend.services import sessions
from backend.services.users import Account, subject_hash

EXPORT_FORMAT = "todo-api/1"
EXPORT_BATCH = 500


# --- Profile ----------------------------------------------------------------------------------


async def update_profile(session: AsyncSession, account: Account, patch: ProfileUpdate) -> UserRead:
    """Change the fields the patch holds. A Better Auth user's name comes from its tokens (each
    one with a new name updates it), so it is changed in Better Auth, not here."""
    values: dict[str, Any] = {}
    if "name" in patch.model_fields_set:
        if account.provider != AuthProvider.local:
            raise ValidationFailed(
                "a Better Auth user's name comes from Better Auth: change it there",
                loc=("body", "name"),
            )
        values["name"] = patch.name
    if "time_zone" in patch.model_fields_set:
        values["time_zone"] = patch.time_zone
    current = {"name": account.name, "time_zone": account.time_zone}
    if any(current[key] != value for key, value in values.items()):
        await session.exec(
            update(USERS).where(USERS.c.id == account.id).values(**values, updated_at=utcnow())
        )
    changed = {**current, **values}
    return UserRead(
        id=account.id,
        email=account.email,
        name=changed["name"],
        time_zone=changed["time_zone"],
        created_at=account.created_at,
    )


# --- Deletion ---------------------------------------------------------------------------------


@cache
def _rows_of_user(table_name: str) -> ColumnElement[bool] | None:
    """What selects the rows of `table_name` that belong to the user `:user_id`: those whose
    foreign key names the user, or names a row that belongs to the user. None for a table
    with no such key."""
    table = SQLModel.metadata.tables[table_name]
    criteria: list[ColumnElement[bool]] = []
    for fk in table.foreign_keys:
        parent = fk.column.table
        if parent is USERS:
            criteria.append(fk.parent == sa.bindparam("user_id"))
        elif parent is not table and (belongs := _rows_of_user(parent.name)) is not None:
            criteria.append(fk.parent.in_(select(fk.column).where(belongs)))
    return sa.or_(*criteria) if criteria else None


def owned_tables() -> list[tuple[sa.Table, ColumnElement[bool]]]:
    """Every table holding rows of a user, children before their parents, with what selects
    those rows."""
    owned = []
    for table in reversed(SQLModel.metadata.sorted_tables):
        belongs = _rows_of_user(table.name)
        if belongs is not None:
            owned.append((table, belongs))
    return owned


async def delete_account(
    db: Database,
    session: AsyncSession,
    hasher: PasswordHasher,
    lockout: LoginLockout,
    account: Account,
    *,
    password: str | None,
) -> None:
    """Delete the user and every row that belongs to it, in the request's unit of work.

    A local account confirms with its password; a wrong one counts against the login lockout,
    as at a password change (a stolen access token must not become a way to guess it). Once the
    row is gone, every token of the user fails its account lookup (401), in every worker.
    """
    if account.provider == AuthProvider.local:
        await _check_password(db, hasher, lockout, account, password)
    elif password is not None:
        raise ValidationFailed(
            "a Better Auth user confirms nothing here: send no body", loc=("body", "password")
        )
    if await sessions.lock_user(session, account.id) is None:
        raise InvalidToken("The user of this access token no longer exists.")
    for table, belongs in owned_tables():
        await session.exec(delete(table).where(belongs), params={"user_id": account.id})
    await session.exec(delete(USERS).where(USERS.c.id == account.id))
    if account.provider == AuthProvider.better_auth:
        await _remember_deletion(session, account.id)


# Longer than any Better Auth token lives (15 minutes by default, a day at most in practice).
DELETED_SUBJECT_DAYS = 1


async def _remember_deletion(session: AsyncSession, subject: str) -> None:
    """Better Auth keeps the user, and its tokens issued before now would provision the account
    again: remember (as a hash) that it was deleted, for a day; forget deletions older than
    that while at it."""
    now = utcnow()
    digest = subject_hash(subject)
    await session.exec(
        delete(DELETED_SUBJECTS).where(
            sa.or_(
                DELETED_SUBJECTS.c.subject_hash == digest,
                DELETED_SUBJECTS.c.deleted_at < now - timedelta(days=DELETED_SUBJECT_DAYS),
            )
        )
    )
    await session.exec(insert(DELETED_SUBJECTS).values(subject_hash=digest, deleted_at=now))


async def _check_password(
    db: Database,
    hasher: PasswordHasher,
    lockout: LoginLockout,
    account: Account,
    password: str | None,
) -> None:
    if password is None:
        raise WrongPassword('Send the account\'s password to delete it: {"password": …}.')
    await sessions.confirm_password(db, hasher, lockout, account, password)


# --- Export -----------------------------------------------------------------------------------

_t = TASKS.c
# Every column of a task (the trash's too) but the folded copies that only search reads, and
# the revision, the changes feed's internal clock.
_EXPORTED = tuple(
    column
    for column in TASKS.columns
    if not column.name.endswith("_folded") and column.name != "revision"
)
_EXPORT_FIRST = (
    select(*_EXPORTED)
    .where(_t.user_id == sa.bindparam("owner_id"))
    .order_by(_t.created_at, _t.id)
    .limit(EXPORT_BATCH)
)
_EXPORT_NEXT = (
    select(*_EXPORTED)
    .where(
        _t.user_id == sa.bindparam("owner_id"),
        sa.tuple_(_t.created_at, _t.id)
        > sa.tuple_(
            sa.bindparam("after_created", type_=_t.created_at.type),
            sa.bindparam("after_id", type_=_t.id.type),
        ),
    )
    .order_by(_t.created_at, _t.id)
    .limit(EXPORT_BATCH)
)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date | uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_json_value, option=orjson.OPT_PASSTHROUGH_DATETIME)


async def export(db: Database, user: UserRead) -> AsyncIterator[bytes]:
    """The user's data as one JSON document, in pieces: the user, then every task, oldest first,
    read `EXPORT_BATCH` at a time by keyset, each batch in a short read of its own. Memory stays
    bounded whatever the number of tasks, and no connection is held while the client reads.
    (Tasks changed while the export runs appear as they were when their batch was read.)"""
    head = {"format": EXPORT_FORMAT, "exported_at": utcnow(), "user": user.model_dump()}
    yield _dumps(head)[:-1] + b',"tasks":['
    params: dict[str, Any] = {"owner_id": user.id}
    statement = _EXPORT_FIRST
    separator = b""
    while True:
        async with db.reading() as work:
            rows = await work.rows(statement, params)
        if not rows:
            break
        yield separator + b",".join(_dumps(row) for row in rows)
        separator = b","
        if len(rows) < EXPORT_BATCH:
            break
        statement = _EXPORT_NEXT
        params = {
            "owner_id": user.id,
            "after_created": rows[-1]["created_at"],
            "after_id": rows[-1]["id"],
        }
    yield b"]}"
