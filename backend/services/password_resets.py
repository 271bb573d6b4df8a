"""Forgotten passwords: a reset link by email, and the reset itself.

A reset token is 256 random bits, mailed once and stored only as its SHA-256. It works once,
for 30 minutes, and only while it is the user's newest: a newer request, its use, a password
change and the account's deletion all delete it. `request_reset` runs after the response
(`mail.Background`), so that the answer, and its timing, is the same whether or not the email
belongs to an account. Using a token changes the password under the user's row lock, like a
password change (`sessions`), and ends every earlier session.
"""

import hashlib
import html
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import AccessTokenIssuer
from backend.db import Database
from backend.errors import InvalidResetToken
from backend.mail import Mailer
from backend.models import AuthProvider, PasswordResetToken, User, utcnow
from backend.ratelimit import LoginLockout
from backend.schemas import AuthResponse
from backend.services import sessions
from backend.services.users import account_of, check_password_strength

logger = logging.getLogger("backend.password_resets")

RESET_TOKEN_LIFETIME = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class ResetRequest:
    """Who asked for a reset link, as the email tells the account's owner."""

    email: str
    client_ip: str
    user_agent: str | None
    requested_at: datetime


def _hash(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


async def request_reset(
    db: Database, mailer: Mailer, request: ResetRequest, *, link_template: str
) -> None:
    """Mail a reset link to the local account with this email, if there is one; nothing
    otherwise. The new token replaces the account's earlier ones. A mail that cannot be sent is
    logged (never with its link), and the token is then useless: nobody received it."""
    raw_token = secrets.token_urlsafe(32)
    async with db.session(write=True) as session:
        user = (
            await session.exec(
                select(User).where(User.provider == AuthProvider.local, User.email == request.email)
            )
        ).first()
        if user is None:
            return
        user = await sessions.lock_user(session, user.id)
        if user is None:  # deleted meanwhile
            return
        await session.exec(
            delete(PasswordResetToken).where(col(PasswordResetToken.user_id) == user.id)
        )
        session.add(
            PasswordResetToken(
                user_id=user.id,
                token_hash=_hash(raw_token),
                created_at=request.requested_at,
                expires_at=request.requested_at + RESET_TOKEN_LIFETIME,
            )
        )
    link = link_template.replace("{token}", raw_token)
    if not mailer.configured:
        # Development only (production requires SMTP_URL): the link is the mail.
        logger.warning("no SMTP_URL: the password reset link for %s is %s", request.email, link)
        return
    try:
        await mailer.send(reset_email(request, link))
    except Exception as exc:  # the server is down, refuses us, times out…
        logger.warning(
            "the password reset email could not be sent: %s: %s", type(exc).__name__, exc
        )


def reset_email(request: ResetRequest, link: str) -> EmailMessage:
    """The email with the link: what happened, when, from where, and what to do if it was not
    the account's owner; in plain text, and in HTML."""
    minutes = int(RESET_TOKEN_LIFETIME.total_seconds() // 60)
    when = request.requested_at.strftime("%Y-%m-%d %H:%M UTC")
    origin = f"the IP address {request.client_ip}"
    if request.user_agent:
        origin += f', with the browser or app "{request.user_agent[:200]}"'
    intro = (
        f"Someone asked to reset the password of the Todo account {request.email} "
        f"on {when}, from {origin}."
    )
    closing = (
        "If it was not you, ignore this email: your password stays as it is, and the link "
        f"expires in {minutes} minutes. It works once, and only until a newer one is sent."
    )
    message = EmailMessage()
    message["To"] = request.email
    message["Subject"] = "Reset your Todo password"
    message.set_content(
        f"{intro}\n\nTo choose a new password, open this link within {minutes} minutes:\n\n"
        f"{link}\n\n{closing}\n"
    )
    message.add_alternative(
        f"""<!DOCTYPE html>
<html><body>
<p>{html.escape(intro)}</p>
<p>To choose a new password, open this link within {minutes} minutes:</p>
<p><a href="{html.escape(link)}">Reset your password</a></p>
<p>{html.escape(closing)}</p>
</body></html>
""",
        subtype="html",
    )
    return message


async def reset_password(
    db: Database,
    session: AsyncSession,
    hasher: PasswordHasher,
    lockout: LoginLockout,
    access_tokens: AccessTokenIssuer,
    *,
    raw_token: str,
    new_password: str,
    policy: sessions.SessionPolicy,
    limit_per_account: Callable[[str], Awaitable[None]],
) -> AuthResponse:
    """Set a new password with a reset token, end every earlier session, and start a new one.

    `limit_per_account` counts the reset against the account's email (429 beyond). The token is
    checked, and the new password hashed, before `session` is touched: no lock is
    held through the hashing. Under the user's lock the token is checked again (two resets
    with one token: exactly one wins) and every reset token of the user deleted. A reset also
    lifts the account's login lockout: whoever holds the mailbox is the owner.
    """
    token_hash = _hash(raw_token)
    async with db.session(write=False) as read:
        found = (
            await read.exec(
                select(PasswordResetToken.user_id, User.email)
                .join(User, col(User.id) == col(PasswordResetToken.user_id))
                .where(
                    PasswordResetToken.token_hash == token_hash,
                    col(PasswordResetToken.expires_at) > utcnow(),
                )
            )
        ).first()
    if found is None:
        raise InvalidResetToken()
    user_id, email = found
    await limit_per_account(email or user_id)
    check_password_strength(new_password)
    new_hash = await hasher.hash(new_password, account=email or user_id)
    user = await sessions.lock_user(session, user_id)
    still_valid = (
        await session.exec(
            select(PasswordResetToken.id).where(
                PasswordResetToken.token_hash == token_hash,
                PasswordResetToken.user_id == user_id,
                col(PasswordResetToken.expires_at) > utcnow(),
            )
        )
    ).first()
    if user is None or still_valid is None:
        raise InvalidResetToken()
    await session.exec(delete(PasswordResetToken).where(col(PasswordResetToken.user_id) == user_id))
    user.password_hash = new_hash
    user.updated_at = utcnow()
    await sessions.end_sessions_of(user, session)
    await session.flush()
    if email is not None:
        await lockout.succeeded(email)
    return await sessions.start_session(
        session, access_tokens, account_of(user), policy=policy, password_hash=new_hash
    )
