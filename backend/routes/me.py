"""The current user (read, change its profile, delete its account), and our public keys."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from backend.dependencies import CurrentUser, SessionDep
from backend.infrastructure import DatabaseDep, HasherDep, LocalKeysDep, LockoutDep, SettingsDep
from backend.openapi import (
    BEARER_ERRORS,
    BODY_ERRORS,
    body_examples,
    problem_responses,
    success_response,
)
from backend.responses import json_response
from backend.routes.sessions import EXAMPLE_PASSWORD, forget_refresh_cookie
from backend.routing import UnitOfWorkRoute
from backend.schemas import (
    JWKS_EXAMPLE,
    USER_EXAMPLE,
    AccountDeletion,
    JsonWebKeySet,
    ProfileUpdate,
    UserRead,
)
from backend.services import accounts, sessions

router = APIRouter(prefix="/api/auth", tags=["auth"], route_class=UnitOfWorkRoute)

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
            local=("A local account confirms with its password", {"password": EXAMPLE_PASSWORD})
        ),
    ),
]


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
async def update_me(body: ProfileBody, user: CurrentUser, session: SessionDep) -> Response:
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
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    database: DatabaseDep,
    hasher: HasherDep,
    lockout: LockoutDep,
    body: DeletionBody = None,
) -> Response:
    """Delete the account for good: the user, every task (the trash too), every session and
    reset link, in one transaction. Every token of the user stops working at once, in every
    worker. Export first (`GET /api/{user_id}/export`) to keep a copy.

    Local accounts confirm with `{"password": …}` (400 `wrong_password` otherwise; wrong ones
    count against `LOGIN_LOCKOUT`); Better Auth users send no body, and a later sign-in through
    Better Auth starts a new, empty account here."""
    await accounts.delete_account(
        database,
        session,
        hasher,
        lockout,
        user,
        password=None if body is None else body.password,
    )
    return forget_refresh_cookie(settings, Response(status_code=204))


@router.get(
    "/jwks",
    response_model=JsonWebKeySet,
    summary="Our public signing keys",
    operation_id="getJwks",
    responses=success_response(
        200, description="Our public keys (JWKS, RFC 7517).", example=JWKS_EXAMPLE
    ),
)
async def jwks(keys: LocalKeysDep) -> dict[str, Any]:
    """The public keys (JWKS) that verify the access tokens this service issues."""
    return keys.public_jwks()
