"""The process's infrastructure as FastAPI dependencies: `Annotated` aliases that read like
types (`settings: SettingsDep`), each taken from the `Runtime` the lifespan built.

Routes and the request pipeline (`backend/routing.py`) get every object here through these
functions (`async def`: FastAPI runs a plain `def` dependency in a worker thread), so a test can
swap one with `app.dependency_overrides[get_limiter] = ...` without rebuilding the app.
`provided(request, get_x)` is how the pipeline itself, which runs before FastAPI solves a
route's dependencies, honours those overrides.
"""

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, cast

from fastapi import Depends, Request

from backend.auth.keys import LocalKeys
from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import AccessTokenIssuer, TokenVerifier
from backend.config import Settings
from backend.db import Database
from backend.events import Hub
from backend.mail import Background, Mailer
from backend.models import utcnow
from backend.ratelimit import IPNetwork, LoginLockout, RateLimiter
from backend.runtime import Runtime
from backend.services.sessions import SessionPolicy


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def provided[T](request: Request, dependency: Callable[[Request], Awaitable[T]]) -> T:
    """`dependency(request)`, or what `app.dependency_overrides` puts in its place (a function
    of no arguments, plain or async)."""
    override = request.app.dependency_overrides.get(dependency)
    if override is None:
        return await dependency(request)
    value = override()
    return cast(T, await value if inspect.isawaitable(value) else value)


async def get_settings(request: Request) -> Settings:
    return runtime_of(request).settings


async def get_database(request: Request) -> Database:
    return runtime_of(request).db


async def get_hasher(request: Request) -> PasswordHasher:
    return runtime_of(request).hasher


async def get_access_tokens(request: Request) -> AccessTokenIssuer:
    return runtime_of(request).access_tokens


async def get_verifier(request: Request) -> TokenVerifier:
    return runtime_of(request).verifier


async def get_local_keys(request: Request) -> LocalKeys:
    return runtime_of(request).local_keys


async def get_hub(request: Request) -> Hub:
    return runtime_of(request).hub


async def get_limiter(request: Request) -> RateLimiter:
    return runtime_of(request).limiter


async def get_lockout(request: Request) -> LoginLockout:
    return runtime_of(request).lockout


async def get_trusted_proxies(request: Request) -> tuple[IPNetwork, ...]:
    return runtime_of(request).trusted_proxies


async def get_session_policy(request: Request) -> SessionPolicy:
    return runtime_of(request).session_policy


async def get_mailer(request: Request) -> Mailer:
    return runtime_of(request).mailer


async def get_background(request: Request) -> Background:
    return runtime_of(request).background


Clock = Callable[[], datetime]


async def get_clock(request: Request) -> Clock:
    """What "now" is for what depends on the day (the list's views); a test sets its own."""
    return utcnow


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
AccessTokensDep = Annotated[AccessTokenIssuer, Depends(get_access_tokens)]
LocalKeysDep = Annotated[LocalKeys, Depends(get_local_keys)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
HubDep = Annotated[Hub, Depends(get_hub)]
LockoutDep = Annotated[LoginLockout, Depends(get_lockout)]
SessionPolicyDep = Annotated[SessionPolicy, Depends(get_session_policy)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
BackgroundDep = Annotated[Background, Depends(get_background)]
ClockDep = Annotated[Clock, Depends(get_clock)]
