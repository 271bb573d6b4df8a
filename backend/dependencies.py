"""The dependencies routes declare, as `Annotated` aliases that read like types.

- `UnitDep`, `SessionDep`: the request's unit of work (`backend/db/unit.py`), opened by the
  pipeline (`backend/routing.py`), and its ORM session for the account services.
- `CurrentUser`: the account behind a valid bearer token (401 otherwise); the only way to get it.
- `OwnerId`: the `{user_id}` path segment, checked by the pipeline to be the caller's own.
- `SignupLimit`, `LoginLimit`, `RefreshLimit`, `PasswordChangeLimit`, `PasswordResetLimit`:
  route dependencies that count the request against its rate limit (per client IP, or per user
  for password changes) and answer 429 beyond it; `limit_password_resets_of` counts a password
  reset against the account's email. The task-write limit is the pipeline's (before any
  database resource is taken).

The infrastructure (settings, database, limiter...) comes from `backend/infrastructure.py`.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, get_origin
from urllib.parse import parse_qsl

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem
from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.tokens import Principal
from backend.context import RequestContext, context_of
from backend.db import UnitOfWork
from backend.errors import MissingToken
from backend.infrastructure import (
    get_database,
    get_limiter,
    get_trusted_proxies,
    get_verifier,
    provided,
)
from backend.ratelimit import RateLimiter, client_ip, too_many
from backend.schemas import NOT_UNICODE_TEXT, is_unicode_text
from backend.services import users
from backend.services.users import Account

BEARER_SCHEME = "bearer"
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name=BEARER_SCHEME,
    bearerFormat="JWT",
    description="An access token from /api/auth/login or /api/auth/signup, or a Better Auth JWT.",
)


def request_context(request: Request) -> RequestContext:
    context = context_of(request.scope)
    if context is None:
        raise RuntimeError("no request context: the route's class is not ApiRoute (routing.py)")
    return context


async def request_unit(request: Request) -> UnitOfWork:
    return request_context(request).unit


UnitDep = Annotated[UnitOfWork, Depends(request_unit)]


async def request_session(request: Request) -> AsyncSession:
    return request_context(request).unit.session()


SessionDep = Annotated[AsyncSession, Depends(request_session)]


async def authenticate(request: Request) -> Principal:
    """Verify the request's bearer token (401 without a valid one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken()
    verifier = await provided(request, get_verifier)
    return await verifier.verify(token)


async def get_current_user(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Account:
    """The account behind the request's bearer token (401 if none): the one the pipeline found
    for the owner's routes, or looked up here once, in a short unit of work of its own, so that
    no connection is held through the rest of the request (a password change hashes)."""
    # `_credentials` only puts the bearer scheme into the OpenAPI document.
    context = request_context(request)
    if context.account is None:
        if context.principal is None:
            context.principal = await authenticate(request)
        database = await provided(request, get_database)
        async with database.unit(write=False) as own:
            context.account = await users.account_for_token(own, context.principal)
    return context.account


CurrentUser = Annotated[Account, Depends(get_current_user)]

# The `{user_id}` path segment of the owner's routes; the pipeline has checked that it is the
# caller's own (403 otherwise).
TaskId = Annotated[uuid.UUID, Path(description="The task's id (a UUID).")]
OwnerId = Annotated[str, Path(alias="user_id", description="Your own user id (the token's `sub`).")]


async def client_ip_of(request: Request) -> str:
    client = request.scope.get("client")
    return client_ip(
        client[0] if client else None, request.headers, await provided(request, get_trusted_proxies)
    )


async def limit(limiter: RateLimiter, item: RateLimitItem, *key: str, what: str) -> dict[str, str]:
    """Count one event against `item`: 429 beyond it; the rate-limit headers of the answer."""
    decision = await limiter.hit(item, *key)
    if not decision.allowed:
        raise too_many(
            decision, f"Too many {what}; try again in {decision.reset_after} seconds.", limit=key[0]
        )
    return decision.headers()


async def _enforce(request: Request, item: RateLimitItem, *key: str, what: str) -> None:
    headers = await limit(await provided(request, get_limiter), item, *key, what=what)
    request_context(request).response_headers.update(headers)


async def limit_signups(request: Request) -> None:
    limiter = await provided(request, get_limiter)
    await _enforce(request, limiter.signup, "signup", await client_ip_of(request), what="signups")


async def limit_logins(request: Request) -> None:
    limiter = await provided(request, get_limiter)
    await _enforce(
        request, limiter.login, "login", await client_ip_of(request), what="login attempts"
    )


async def limit_refreshes(request: Request) -> None:
    limiter = await provided(request, get_limiter)
    await _enforce(
        request, limiter.refresh, "refresh", await client_ip_of(request), what="refreshes"
    )


async def limit_password_changes(request: Request, user: CurrentUser) -> None:
    limiter = await provided(request, get_limiter)
    await _enforce(request, limiter.password_change, "password", user.id, what="password changes")


async def limit_password_resets(request: Request) -> None:
    limiter = await provided(request, get_limiter)
    await _enforce(
        request,
        limiter.password_reset,
        f"password-reset-{request.url.path.rsplit('/', 1)[-1]}",
        await client_ip_of(request),
        what="password reset requests",
    )


async def limit_password_resets_of(request: Request, email: str) -> None:
    """Count a password reset request (or a reset) against the account's email."""
    limiter = await provided(request, get_limiter)
    await _enforce(
        request,
        limiter.password_reset,
        f"password-reset-{request.url.path.rsplit('/', 1)[-1]}-email",
        email,
        what="password reset requests for this account",
    )


def query_model[Model: BaseModel](model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency that validates the query string with `model` (unknown parameters refused
    when the model forbids extra fields). FastAPI's own `Query()` models re-inspect their
    field annotations on every request; this costs a single pydantic validation. Document the
    parameters with `openapi.query_parameters(model)`. A parameter whose field is a list may
    repeat (`tag=a&tag=b`); any other takes its last value."""
    repeatable = {
        name for name, field in model.model_fields.items() if get_origin(field.annotation) is list
    }

    async def parse(request: Request) -> Model:
        # Starlette decodes percent-escapes that are not UTF-8 to U+FFFD, so a search would
        # quietly look for something else; here they decode to lone surrogates, and are refused.
        params = parse_qsl(
            request.scope["query_string"].decode("latin-1"),
            keep_blank_values=True,
            errors="surrogateescape",
        )
        if not_text := [name for name, value in params if not is_unicode_text(name + value)]:
            raise RequestValidationError(
                [
                    {"loc": ("query", name), "msg": NOT_UNICODE_TEXT, "type": "string_unicode"}
                    for name in not_text
                ]
            )
        values: dict[str, str | list[str]] = {}
        for name, value in params:
            if name in repeatable:
                listed = values.setdefault(name, [])
                assert isinstance(listed, list)
                listed.append(value)
            else:
                values[name] = value
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
            ) from exc

    return parse


SignupLimit = Depends(limit_signups)
LoginLimit = Depends(limit_logins)
RefreshLimit = Depends(limit_refreshes)
PasswordChangeLimit = Depends(limit_password_changes)
PasswordResetLimit = Depends(limit_password_resets)
