"""OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT, one trace per request holding its database
statements and its request id; without it, nothing of OpenTelemetry's in the process at all."""

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from backend import tracing
from tests.conftest import SettingsFactory, client_for, running_app, sign_up
from tests.live import ROOT

REQUEST_ID = "http.response.header.x_request_id"


async def test_each_request_is_one_trace_with_its_database_spans_and_its_request_id(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "exporter_for", lambda _endpoint: exporter)
    settings = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        responses = [
            await client.post(user.tasks_url, json={"title": "traced"}, headers=user.headers),
            await client.get(user.tasks_url, headers=user.headers),
            await client.get(user.tasks_url, headers={**user.headers, "X-Request-ID": "mine-1"}),
        ]
    # The app's end flushed the spans still held.
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in exporter.get_finished_spans():
        traces[span.context.trace_id].append(span)

    for response in responses:
        assert response.status_code in (200, 201)
        request_id = response.headers["x-request-id"]
        (trace,) = [
            spans
            for spans in traces.values()
            if any((span.attributes or {}).get(REQUEST_ID) == (request_id,) for span in spans)
        ]
        (server,) = [span for span in trace if span.kind == SpanKind.SERVER]
        assert server.parent is None
        assert server.resource.attributes["service.name"] == "todo-api"
        assert server.attributes is not None
        assert server.attributes[REQUEST_ID] == (request_id,)
        assert server.name == f"{response.request.method} /api/{{user_id}}/tasks"
        statements = [span for span in trace if "db.statement" in (span.attributes or {})]
        assert statements, "no database span in the request's trace"
        for span in statements:
            assert span.kind == SpanKind.CLIENT
            assert _root_of(span, trace) is server
    assert responses[2].headers["x-request-id"] == "mine-1"
    # The ORM's statements (a signup's) too, not only those of the fast path.
    (insert,) = [
        span
        for spans in traces.values()
        for span in spans
        if str((span.attributes or {}).get("db.statement", "")).startswith("INSERT INTO users")
    ]
    root = _root_of(insert, traces[insert.context.trace_id])
    assert root.kind == SpanKind.SERVER and root.name == "POST /api/auth/signup"


def _root_of(span: ReadableSpan, trace: list[ReadableSpan]) -> ReadableSpan:
    by_id = {each.context.span_id: each for each in trace}
    while span.parent is not None:
        span = by_id[span.parent.span_id]
    return span


# Run in a process of its own: what a served worker imports, and the app's middleware, from the
# inside out (`.app` of each layer).
_PROBE = """
import json, sys
from backend.config import Settings
from backend.main import create_app

def layers(app):
    layer, kinds = app.build_middleware_stack(), []
    while layer is not None:
        kinds.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    return kinds

app = create_app(Settings(_env_file=None, **json.loads(sys.argv[1])))
print(json.dumps({
    "layers": layers(app),
    "patched": "build_middleware_stack" in vars(app),
    "modules": sorted(m for m in sys.modules if m.startswith(
        ("backend.tracing", "opentelemetry.instrumentation", "opentelemetry.sdk.trace",
         "opentelemetry.exporter")
    )),
}))
"""

BEFORE = [
    "ServerErrorMiddleware",
    "ExceptionTelemetryMiddleware",
    "AppBodyLimitMiddleware",
    "RequestContextMiddleware",
    "HeadMiddleware",
    "CORSMiddleware",
    "InternalErrorMiddleware",
    "BodyGuardMiddleware",
    "ExceptionMiddleware",
    "AsyncExitStackMiddleware",
    "APIRouter",
    "method",
]


def _probe(**settings: Any) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(settings)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    probed: dict[str, Any] = json.loads(result.stdout)
    return probed


def test_without_an_endpoint_nothing_of_opentelemetry_is_imported_or_added() -> None:
    """No measurable cost: the very middleware stack of a build without tracing, and none of
    the SDK's tracing, the instrumentations or the exporter even imported. (The OpenTelemetry
    API itself is imported by redis-py, for its own optional metrics.)"""
    off = _probe()
    assert off == {"layers": BEFORE, "patched": False, "modules": []}

    on = _probe(otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    assert on["patched"] and "OpenTelemetryMiddleware" in on["layers"]
    assert "backend.tracing" in on["modules"]
