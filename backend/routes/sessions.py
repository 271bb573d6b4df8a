"""Sessions: signup, login, refresh, logout and logout everywhere, and what every route that
hands out tokens shares (its documented answer, the refresh token's cookie).

Two routers: `local_accounts`, the routes of local accounts (left out, 404 and out of the
document, with LOCAL_ACCOUNTS=false), and `router`, always mounted."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from backend.config import Settings
from backend.dependencies import CurrentUser, LoginLimit, RefreshLimit, SessionDep, SignupLimit
from backend.errors import InvalidCredentials, RateLimited, ValidationFailed
from backend.infrastructure import (
    AccessTokensDep,
    DatabaseDep,
    HasherDep,
    LockoutDep,
    SessionPolicyDep,
    SettingsDep,
)
from backend.metrics import LOGIN_FAILED, LOGIN_LOCKED, LOGIN_SUCCEEDED
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
    AuthResponse,
    LoginRequest,
    RefreshRequest,
    SignupRequest,
)
from backend.services import sessions, users

router = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)
# The routes of local accounts, left out (404, and out of the document) with LOCAL_ACCOUNTS=false.
local_accounts = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)

_TOKENS = (
    "the user and a new pair of tokens (with `REFRESH_TOKEN_COOKIE=true` the refresh token comes "
    "as an HttpOnly cookie instead, and `refresh_token` is null)."
)
EXAMPLE_PASSWORD = "correct horse battery staple"  # noqa: S105 (an example)
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
                {"email": "ada@example.com", "password": EXAMPLE_PASSWORD, "name": "Ada Lovelace"},
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
                {"email": "ada@example.com", "password": EXAMPLE_PASSWORD},
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


def tokens_answer(what: str, *, status: int = 200) -> dict[int | str, Any]:
    """The success answer of a route that hands out tokens: `what` happened, then the tokens."""
    return success_response(
        status, description=f"{what}: {_TOKENS}", example=AUTH_EXAMPLE, headers=RATE_LIMIT_HEADERS
    )


REFRESH_COOKIE = "todo_refresh"
REFRESH_COOKIE_PATH = "/api/auth"


def session_response(settings: Settings, auth: AuthResponse, *, status_code: int = 200) -> Response:
    """The tokens, with the refresh token in the body, or in an HttpOnly cookie when the service
    is configured so (REFRESH_TOKEN_COOKIE)."""
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


def _presented_refresh_token(request: Request, settings: Settings, body: RefreshRequest) -> str:
    token = body.refresh_token
    if token is None and settings.refresh_token_cookie:
        token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ValidationFailed(
            "refresh_token is required", loc=("body", "refresh_token"), type_="missing"
        )
    return token


def forget_refresh_cookie(settings: Settings, response: Response) -> Response:
    if settings.refresh_token_cookie:
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
        **tokens_answer("The account is created and signed in", status=201),
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
async def signup(
    body: SignupBody,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    access_tokens: AccessTokensDep,
    policy: SessionPolicyDep,
) -> Response:
    """Create a local account and sign it in.

    The email is trimmed and lower-cased; an email that is already registered (in any case) is
    409 `email_taken`. The password has 8 to 128 characters (any Unicode, never truncated); a
    very common password is 400 `weak_password`.
    """
    account = await users.signup(
        session, hasher, email=body.email, password=body.password, name=body.name
    )
    auth = await sessions.start_session(session, access_tokens, account, policy=policy)
    return session_response(settings, auth, status_code=201)


@local_accounts.post(
    "/login",
    response_model=AuthResponse,
    summary="Log in",
    operation_id="login",
    dependencies=[LoginLimit],
    responses={
        **tokens_answer("Signed in"),
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
async def login(
    body: LoginBody,
    session: SessionDep,
    settings: SettingsDep,
    database: DatabaseDep,
    hasher: HasherDep,
    lockout: LockoutDep,
    access_tokens: AccessTokensDep,
    policy: SessionPolicyDep,
) -> Response:
    """Exchange an email and password for an access token and a refresh token.

    An unknown email and a wrong password get the same answer, in the same time. Attempts are
    limited per client IP (`LOGIN_RATE_LIMIT`), and failures per account (`LOGIN_LOCKOUT`): past
    that, the account answers 429 even to the right password until the window has passed.
    """
    try:
        account, password_hash = await users.authenticate(
            database, hasher, lockout, email=body.email, password=body.password
        )
    except InvalidCredentials:
        LOGIN_FAILED.inc()
        raise
    except RateLimited:
        LOGIN_LOCKED.inc()
        raise
    LOGIN_SUCCEEDED.inc()
    auth = await sessions.start_session(
        session, access_tokens, account, policy=policy, password_hash=password_hash
    )
    return session_response(settings, auth)


@local_accounts.post(
    "/refresh",
    response_model=AuthResponse,
    summary="Refresh the tokens",
    operation_id="refreshTokens",
    dependencies=[RefreshLimit],
    responses={
        **tokens_answer("New tokens"),
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
async def refresh(
    body: RefreshBody,
    session: SessionDep,
    request: Request,
    settings: SettingsDep,
    access_tokens: AccessTokensDep,
    policy: SessionPolicyDep,
) -> Response:
    """Trade a refresh token for a new access token and a **new** refresh token.

    Each refresh token works once. Presenting one again ends its whole session (every refresh
    token that descends from the same login) and answers 401 `refresh_token_reused`. Refreshes
    are limited per client IP (`REFRESH_RATE_LIMIT`).
    """
    auth = await sessions.refresh(
        session,
        access_tokens,
        _presented_refresh_token(request, settings, body),
        policy=policy,
    )
    return session_response(settings, auth)


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
async def logout(
    body: RefreshBody, session: SessionDep, request: Request, settings: SettingsDep
) -> Response:
    """End the session this refresh token belongs to. 204 also when it had already ended."""
    await sessions.logout(session, _presented_refresh_token(request, settings, body))
    return forget_refresh_cookie(settings, Response(status_code=204))


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
async def logout_all(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Response:
    """End every session of the current user: every refresh token, and every access token issued
    until now (this one included), in every worker at once. Logging in again works at once."""
    await sessions.end_all_sessions(session, user.id)
    return forget_refresh_cookie(settings, Response(status_code=204))
