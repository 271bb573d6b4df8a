"""Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware), from the
outermost in:

`RequestContextMiddleware` gives every request an id, adds the security headers, `X-Request-ID`
and any headers decided while serving (the rate-limit state, in the request's
`RequestContext`) to every response, writes the one access-log line and, when metrics are on,
hands the same facts to `observe` (`backend/metrics.py`).

`HeadMiddleware` answers HEAD as GET without the body, so routes declare GET only.

`CORSMiddleware` is Starlette's, with refused preflights answered as problem+json.

`InternalErrorMiddleware` turns anything that escaped the error handlers into a generic
problem+json 500; inside CORS, so that a browser can read it and its request id.

`BodyGuardMiddleware` refuses request bodies over the size limit (413), whether announced by
`Content-Length` or sent chunked, and bodies that are not JSON (415), before the app reads them.
"""

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable

from starlette.datastructures import Headers
from starlette.middleware import cors
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.context import context_of
from backend.errors import PayloadTooLarge, UnsupportedMediaType
from backend.logs import request_id_var
from backend.problems import internal_error_response, problem_response

access_logger = logging.getLogger("backend.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# The docs pages and their assets may be cached; API responses never are.
_CACHEABLE_PREFIXES = ("/docs", "/redoc", "/static/")


def _incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return candidate if _REQUEST_ID.fullmatch(candidate) else None
    return None


# What the request metrics take of each request: method, route template, status, seconds.
Observer = Callable[[str, str | None, int, float], None]


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, observe: Observer | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope["headers"]) or secrets.token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        started_at = time.perf_counter()
        status = 500
        path: str = scope["path"]
        cacheable = path.startswith(_CACHEABLE_PREFIXES)
        extra_headers = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        if not cacheable:
            extra_headers.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", ())}
                context = context_of(scope)
                decided = [
                    (name.lower().encode(), value.encode())
                    for name, value in (context.response_headers if context else {}).items()
                ]
                message["headers"] = [
                    *message.get("headers", ()),
                    *(h for h in (*extra_headers, *decided) if h[0] not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started_at
            template: str | None = getattr(scope.get("route"), "path", None)
            access_logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": template or path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "user_id": context.user_id if (context := context_of(scope)) else None,
                },
            )
            if self.observe is not None:
                self.observe(scope["method"], template, status, seconds)
            request_id_var.reset(token)


# Set in the scope of a HEAD request served as GET: a route whose GET never ends (the event
# stream) answers it with its headers alone.
HEAD_REQUEST = "todo_head_request"


class HeadMiddleware:
    """HEAD is GET without the body (RFC 9110): the same status and headers, Content-Length
    included. Routes declare GET only, so the OpenAPI document has no HEAD operations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # In place, and back afterwards: the access log reads the method and the route from it.
        scope["method"] = "GET"
        scope[HEAD_REQUEST] = True
        try:
            await self.app(scope, receive, send_without_body)
        finally:
            scope["method"] = "HEAD"


class CORSMiddleware(cors.CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as problem+json (400
    `validation_error`, an error entry per refused request header) instead of text/plain."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = self._refused(request_headers)
        return problem_response(
            status=400,
            code="validation_error",
            detail=f"This cross-origin request is not allowed ({', '.join(refused)}).",
            request_id=request_id_var.get() or "",
            errors=[
                {"loc": ["header", name], "msg": "not allowed by CORS", "type": "cors_refused"}
                for name in refused
            ],
            headers={
                name: value
                for name, value in response.headers.items()
                if not name.startswith("content-")
            },
        )

    def _refused(self, request_headers: Headers) -> list[str]:
        """The request headers that made Starlette refuse the preflight, by the same rules."""
        refused = []
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            refused.append("origin")
        if request_headers["access-control-request-method"] not in self.allow_methods:
            refused.append("access-control-request-method")
        requested = request_headers.get("access-control-request-headers")
        if (
            requested is not None
            and not self.allow_all_headers
            and any(name.strip().lower() not in self.allow_headers for name in requested.split(","))
        ):
            refused.append("access-control-request-headers")
        if (
            "access-control-request-private-network" in request_headers
            and not self.allow_private_network
        ):
            refused.append("access-control-request-private-network")
        return refused


class InternalErrorMiddleware:
    """Anything that escaped the error handlers: a generic problem+json 500, logged with the
    request id; or only logged, when the response had already started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            if response_started:
                access_logger.exception("error after the response started")
            else:
                await internal_error_response(scope, exc)(scope, receive, send)


class BodyGuardMiddleware:
    """413 for oversized bodies and 415 for non-JSON bodies, answered before the app runs."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, receive, send, PayloadTooLarge(self._too_large()))
            return

        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send, PayloadTooLarge(self._too_large()))
                return
            chunks.append(chunk)
            more_body = message.get("more_body", False)

        if size and not _is_json(headers.get("content-type", "")):
            await self._refuse(scope, receive, send, UnsupportedMediaType())
            return

        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge | UnsupportedMediaType
    ) -> None:
        response = problem_response(
            status=error.status_code,
            code=error.code,
            detail=error.detail,
            request_id=str(scope.get("state", {}).get("request_id", "")),
        )
        if isinstance(error, PayloadTooLarge):
            # The rest of the body is not read, so the connection cannot be reused.
            response.headers["connection"] = "close"
        await response(scope, receive, send)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
