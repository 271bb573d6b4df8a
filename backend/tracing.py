"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set; this module (and OpenTelemetry)
is imported only then (`backend/main.py`).

One trace per request: the server span of OpenTelemetry's FastAPI (ASGI) instrumentation, which
carries the request id (the `X-Request-ID` response header, captured as the attribute
`http.response.header.x_request_id`), and inside it a span per database statement: SQLAlchemy's
instrumentation for the statements that go through SQLAlchemy, and spans of the same shape for
the fast path, which hands statements to the driver directly (`backend/db/fastpath.py`). Spans go
out in batches over OTLP/HTTP to `{endpoint}/v1/traces`; the SDK's own variables apply
(OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...).
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import fastpath

type Runner[T] = Callable[[Any, str, list[Any]], Coroutine[Any, Any, T]]


def exporter_for(endpoint: str) -> SpanExporter:
    """Where spans go: the collector's OTLP/HTTP traces endpoint."""
    return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")


class Tracing:
    """The process's tracer provider, and what it instruments: the app, the database engine."""

    def __init__(self, endpoint: str) -> None:
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(BatchSpanProcessor(exporter_for(endpoint)))
        self._tracer = self.provider.get_tracer(__name__)
        self._saved_runners: dict[str, Any] | None = None

    def trace_app(self, app: FastAPI) -> None:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            http_capture_headers_server_response=["x-request-id"],
            # Spans per ASGI message (each chunk of an event stream) would drown the rest.
            exclude_spans=["receive", "send"],
        )

    def trace_database(self, engine: AsyncEngine) -> None:
        # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged
        # (tests/test_tracing.py shows the spans).
        SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine, tracer_provider=self.provider, skip_dep_check=True
        )
        self._saved_runners = dict(fastpath._RUNNERS)
        system = engine.dialect.name
        rows, count = fastpath._RUNNERS[system]
        # (The same calls; mypy tells the runners' parameter names apart.)
        fastpath._RUNNERS[system] = (  # type: ignore[assignment]
            _traced(self._tracer, system, rows),
            _traced(self._tracer, system, count),
        )

    def shutdown(self) -> None:
        """Stop tracing the database and send the spans still held."""
        if self._saved_runners is not None:
            fastpath._RUNNERS.update(self._saved_runners)
            SQLAlchemyInstrumentor().uninstrument()
        self.provider.shutdown()


def _resource() -> Resource:
    """What the SDK makes of OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, named `todo-api`
    unless they name it."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        return detected.merge(Resource({"service.name": "todo-api"}))
    return detected


def _traced[T](tracer: Tracer, system: str, run: Runner[T]) -> Runner[T]:
    """`run` (a fast-path statement on the driver) inside a client span, named and described as
    SQLAlchemy's instrumentation names and describes the others."""

    async def traced(driver: Any, sql: str, arguments: list[Any]) -> T:
        with tracer.start_as_current_span(
            sql.split(None, 1)[0].upper(),
            kind=SpanKind.CLIENT,
            attributes={"db.system": system, "db.statement": sql},
        ):
            return await run(driver, sql, arguments)

    return traced
