"""Bodies of the task routes, and the query string of the task list."""

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from backend.models import Priority
from backend.schemas.accounts import UserRead
from backend.schemas.common import (
    NO_NUL_PATTERN,
    NOT_BLANK_PATTERN,
    RequestModel,
    StoredText,
    Timestamp,
    _blank_to_none,
    _calendar_date,
    _no_nul,
    _not_blank,
    _strip,
)

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
    """A new task: `title` is required, the other fields have defaults. `id` may be chosen by
    the client (a task created offline keeps its id): 409 `task_exists` when any task, live or
    in the trash, has it."""

    read_only_fields: ClassVar[frozenset[str]] = TaskWrite.read_only_fields - {"id"}
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"title": "Buy milk", "priority": "high", "due_date": "2026-12-01"}]
        }
    )

    id: uuid.UUID | None = Field(
        default=None,
        description="The new task's id, if the client chooses it (a UUID); the server's otherwise.",
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
    version: int = Field(
        description='1 at creation, + 1 with every change; the task\'s ETag is `"<version>"`.',
        examples=[1],
    )


# A cursor of a list page (its `next_cursor`), sent back as `cursor`.
ListCursor = Annotated[str, Field(min_length=1, max_length=4096)] | None
_CURSOR_NOTE = (
    "The `next_cursor` of an earlier page: asks for the page after it. It remembers the filters, "
    "the sort and the limit, so send it alone (or with `limit`); with `offset`, or with filters "
    "or a sort other than its own, 400 `invalid_cursor`."
)
_TRASH_CURSOR_NOTE = (
    "The `next_cursor` of an earlier page: asks for the page after it (it remembers the limit; "
    "send it alone, or with `limit`). With `offset`, 400 `invalid_cursor`."
)
_NEXT_CURSOR_NOTE = (
    "Send it as `cursor` for the page after this one; null on the last page. Paging by cursor "
    "never repeats or skips a task that does not change meanwhile, whatever else is added or "
    "deleted."
)
_OFFSET_NOTE = (
    "The `offset` asked; for a page asked by `cursor`, how many tasks the pages before it gave."
)


class TrashedTask(TaskRead):
    deleted_at: Timestamp = Field(description="When the task went to the trash.")


class TrashPage(BaseModel):
    items: list[TrashedTask]
    total: int = Field(description="How many tasks the trash holds.")
    limit: int
    offset: int = Field(description=_OFFSET_NOTE)
    next_cursor: str | None = Field(description=_NEXT_CURSOR_NOTE)


class TrashQuery(BaseModel):
    """A page of the trash, latest deletion first."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    cursor: ListCursor = Field(default=None, description=_TRASH_CURSOR_NOTE)


class ClearedTasks(BaseModel):
    deleted: int = Field(description="How many completed tasks went to the trash.")


class UpsertChange(BaseModel):
    op: Literal["upsert"]
    task: TaskRead = Field(description="The task as it is now.")


class DeleteChange(BaseModel):
    op: Literal["delete"]
    id: uuid.UUID = Field(description="The task that went to the trash, or is gone.")


Change = Annotated[UpsertChange | DeleteChange, Field(discriminator="op")]


class ChangesPage(BaseModel):
    changes: list[Change] = Field(description="Oldest change first; each task at most once.")
    next: str = Field(description="The cursor to ask from next time (`since`).")
    has_more: bool = Field(description="Whether more changes are waiting: ask again at once.")


class ChangesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        default=None,
        description="The `next` of an earlier answer; without it, a full sync (every live task).",
    )
    limit: int = Field(default=500, ge=1, le=1000)


class ExportedTask(TaskRead):
    deleted_at: Timestamp | None = Field(description="When the task went to the trash, if it did.")


class ExportDocument(BaseModel):
    """What `GET /api/{user_id}/export` answers (streamed)."""

    format: Literal["todo-api/1"] = Field(description="The version of this document's shape.")
    exported_at: Timestamp
    user: UserRead
    tasks: list[ExportedTask] = Field(
        description="Every task of the user, the trash's too, oldest first."
    )


class TaskPage(BaseModel):
    items: list[TaskRead]
    total: int = Field(description="How many tasks match the filters, over all pages.")
    limit: int
    offset: int = Field(description=_OFFSET_NOTE)
    next_cursor: str | None = Field(description=_NEXT_CURSOR_NOTE)


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
    cursor: ListCursor = Field(default=None, description=_CURSOR_NOTE)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Self:
        if self.due_before and self.due_after and self.due_after > self.due_before:
            raise ValueError("due_after must not be later than due_before")
        return self
