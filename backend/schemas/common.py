"""What every body shares: timestamps, text rules (trimmed, no NUL, Unicode), calendar dates,
and `RequestModel`, the base of request bodies.
"""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


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


def trimmed(max_length: int) -> Callable[[Any], Any]:
    """Trim a string, after checking its length as sent: the document's `maxLength` is about
    what the client sends, so a value longer than that is refused even when trimming would
    have made it fit (a client that validates against the schema refuses it too)."""

    def check_then_strip(value: Any) -> Any:
        if isinstance(value, str) and len(value) > max_length:
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                {"max_length": max_length},
            )
        return _strip(value)

    return check_then_strip


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
