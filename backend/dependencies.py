"""The dependencies routes declare, as `Annotated` aliases that read like types.

- `SessionDep`, `ConnectionDep`: the request's unit of work (an ORM session, or a Core
  connection for the task routes), opened by the route class (`backend/routing.py`).
- `CurrentUser`: the account behind a valid bearer token (401 otherwise).
- `OwnerId`: the `{user_id}` path segment, once it is known to be the caller's own (403 otherwise).
- `SignupLimit`, `LoginLimit`, `RefreshLimit`, `PasswordChangeLimit`, `PasswordResetLimit`,
  `TaskWriteLimit`: route dependencies that count the request against its rate limit (per
  client IP, or per user for password changes and task writes) and answer 429 beyond it;
  `limit_password_resets_of` counts a password reset against the account's email.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.tokens import Principal
from backend.errors import Forbidden, MissingToken
from backend.infrastructure import runtime_of
from backend.ratelimit import client_ip, too_many
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


def _unit_of_work(request: Request, kind: str) -> Any:
    """The session or connection that the route class (backend/routing.py) opened."""
    unit = request.scope["state"].get(kind)
    if unit is None:
        raise RuntimeError(f"this route opens no {kind} (see backend/routing.py)")
    return unit


async def request_session(request: Request) -> AsyncSession:
    session: AsyncSession = _unit_of_work(request, "session")
    return session


SessionDep = Annotated[AsyncSession, Depends(request_session)]


async def request_connection(request: Request) -> AsyncConnection:
    connection: AsyncConnection = _unit_of_work(request, "connection")
    return connection


ConnectionDep = Annotated[AsyncConnection, Depends(request_connection)]


async def authenticate(request: Request) -> Principal:
    """Verify the request's bearer token, once per request."""
    state = request.scope["state"]
    principal: Principal | None = state.get("principal")
    if principal is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise MissingToken()
        principal = await runtime_of(request).verifier.verify(token)
        state["principal"] = principal
    return principal


async def current_account(
    request: Request, *, connection: AsyncConnection | None = None
) -> Account:
    """The account of the request's bearer token (401 if none), looked up once per request, on
    the request's unit of work `connection` if given (where a Better Auth user seen for the
    first time raises `users.FirstSight`: see `provision_account`)."""
    account: Account | None = request.scope["state"].get("account")
    if account is None:
        principal = await authenticate(request)
        account = await users.account_for_token(
            runtime_of(request).db, principal, connection=connection
        )
        _remember(request, account)
    return account


async def provision_account(request: Request, principal: Principal) -> None:
    """Store the Better Auth user of `users.FirstSight`, outside the request's unit of work, as
    the request's account."""
    _remember(request, await users.provision(runtime_of(request).db, principal))


def _remember(request: Request, account: Account) -> None:
    state = request.scope["state"]
    state["account"] = account
    state["user_id"] = account.id  # for the access log


async def get_current_user(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Account:
    # `_credentials` only puts the bearer scheme into the OpenAPI document.
    return await current_account(request)


CurrentUser = Annotated[Account, Depends(get_current_user)]


def check_owner(path_user_id: str, account: Account) -> None:
    if path_user_id != account.id:
        raise Forbidden()


async def get_owner_id(
    request: Request,
    user_id: Annotated[str, Path(description="Your own user id (the token's `sub`).")],
) -> str:
    # Owner-scoped routes (backend/routing.py) have checked this before the body was read, and
    # declare the bearer scheme in the OpenAPI document; this only finds the account again.
    check_owner(user_id, await current_account(request))
    return user_id


OwnerId = Annotated[str, Depends(get_owner_id)]


def client_ip_of(request: Request) -> str:
    client = request.scope.get("client")
    return client_ip(
        client[0] if client else None, request.headers, runtime_of(request).trusted_proxies
    )


async def _enforce(request: Request, item: RateLimitItem, *key: str, what: str) -> None:
    decision = await runtime_of(request).limiter.hit(item, *key)
    request.scope["state"]["response_headers"] = decision.headers()
    if not decision.allowed:
        raise too_many(decision, f"Too many {what}; try again in {decision.reset_after} seconds.")


async def limit_signups(request: Request) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.signup, "signup", client_ip_of(request), what="signups")


async def limit_logins(request: Request) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.login, "login", client_ip_of(request), what="login attempts")


async def limit_refreshes(request: Request) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.refresh, "refresh", client_ip_of(request), what="refreshes")


async def limit_password_changes(request: Request, user: CurrentUser) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.password_change, "password", user.id, what="password changes")


async def limit_password_resets(request: Request) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(
        request,
        limiter.password_reset,
        f"password-reset-{request.url.path.rsplit('/', 1)[-1]}",
        client_ip_of(request),
        what="password reset requests",
    )


async def limit_password_resets_of(request: Request, email: str) -> None:
    """Count a password reset request (or a reset) against the account's email."""
    limiter = runtime_of(request).limiter
    await _enforce(
        request,
        limiter.password_reset,
        f"password-reset-{request.url.path.rsplit('/', 1)[-1]}-email",
        email,
        what="password reset requests for this account",
    )


async def limit_task_writes(request: Request, owner: OwnerId) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.task_write, "task-write", owner, what="task changes")


def query_model[Model: BaseModel](model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency that validates the query string with `model` (unknown parameters refused
    when the model forbids extra fields). FastAPI's own `Query()` models re-inspect their
    field annotations on every request; this costs a single pydantic validation. Document the
    parameters with `openapi.query_parameters(model)`."""

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
        try:
            return model.model_validate(dict(params))
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
TaskWriteLimit = Depends(limit_task_writes)
