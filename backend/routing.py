"""Route classes: what happens around every route's handler, before FastAPI reads the body.

- `UnitOfWorkRoute` opens the request's unit of work (`Database.session`, a write transaction
  for writing methods), hands it to the handler through `SessionDep`, and commits it when the
  handler has returned, before the response is sent, so a 201 means "stored"; an error rolls
  it back. A session costs nothing until its first statement.
- `OwnerScopedRoute`, for the routes under /api/{user_id}/, does the same with a Core
  connection (`ConnectionDep`: the task service builds every statement on the tables and needs
  no ORM session), and first checks the bearer token, its account (on that connection) and the
  path's owner. FastAPI decodes a JSON body before it solves dependencies, so without this a
  request with no token and a malformed body would get 400 instead of 401; the contract's order
  is 401, then 403, then 400, then 404. A Better Auth user seen for the first time is stored
  before the unit of work opens again (`users.FirstSight`), never in a connection nested in it.

A unit of work that loses a race in the database (a deadlock, a serialization failure: SQLSTATE
class 40, rolled back whole) runs again, up to `ATTEMPTS` times, then answers 503.

`@single_statement` marks a writing route whose work is one statement on PostgreSQL: its unit of
work needs no transaction there (SQLite's writes always run in a write transaction).
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import exc as sa_exc

from backend.db import READ_ONLY_METHODS
from backend.dependencies import (
    BEARER_SCHEME,
    authenticate,
    check_owner,
    current_account,
    provision_account,
)
from backend.errors import is_transient_conflict
from backend.infrastructure import runtime_of
from backend.services.users import FirstSight

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


def single_statement[Endpoint: Callable[..., Any]](endpoint: Endpoint) -> Endpoint:
    """Mark a writing route whose work is one statement, atomic on its own: its unit of work
    needs no transaction (on PostgreSQL, two round trips fewer)."""
    endpoint.__single_statement__ = True  # type: ignore[attr-defined]
    return endpoint


class UnitOfWorkRoute(APIRoute):
    """A route whose unit of work is an ORM session (`SessionDep`)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        single = getattr(self.endpoint, "__single_statement__", False)

        async def in_unit_of_work(request: Request) -> Response:
            write = request.method not in READ_ONLY_METHODS
            database = runtime_of(request).db

            async def run() -> Response:
                async with database.session(write=write, single_statement=single) as session:
                    request.scope["state"]["session"] = session
                    return await handler(request)

            return await _retrying_conflicts(run)

        return in_unit_of_work


class OwnerScopedRoute(APIRoute):
    """A route under /api/{user_id}/, whose unit of work is a Core connection
    (`ConnectionDep`): the token, its account (on that connection) and the path's owner are
    checked before the handler runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The token is checked here rather than by a FastAPI security dependency (one fewer
        # dependency on every request), so the route says in the document that it needs it.
        self.openapi_extra = {"security": [{BEARER_SCHEME: []}], **(self.openapi_extra or {})}

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        single = getattr(self.endpoint, "__single_statement__", False)

        async def in_unit_of_work(request: Request) -> Response:
            write = request.method not in READ_ONLY_METHODS
            database = runtime_of(request).db
            async with database.connection(write=write, single_statement=single) as connection:
                request.scope["state"]["connection"] = connection
                account = await current_account(request, connection=connection)
                check_owner(request.path_params["user_id"], account)
                return await handler(request)

        async def owner_checked(request: Request) -> Response:
            principal = await authenticate(request)  # 401 for a bad token, before any database
            try:
                return await _retrying_conflicts(lambda: in_unit_of_work(request))
            except FirstSight:
                # A Better Auth user to store first: in a unit of work of its own, never one
                # nested in the request's (the handler has not run yet).
                await provision_account(request, principal)
                return await _retrying_conflicts(lambda: in_unit_of_work(request))

        return owner_checked
