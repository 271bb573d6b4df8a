"""Bodies and rules of organizing: tags, moves, the tag counts, and the list's views."""

import uuid
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    model_validator,
)

from backend.schemas.common import (
    NOT_BLANK_PATTERN,
    NOT_UNICODE_TEXT,
    RequestModel,
    _no_nul,
    _not_blank,
    is_unicode_text,
    trimmed,
)

MAX_TAGS = 20
MAX_TAG_LENGTH = 40


def _unicode(value: str) -> str:
    # Elements of a list escape `RequestModel`'s check of every top-level string.
    if not is_unicode_text(value):
        raise ValueError(NOT_UNICODE_TEXT)
    return value


Tag = Annotated[
    StrictStr,
    BeforeValidator(trimmed(MAX_TAG_LENGTH)),
    AfterValidator(_not_blank),
    AfterValidator(_no_nul),
    AfterValidator(_unicode),
    Field(
        max_length=MAX_TAG_LENGTH,
        description="Trimmed; 1 to 40 characters.",
        examples=["work"],
        json_schema_extra={"minLength": 1, "pattern": NOT_BLANK_PATTERN},
    ),
]


def tag_key(tag: str) -> str:
    """What tags are compared by, everywhere: Unicode full case folding (`Straße` is `STRASSE`)."""
    return tag.casefold()


def _distinct(tags: list[str]) -> list[str]:
    """The tags in the order sent, each once ignoring case: the first spelling is kept."""
    seen: set[str] = set()
    distinct = []
    for tag in tags:
        if (key := tag_key(tag)) not in seen:
            seen.add(key)
            distinct.append(tag)
    return distinct


Tags = Annotated[
    list[Tag],
    Field(
        max_length=MAX_TAGS,
        description="0 to 20 tags, in the order sent; a tag that repeats another ignoring case "
        "is dropped (the first spelling is kept).",
        examples=[["work", "errands"]],
    ),
    AfterValidator(_distinct),
]


def _one_neighbour(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    schema["maxProperties"] = 1
    for name in ("before", "after"):
        schema["properties"][name].pop("default", None)
    schema["examples"] = [{"before": "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"}]


class MoveRequest(RequestModel):
    """Where the task goes: just before one task, or just after one (exactly one of them)."""

    model_config = ConfigDict(json_schema_extra=_one_neighbour)

    # Not nullable: the default only stands for "left out" (see TaskPatch).
    before: uuid.UUID = Field(default=None, description="Put the task just before this one.")  # type: ignore[assignment]
    after: uuid.UUID = Field(default=None, description="Put the task just after this one.")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.before is None) == (self.after is None):
            raise ValueError("send exactly one of before, after (a task id)")
        return self

    @property
    def neighbour(self) -> uuid.UUID:
        neighbour = self.before or self.after
        assert neighbour is not None
        return neighbour


class TagCount(BaseModel):
    name: str = Field(
        description="The tag, as the first of its spellings (by code point) among the tasks.",
        examples=["work"],
    )
    count: int = Field(description="How many live tasks have it, in any spelling.", examples=[3])


class TaskView(StrEnum):
    """Lists of the day, by the date in the user's time zone."""

    today = "today"  # due today
    overdue = "overdue"  # due before today, and not completed
    upcoming = "upcoming"  # due after today
    no_date = "no_date"  # no due date
