"""Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware).

`RequestContextMiddleware` is the outermost layer: it gives every request an id, adds the
security headers, `X-Request-ID` and any headers decided while serving (the rate-limit state,
put in `scope["state"]["response_headers"]`) to every response, writes the one access-log line,
and turns anything that escaped the error handlers into a generic problem+json 500.

`BodyGuardMiddleware` refuses request bodies over the size limit (413), whether announced by
`Content-Length` or sent chunked, and bodies that are not JSON (415), before the app reads them.
"""

import logging
import re
import secrets
import time
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import (
    PayloadTooLarge,
    UnsupportedMediaType,
    internal_error_response,
    problem_response,
)
from backend.logs import request_id_var

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


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        response_started = False
        path: str = scope["path"]
        cacheable = path.startswith(_CACHEABLE_PREFIXES)
        extra_headers = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        if not cacheable:
            extra_headers.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", ())}
                decided = [
                    (name.lower().encode(), value.encode())
                    for name, value in state.get("response_headers", {}).items()
                ]
                message["headers"] = [
                    *message.get("headers", ()),
                    *(h for h in (*extra_headers, *decided) if h[0] not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if response_started:
                access_logger.exception("error after the response started")
            else:
                response = internal_error_response(scope, exc)
                await response(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            access_logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": getattr(route, "path", None) or path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started_at) * 1000, 2),
                    "user_id": state.get("user_id"),
                },
            )
            request_id_var.reset(token)


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
