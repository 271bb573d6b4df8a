"""Typed domain errors and the one renderer that turns every error into problem+json (RFC 9457).

A domain error carries its HTTP status and a stable machine-readable `code`; services raise them,
and the handlers registered by `install_error_handlers` render them, FastAPI's validation errors
(as 400, not 422), Starlette's HTTP errors (404, 405…) and database outages (503). Anything else
is rendered as a generic 500 by the request middleware, which logs it with the request id.
"""

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

logger = logging.getLogger("backend.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "title"]])
    msg: str = Field(examples=["String should have at least 1 character"])
    type: str = Field(examples=["string_too_short"])


class Problem(BaseModel):
    """The body of every error response (RFC 9457 problem details)."""

    type: str = Field(default="about:blank", examples=["about:blank"])
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


class AppError(Exception):
    """Base of the domain errors: an HTTP status, a stable code and a human-readable detail."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_detail: ClassVar[str] = "Something went wrong."
    # A refusal that must persist what it decided (a reused refresh token ends its session):
    # the unit of work commits before the error is answered, instead of rolling back.
    keeps_changes: ClassVar[bool] = False

    def __init__(
        self, detail: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class ValidationFailed(AppError):
    status_code = 400
    code = "validation_error"
    default_detail = "The request is not valid."

    def __init__(self, detail: str, *, loc: Sequence[str | int] = (), type_: str = "value_error"):
        super().__init__(detail)
        self.errors = [{"loc": list(loc), "msg": detail, "type": type_}] if loc else None


class WeakPassword(AppError):
    status_code = 400
    code = "weak_password"
    default_detail = "This password is too common; choose a less predictable one."


class WrongPassword(AppError):
    status_code = 400
    code = "wrong_password"
    default_detail = "The current password is not correct."


class InvalidResetToken(AppError):
    status_code = 400
    code = "invalid_reset_token"
    default_detail = (
        "This password reset link is not valid: it was already used, has expired (after 30 "
        "minutes), or a newer one was sent. Ask for a new one."
    )


class Unauthorized(AppError):
    """401 for a bearer-protected route: carries the `WWW-Authenticate` challenge."""

    status_code = 401
    code = "invalid_token"
    default_detail = "The access token is not valid."

    def __init__(self, detail: str | None = None) -> None:
        challenge = 'Bearer realm="todo-api"'
        if self.code != "missing_token":
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class MissingToken(Unauthorized):
    code = "missing_token"
    default_detail = "This route needs an Authorization: Bearer <token> header."


class InvalidToken(Unauthorized):
    code = "invalid_token"


class TokenExpired(Unauthorized):
    code = "token_expired"
    default_detail = "The access token has expired; get a new one."


class InvalidCredentials(AppError):
    status_code = 401
    code = "invalid_credentials"
    default_detail = "The email or password is not correct."


class InvalidRefreshToken(AppError):
    status_code = 401
    code = "invalid_refresh_token"
    default_detail = "The refresh token is not valid; log in again."


class RefreshTokenReused(AppError):
    status_code = 401
    code = "refresh_token_reused"
    keeps_changes = True
    default_detail = (
        "This refresh token was already used, so the session has been ended; log in again."
    )


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    default_detail = "This path belongs to another user."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    default_detail = "No such resource."


class EmailTaken(AppError):
    status_code = 409
    code = "email_taken"
    default_detail = "An account with this email already exists."


class EmailNotVerified(AppError):
    status_code = 403
    code = "email_not_verified"
    default_detail = (
        "This account's email address is not verified yet; verify it, then sign in again."
    )


class PasswordManagedElsewhere(AppError):
    status_code = 409
    code = "password_managed_elsewhere"
    default_detail = (
        "This account signs in through its identity provider (Better Auth); change the "
        "password there."
    )


class TooManyTasks(AppError):
    status_code = 409
    code = "too_many_tasks"
    default_detail = "The task limit for this account is reached; delete some tasks first."


class IdempotencyKeyInProgress(AppError):
    status_code = 409
    code = "idempotency_key_in_progress"
    default_detail = (
        "A request with this Idempotency-Key is still running; send it again in a moment to "
        "get its answer."
    )

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class IdempotencyKeyReused(AppError):
    status_code = 422
    code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was used for another request (another method, path or body); "
        "use a new key for a new request."
    )


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    default_detail = "The request body is too large."


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    default_detail = "Request bodies must be JSON (Content-Type: application/json)."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    default_detail = "Too many requests; try again later."


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    default_detail = "The service is temporarily unavailable; try again shortly."

    def __init__(self, detail: str | None = None, *, retry_after: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


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


def problem_response(
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    body["request_id"] = request_id
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
    if isinstance(exc, sa_exc.DBAPIError) and not is_database_unusable(exc):
        return internal_error_response(request.scope, exc)
    logger.warning(
        "database unavailable: %s: %s",
        type(exc).__name__,
        describe_database_error(exc),
        extra={"request_id": request_id_of(request)},
    )
    error = ServiceUnavailable("The database is not reachable right now; try again shortly.")
    return _app_error_handler(request, error)


_OUTAGE_SQLSTATES = ("08", "53", "57P")
# Class 40 (transaction rollback): a deadlock or a serialization failure. Retried once or twice
# by the route classes, then answered like an outage: nothing was done, try again.
_CONFLICT_SQLSTATES = ("40",)


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or "")


def is_transient_conflict(exc: BaseException) -> bool:
    """Whether a database error means "this transaction lost a race; run it again"."""
    return isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_CONFLICT_SQLSTATES)


def is_outage(exc: BaseException) -> bool:
    """Whether a database error means "the database is unreachable or overloaded", as opposed
    to a bug in a query."""
    if isinstance(exc, sa_exc.TimeoutError | OSError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # SQLSTATE classes 08 (connection), 53 (resources) and 57P (shutting down, starting up):
        # asyncpg's "the database system is shutting down" arrives as a plain DBAPIError.
        return (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
            or _sqlstate(exc).startswith(_OUTAGE_SQLSTATES)
            or is_transient_conflict(exc)
        )
    return False


# The database answers, but this service cannot use it: no such database (3D000), a role or
# password refused (class 28), missing privileges (42501), or a schema that is not migrated
# (42P01 undefined table, 42703 undefined column). A setting or a deployment step to fix.
_UNUSABLE_SQLSTATES = ("28", "3D000", "42501", "42P01", "42703")
_UNMIGRATED_SQLSTATES = ("42P01", "42703")


def is_database_unusable(exc: BaseException) -> bool:
    """Whether a database error means "the service cannot use the database now" (an outage, or
    a database that refuses us or lacks our schema), as opposed to a bug in a query."""
    return is_outage(exc) or (
        isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_UNUSABLE_SQLSTATES)
    )


def describe_database_error(exc: BaseException) -> str:
    """One line saying what went wrong, for logs and the command line: the server's or the
    driver's message, without the SQL or the URL."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = (str(cause).strip().splitlines() or [""])[0]
    if isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_UNMIGRATED_SQLSTATES):
        text += " (the schema is not migrated: run `todo-api migrate`)"
    return text or type(cause).__name__


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
    for outage in (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError):
        app.add_exception_handler(outage, _database_error_handler)
