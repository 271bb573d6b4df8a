"""Passwords of local accounts: ask for a reset link, reset with its token, change the password.

Every route here is a route of local accounts: `local_accounts` is left out (404, and out of the
document) with LOCAL_ACCOUNTS=false."""

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from backend.dependencies import (
    CurrentUser,
    PasswordChangeLimit,
    PasswordResetLimit,
    SessionDep,
    client_ip_of,
    limit_password_resets_of,
)
from backend.infrastructure import (
    AccessTokensDep,
    BackgroundDep,
    DatabaseDep,
    HasherDep,
    LockoutDep,
    MailerDep,
    SessionPolicyDep,
    SettingsDep,
)
from backend.models import utcnow
from backend.openapi import (
    BEARER_ERRORS,
    BODY_ERRORS,
    RATE_LIMIT_HEADERS,
    body_examples,
    problem_responses,
    success_response,
)
from backend.routes.sessions import EXAMPLE_PASSWORD, session_response, tokens_answer
from backend.routing import UnitOfWorkRoute
from backend.schemas import (
    AuthResponse,
    ForgotPasswordRequest,
    PasswordChangeRequest,
    PasswordResetRequest,
)
from backend.services import password_resets, sessions
from backend.services.password_resets import ResetRequest

local_accounts = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)

PasswordBody = Annotated[
    PasswordChangeRequest,
    Body(
        openapi_examples=body_examples(
            change=(
                "The current password and a new one",
                {"current_password": EXAMPLE_PASSWORD, "new_password": "a new, longer passphrase"},
            )
        )
    ),
]
ForgotBody = Annotated[
    ForgotPasswordRequest,
    Body(
        openapi_examples=body_examples(forgot=("The account's email", {"email": "ada@example.com"}))
    ),
]
ResetBody = Annotated[
    PasswordResetRequest,
    Body(
        openapi_examples=body_examples(
            reset=(
                "The token from the emailed link, and a new password",
                {
                    "token": "Vb0pX2m8TqZ5f3yHc9LwR1uKe7NjD4sAo6GiQxEtW0M",
                    "new_password": "a new, longer passphrase",
                },
            )
        )
    ),
]


@local_accounts.post(
    "/password/forgot",
    status_code=202,
    response_class=Response,
    summary="Ask for a password reset link",
    operation_id="forgotPassword",
    dependencies=[PasswordResetLimit],
    responses={
        **success_response(
            202,
            description="Accepted: if a local account has this email, a reset link is on its "
            "way. The same answer for every email.",
            headers=RATE_LIMIT_HEADERS,
        ),
        **problem_responses(
            "validation_error",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                429: "Too many requests from this client, or for this email "
                "(`PASSWORD_RESET_RATE_LIMIT`, each)."
            },
            invalid=(["body", "email"], "Field required", "missing"),
        ),
    },
)
async def forgot_password(
    body: ForgotBody,
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    mailer: MailerDep,
    background: BackgroundDep,
) -> Response:
    """Mail a single-use link to reset the password of the local account with this email.

    Always 202 with no body, at once, whether or not an account has the email: the lookup and
    the mail happen after the answer. The link (`PASSWORD_RESET_URL` with the token) works once,
    for 30 minutes, and only until a newer one is sent; the email says when and from which IP
    and browser the request came. Limited per client IP and per email
    (`PASSWORD_RESET_RATE_LIMIT`, each)."""
    await limit_password_resets_of(request, body.email)
    reset = ResetRequest(
        email=body.email,
        client_ip=await client_ip_of(request),
        user_agent=request.headers.get("user-agent"),
        requested_at=utcnow(),
    )
    background.run(
        password_resets.request_reset(
            database, mailer, reset, link_template=settings.reset_link_template
        ),
        name="password-reset-email",
    )
    return Response(status_code=202)


@local_accounts.post(
    "/password/reset",
    response_model=AuthResponse,
    summary="Reset the password with an emailed token",
    operation_id="resetPassword",
    dependencies=[PasswordResetLimit],
    responses={
        **tokens_answer("The password is reset and earlier tokens stop working"),
        **problem_responses(
            "validation_error",
            "invalid_reset_token",
            "weak_password",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input; a token that is unknown, used, expired or replaced by a "
                "newer one (`invalid_reset_token`); or a very common new password.",
                429: "Too many resets from this client, or for this account "
                "(`PASSWORD_RESET_RATE_LIMIT`, each).",
            },
            invalid=(
                ["body", "new_password"],
                "String should have at least 8 characters",
                "string_too_short",
            ),
        ),
    },
)
async def reset_password(
    body: ResetBody,
    session: SessionDep,
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    hasher: HasherDep,
    lockout: LockoutDep,
    access_tokens: AccessTokensDep,
    policy: SessionPolicyDep,
) -> Response:
    """Set a new password with the token of a reset link, and sign in.

    The token works once: every earlier token of the user, access and refresh, stops working,
    every reset link of the user too, and the account's login lockout (`LOGIN_LOCKOUT`) is
    lifted. An unknown, used, expired (30 minutes) or replaced token is 400
    `invalid_reset_token`; a very common new password is 400 `weak_password` (the token then
    still works)."""

    async def limit(email: str) -> None:
        await limit_password_resets_of(request, email)

    auth = await password_resets.reset_password(
        database,
        session,
        hasher,
        lockout,
        access_tokens,
        raw_token=body.token,
        new_password=body.new_password,
        policy=policy,
        limit_per_account=limit,
    )
    return session_response(settings, auth)


@local_accounts.post(
    "/password",
    response_model=AuthResponse,
    summary="Change the password",
    operation_id="changePassword",
    dependencies=[PasswordChangeLimit],
    responses={
        **tokens_answer("The password is changed and earlier tokens stop working"),
        **problem_responses(
            "validation_error",
            "wrong_password",
            "weak_password",
            "password_managed_elsewhere",
            "rate_limited",
            *BEARER_ERRORS,
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input, a current password that is not right, or a very common "
                "new password.",
                409: "A Better Auth user: its password is changed through Better Auth.",
                429: "Too many password changes for this user (`PASSWORD_CHANGE_RATE_LIMIT`), "
                "or too many wrong passwords for this account, counted with failed logins "
                "(`LOGIN_LOCKOUT`).",
            },
            invalid=(
                ["body", "new_password"],
                "String should have at least 8 characters",
                "string_too_short",
            ),
        ),
    },
)
async def change_password(
    body: PasswordBody,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    database: DatabaseDep,
    hasher: HasherDep,
    lockout: LockoutDep,
    access_tokens: AccessTokensDep,
    policy: SessionPolicyDep,
) -> Response:
    """Change the password and answer with fresh tokens. Every token issued before the change,
    access and refresh, the caller's own included, stops working.

    Changes are limited per user (`PASSWORD_CHANGE_RATE_LIMIT`), and a wrong current password
    counts as a failed login of the account (`LOGIN_LOCKOUT`): past that, even the right one is
    429 until the window has passed."""
    auth = await sessions.change_password(
        database,
        session,
        hasher,
        lockout,
        access_tokens,
        user,
        current_password=body.current_password,
        new_password=body.new_password,
        policy=policy,
    )
    return session_response(settings, auth)
