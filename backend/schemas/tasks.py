"""Bodies of the task routes, and the query string of the task list."""

import uuid
from datetime import date
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
    NOT_BLANK_PATTERN,
    RequestModel,
    StoredText,
    Timestamp,
    _calendar_date,
    _no_nul,
    _not_blank,
    trimmed,
)
from backend.schemas.organizing import Tags

TITLE_MAX_LENGTH = 200
Title = Annotated[
    StrictStr,
    BeforeValidator(trimmed(TITLE_MAX_LENGTH)),
    AfterValidator(_not_blank),
    AfterValidator(_no_nul),
    Field(
        max_length=TITLE_MAX_LENGTH,
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
    tags: Tags = Field(default_factory=list)


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
    for name in ("title", "completed", "priority", "tags"):
        schema["properties"][name].pop("default", None)


class TaskPatch(RequestModel):
    """Some writable fields of a task (JSON merge patch): a field left out is kept, `null`
    clears `description` or `due_date`; `title`, `completed`, `priority` and `tags` cannot be
    null (`[]` clears the tags)."""

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
    tags: Tags = Field(default=None)  # type: ignore[arg-type]

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
                    "tags": ["errands"],
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
    tags: list[str] = Field(
        description="The task's tags, in the order they were sent.", examples=[["errands"]]
    )
    position: str = Field(
        description="The task's place in the owner's order (`sort=position`): an opaque key "
        "to compare as bytes; change it with `POST …/tasks/{id}/move`.",
        examples=["a0"],
    )
    version: int = Field(
        description='1 at creation, + 1 with every change; the task\'s ETag is `"<version>"`.',
        examples=[1],
    )


# A cursor of a list page (its `next_cursor`), sent back as `cursor`.
ListCursor = Annotated[str, Field(min_length=1, max_length=4096)] | None
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
