"""Accounts and sessions: signup, login, refresh, logout, password change, the current user,
and our public keys."""

from typing import Any

from fastapi import APIRouter, Request, Response

from backend.dependencies import CurrentUser, SessionDep, runtime_of
from backend.errors import ValidationFailed
from backend.openapi import problem_responses
from backend.responses import json_response
from backend.schemas import (
    AuthResponse,
    JsonWebKeySet,
    LoginRequest,
    PasswordChangeRequest,
    RefreshRequest,
    SignupRequest,
    UserRead,
)
from backend.services import sessions, users

router = APIRouter(prefix="/api/auth", tags=["auth"])

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


@router.post(
    "/signup",
    status_code=201,
    response_model=AuthResponse,
    summary="Create an account",
    operation_id="signup",
    responses=problem_responses(
        409, 429, descriptions={409: "An account with this email exists (`email_taken`)."}
    ),
)
async def signup(body: SignupRequest, session: SessionDep, request: Request) -> Response:
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


@router.post(
    "/login",
    response_model=AuthResponse,
    summary="Log in",
    operation_id="login",
    responses=problem_responses(
        401,
        429,
        descriptions={401: "Wrong email or password (`invalid_credentials`), the same for both."},
    ),
)
async def login(body: LoginRequest, session: SessionDep, request: Request) -> Response:
    """Exchange an email and password for an access token and a refresh token.

    An unknown email and a wrong password get the same answer, in the same time.
    """
    runtime = runtime_of(request)
    account = await users.authenticate(
        session, runtime.hasher, email=body.email, password=body.password
    )
    auth = await sessions.start_session(
        session, runtime.access_tokens, account, policy=runtime.session_policy
    )
    return _session_response(request, auth)


@router.post(
    "/refresh",
    response_model=AuthResponse,
    summary="Refresh the tokens",
    operation_id="refreshTokens",
    responses=problem_responses(
        401,
        descriptions={
            401: (
                "`invalid_refresh_token` (unknown, expired, revoked, or not a refresh token), or "
                "`refresh_token_reused`: the token was already used, so its session is now ended."
            )
        },
    ),
)
async def refresh(body: RefreshRequest, session: SessionDep, request: Request) -> Response:
    """Trade a refresh token for a new access token and a **new** refresh token.

    Each refresh token works once. Presenting one again ends its whole session (every refresh
    token that descends from the same login) and answers 401 `refresh_token_reused`.
    """
    runtime = runtime_of(request)
    auth = await sessions.refresh(
        session,
        runtime.access_tokens,
        _presented_refresh_token(request, body),
        policy=runtime.session_policy,
    )
    return _session_response(request, auth)


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Log out",
    operation_id="logout",
    responses=problem_responses(),
)
async def logout(body: RefreshRequest, session: SessionDep, request: Request) -> Response:
    """End the session this refresh token belongs to. 204 also when it had already ended."""
    await sessions.logout(session, _presented_refresh_token(request, body))
    return _forget_cookie(request, Response(status_code=204))


@router.post(
    "/logout-all",
    status_code=204,
    response_class=Response,
    summary="Log out everywhere",
    operation_id="logoutAll",
    responses=problem_responses(401),
)
async def logout_all(user: CurrentUser, session: SessionDep, request: Request) -> Response:
    """End every session of the current user: every refresh token, and every access token issued
    until now (this one included), in every worker at once. Logging in again works at once."""
    await sessions.end_all_sessions(session, user.id)
    return _forget_cookie(request, Response(status_code=204))


@router.post(
    "/password",
    response_model=AuthResponse,
    summary="Change the password",
    operation_id="changePassword",
    responses=problem_responses(
        401,
        descriptions={
            400: "Invalid input, `wrong_password` (the current password is not right) or "
            "`weak_password`."
        },
    ),
)
async def change_password(
    body: PasswordChangeRequest, user: CurrentUser, session: SessionDep, request: Request
) -> Response:
    """Change the password and answer with fresh tokens. Every token issued before the change,
    access and refresh, the caller's own included, stops working."""
    runtime = runtime_of(request)
    auth = await sessions.change_password(
        session,
        runtime.hasher,
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
    responses=problem_responses(401),
)
async def me(user: CurrentUser) -> Response:
    """The account the bearer token belongs to (ours or a Better Auth user)."""
    return json_response(sessions.user_read(user))


@router.get(
    "/jwks",
    response_model=JsonWebKeySet,
    summary="Our public signing keys",
    operation_id="getJwks",
)
async def jwks(request: Request) -> dict[str, Any]:
    """The public keys (JWKS) that verify the access tokens this service issues."""
    return runtime_of(request).local_keys.public_jwks()
