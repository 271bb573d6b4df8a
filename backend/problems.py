"""The one renderer that turns every error into problem+json (RFC 9457).

The handlers registered by `install_error_handlers` render the domain errors of
`backend.errors`, FastAPI's validation errors (as 400, not 422), Starlette's HTTP errors (404,
405…) and database outages (503). Anything else is rendered as a generic 500 by the request
middleware (`internal_error_response`), which logs it with the request id.
"""

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from backend.db.errors import describe_database_error, is_database_unusable
from backend.errors import AppError, ServiceUnavailable, ValidationFailed

# The name the log lines had before the renderer moved here: log queries may rely on it.
logger = logging.getLogger("backend.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
# No URI per kind of problem: `code` tells them apart.
PROBLEM_TYPE = "about:blank"


class ProblemError(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "title"]])
    msg: str = Field(examples=["String should have at least 1 character"])
    type: str = Field(examples=["string_too_short"])


class Problem(BaseModel):
    """The body of every error response (RFC 9457 problem details)."""

    # The docstring above is the schema's published description. The body itself is built by
    # `problem_body`; tests/test_errors.py keeps these fields and its members in step.

    type: str = Field(default=PROBLEM_TYPE, examples=[PROBLEM_TYPE])
    title: str = Field(examples=["Bad Request"])
    status: int = Field(examples=[400])
    detail: str = Field(examples=["body.title: title must not be empty"])
    code: str = Field(
        description="Stable machine-readable error code.", examples=["validation_error"]
    )
    errors: list[ProblemError] | None = Field(
        default=None, description="Present on validation failures: one entry per problem."
    )
    request_id: str = Field(examples=["6f1c2e0d9a8b4c7e9d0f1a2b3c4d5e6f"])


# Codes for HTTP errors raised by the framework itself (unknown route, wrong method…).
_HTTP_STATUS_CODES = {
    400: "validation_error",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}


def request_id_of(request_or_scope: Request | Mapping[str, Any]) -> str:
    scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


def problem_body(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
    members: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of every error response, members in the order they are sent: the one place
    that builds it, for the responses and the OpenAPI examples alike. `Problem` documents it
    (a test keeps the two in step)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(members or {})
    body["request_id"] = request_id
    return body


def problem_response(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    members: Mapping[str, Any] | None = None,
) -> Response:
    body = problem_body(
        status=status,
        code=code,
        detail=detail,
        request_id=request_id,
        errors=errors,
        members=members,
    )
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    return problem_response(
        status=exc.status_code,
        code=exc.code,
        detail=exc.detail,
        request_id=request_id_of(request),
        errors=errors,
        headers=exc.headers,
        members=exc.members,
    )


def _loc_text(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _encodable(text: str) -> str:
    """`text` with lone surrogates spelled as escapes (`\\udcff`): a query parameter's name may
    hold one, and UTF-8 (so the JSON answer) cannot."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's error entries without `input` and `ctx`, which may echo secrets (passwords)."""
    errors = []
    for error in raw:
        loc = [
            part if isinstance(part, int) else _encodable(str(part))
            for part in error.get("loc", ())
        ]
        msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        errors.append({"loc": loc, "msg": msg, "type": str(error.get("type", "value_error"))})
    return errors


def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    parts = [f"{_loc_text(e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in errors[:3]]
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more")
    return problem_response(
        status=400,
        code="validation_error",
        detail="; ".join(parts) or "The request is not valid.",
        request_id=request_id_of(request),
        errors=errors,
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method the path serves. Starlette's 405 names only those of the first route that
    matches the path, and a path with several routes (GET and POST) has one route per method.
    HEAD is served wherever GET is (`middleware.HeadMiddleware`)."""
    routes = request.app.router.routes

    def routed(method: str) -> bool:
        scope = {**request.scope, "method": "GET" if method == "HEAD" else method}
        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    return ", ".join(method for method in _METHODS if routed(method))


def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        detail = "No such route or resource."
    elif status == 405:
        # Not the method by name: a HEAD is asked as GET (`middleware.HeadMiddleware`).
        headers["Allow"] = _allowed_methods(request)
        detail = f"This path allows only {headers['Allow']}."
    else:
        detail = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    return problem_response(
        status=status,
        code=_HTTP_STATUS_CODES.get(status, "internal_error" if status >= 500 else "error"),
        detail=detail,
        request_id=request_id_of(request),
        headers=headers,
    )


def _database_error_handler(request: Request, exc: Exception) -> Response:
    if not is_database_unusable(exc):
        return internal_error_response(request.scope, exc)
    logger.warning(
        "database unavailable: %s: %s",
        type(exc).__name__,
        describe_database_error(exc),
        extra={"request_id": request_id_of(request)},
    )
    error = ServiceUnavailable("The database is not reachable right now; try again shortly.")
    return _app_error_handler(request, error)


def internal_error_response(scope: Mapping[str, Any], exc: BaseException) -> Response:
    request_id = request_id_of(scope)
    logger.error(
        "unhandled error while serving %s %s",
        scope.get("method"),
        scope.get("path"),
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return problem_response(
        status=500,
        code="internal_error",
        detail="Something went wrong on our side. Quote the request id if you report it.",
        request_id=request_id,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    # SQLAlchemy's errors only: an OSError that escapes a route (a file, a mail server) is a
    # 500, not "database unavailable" (`backend.db.errors` says why that is enough).
    for database_error in (sa_exc.DBAPIError, sa_exc.TimeoutError):
        app.add_exception_handler(database_error, _database_error_handler)
