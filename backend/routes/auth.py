"""Accounts and sessions: signup, login, refresh, logout, password change, forgotten passwords,
the current user (read, change, delete), and our public keys."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from backend.dependencies import (
    CurrentUser,
    LoginLimit,
    PasswordChangeLimit,
    PasswordResetLimit,
    RefreshLimit,
    SessionDep,
    SignupLimit,
    client_ip_of,
    limit_password_resets_of,
)
from backend.errors import ValidationFailed
from backend.infrastructure import runtime_of
from backend.models import utcnow
from backend.openapi import (
    BEARER_ERRORS,
    BODY_ERRORS,
    RATE_LIMIT_HEADERS,
    body_examples,
    problem_responses,
    success_response,
)
from backend.responses import json_response
from backend.routing import UnitOfWorkRoute
from backend.schemas import (
    AUTH_EXAMPLE,
    JWKS_EXAMPLE,
    USER_EXAMPLE,
    AccountDeletion,
    AuthResponse,
    ForgotPasswordRequest,
    JsonWebKeySet,
    LoginRequest,
    PasswordChangeRequest,
    PasswordResetRequest,
    ProfileUpdate,
    RefreshRequest,
    SignupRequest,
    UserRead,
)
from backend.services import accounts, password_resets, sessions, users
from backend.services.password_resets import ResetRequest

router = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)
# The routes of local accounts, left out (404, and out of the document) with LOCAL_ACCOUNTS=false.
local_accounts = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)

_TOKENS = (
    "the user and a new pair of tokens (with `REFRESH_TOKEN_COOKIE=true` the refresh token comes "
    "as an HttpOnly cookie instead, and `refresh_token` is null)."
)
_EXAMPLE_PASSWORD = "correct horse battery staple"  # noqa: S105 (an example)
_REFRESH_TOKEN = AUTH_EXAMPLE["refresh_token"]
_INVALID_EMAIL = (
    ["body", "email"],
    "value is not a valid email address: An email address must have an @-sign.",
    "value_error",
)
_NO_REFRESH_TOKEN = (["body", "refresh_token"], "refresh_token is required", "missing")

SignupBody = Annotated[
    SignupRequest,
    Body(
        openapi_examples=body_examples(
            account=(
                "An account with a display name",
                {"email": "ada@example.com", "password": _EXAMPLE_PASSWORD, "name": "Ada Lovelace"},
            ),
            minimal=(
                "Email and password only",
                {"email": "grace@example.com", "password": "a less common passphrase"},
            ),
        )
    ),
]
LoginBody = Annotated[
    LoginRequest,
    Body(
        openapi_examples=body_examples(
            login=(
                "Email and password",
                {"email": "ada@example.com", "password": _EXAMPLE_PASSWORD},
            )
        )
    ),
]
RefreshBody = Annotated[
    RefreshRequest,
    Body(
        openapi_examples=body_examples(
            body=("The refresh token in the body", {"refresh_token": _REFRESH_TOKEN}),
            cookie=("The refresh token in its cookie (REFRESH_TOKEN_COOKIE=true)", {}),
        )
    ),
]
PasswordBody = Annotated[
    PasswordChangeRequest,
    Body(
        openapi_examples=body_examples(
            change=(
                "The current password and a new one",
                {"current_password": _EXAMPLE_PASSWORD, "new_password": "a new, longer passphrase"},
            )
        )
    ),
]

ProfileBody = Annotated[
    ProfileUpdate,
    Body(
        openapi_examples=body_examples(
            time_zone=("Set the time zone", {"time_zone": "Europe/Paris"}),
            both=("Rename and move", {"name": "Ada King", "time_zone": "America/New_York"}),
            clear=("Clear the name", {"name": None}),
        )
    ),
]
DeletionBody = Annotated[
    AccountDeletion | None,
    Body(
        description="Local accounts confirm with their password; Better Auth users send no body.",
        openapi_examples=body_examples(
            local=("A local account confirms with its password", {"password": _EXAMPLE_PASSWORD})
        ),
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


def _tokens_answer(what: str, *, status: int = 200) -> dict[int | str, Any]:
    """The success answer of a route that hands out tokens: `what` happened, then the tokens."""
    return success_response(
        status, description=f"{what}: {_TOKENS}", example=AUTH_EXAMPLE, headers=RATE_LIMIT_HEADERS
    )


REFRESH_COOKIE = "todo_refresh"
REFRESH_COOKIE_PATH = "/api/auth"


def _session_response(request: Request, auth: AuthResponse, *, status_code: int = 200) -> Response:
    """The tokens, with the refresh token in the body, or in an HttpOnly cookie when the service
    is configured so (REFRESH_TOKEN_COOKIE)."""
    settings = runtime_of(request).settings
    if not settings.refresh_token_cookie:
        return json_response(auth, status_code=status_code)
    response = json_response(
        auth.model_copy(update={"refresh_token": None}), status_code=status_code
    )
    response.set_cookie(
        REFRESH_COOKIE,
        auth.refresh_token or "",
        max_age=auth.refresh_expires_in,
        path=REFRESH_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite=settings.refresh_cookie_samesite,
    )
    return response


def _presented_refresh_token(request: Request, body: RefreshRequest) -> str:
    token = body.refresh_token
    if token is None and runtime_of(request).settings.refresh_token_cookie:
        token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ValidationFailed(
            "refresh_token is required", loc=("body", "refresh_token"), type_="missing"
        )
    return token


def _forget_cookie(request: Request, response: Response) -> Response:
    if runtime_of(request).settings.refresh_token_cookie:
        response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=True, httponly=True)
    return response


@local_accounts.post(
    "/signup",
    status_code=201,
    response_model=AuthResponse,
    summary="Create an account",
    operation_id="signup",
    dependencies=[SignupLimit],
    responses={
        **_tokens_answer("The account is created and signed in", status=201),
        **problem_responses(
            "validation_error",
            "weak_password",
            "email_taken",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input, or a very common password.",
                409: "An account with this email already exists.",
                429: "Too many signups from this client (`SIGNUP_RATE_LIMIT`).",
            },
            invalid=_INVALID_EMAIL,
        ),
    },
)
async def signup(body: SignupBody, session: SessionDep, request: Request) -> Response:
    """Create a local account and sign it in.

    The email is trimmed and lower-cased; an email that is already registered (in any case) is
    409 `email_taken`. The password has 8 to 128 characters (any Unicode, never truncated); a
    very common password is 400 `weak_password`.
    """
    runtime = runtime_of(request)
    account = await users.signup(
        session, runtime.hasher, email=body.email, password=body.password, name=body.name
    )
    auth = await sessions.start_session(
        session, runtime.access_tokens, account, policy=runtime.session_policy
    )
    return _session_response(request, auth, status_code=201)


@local_accounts.post(
    "/login",
    response_model=AuthResponse,
    summary="Log in",
    operation_id="login",
    dependencies=[LoginLimit],
    responses={
        **_tokens_answer("Signed in"),
        **problem_responses(
            "validation_error",
            "invalid_credentials",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                401: "Wrong email or password, the same answer for both.",
                429: "Too many attempts from this client (`LOGIN_RATE_LIMIT`), or too many "
                "failures for this account (`LOGIN_LOCKOUT`).",
            },
            invalid=(["body", "password"], "Field required", "missing"),
        ),
    },
)
async def login(body: LoginBody, session: SessionDep, request: Request) -> Response:
    """Exchange an email and password for an access token and a refresh token.

    An unknown email and a wrong password get the same answer, in the same time. Attempts are
    limited per client IP (`LOGIN_RATE_LIMIT`), and failures per account (`LOGIN_LOCKOUT`): past
    that, the account answers 429 even to the right password until the window has passed.
    """
    runtime = runtime_of(request)
    account, password_hash = await users.authenticate(
        runtime.db, runtime.hasher, runtime.lockout, email=body.email, password=body.password
    )
    auth = await sessions.start_session(
        session,
        runtime.access_tokens,
        account,
        policy=runtime.session_policy,
        password_hash=password_hash,
    )
    return _session_response(request, auth)


@local_accounts.post(
    "/refresh",
    response_model=AuthResponse,
    summary="Refresh the tokens",
    operation_id="refreshTokens",
    dependencies=[RefreshLimit],
    responses={
        **_tokens_answer("New tokens"),
        **problem_responses(
            "validation_error",
            "invalid_refresh_token",
            "refresh_token_reused",
            "rate_limited",
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input, or no refresh token at all (neither in the body nor in the "
                "cookie).",
                401: "The refresh token is unknown, expired, revoked or not a refresh token "
                "(`invalid_refresh_token`), or it is a token of its session that was already "
                "used (or copied and altered), so the session is now ended "
                "(`refresh_token_reused`).",
                429: "Too many refreshes from this client (`REFRESH_RATE_LIMIT`).",
            },
            invalid=_NO_REFRESH_TOKEN,
        ),
    },
)
async def refresh(body: RefreshBody, session: SessionDep, request: Request) -> Response:
    """Trade a refresh token for a new access token and a **new** refresh token.

    Each refresh token works once. Presenting one again ends its whole session (every refresh
    token that descends from the same login) and answers 401 `refresh_token_reused`. Refreshes
    are limited per client IP (`REFRESH_RATE_LIMIT`).
    """
    runtime = runtime_of(request)
    auth = await sessions.refresh(
        session,
        runtime.access_tokens,
        _presented_refresh_token(request, body),
        policy=runtime.session_policy,
    )
    return _session_response(request, auth)


@local_accounts.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Log out",
    operation_id="logout",
    responses={
        **success_response(204, description="The session has ended (or had already ended)."),
        **problem_responses(
            "validation_error",
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input, or no refresh token at all (neither in the body nor in the "
                "cookie)."
            },
            invalid=_NO_REFRESH_TOKEN,
        ),
    },
)
async def logout(body: RefreshBody, session: SessionDep, request: Request) -> Response:
    """End the session this refresh token belongs to. 204 also when it had already ended."""
    await sessions.logout(session, _presented_refresh_token(request, body))
    return _forget_cookie(request, Response(status_code=204))


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
async def forgot_password(body: ForgotBody, request: Request) -> Response:
    """Mail a single-use link to reset the password of the local account with this email.

    Always 202 with no body, at once, whether or not an account has the email: the lookup and
    the mail happen after the answer. The link (`PASSWORD_RESET_URL` with the token) works once,
    for 30 minutes, and only until a newer one is sent; the email says when and from which IP
    and browser the request came. Limited per client IP and per email
    (`PASSWORD_RESET_RATE_LIMIT`, each)."""
    runtime = runtime_of(request)
    await limit_password_resets_of(request, body.email)
    reset = ResetRequest(
        email=body.email,
        client_ip=client_ip_of(request),
        user_agent=request.headers.get("user-agent"),
        requested_at=utcnow(),
    )
    runtime.background.run(
        password_resets.request_reset(
            runtime.db, runtime.mailer, reset, link_template=runtime.settings.reset_link_template
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
        **_tokens_answer("The password is reset and earlier tokens stop working"),
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
async def reset_password(body: ResetBody, session: SessionDep, request: Request) -> Response:
    """Set a new password with the token of a reset link, and sign in.

    The token works once: every earlier token of the user, access and refresh, stops working,
    every reset link of the user too, and the account's login lockout (`LOGIN_LOCKOUT`) is
    lifted. An unknown, used, expired (30 minutes) or replaced token is 400
    `invalid_reset_token`; a very common new password is 400 `weak_password` (the token then
    still works)."""
    runtime = runtime_of(request)

    async def limit(email: str) -> None:
        await limit_password_resets_of(request, email)

    auth = await password_resets.reset_password(
        runtime.db,
        session,
        runtime.hasher,
        runtime.lockout,
        runtime.access_tokens,
        raw_token=body.token,
        new_password=body.new_password,
        policy=runtime.session_policy,
        limit_per_account=limit,
    )
    return _session_response(request, auth)


@router.post(
    "/logout-all",
    status_code=204,
    response_class=Response,
    summary="Log out everywhere",
    operation_id="logoutAll",
    responses={
        **success_response(204, description="Every session of the user has ended."),
        **problem_responses(*BEARER_ERRORS),
    },
)
async def logout_all(user: CurrentUser, session: SessionDep, request: Request) -> Response:
    """End every session of the current user: every refresh token, and every access token issued
    until now (this one included), in every worker at once. Logging in again works at once."""
    await sessions.end_all_sessions(session, user.id)
    return _forget_cookie(request, Response(status_code=204))


@local_accounts.post(
    "/password",
    response_model=AuthResponse,
    summary="Change the password",
    operation_id="changePassword",
    dependencies=[PasswordChangeLimit],
    responses={
        **_tokens_answer("The password is changed and earlier tokens stop working"),
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
    body: PasswordBody, user: CurrentUser, session: SessionDep, request: Request
) -> Response:
    """Change the password and answer with fresh tokens. Every token issued before the change,
    access and refresh, the caller's own included, stops working.

    Changes are limited per user (`PASSWORD_CHANGE_RATE_LIMIT`), and a wrong current password
    counts as a failed login of the account (`LOGIN_LOCKOUT`): past that, even the right one is
    429 until the window has passed."""
    runtime = runtime_of(request)
    auth = await sessions.change_password(
        runtime.db,
        session,
        runtime.hasher,
        runtime.lockout,
        runtime.access_tokens,
        user,
        current_password=body.current_password,
        new_password=body.new_password,
        policy=runtime.session_policy,
    )
    return _session_response(request, auth)


@router.get(
    "/me",
    response_model=UserRead,
    summary="The current user",
    operation_id="getCurrentUser",
    responses={
        **success_response(200, description="The current user.", example=USER_EXAMPLE),
        **problem_responses(*BEARER_ERRORS),
    },
)
async def me(user: CurrentUser) -> Response:
    """The account the bearer token belongs to (ours or a Better Auth user)."""
    return json_response(sessions.user_read(user))


@router.patch(
    "/me",
    response_model=UserRead,
    summary="Change the current user's profile",
    operation_id="updateCurrentUser",
    responses={
        **success_response(200, description="The user, changed.", example=USER_EXAMPLE),
        **problem_responses(
            "validation_error",
            *BEARER_ERRORS,
            *BODY_ERRORS,
            descriptions={
                400: "Invalid input: `{}`, an unknown field, a time zone that is not an IANA "
                "name, a `null` time zone, a name longer than 100 characters, or a Better Auth "
                "user's name (changed in Better Auth)."
            },
            invalid=(
                ["body", "time_zone"],
                "must be an IANA time zone name, such as Europe/Paris or UTC",
                "value_error",
            ),
        ),
    },
)
async def update_me(
    body: ProfileBody, user: CurrentUser, session: SessionDep, request: Request
) -> Response:
    """Change the display name and the time zone (JSON merge patch: a field left out is kept).

    `name`: trimmed, up to 100 characters; `null` or blank clears it. A Better Auth user's name
    comes from its Better Auth tokens, so sending it is a 400. `time_zone`: an IANA name
    (`Europe/Paris`), which says what "today" is for this user; it cannot be null."""
    return json_response(await accounts.update_profile(session, user, body))


@router.delete(
    "/me",
    status_code=204,
    response_class=Response,
    summary="Delete the current user's account",
    operation_id="deleteCurrentUser",
    responses={
        **success_response(
            204, description="The account and everything in it are deleted; its tokens stop."
        ),
        **problem_responses(
            "validation_error",
            "wrong_password",
            "rate_limited",
            *BEARER_ERRORS,
            *BODY_ERRORS,
            descriptions={
                400: "A local account's password is missing or not right (`wrong_password`), "
                "or a Better Auth user sent a password.",
                429: "Too many wrong passwords for this account, counted with failed logins "
                "(`LOGIN_LOCKOUT`).",
            },
            invalid=(["body", "password"], "Field required", "missing"),
        ),
    },
)
async def delete_me(
    user: CurrentUser, session: SessionDep, request: Request, body: DeletionBody = None
) -> Response:
    """Delete the account for good: the user, every task (the trash too), every session and
    reset link, in one transaction. Every token of the user stops working at once, in every
    worker. Export first (`GET /api/{user_id}/export`) to keep a copy.

    Local accounts confirm with `{"password": …}` (400 `wrong_password` otherwise; wrong ones
    count against `LOGIN_LOCKOUT`); Better Auth users send no body, and a later sign-in through
    Better Auth starts a new, empty account here."""
    runtime = runtime_of(request)
    await accounts.delete_account(
        runtime.db,
        session,
        runtime.hasher,
        runtime.lockout,
        user,
        password=None if body is None else body.password,
    )
    return _forget_cookie(request, Response(status_code=204))


@router.get(
    "/jwks",
    response_model=JsonWebKeySet,
    summary="Our public signing keys",
    operation_id="getJwks",
    responses=success_response(
        200, description="Our public keys (JWKS, RFC 7517).", example=JWKS_EXAMPLE
    ),
)
async def jwks(request: Request) -> dict[str, Any]:
    """The public keys (JWKS) that verify the access tokens this service issues."""
    return runtime_of(request).local_keys.public_jwks()
