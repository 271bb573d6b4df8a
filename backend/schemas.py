"""Request and response bodies (Pydantic v2). Tables live in `models.py`.

Request models forbid unknown fields and say so for read-only ones; response models list exactly
what a client may see (no password hash, no internal counters).
"""

import re
import uuid
import zoneinfo
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache
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
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backend.auth.emails import canonical_email, lookup_email
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


# What JSON Schema's (ECMAScript's) `\s` matches, which the documented patterns use. Python's
# str.strip() would also remove \x1c-\x1f and \x85, which those patterns call visible.
WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _strip(value: Any) -> Any:
    return value.strip(WHITESPACE) if isinstance(value, str) else value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip(WHITESPACE)
        return value or None
    return value


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refused here as bad input, not failed on as a 500.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def is_unicode_text(value: str) -> bool:
    """Whether `value` is text that UTF-8 can encode: no lone surrogate (U+D800 to U+DFFF),
    which JSON can escape (`"\\ud800"`) and a query's bad percent-escapes decode to."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


NOT_UNICODE_TEXT = "must be Unicode text: a lone surrogate (U+D800 to U+DFFF) is not a character"


# The JSON Schema `pattern` of the text that `_no_nul` accepts.
NO_NUL_PATTERN = r"^[^\x00]*$"
# Text without NUL that holds something besides whitespace (a title, once trimmed).
NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
StoredText = Annotated[
    StrictStr, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})
]


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

    # Every field of every body, before its own validators: a lone surrogate would otherwise
    # reach the database (or a hash) and fail there as a 500.
    @field_validator("*", mode="before")
    @classmethod
    def _refuse_lone_surrogates(cls, value: Any) -> Any:
        if isinstance(value, str) and not is_unicode_text(value):
            raise PydanticCustomError("string_unicode", NOT_UNICODE_TEXT)
        return value


# --- Examples, for the OpenAPI document -------------------------------------------------------

USER_EXAMPLE: dict[str, Any] = {
    "id": "4b7e2c1a-9d3f-4e8a-b6c5-1f2a3b4c5d6e",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "time_zone": "Europe/London",
    "created_at": "2026-11-26T20:22:38.427Z",
}
AUTH_EXAMPLE: dict[str, Any] = {
    "user": USER_EXAMPLE,
    "access_token": (
        "eyJhbGciOiJFZERTQSIsImtpZCI6InVvUnZLUXY1TkZ0SWFteHZpTDZibE85M3JYbS1pQnprN1pycnk3VTVIdm8i"
        "LCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI0YjdlMmMxYS05ZDNmLTRlOGEtYjZjNS0xZjJhM2I0YzVkNmUiLCJpYXQiOj"
        "E3OTU3MzUyMjAsImV4cCI6MTc5NTczODgyMCwiaXNzIjoidG9kby1hcGkiLCJhdWQiOiJ0b2RvLWFwaSIsInR5cCI6"
        "ImFjY2VzcyJ9.8VjAyyZUZA2K_aiTqkr6GoGCno0sMX4ObT47gD1TRSjfD000yDfIUT4An4M3biNU9pvoVktTF87A6"
        "KKmdLFQCA"
    ),
    "token_type": "bearer",
    "expires_in": 900,
    "refresh_token": "mJ4v0W2bq8s3ZyXnQe7rT1uKp9LdHf6aGc5oBxVi0Ew",
    "refresh_expires_in": 604800,
}
TASK_EXAMPLE: dict[str, Any] = {
    "id": "3f0c8a52-6d1e-4b7a-9c2f-8e5d4a3b2c1d",
    "user_id": USER_EXAMPLE["id"],
    "title": "Buy milk",
    "description": "Two litres, semi-skimmed",
    "completed": False,
    "completed_at": None,
    "priority": "high",
    "due_date": "2026-12-01",
    "created_at": "2026-11-26T20:22:38.427Z",
    "updated_at": "2026-11-26T20:22:38.427Z",
}
COMPLETED_TASK_EXAMPLE: dict[str, Any] = {
    **TASK_EXAMPLE,
    "completed": True,
    "completed_at": "2026-11-27T08:15:02.113Z",
    "updated_at": "2026-11-27T08:15:02.113Z",
}
TASK_PAGE_EXAMPLE: dict[str, Any] = {"items": [TASK_EXAMPLE], "total": 1, "limit": 20, "offset": 0}
JWKS_EXAMPLE: dict[str, Any] = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "S8rWLaVJlPcii3kPyROS20yPlqASWZpWxX7TcZ6l8zw",
            "kid": "uoRvKQv5NFtIamxviL6blO93rXm-iBzk7Zrry7U5Hvo",
            "alg": "EdDSA",
            "use": "sig",
        }
    ]
}


# --- Accounts ----------------------------------------------------------------------------------

Email = Annotated[
    EmailStr,
    BeforeValidator(_strip),
    AfterValidator(canonical_email),
    Field(
        max_length=320,
        description="Trimmed, then it must be a deliverable address: a domain with a dot that is "
        "not reserved (`.test`, `.local`, `localhost`…), no quoted part nor IP literal, at most "
        "64 bytes before the `@` and 254 in all (UTF-8). Stored in one form (Unicode NFC, lower "
        "case, the domain in Unicode: `xn--` punycode is the same address).",
        examples=["ada@example.com"],
    ),
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
    Annotated[StoredText, Field(max_length=100)] | None,
    BeforeValidator(_blank_to_none),
    Field(
        default=None,
        description="Trimmed; up to 100 characters; blank means none.",
        examples=["Ada Lovelace"],
    ),
]


class SignupRequest(RequestModel):
    email: Email
    password: NewPassword
    name: DisplayName = None


class LoginRequest(RequestModel):
    email: Annotated[
        StoredText, BeforeValidator(_strip), AfterValidator(lookup_email), Field(max_length=320)
    ] = Field(
        description="Compared as at signup: trimmed, Unicode NFC, any case, the domain in "
        "Unicode or in `xn--` punycode alike.",
        examples=["ada@example.com"],
    )
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = Field(
        examples=["correct horse battery staple"]
    )


class UserRead(BaseModel):
    id: str = Field(examples=["6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"])
    email: str | None = Field(examples=["ada@example.com"])
    name: str | None = Field(examples=["Ada Lovelace"])
    time_zone: str = Field(
        description='An IANA time zone name: what "today" means for this user.',
        examples=["Europe/London"],
    )
    created_at: Timestamp


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _iana_time_zone(value: str) -> str:
    if value not in _time_zones():
        raise ValueError("must be an IANA time zone name, such as Europe/Paris or UTC")
    return value


TimeZoneName = Annotated[
    StrictStr,
    AfterValidator(_iana_time_zone),
    Field(
        max_length=64,
        description="An IANA time zone name, exactly as spelled in the tz database "
        "(`Europe/Paris`, `America/New_York`, `UTC`).",
        examples=["Europe/Paris"],
    ),
]


def _profile_schema(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    schema["properties"]["time_zone"].pop("default", None)


class ProfileUpdate(RequestModel):
    """Some fields of the profile (JSON merge patch): a field left out is kept; `name: null`
    (or a blank name) clears the name; `time_zone` cannot be null."""

    model_config = ConfigDict(json_schema_extra=_profile_schema)

    name: DisplayName = None
    # The default only stands for "left out" (see TaskPatch): only fields sent are read.
    time_zone: TimeZoneName = Field(default=None)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one of name, time_zone")
        return self


class AccountDeletion(RequestModel):
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = Field(
        description="The account's password (local accounts).",
        examples=["correct horse battery staple"],
    )


class ForgotPasswordRequest(RequestModel):
    email: Annotated[
        StoredText, BeforeValidator(_strip), AfterValidator(lookup_email), Field(max_length=320)
    ] = Field(
        description="The account's email, compared as at login.", examples=["ada@example.com"]
    )


class PasswordResetRequest(RequestModel):
    token: Annotated[StrictStr, Field(min_length=1, max_length=512)] = Field(
        description="The token of the reset link (the `{token}` of `PASSWORD_RESET_URL`).",
        examples=["Vb0pX2m8TqZ5f3yHc9LwR1uKe7NjD4sAo6GiQxEtW0M"],
    )
    new_password: NewPassword


class AuthResponse(BaseModel):
    """What signup, login, refresh and a password change answer."""

    user: UserRead
    access_token: str = Field(description="An EdDSA-signed JWT; send it as `Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth token type)
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
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


# Ours have 43 characters; the cap keeps every schema-valid body well under MAX_BODY_BYTES.
RefreshTokenValue = Annotated[StrictStr, Field(min_length=1, max_length=512)]


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
        description="Public keys only (RFC 7517); pick one by the token header's `kid`.",
        examples=[JWKS_EXAMPLE["keys"]],
    )


# --- Tasks -------------------------------------------------------------------------------------

Title = Annotated[
    StrictStr,
    BeforeValidator(_strip),
    AfterValidator(_not_blank),
    AfterValidator(_no_nul),
    Field(
        max_length=200,
        description="Trimmed; 1 to 200 characters.",
        examples=["Buy milk"],
        # What the validators above enforce, said in the schema: not blank, and no NUL.
        json_schema_extra={"minLength": 1, "pattern": NOT_BLANK_PATTERN},
    ),
]
Description = Annotated[
    Annotated[StoredText, Field(max_length=2000)] | None,
    Field(default=None, examples=["Two litres, semi-skimmed"]),
]
DueDate = Annotated[
    date | None,
    BeforeValidator(_calendar_date),
    Field(
        default=None,
        description="A calendar date, YYYY-MM-DD, from year 0001.",
        examples=["2026-12-01"],
    ),
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


def _patch_schema(schema: dict[str, Any]) -> None:
    """At least one field, and no `default` shown for the fields that cannot be null."""
    schema["minProperties"] = 1
    schema["examples"] = [{"due_date": "2026-12-24"}]
    for name in ("title", "completed", "priority"):
        schema["properties"][name].pop("default", None)


class TaskPatch(RequestModel):
    """Some writable fields of a task (JSON merge patch): a field left out is kept, `null`
    clears `description` or `due_date`; `title`, `completed` and `priority` cannot be null."""

    read_only_fields: ClassVar[frozenset[str]] = TaskWrite.read_only_fields
    model_config = ConfigDict(json_schema_extra=_patch_schema)

    # Not nullable: a `null` sent for these is refused by their type (an Optional type would
    # report each failure twice, once per member of the union). The default only stands for
    # "left out": pydantic does not validate it, the document does not show it, and only the
    # fields that were sent are read (`model_fields_set`).
    title: Title = Field(default=None)  # type: ignore[assignment]
    description: Description = None
    completed: StrictBool = Field(default=None)  # type: ignore[assignment]
    priority: Priority = Field(default=None)  # type: ignore[assignment]
    due_date: DueDate = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("a patch changes at least one field")
        return self


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


class ExportDocument(BaseModel):
    """What `GET /api/{user_id}/export` answers (streamed)."""

    format: Literal["todo-api/1"] = Field(description="The version of this document's shape.")
    exported_at: Timestamp
    user: UserRead
    tasks: list[TaskRead] = Field(description="Every task of the user, oldest first.")


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
        Annotated[
            str,
            AfterValidator(_no_nul),
            Field(max_length=200, json_schema_extra={"pattern": NO_NUL_PATTERN}),
        ]
        | None,
        BeforeValidator(_blank_to_none),
        Field(
            description="Substring of title or description, ignoring case by Unicode full case "
            "folding (`straße` matches `STRASSE`), the same on every database."
        ),
    ] = None
    priority: Priority | None = None
    # Calendar dates only: pydantic alone would also read a number as a Unix timestamp.
    # Their order is a rule between two parameters, which a JSON Schema cannot state: said here.
    due_before: Annotated[date | None, BeforeValidator(_calendar_date)] = Field(
        default=None,
        description="Inclusive upper bound on due_date (YYYY-MM-DD); not earlier than "
        "`due_after` (400 otherwise).",
    )
    due_after: Annotated[date | None, BeforeValidator(_calendar_date)] = Field(
        default=None,
        description="Inclusive lower bound on due_date (YYYY-MM-DD); not later than "
        "`due_before` (400 otherwise).",
    )
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
