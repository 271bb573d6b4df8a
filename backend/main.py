"""The application factory: lifespan, middleware, error handlers, routers, documentation."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from backend.config import Settings, get_settings
from backend.docs import install_docs
from backend.metrics import RequestMetrics, Sampler, install_metrics_route
from backend.middleware import (
    BodyGuardMiddleware,
    CORSMiddleware,
    HeadMiddleware,
    InternalErrorMiddleware,
    RequestContextMiddleware,
)
from backend.openapi import install_openapi
from backend.problems import install_error_handlers
from backend.routes import (
    events,
    export,
    health,
    me,
    organizing,
    passwords,
    sessions,
    sync,
    task_list,
    tasks,
)
from backend.runtime import Runtime

DESCRIPTION = """\
A multi-user Todo API. Sign up or log in under **auth** to get an access token (or bring a
Better Auth JWT), press **Authorize**, then call the **tasks** routes with your own user id.

Every error is `application/problem+json` with a stable `code` and the `request_id`.
"""

# Headers a browser script may read on a cross-origin response.
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Location",
    "Content-Disposition",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "ETag",
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Operations (backend/metrics.py, backend/tracing.py): when not configured, not a single
    # middleware or import more.
    request_metrics = RequestMetrics() if settings.metrics_token is not None else None
    tracing = None
    if settings.otel_exporter_otlp_endpoint is not None:
        from backend.tracing import Tracing

        tracing = Tracing(settings.otel_exporter_otlp_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        sampler = None
        if request_metrics is not None:
            sampler = Sampler(
                connections_in_use=runtime.db.connections_in_use,
                waiting=runtime.db.waiting_for_connection,
                open_streams=lambda: runtime.hub.open_streams,
            )
            sampler.start()
        if tracing is not None:
            tracing.trace_database(runtime.db.engine)
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which would otherwise stall requests for tens of ms.
        gc.freeze()
        try:
            yield
        finally:
            if sampler is not None:
                await sampler.stop()
            await runtime.stop()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="Todo API",
        version=version("todo-api"),
        description=DESCRIPTION,
        lifespan=lifespan,
        # `/tasks/` is a 404, not a redirect to `/tasks`: the redirect would name the request's
        # Host header, cost a round trip, and be refused to a browser's preflighted request.
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "auth", "description": "Accounts, sign-in and tokens."},
            {"name": "tasks", "description": "A user's own tasks."},
            {
                "name": "sync",
                "description": "Staying in sync: the changes feed, the trash, clearing completed "
                "tasks.",
            },
            {"name": "operations", "description": "Health and readiness probes."},
        ],
    )
    install_error_handlers(app)
    # Added innermost first (see backend/middleware.py): CORS wraps the generic 500, so a browser
    # can read every answer.
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Request-ID",
            "Idempotency-Key",
            "If-Match",
            "If-None-Match",
            "Last-Event-ID",
        ],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
    app.add_middleware(HeadMiddleware)
    app.add_middleware(
        RequestContextMiddleware, observe=request_metrics.observe if request_metrics else None
    )

    # The busiest routes first: the router tries routes in order.
    app.include_router(task_list.router)
    app.include_router(tasks.router)
    app.include_router(organizing.router)
    app.include_router(sync.router)
    app.include_router(events.router)
    app.include_router(export.router)
    if settings.local_accounts:
        app.include_router(sessions.local_accounts)
        app.include_router(passwords.local_accounts)
    app.include_router(sessions.router)
    app.include_router(me.router)
    app.include_router(health.router)
    if settings.metrics_token is not None:
        install_metrics_route(app, settings.metrics_token.get_secret_value())
    install_openapi(app, settings)
    install_docs(app)
    if tracing is not None:
        tracing.trace_app(app)
    return app
