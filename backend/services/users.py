"""Accounts: signup, password login, the user behind a token, and Better Auth provisioning.

No HTTP here: functions take a session and plain values, raise domain errors, and never commit
(the request's unit of work does).
"""

import dataclasses
import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlmodel import insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.passwords import PasswordHasher, is_common_password
from backend.auth.tokens import Principal
from backend.db import Database, UnitOfWork, Work
from backend.errors import EmailTaken, InvalidCredentials, InvalidToken, WeakPassword
from backend.models import DELETED_SUBJECTS, USERS, AuthProvider, User, UTCDateTime, utcnow
from backend.ratelimit import LoginLockout


@dataclass(frozen=True, slots=True)
class Account:
    """The columns of a user that requests need: loaded on every authenticated request."""

    id: str
    provider: AuthProvider
    email: str | None
    name: str | None
    time_zone: str
    created_at: datetime
    tokens_valid_after: datetime | None
    # The revision of the user's tasks when the request began (see services/changes.py).
    revision: int
    # Its live tasks, and the completed ones among them, when the request began: the `total` of
    # a list filtered by status alone (see services/task_lists.py).
    task_count: int
    completed_count: int


# Table columns (Core), not ORM attributes: this query runs on every authenticated request.
_ACCOUNT_COLUMNS: tuple[Any, ...] = (
    USERS.c.id,
    USERS.c.provider,
    USERS.c.email,
    USERS.c.name,
    USERS.c.time_zone,
    USERS.c.created_at,
    USERS.c.tokens_valid_after,
    USERS.c.revision,
    USERS.c.task_count,
    USERS.c.completed_count,
)


def account_of(user: User) -> Account:
    return Account(
        user.id,
        user.provider,
        user.email,
        user.name,
        user.time_zone,
        user.created_at,
        user.tokens_valid_after,
        user.revision,
        user.task_count,
        user.completed_count,
    )


def check_password_strength(password: str) -> None:
    if is_common_password(password):
        raise WeakPassword(
            "This password is among the most common ones and would be guessed quickly; "
            "choose another."
        )


