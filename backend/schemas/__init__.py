"""Request and response bodies (Pydantic v2). Tables live in `models.py`.

Request models forbid unknown fields and say so for read-only ones; response models list exactly
what a client may see (no password hash, no internal counters).

- `common.py`: timestamps, the rules of text and dates, `RequestModel`;
- `accounts.py`: the bodies of the account routes;
- `tasks.py`: the bodies of the task routes;
- `task_list.py`: the task list's query;
- `organizing.py`: tags, moves, tag counts and the list's views;
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
from backend.schemas.organizing import MoveRequest, Tag, TagCount, Tags, TaskView, tag_key
from backend.schemas.task_list import TaskListQuery, TaskSort, TaskStatus
from backend.schemas.tasks import (
    Change,
    ChangesPage,
    ChangesQuery,
    ClearedTasks,
    CompleteRequest,
    DeleteChange,
    Description,
    DueDate,
    ExportDocument,
    TaskCreate,
    TaskPage,
    TaskPatch,
    TaskRead,
    TaskReplace,
    TaskWrite,
    Title,
    TrashedTask,
    TrashPage,
    TrashQuery,
    UpsertChange,
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
    "Change",
    "ChangesPage",
    "ChangesQuery",
    "ClearedTasks",
    "CompleteRequest",
    "DeleteChange",
    "Description",
    "DisplayName",
    "DueDate",
    "Email",
    "ExportDocument",
    "ForgotPasswordRequest",
    "JsonWebKeySet",
    "LoginRequest",
    "MoveRequest",
    "NewPassword",
    "PasswordChangeRequest",
    "PasswordResetRequest",
    "ProfileUpdate",
    "RefreshRequest",
    "RefreshTokenValue",
    "RequestModel",
    "SignupRequest",
    "StoredText",
    "Tag",
    "TagCount",
    "Tags",
    "TaskCreate",
    "TaskListQuery",
    "TaskPage",
    "TaskPatch",
    "TaskRead",
    "TaskReplace",
    "TaskSort",
    "TaskStatus",
    "TaskView",
    "TaskWrite",
    "TimeZoneName",
    "Timestamp",
    "Title",
    "TrashPage",
    "TrashQuery",
    "TrashedTask",
    "UpsertChange",
    "UserRead",
    "format_timestamp",
    "is_unicode_text",
    "tag_key",
]
