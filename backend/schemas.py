"""Request and response bodies (Pydantic v2). Tables live in `models.py`.

Request models forbid unknown fields and say so for read-only ones; response models list exactly
what a client may see (no password hash, no internal counters).
"""

import re
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StrictBool,
    StrictStr,
    model_validator,
)

from backend.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from backend.models import Priority


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, always with milliseconds: 2026-11-26T20:22:38.427Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    Field(examples=["2026-11-26T20:22:38.427Z"]),
]


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_date(value: Any) -> Any:
    if value is None or isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a calendar date in the form YYYY-MM-DD")
    return value


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid")

    # Fields a client may have read but must not send back.
    read_only_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _refuse_read_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and (sent := sorted(cls.read_only_fields & data.keys())):
            raise ValueError(f"read-only field(s) cannot be set: {', '.join(sent)}")
        return data


# --- Accounts ----------------------------------------------------------------------------------

Email = Annotated[
    EmailStr,
    BeforeValidator(_strip),
    AfterValidator(str.lower),
    Field(max_length=320, examples=["ada@example.com"]),
]
NewPassword = Annotated[
    StrictStr,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description="8 to 128 characters, any Unicode; very common passwords are refused.",
        examples=["correct horse battery staple"],
    ),
]
DisplayName = Annotated[
    Annotated[StrictStr, Field(max_length=100)] | None,
    BeforeValidator(_blank_to_none),
    Field(default=None, examples=["Ada Lovelace"]),
]


class SignupRequest(RequestModel):
    email: Email
    password: NewPassword
    name: DisplayName = None


class LoginRequest(RequestModel):
    email: Annotated[
        StrictStr, BeforeValidator(_strip), AfterValidator(str.lower), Field(max_length=320)
    ] = Field(examples=["ada@example.com"])
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = Field(
        examples=["correct horse battery staple"]
    )


class UserRead(BaseModel):
    id: str = Field(examples=["6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"])
    email: str | None = Field(examples=["ada@example.com"])
    name: str | None = Field(examples=["Ada Lovelace"])
    created_at: Timestamp


class AuthResponse(BaseModel):
    """What signup, login, refresh and a password change answer."""

    user: UserRead
    access_token: str = Field(description="An EdDSA-signed JWT; send it as `Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth token type)
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[3600])
    refresh_token: str | None = Field(
        description=(
            "Opaque and single-use: trade it at /api/auth/refresh for new tokens. Null when the "
            "service is configured to send it as an HttpOnly cookie instead."
        ),
        examples=["mJ4v0W2bq8s3ZyXnQe7rT1uKp9LdHf6aGc5oBxVi0Ew"],
    )
    refresh_expires_in: int = Field(
        description="Seconds until the refresh token expires if unused.", examples=[604800]
    )


RefreshTokenValue = Annotated[StrictStr, Field(min_length=1, max_length=8192)]


class RefreshRequest(RequestModel):
    refresh_token: RefreshTokenValue | None = Field(
        default=None,
        description="The refresh token; may be left out when it travels in the cookie.",
    )


class PasswordChangeRequest(RequestModel):
    current_password: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    new_password: NewPassword


class JsonWebKeySet(BaseModel):
    keys: list[dict[str, str]] = Field(
        examples=[[{"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…", "alg": "EdDSA"}]]
    )


# --- Tasks -------------------------------------------------------------------------------------

Title = Annotated[
    StrictStr,
    BeforeValidator(_strip),
    AfterValidator(_not_blank),
    Field(max_length=200, description="Trimmed; 1 to 200 characters.", examples=["Buy milk"]),
]
Description = Annotated[
    StrictStr | None,
    Field(default=None, max_length=2000, examples=["Two litres, semi-skimmed"]),
]
DueDate = Annotated[
    date | None,
    BeforeValidator(_calendar_date),
    Field(default=None, description="A calendar date, YYYY-MM-DD.", examples=["2026-12-01"]),
]


class TaskWrite(RequestModel):
    """The writable fields of a task."""

    read_only_fields: ClassVar[frozenset[str]] = frozenset(
        {"id", "user_id", "created_at", "updated_at", "completed_at"}
    )

    title: Title
    description: Description = None
    completed: StrictBool = False
    priority: Priority = Priority.medium
    due_date: DueDate = None


class TaskCreate(TaskWrite):
    """A new task: `title` is required, the other fields have defaults."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"title": "Buy milk", "priority": "high", "due_date": "2026-12-01"}]
        }
    )


class TaskReplace(TaskWrite):
    """The whole task: fields that are left out are reset to their defaults."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Buy milk",
                    "description": None,
                    "completed": True,
                    "priority": "medium",
                    "due_date": None,
                }
            ]
        }
    )


class CompleteRequest(RequestModel):
    completed: StrictBool


class TaskRead(BaseModel):
    id: uuid.UUID
    user_id: str
    title: str = Field(examples=["Buy milk"])
    description: str | None = Field(examples=[None])
    completed: bool
    completed_at: Timestamp | None = Field(examples=[None])
    priority: Priority
    due_date: date | None = Field(examples=["2026-12-01"])
    created_at: Timestamp
    updated_at: Timestamp


class TaskPage(BaseModel):
    items: list[TaskRead]
    total: int = Field(description="How many tasks match the filters, over all pages.")
    limit: int
    offset: int


class TaskStatus(StrEnum):
    all = "all"
    pending = "pending"
    completed = "completed"


class TaskSort(StrEnum):
    created_at_asc = "created_at"
    created_at_desc = "-created_at"
    updated_at_asc = "updated_at"
    updated_at_desc = "-updated_at"
    title_asc = "title"
    title_desc = "-title"
    due_date_asc = "due_date"
    due_date_desc = "-due_date"
    priority_asc = "priority"
    priority_desc = "-priority"

    @property
    def field(self) -> str:
        return self.value.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


class TaskListQuery(BaseModel):
    """Filters, sort and page of the task list; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus = TaskStatus.all
    q: Annotated[
        Annotated[str, Field(max_length=200)] | None,
        BeforeValidator(_blank_to_none),
        Field(description="Case-insensitive substring of title or description."),
    ] = None
    priority: Priority | None = None
    due_before: date | None = Field(default=None, description="Inclusive upper bound on due_date.")
    due_after: date | None = Field(default=None, description="Inclusive lower bound on due_date.")
    sort: TaskSort = Field(
        default=TaskSort.created_at_desc,
        description="Sort key; prefix `-` for descending. Ties are broken by id.",
    )
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Self:
        if self.due_before and self.due_after and self.due_after > self.due_before:
            raise ValueError("due_after must not be later than due_before")
        return self