async def signup(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    name: str | None,
) -> Account:
    """Create a local account. Emails are unique among local accounts, in any case.

    The password is hashed before the database is touched, so that no connection (nor, on
    SQLite, the write lock) is held while the hash is computed.
    """
    check_password_strength(password)
    password_hash = await hasher.hash(password, account=email)
    taken = await session.exec(
        select(User.id).where(User.provider == AuthProvider.local, User.email == email)
    )
    if taken.first() is not None:
        raise EmailTaken()
    user = User(
        id=str(uuid.uuid4()),
        provider=AuthProvider.local,
        email=email,
        name=name,
        password_hash=password_hash,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except sa_exc.IntegrityError as exc:  # a concurrent signup with the same email won
        raise EmailTaken() from exc
    return account_of(user)


async def authenticate(
    db: Database,
    hasher: PasswordHasher,
    lockout: LoginLockout,
    *,
    email: str,
    password: str,
) -> tuple[Account, str]:
    """The local account with this email and password, and the hash the password matched (a
    session starts only while it is still the account's: `sessions.start_session`).

    Unknown email and wrong password fail the same way, after the same amount of hashing work.
    An email with too many recent failures is refused before any check, whether or not an
    account has it. The account is read in a unit of work of its own that ends before the
    password is checked: a login flood must not hold the pool's connections (nor SQLite's write
    lock) through tens of milliseconds of hashing each.
    """
    await lockout.attempt(email)
    async with db.session(write=False) as session:
        result = await session.exec(
            select(User).where(User.provider == AuthProvider.local, User.email == email)
        )
        user = result.first()
    valid, upgraded_hash = await hasher.verify(
        password, user.password_hash if user else None, account=email
    )
    if user is None or user.password_hash is None or not valid:
        raise InvalidCredentials()
    await lockout.succeeded(email)
    if upgraded_hash is not None:  # the hashing parameters changed since this hash was made
        async with db.session(write=True) as session:
            await session.exec(
                update(USERS)
                .where(USERS.c.id == user.id, USERS.c.password_hash == user.password_hash)
                .values(password_hash=upgraded_hash, updated_at=utcnow())
            )
        return account_of(user), upgraded_hash
    return account_of(user), user.password_hash


_ACCOUNT_BY_ID = select(*_ACCOUNT_COLUMNS).where(USERS.c.id == sa.bindparam("subject"))


async def find_account(work: Work, principal: Principal) -> Account | None:
    """The account a verified token speaks for, if it exists, belongs to the token's issuer, and
    has not revoked the tokens issued before a logout-all or a password change."""
    rows = await work.rows(_ACCOUNT_BY_ID, {"subject": principal.subject})
    if not rows:
        return None
    account = Account(**rows[0])
    if account.provider != principal.provider:
        # A Better Auth id equal to one of ours (or the reverse) never reaches the other's data.
        raise InvalidToken("The access token's subject belongs to another identity provider.")
    valid_after = account.tokens_valid_after
    if valid_after is not None and principal.issued_at < valid_after.timestamp():
        raise InvalidToken("This access token was revoked (logout everywhere or a new password).")
    return account


# The longest email and name the users table holds (models.User).
_MAX_EMAIL_LENGTH, _MAX_NAME_LENGTH = 320, 200


def _storable(text: str | None) -> str | None:
    """Text from a token without what PostgreSQL (NUL) or UTF-8 (lone surrogates) refuse."""
    if text is None:
        return None
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _better_auth_profile(principal: Principal) -> tuple[str | None, str | None]:
    """The email and name stored for a Better Auth user: its claims, made storable the same way
    every time (Better Auth limits neither). A name is cut to our column; an email too long for
    it is dropped, since a cut address would be someone else's."""
    email, name = _storable(principal.email), _storable(principal.name)
    if email is not None and len(email) > _MAX_EMAIL_LENGTH:
        email = None
    return email, None if name is None else name[:_MAX_NAME_LENGTH]


async def account_for_token(unit: UnitOfWork, principal: Principal) -> Account:
    """The account behind a verified token, read on `unit`; a Better Auth user seen for the
    first time (or with a new email or name) is stored first, in a transaction of `unit`."""
    account, _ = await _account_for_token(unit, principal)
    return account


async def _account_for_token(unit: UnitOfWork, principal: Principal) -> tuple[Account, bool]:
    """The account, and whether it had to be stored (or its profile updated) first."""
    account = await find_account(await unit.read(), principal)
    stored = needs_provisioning(account, principal)
    if stored:
        async with unit.transaction() as work:
            account = await provision_better_auth_user(work, principal)
    if account is None:
        raise InvalidToken("The user of this access token no longer exists.")
    return account, stored


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def standing(principal: Principal) -> dict[str, Any]:
    """What statements that check the token themselves compare the owner's row with
    (`task_statements.IN_STANDING`): its provider; the instant the token was issued, to the
    microsecond below (so that it compares with the stored revocation instant, which has
    microseconds, exactly as `find_account` compares them); and for Better Auth, the profile
    its claims would store."""
    email, name = (
        _better_auth_profile(principal)
        if principal.provider == AuthProvider.better_auth
        else (None, None)
    )
    issued_at = _EPOCH + timedelta(microseconds=math.floor(principal.issued_at * 1_000_000))
    return {
        "standing_provider": principal.provider.value,
        "standing_issued_at": issued_at,
        "standing_email": email,
        "standing_name": name,
    }


async def settle_standing(unit: UnitOfWork, principal: Principal) -> bool:
    """After a request checked the token only inside its statements and was refused: the
    token's own standing, when it is why (InvalidToken: revoked, another provider's subject,
    no such user). True when the account had to be stored (or its profile updated) first: the
    request runs again; False when the refusal stands."""
    _, stored = await _account_for_token(unit, principal)
    return stored


def needs_provisioning(account: Account | None, principal: Principal) -> bool:
    """Whether a Better Auth token brings a new user, or changed email or name claims."""
    if principal.provider != AuthProvider.better_auth:
        return False
    return account is None or (account.email, account.name) != _better_auth_profile(principal)


def subject_hash(subject: str) -> str:
    """How a deleted Better Auth user is remembered (`DELETED_SUBJECTS`): no readable id."""
    return hashlib.sha256(subject.encode()).hexdigest()


_DELETED_AT = select(DELETED_SUBJECTS.c.deleted_at).where(
    DELETED_SUBJECTS.c.subject_hash == sa.bindparam("subject_hash")
)


async def _refuse_if_deleted_since(work: Work, principal: Principal) -> None:
    """A token issued before its user deleted the account must not bring the account back;
    one issued after (the user signed in again) provisions a new, empty one."""
    rows = await work.rows(_DELETED_AT, {"subject_hash": subject_hash(principal.subject)})
    deleted_at = rows[0]["deleted_at"] if rows else None
    if deleted_at is not None and principal.issued_at < deleted_at.timestamp():
        raise InvalidToken("This account was deleted; sign in again to start a new one.")


_PROVISION = insert(USERS).values(
    id=sa.bindparam("subject"),
    provider=AuthProvider.better_auth,
    email=sa.bindparam("email"),
    name=sa.bindparam("name"),
    time_zone="UTC",
    task_count=0,
    completed_count=0,
    revision=0,
    sync_horizon=0,
    created_at=sa.bindparam("now", type_=UTCDateTime()),
    updated_at=sa.bindparam("now", type_=UTCDateTime()),
)
_NEW_PROFILE = (
    update(USERS)
    .where(USERS.c.id == sa.bindparam("subject"))
    .values(
        email=sa.bindparam("email"),
        name=sa.bindparam("name"),
        updated_at=sa.bindparam("now", type_=UTCDateTime()),
    )
)


async def provision_better_auth_user(work: Work, principal: Principal) -> Account:
    """Create or update the local row of a Better Auth user from the token's claims, so that
    tasks have their owner row, in the transaction of `work`. Safe against concurrent first
    requests of the same user."""
    email, name = _better_auth_profile(principal)
    params = {"subject": principal.subject}
    rows = await work.rows(_ACCOUNT_BY_ID, params)
    if not rows:
        await _refuse_if_deleted_since(work, principal)
        now = utcnow()
        try:
            async with work.savepoint():
                await work.run(
                    _PROVISION,
                    {"subject": principal.subject, "email": email, "name": name, "now": now},
                )
        except sa_exc.IntegrityError:  # another request provisioned this user first
            pass
        rows = await work.rows(_ACCOUNT_BY_ID, params)
    account = Account(**rows[0])
    if account.provider != AuthProvider.better_auth:
        raise InvalidToken("The access token's subject belongs to another identity provider.")
    if (account.email, account.name) != (email, name):
        await work.run(
            _NEW_PROFILE, {"subject": account.id, "email": email, "name": name, "now": utcnow()}
        )
        account = dataclasses.replace(account, email=email, name=name)
    return account
