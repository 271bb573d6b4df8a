"""Accounts and tokens: signup, login, the current user, and our public keys."""

from typing import Any

from fastapi import APIRouter, Request, Response

from backend.dependencies import CurrentUser, SessionDep, runtime_of
from backend.openapi import problem_responses
from backend.responses import json_response
from backend.schemas import AuthResponse, JsonWebKeySet, LoginRequest, SignupRequest, UserRead
from backend.services import sessions, users

router = APIRouter(prefix="/api/auth", tags=["auth"])


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
    return json_response(sessions.start_session(runtime.access_tokens, account), status_code=201)


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
    """Exchange an email and password for an access token.

    An unknown email and a wrong password get the same answer, in the same time.
    """
    runtime = runtime_of(request)
    account = await users.authenticate(
        session, runtime.hasher, email=body.email, password=body.password
    )
    return json_response(sessions.start_session(runtime.access_tokens, account))


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
