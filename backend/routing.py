"""The request pipeline: what happens around every route's handler, before FastAPI reads the body.

`ApiRoute` (every route) and `OwnerScopedRoute` (the routes under /api/{user_id}/) run, in order:

1. For owner-scoped routes, with no database resource taken yet: the bearer token (401), the
   path's owner against the token's subject (403) and, for writing methods, the task-write rate
   limit (429). FastAPI decodes a JSON body before it solves dependencies, so checking these in
   dependencies would answer 400 to a request with no token and a malformed body; the
   contract's order is 401, 403, 429, then 400 and 404. A limiter that is slow to answer (a
   hung Redis) holds no database connection, nor SQLite's write lock. Then, for a POST or PATCH
   with an `Idempotency-Key`, the key (400 if malformed; `backend/safe_retries.py`).
2. The request's unit of work (`backend/db/unit.py`), which takes a connection only when a
   service first needs one, and the `RequestContext` (`backend/context.py`).
3. For owner-scoped routes, the token's account, on the request's connection (401 if it no
   longer exists or the token was revoked; a Better Auth user seen for the first time is stored,
   in a transaction on that connection). With an `Idempotency-Key`, the key's claim: a repeat of
   a request that has answered gets that answer again instead of running (409 while it runs,
   422 for another request with the key).
4. The handler (FastAPI: the body, the route's dependencies, the route), then the end of the unit
   of work: its ORM session, if it has one, is committed before the response is sent, so a 201
   means "stored". A write of an owner-scoped route that succeeded then tells the user's live
   streams, on every worker, to read the changes feed (`backend/events/`). With an
   `Idempotency-Key`, the answer is then kept for repeats, or the key let go
   (`IdempotentRequest.settle`).

A unit of work that loses a race in the database (a deadlock, a serialization failure: SQLSTATE
class 40, rolled back whole) runs again from step 2, up to `ATTEMPTS` times, then answers 503.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from backend.auth.tokens import Principal
from backend.context import RequestContext
from backend.db import READ_ONLY_METHODS, UnitOfWork
from backend.dependencies import BEARER_SCHEME, authenticate, get_current_user, limit
from backend.errors import AppError, Forbidden, is_transient_conflict
from backend.infrastructure import get_database, get_hub, get_limiter, provided
from backend.openapi import idempotent_operation
from backend.safe_retries import idempotent_request
from backend.services import idempotency, users

logger = logging.getLogger("backend.routing")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
ATTEMPTS = 3


async def _retrying_conflicts(run: Callable[[], Awaitable[Response]]) -> Response:
    """Run a unit of work again when the database rolled it back for a conflict with another
    transaction; the request body is kept by the request, so the handler reads it again."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await run()
        except sa_exc.DBAPIError as exc:
            if attempt == ATTEMPTS or not is_transient_conflict(exc):
                raise
            logger.warning("transaction conflict, attempt %d of %d: retrying", attempt, ATTEMPTS)
            await asyncio.sleep(random.uniform(0, 0.02 * attempt))  # noqa: S311 (jitter)
    raise AssertionError("unreachable")


_IN_STATEMENTS = "todo_checks_token_in_statements"


def checks_token_in_statements[Endpoint: Callable[..., Any]](endpoint: Endpoint) -> Endpoint:
    """Mark an owner-scoped route whose service checks the token's standing inside the
    statements it runs (`task_statements.IN_STANDING`, given `unit.standing`), so that its
    success implies the check passed: the pipeline then reads no account first (one round trip
    fewer), and asks only when the route is refused (`_checking_in_statements`)."""
    setattr(endpoint, _IN_STATEMENTS, True)
    return endpoint


async def _checking_in_statements(
    handler: Handler, request: Request, unit: UnitOfWork, principal: Principal
) -> Response:
    """Run a route that checks the token in its statements. A refusal (any error it raises: a
    task not found, a precondition, the task cap, invalid input) may be the token's doing: the
    account is then read as on every other route, which raises 401 if the token is revoked or
    its user is gone, so that 401 comes before anything else, as the contract orders; a Better
    Auth user seen for the first time (or with a new profile) is stored, and the route runs
    again, once."""
    unit.standing = users.standing(principal)
    try:
        return await handler(request)
    except (AppError, RequestValidationError, HTTPException):
        if not await users.settle_standing(unit, principal):
            raise
    return await handler(request)


class ApiRoute(APIRoute):
    """A route of the API: its handler runs in the request's unit of work and context."""

    owner_scoped: ClassVar[bool] = False

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        owner_scoped = self.owner_scoped
        checked_in_statements = owner_scoped and getattr(self.endpoint, _IN_STATEMENTS, False)

        async def pipeline(request: Request) -> Response:
            write = request.method not in READ_ONLY_METHODS
            principal, headers, idempotent = None, {}, None
            if owner_scoped:
                principal = await authenticate(request)
                if request.path_params["user_id"] != principal.subject:
                    raise Forbidden()
                if write:
                    limiter = await provided(request, get_limiter)
                    headers = await limit(
                        limiter,
                        limiter.task_write,
                        "task-write",
                        principal.subject,
                        what="task changes",
                    )
                    idempotent = await idempotent_request(request)
            database = await provided(request, get_database)
            # The route's statements check the token's standing themselves: no read of the
            # account first (step 3 happens only if the route is refused).
            in_statements = checked_in_statements and principal is not None and idempotent is None

            async def attempt() -> Response:
                # `Database.unit()` by hand (no context-manager frames on the hot path).
                unit = UnitOfWork(database, write=write)
                try:
                    context = RequestContext(unit, principal, response_headers=dict(headers))
                    context.install(request.scope)
                    earlier = None
                    if in_statements:
                        assert principal is not None
                        response = await _checking_in_statements(handler, request, unit, principal)
                    else:
                        if principal is not None:
                            context.account = await users.account_for_token(unit, principal)
                        if idempotent is not None and context.account is not None:
                            earlier = await idempotent.claim(unit, context.account.id)
                        # A repeat gets the answer kept for it, and nothing runs.
                        response = earlier if earlier is not None else await handler(request)
                except BaseException as exc:
                    await unit.close(exc)
                    raise
                await unit.close(None)
                changed = write and earlier is None and response.status_code < 400
                if changed and principal is not None:
                    # Committed: the user's open streams, on every worker, read what changed.
                    (await provided(request, get_hub)).changed(principal.subject)
                return response

            if idempotent is None:
                return await _retrying_conflicts(attempt)
            return await idempotent.settle(request, database, _retrying_conflicts(attempt))

        return pipeline


class OwnerScopedRoute(ApiRoute):
    """A route under /api/{user_id}/: only the token's own user may call it."""

    owner_scoped = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if idempotency.METHODS & set(kwargs.get("methods") or ()):
            # Its writes take an `Idempotency-Key`: the document says so (before FastAPI reads
            # the responses, whose models it resolves here).
            kwargs["responses"], kwargs["openapi_extra"] = idempotent_operation(
                kwargs.get("responses") or {}, kwargs.get("openapi_extra")
            )
        super().__init__(*args, **kwargs)
        # The token is checked by the pipeline rather than by a FastAPI security dependency (one
        # fewer dependency on every request), so the route says in the document that it needs
        # it, unless it declares `CurrentUser` (whose dependency says so).
        if not _depends_on(self.dependant, get_current_user):
            self.openapi_extra = {"security": [{BEARER_SCHEME: []}], **(self.openapi_extra or {})}


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


# The name the account routes use (a helper is renaming them).
UnitOfWorkRoute = ApiRoute
