"""Request and response bodies (Pydantic v2). Tables live in `models.py`.

Request models forbid unknown fields and say so for read-only ones; response models list exactly
what a client may see (no password hash, no internal counters).

- `common.py`: timestamps, the rules of text and dates, `RequestModel`;
- `accounts.py`: the bodies of the account routes;
- `tasks.py`: the bodies of the task routes and the task list's query;
- `examples.py`: example bodies for the OpenAPI document.

Every public name is importable from `backend.schemas` itself.
"""

from backend.schemas.accounts import (
    AccountDeletion,
    AuthResponse,
    DisplayName,
    Email,
    ForgotPasswordRequest,
    JsonWebKeySet,
    LoginRequest,
    NewPassword,
    PasswordChangeRequest,
    PasswordResetRequest,
    ProfileUpdate,
    RefreshRequest,
    RefreshTokenValue,
    SignupRequest,
    TimeZoneName,
    UserRead,
)
from backend.schemas.common import (
    NO_NUL_PATTERN,
    NOT_BLANK_PATTERN,
    NOT_UNICODE_TEXT,
    WHITESPACE,
    RequestModel,
    StoredText,
    Timestamp,
    format_timestamp,
    is_unicode_text,
)
from backend.schemas.examples import (
    AUTH_EXAMPLE,
    COMPLETED_TASK_EXAMPLE,
    JWKS_EXAMPLE,
    TASK_EXAMPLE,
    TASK_PAGE_EXAMPLE,
    USER_EXAMPLE,
)
from backend.schemas.tasks import (
    CompleteRequest,
    Description,
    DueDate,
    ExportDocument,
    TaskCreate,
    TaskListQuery,
    TaskPage,
    TaskPatch,
    TaskRead,
    TaskReplace,
    TaskSort,
    TaskStatus,
    TaskWrite,
    Title,
)

__all__ = [
    "AUTH_EXAMPLE",
    "COMPLETED_TASK_EXAMPLE",
    "JWKS_EXAMPLE",
    "NOT_BLANK_PATTERN",
    "NOT_UNICODE_TEXT",
    "NO_NUL_PATTERN",
    "TASK_EXAMPLE",
    "TASK_PAGE_EXAMPLE",
    "USER_EXAMPLE",
    "WHITESPACE",
    "AccountDeletion",
    "AuthResponse",
    "CompleteRequest",
    "Description",
    "DisplayName",
    "DueDate",
    "Email",
    "ExportDocument",
    "ForgotPasswordRequest",
    "JsonWebKeySet",
    "LoginRequest",
    "NewPassword",
    "PasswordChangeRequest",
    "PasswordResetRequest",
    "ProfileUpdate",
    "RefreshRequest",
    "RefreshTokenValue",
    "RequestModel",
    "SignupRequest",
    "StoredText",
    "TaskCreate",
    "TaskListQuery",
    "TaskPage",
    "TaskPatch",
    "TaskRead",
    "TaskReplace",
    "TaskSort",
    "TaskStatus",
    "TaskWrite",
    "TimeZoneName",
    "Timestamp",
    "Title",
    "UserRead",
    "format_timestamp",
    "is_unicode_text",
]
