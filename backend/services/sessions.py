"""Sessions: the tokens a login hands out, refresh with rotation, logout, logout everywhere,
and password changes that end every earlier session.

A session is a *family* of refresh tokens that started at one login, stored as one row with the
SHA-256 of its one current token. Refreshing replaces that token with the next one; every token
names its family, so presenting one that is not the family's current token means it was copied,
and the whole family ends. A user has at most `max_sessions` sessions, a session one row.
Access tokens cannot be recalled once issued, so ending every session also moves the user's
"tokens valid after" instant, which the token check already reads.

Every change to a user's sessions locks the user's row first (`lock_user`): revocation and
refresh run one after the other, so revocation wins every race, in one lock order.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import AccessTokenIssuer
from backend.db import Database
from backend.errors import (
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidToken,
    PasswordManagedElsewhere,
    RefreshTokenReused,
    WrongPassword,
)
from backend.models import USERS, AuthProvider, PasswordResetToken, RefreshToken, User, utcnow
from backend.ratelimit import LoginLockout
from backend.schemas import AuthResponse, UserRead
from backend.services.users import Account, account_of, check_password_strength


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long refresh tokens live (`absolute` from the login, `idle` from their last use),
    and how many sessions a user may have at once (the oldest end first)."""

    absolute: timedelta
    idle: timedelta
    max_sessions: int


def user_read(account: Account) -> UserRead:
    return UserRead(
        id=account.id,
        email=account.email,
        name=account.name,
        time_zone=account.time_zone,
        created_at=account.created_at,
    )


def _hash(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


def _new_token(family_id: uuid.UUID) -> str:
    """The family id, then 256 random bits: whoever holds any token of a family knows its id,
    and nobody else can guess it."""
    return f"{family_id.hex}.{secrets.token_urlsafe(32)}"


def _family_of(raw_token: str) -> uuid.UUID | None:
    prefix, dot, _ = raw_token.partition(".")
    if not dot or len(prefix) != 32:
        return None  # a token issued before families were named in it, or not ours at all
    try:
        return uuid.UUID(hex=prefix)
    except ValueError:
        return None


async def _session_of(
    session: AsyncSession, raw_token: str
) -> tuple[sa.ColumnElement[bool], str | None]:
    """What selects the session of a presented refresh token (by its family, or by its hash
    for a token that names no family), and the session's user, read without a lock."""
    which = col(RefreshToken.token_hash) == _hash(raw_token)
    family_id = _family_of(raw_token)
    if family_id is not None:
        which = sa.or_(which, col(RefreshToken.family_id) == family_id)
    owner = (await session.exec(select(RefreshToken.user_id).where(which).limit(1))).first()
    return which, owner


async def lock_user(session: AsyncSession, user_id: str) -> User | None:
    """The user's row, locked until the unit of work ends.

    Every change to a user's sessions takes this lock first, so they all run one after another
    per user, in one lock order (the user, then the session rows): a refresh cannot slip a new
    token past a logout-all or a password change, nor deadlock with one. (SQLite's writers hold
    the database's write lock from their first statement, which serialises them already.)
    """
    statement = select(User).where(User.id == user_id).with_for_update(key_share=True)
    return (await session.exec(statement)).first()


async def _issue(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    user: User,
    *,
    family_id: uuid.UUID,
    family_expires_at: datetime,
    policy: SessionPolicy,
) -> tuple[AuthResponse, str]:
    """Tokens for `user`, whose row this unit of work holds locked: the answer, and the hash of
    its refresh token for the caller to store."""
    now = utcnow()
    raw = _new_token(family_id)
    expires_at = min(family_expires_at, now + policy.idle)
    valid_after = user.tokens_valid_after
    access = access_tokens.issue(
        user.id, not_before=valid_after.timestamp() if valid_after else None
    )
    auth = AuthResponse(
        user=user_read(account_of(user)),
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=raw,
        refresh_expires_in=max(1, int((expires_at - now).total_seconds())),
    )
    return auth, _hash(raw)


async def start_session(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    account: Account,
    *,
    policy: SessionPolicy,
    password_hash: str | None = None,
) -> AuthResponse:
    """A new session (signup, login): an access token and the first refresh token of a family.

    `password_hash` is the hash a login checked the password against: the session starts only
    if it is still the account's, so a login that raced a password change with the old password
    loses. Beyond `policy.max_sessions`, the user's oldest sessions end, and the user's expired
    ones are deleted (`purge_expired` deletes everyone's).
    """
    user = await lock_user(session, account.id)
    if user is None or (password_hash is not None and user.password_hash != password_hash):
        raise InvalidCredentials()
    now = utcnow()
    keep = (
        select(RefreshToken.id)
        .where(RefreshToken.user_id == user.id, col(RefreshToken.expires_at) > now)
        .order_by(col(RefreshToken.family_expires_at).desc(), col(RefreshToken.id).desc())
        .limit(policy.max_sessions - 1)
    )
    await session.exec(
        delete(RefreshToken).where(
            col(RefreshToken.user_id) == user.id,
            col(RefreshToken.id).not_in(keep.scalar_subquery()),
        )
    )
    family_id = uuid.uuid4()
    family_expires_at = now + policy.absolute
    auth, token_hash = await _issue(
        session,
        access_tokens,
        user,
        family_id=family_id,
        family_expires_at=family_expires_at,
        policy=policy,
    )
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=token_hash,
            created_at=now,
            family_expires_at=family_expires_at,
            expires_at=min(family_expires_at, now + policy.idle),
        )
    )
    return auth


