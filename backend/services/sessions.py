"""Sessions: the tokens a login hands out, refresh with rotation, logout, logout everywhere,
and password changes that end every earlier session.

A session is a *family* of refresh tokens that started at one login. Refreshing uses the presented
token up and adds a new one to the family; presenting a used token again means it was copied, so
the whole family is revoked. Refresh tokens are opaque random values (256 bits); only their
SHA-256 is stored. Access tokens cannot be recalled once issued, so ending every session also
moves the user's "tokens valid after" instant, which the token check already reads.
"""

import hashlib
import math
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import AccessTokenIssuer
from backend.db import Database
from backend.errors import InvalidRefreshToken, RefreshTokenReused, WrongPassword
from backend.models import USERS, RefreshToken, User, utcnow
from backend.schemas import AuthResponse, UserRead
from backend.services.users import Account, account_of, check_password_strength

# Expired refresh tokens are deleted now and then while sessions start (and by `todo-api purge`).
PURGE_PROBABILITY = 0.01


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long refresh tokens live: `absolute` from the login, `idle` from their last use."""

    absolute: timedelta
    idle: timedelta


def user_read(account: Account) -> UserRead:
    return UserRead(
        id=account.id, email=account.email, name=account.name, created_at=account.created_at
    )


def _hash(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


async def _issue(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    account: Account,
    *,
    family_id: uuid.UUID,
    family_expires_at: datetime,
    policy: SessionPolicy,
) -> AuthResponse:
    now = utcnow()
    raw = secrets.token_urlsafe(32)
    expires_at = min(family_expires_at, now + policy.idle)
    session.add(
        RefreshToken(
            user_id=account.id,
            family_id=family_id,
            token_hash=_hash(raw),
            created_at=now,
            family_expires_at=family_expires_at,
            expires_at=expires_at,
        )
    )
    valid_after = account.tokens_valid_after
    access = access_tokens.issue(
        account.id, not_before=valid_after.timestamp() if valid_after else None
    )
    return AuthResponse(
        user=user_read(account),
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=raw,
        refresh_expires_in=max(1, int((expires_at - now).total_seconds())),
    )


async def start_session(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    account: Account,
    *,
    policy: SessionPolicy,
) -> AuthResponse:
    """A new session (signup, login): an access token and the first refresh token of a family."""
    if random.random() < PURGE_PROBABILITY:  # noqa: S311 (not security-relevant)
        await purge_expired(session)
    return await _issue(
        session,
        access_tokens,
        account,
        family_id=uuid.uuid4(),
        family_expires_at=utcnow() + policy.absolute,
        policy=policy,
    )


async def refresh(
    session: AsyncSession,
    access_tokens: AccessTokenIssuer,
    raw_token: str,
    *,
    policy: SessionPolicy,
) -> AuthResponse:
    """Use a refresh token up and answer with new tokens of the same family.

    Using the token is one conditional UPDATE, so of two concurrent refreshes with the same
    token exactly one succeeds; the other sees a used token and ends the family.
    """
    now = utcnow()
    used = (
        await session.exec(
            update(RefreshToken)
            .where(
                col(RefreshToken.token_hash) == _hash(raw_token),
                col(RefreshToken.used_at).is_(None),
                col(RefreshToken.revoked_at).is_(None),
                col(RefreshToken.expires_at) > now,
            )
            .values(used_at=now)
            .returning(
                col(RefreshToken.user_id),
                col(RefreshToken.family_id),
                col(RefreshToken.family_expires_at),
            )
        )
    ).first()
    if used is None:
        await _refuse(session, raw_token)
    assert used is not None
    user_id, family_id, family_expires_at = used
    user = (await session.exec(select(User).where(User.id == user_id))).one()
    return await _issue(
        session,
        access_tokens,
        account_of(user),
        family_id=family_id,
        family_expires_at=family_expires_at,
        policy=policy,
    )


async def _refuse(session: AsyncSession, raw_token: str) -> None:
    """Say why a refresh token cannot be used; a reused one ends its whole family."""
    token = (
        await session.exec(select(RefreshToken).where(RefreshToken.token_hash == _hash(raw_token)))
    ).first()
    if token is not None and token.used_at is not None and token.revoked_at is None:
        await _revoke(session, col(RefreshToken.family_id) == token.family_id)
        raise RefreshTokenReused()
    raise InvalidRefreshToken()


async def _revoke(session: AsyncSession, which: sa.ColumnElement[bool]) -> None:
    await session.exec(
        update(RefreshToken)
        .where(which, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )


async def logout(session: AsyncSession, raw_token: str) -> None:
    """End the session this refresh token belongs to (nothing happens for an unknown token)."""
    family = select(RefreshToken.family_id).where(RefreshToken.token_hash == _hash(raw_token))
    await _revoke(session, col(RefreshToken.family_id).in_(family.scalar_subquery()))


def _next_revocation_instant(previous: datetime | None) -> datetime:
    """Now, or just past the previous revocation's rounded-up second: tokens issued right after
    that revocation carry that second as their `iat`, and this revocation must cover them too."""
    now = utcnow()
    if previous is None or math.ceil(previous.timestamp()) < now.timestamp():
        return now
    return datetime.fromtimestamp(math.ceil(previous.timestamp()) + 0.001, UTC)


async def end_all_sessions(session: AsyncSession, user_id: str) -> datetime:
    """Revoke every refresh token of the user and every access token issued until now."""
    user = (await session.exec(select(User).where(User.id == user_id).with_for_update())).one()
    user.tokens_valid_after = _next_revocation_instant(user.tokens_valid_after)
    session.add(user)
    await _revoke(session, col(RefreshToken.user_id) == user_id)
    await session.flush()
    return user.tokens_valid_after


async def change_password(
    db: Database,
    session: AsyncSession,
    hasher: PasswordHasher,
    access_tokens: AccessTokenIssuer,
    account: Account,
    *,
    current_password: str,
    new_password: str,
    policy: SessionPolicy,
) -> AuthResponse:
    """Set a new password, end every earlier session (the caller's own included), and start a
    new one in the request's unit of work `session`.

    The stored hash is read in a unit of work of its own, and both hashes are computed before
    `session` is touched: no connection or lock is held through the hashing.
    """
    async with db.session(write=False) as read:
        stored_hash = (
            await read.exec(select(USERS.c.password_hash).where(USERS.c.id == account.id))
        ).first()
    valid, _ = await hasher.verify(current_password, stored_hash)
    if stored_hash is None or not valid:
        raise WrongPassword()
    check_password_strength(new_password)
    new_hash = await hasher.hash(new_password)
    user = (await session.exec(select(User).where(User.id == account.id))).one()
    user.password_hash = new_hash
    user.updated_at = utcnow()
    session.add(user)
    await end_all_sessions(session, user.id)
    return await start_session(session, access_tokens, account_of(user), policy=policy)


async def purge_expired(session: AsyncSession) -> int:
    """Delete refresh tokens past their end. Used and revoked tokens are kept until then, so
    that a reused one is still recognised as such."""
    result = await session.exec(delete(RefreshToken).where(col(RefreshToken.expires_at) < utcnow()))
    return result.rowcount
