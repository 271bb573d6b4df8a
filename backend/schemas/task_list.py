"""The task list's query string: filters, views, sort and page."""

from datetime import date
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from backend.models import Priority
from backend.schemas.accounts import TimeZoneName
from backend.schemas.common import NO_NUL_PATTERN, _blank_to_none, _calendar_date, _no_nul
from backend.schemas.organizing import MAX_TAGS, Tag, TaskView
from backend.schemas.tasks import ListCursor

_CURSOR_NOTE = (
    "The `next_cursor` of an earlier page: asks for the page after it. It remembers the filters, "
    "the sort and the limit, so send it alone (or with `limit`); with `offset`, or with filters "
    "or a sort other than its own, 400 `invalid_cursor`."
)


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
    position_asc = "position"
    position_desc = "-position"

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
    view: TaskView | None = Field(
        default=None,
        description="`today`: due today; `overdue`: due before today and not completed; "
        "`upcoming`: due after today; `no_date`: no due date. Today is the date in the user's "
        "`time_zone`, or in `tz`.",
    )
    tz: TimeZoneName | None = Field(
        default=None,
        description="The time zone that says what today is for `view` (an IANA name), instead "
        "of the user's `time_zone`; an unknown zone is a 400.",
    )
    tag: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = Field(
        default_factory=list,
        description="Repeatable (`tag=work&tag=home`): tasks having every one of these tags, "
        "in any spelling (compared ignoring case).",
    )
    sort: TaskSort = Field(
        default=TaskSort.created_at_desc,
        description="Sort key; prefix `-` for descending. Ties are broken by id. `position` is "
        "the user's own order (`POST …/tasks/{id}/move`).",
    )
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    cursor: ListCursor = Field(default=None, description=_CURSOR_NOTE)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Self:
        if self.due_before and self.due_after and self.due_after > self.due_before:
            raise ValueError("due_after must not be later than due_before")
        return self
