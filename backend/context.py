"""The request context: what the pipeline (`backend/routing.py`) learns about a request and
hands to routes, services and the access log, as one typed object.

It is created in one place, the pipeline, after the token check and the rate limit of the
owner's routes and before any database resource is taken, and kept in the ASGI scope under one
key. Routes get its parts through the dependencies of `backend/dependencies.py` (`CurrentUser`,
`UnitDep`, `SessionDep`), never by key.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.auth.tokens import Principal
from backend.db import UnitOfWork
from backend.services.users import Account

_KEY = "todo_context"


@dataclass(slots=True)
class RequestContext:
    unit: UnitOfWork
    principal: Principal | None = None
    account: Account | None = None
    # Headers decided while serving (the rate-limit state), added to whatever the answer is.
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def user_id(self) -> str | None:
        """The account's id; on a route that checks the token in its statements (no account
        read), the token's subject, which the pipeline has checked is the path's owner."""
        if self.account is not None:
            return self.account.id
        return None if self.principal is None else self.principal.subject

    def install(self, scope: Mapping[str, Any]) -> None:
        scope["state"][_KEY] = self


def context_of(scope: Mapping[str, Any]) -> RequestContext | None:
    """The request's context, once the pipeline has created it (None before, and for requests
    that reach no route)."""
    context: RequestContext | None = (scope.get("state") or {}).get(_KEY)
    return context
