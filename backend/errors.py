"""Typed domain errors: each carries its HTTP status, a stable machine-readable `code` and a
human-readable detail. Services raise them; `backend.problems` renders them (and every other
error) as problem+json.
"""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class AppError(Exception):
    """Base of the domain errors: an HTTP status, a stable code and a human-readable detail."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_detail: ClassVar[str] = "Something went wrong."
    # A refusal that must persist what it decided (a reused refresh token ends its session):
    # the unit of work commits before the error is answered, instead of rolling back.
    keeps_changes: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        members: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = dict(headers or {})
        # Members of the problem body beyond the standard ones (JSON-ready values).
        self.members = dict(members or {})
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


class TooManyStreams(AppError):
    status_code = 429
    code = "too_many_streams"
    default_detail = (
        "At most 5 live-update streams may be open at once for an account; close one first."
    )

    def __init__(self, max_streams: int) -> None:
        super().__init__(
            f"At most {max_streams} live-update streams may be open at once for an account; "
            "close one first.",
            headers={"Retry-After": "5"},
        )


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


# The classification of database errors lives in `backend.db.errors`; re-exported for the
# modules that import it from here. Imported last: `backend.db` imports `AppError` from here.
from backend.db import errors as _database_errors  # noqa: E402

describe_database_error = _database_errors.describe_database_error
is_database_unusable = _database_errors.is_database_unusable
is_outage = _database_errors.is_outage
is_transient_conflict = _database_errors.is_transient_conflict


class PreconditionFailed(AppError):
    """An `If-Match` that does not list the task's version: `current` is the task as it is."""

    status_code = 412
    code = "precondition_failed"
    default_detail = "The task has changed since you read it: `current` is how it is now."

    def __init__(self, current: Any) -> None:
        super().__init__(
            headers={"ETag": f'"{current.version}"'},
            members={"current": current.model_dump(mode="json")},
        )


class TaskExists(AppError):
    status_code = 409
    code = "task_exists"
    default_detail = "A task with this id exists already (maybe in the trash)."


class InvalidCursor(AppError):
    status_code = 400
    code = "invalid_cursor"
    default_detail = (
        "This cursor is not valid here: malformed, or from another query (a cursor remembers "
        "its filters and sort; send it alone, with `limit` at most)."
    )


class SyncExpired(AppError):
    status_code = 410
    code = "sync_expired"
    default_detail = (
        "Changes this far back are no longer kept (the trash was purged since): sync again "
        "from the start (without `since`)."
    )
