"""The dependencies routes declare, as `Annotated` aliases that read like types.

- `SessionDep`: the request's database session (committed before the response is sent).
- `CurrentUser`: the account behind a valid bearer token (401 otherwise).
- `OwnerId`: the `{user_id}` path segment, once it is known to be the caller's own (403 otherwise).
- `SignupLimit`, `LoginLimit`, `TaskWriteLimit`: route dependencies that count the request
  against its rate limit (per client IP, or per user for task writes) and answer 429 beyond it.

`OwnerScopedRoute` runs the token and owner checks before FastAPI reads the request body, so the
contract's order holds even for a malformed body: 401, then 403, then 400.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth.tokens import Principal
from backend.db import READ_ONLY_METHODS, get_session
from backend.errors import Forbidden, InvalidToken, MissingToken
from backend.ratelimit import client_ip, too_many
from backend.runtime import Runtime
from backend.services import users
from backend.services.users import Account

# scope="function": the commit happens before the response is sent, so a 201 means "stored".
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="An access token from /api/auth/login or /api/auth/signup, or a Better Auth JWT.",
)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


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


async def _principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    # `_credentials` only puts the bearer scheme into the OpenAPI document.
    return await authenticate(request)


async def get_current_user(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(_principal)],
) -> Account:
    account = await users.find_account(session, principal)
    if users.needs_provisioning(account, principal):
        if request.method in READ_ONLY_METHODS:
            # A read request's transaction must not turn into a write one (SQLite could refuse
            # the upgrade), so the new user is written in a unit of work of its own.
            async with runtime_of(request).db.session(write=True) as write_session:
                account = await users.provision_better_auth_user(write_session, principal)
        else:
            account = await users.provision_better_auth_user(session, principal)
    if account is None:
        raise InvalidToken("The user of this access token no longer exists.")
    request.scope["state"]["user_id"] = account.id
    return account


CurrentUser = Annotated[Account, Depends(get_current_user)]


def _check_owner(path_user_id: str, subject: str) -> None:
    if path_user_id != subject:
        raise Forbidden()


async def get_owner_id(
    user_id: Annotated[str, Path(description="Your own user id (the token's `sub`).")],
    user: CurrentUser,
) -> str:
    _check_owner(user_id, user.id)
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


async def limit_task_writes(request: Request, owner: OwnerId) -> None:
    limiter = runtime_of(request).limiter
    await _enforce(request, limiter.task_write, "task-write", owner, what="task changes")


SignupLimit = Depends(limit_signups)
LoginLimit = Depends(limit_logins)
TaskWriteLimit = Depends(limit_task_writes)


class OwnerScopedRoute(APIRoute):
    """A route under /api/{user_id}/: token and owner are checked before the body is read.

    FastAPI decodes a JSON body before it solves dependencies, so without this a request with no
    token and a malformed body would be answered 400 instead of 401.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked_handler(request: Request) -> Response:
            principal = await authenticate(request)
            _check_owner(request.path_params["user_id"], principal.subject)
            return await handler(request)

        return checked_handler