async def refresh(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    raw_token: str,
    *,
    policy: SessionPolicy,
) -> AuthResponse:
    """Use a refresh token up and answer with new tokens of the same family.

    The family's row holds the hash of its one current token; refreshing replaces it with the
    next one's, under the user's lock. Of two refreshes with the same token exactly one
    succeeds: the other then presents a token of the family that is no longer its current one,
    which is what a copied token looks like, and the family ends.
    """
    token_hash = _hash(raw_token)
    which, owner = await _session_of(session, raw_token)
    user = None if owner is None else await lock_user(session, owner)
    if user is None:
        raise InvalidRefreshToken()
    now = utcnow()
    # Read again under the lock: a concurrent refresh may have replaced the current token.
    current = (
        await session.exec(select(RefreshToken).where(RefreshToken.user_id == user.id, which))
    ).first()
    if current is None or current.expires_at <= now:
        raise InvalidRefreshToken()
    if current.token_hash != token_hash:
        await session.exec(delete(RefreshToken).where(col(RefreshToken.id) == current.id))
        raise RefreshTokenReused()
    auth, next_hash = await _issue(
        session,
        access_tokens,
        user,
        family_id=current.family_id,
        family_expires_at=current.family_expires_at,
        policy=policy,
    )
    current.token_hash = next_hash
    current.created_at = now
    current.expires_at = min(current.family_expires_at, now + policy.idle)
    session.add(current)
    return auth


async def logout(session: AsyncSession, raw_token: str) -> None:
    """End the session this refresh token belongs to, current or not (nothing happens for an
    unknown token)."""
    which, owner = await _session_of(session, raw_token)
    if owner is None or await lock_user(session, owner) is None:
        return
    await session.exec(delete(RefreshToken).where(col(RefreshToken.user_id) == owner, which))


def _next_revocation_instant(previous: datetime | None) -> datetime:
    """Now, or just past the previous revocation if the clock has not moved since: the instant
    only grows, and tokens issued after it (with an `iat` at or past it) stay valid."""
    now = utcnow()
    if previous is None or previous < now:
        return now
    return previous + timedelta(microseconds=1)


async def end_sessions_of(user: User, session: AsyncSession) -> None:
    """End every session of `user`, whose row this unit of work holds locked."""
    user.tokens_valid_after = _next_revocation_instant(user.tokens_valid_after)
    session.add(user)
    await session.exec(delete(RefreshToken).where(col(RefreshToken.user_id) == user.id))


async def end_all_sessions(session: AsyncSession, user_id: str) -> None:
    """End every session of the user and every access token issued until now."""
    user = await lock_user(session, user_id)
    if user is None:
        raise InvalidToken("The user of this access token no longer exists.")
    await end_sessions_of(user, session)


async def confirm_password(
    db: Database, hasher: PasswordHasher, lockout: LoginLockout, account: Account, password: str
) -> str:
    """The stored hash of a local account, once `password` is shown to be its password (400
    `wrong_password` otherwise). A wrong one counts against the account's login lockout, like a
    failed login: a stolen access token must not become a way to guess the password. The hash
    is read in a unit of work of its own: no connection is held through the hashing."""
    assert account.email is not None
    await lockout.attempt(account.email)
    async with db.session(write=False) as read:
        stored_hash: str | None = (
            await read.exec(select(USERS.c.password_hash).where(USERS.c.id == account.id))
        ).first()
    valid, _ = await hasher.verify(password, stored_hash, account=account.email)
    if stored_hash is None or not valid:
        raise WrongPassword()
    await lockout.succeeded(account.email)
    return stored_hash


async def change_password(
    db: Database,
    session: AsyncSession,
    hasher: PasswordHasher,
    lockout: LoginLockout,
    access_tokens: AccessTokenIssuer,
    account: Account,
    *,
    current_password: str,
    new_password: str,
    policy: SessionPolicy,
) -> AuthResponse:
    """Set a new password, end every earlier session (the caller's own included), and start a
    new one in the request's unit of work `session`.

    The current password is confirmed as `confirm_password` does, and both hashes are computed
    before `session` is touched: no connection or lock is held through the hashing.
    """
    if account.provider != AuthProvider.local or account.email is None:
        raise PasswordManagedElsewhere()
    stored_hash = await confirm_password(db, hasher, lockout, account, current_password)
    check_password_strength(new_password)
    new_hash = await hasher.hash(new_password, account=account.email)
    user = await lock_user(session, account.id)
    if user is None:
        raise InvalidToken("The user of this access token no longer exists.")
    if user.password_hash != stored_hash:  # a concurrent change came first
        raise WrongPassword()
    user.password_hash = new_hash
    user.updated_at = utcnow()
    await end_sessions_of(user, session)
    # A reset link mailed before the change must not undo it.
    await session.exec(delete(PasswordResetToken).where(col(PasswordResetToken.user_id) == user.id))
    await session.flush()
    return await start_session(
        session, access_tokens, account_of(user), policy=policy, password_hash=new_hash
    )


async def purge_expired(session: AsyncSession) -> int:
    """Delete the sessions whose current token has expired (idle or at the session's end):
    nothing can refresh them any more."""
    result = await session.exec(delete(RefreshToken).where(col(RefreshToken.expires_at) < utcnow()))
    return result.rowcount
