"""Conditional requests (RFC 9110): the ETags we send, and the `If-Match` and `If-None-Match`
headers we read.

A task's ETag is strong, its version: `"3"`. A task list's is weak and moves with the owner's
revision (any change to any of the owner's tasks) and with the query: `W/"41.9f86d081884c7d65"`.
`If-Match` compares strongly (a weak tag never matches); `If-None-Match` weakly.
"""

import hashlib
import re
from typing import Annotated

from fastapi import Header

from backend.errors import ValidationFailed

_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')
# What the OpenAPI document says the headers hold (the parser below is what enforces it).
_TAGS_PATTERN = r'^\s*(\*|(W/)?"[!#-~]*"(\s*,\s*(W/)?"[!#-~]*")*)\s*$'
_MAX_LENGTH = 2048


def task_etag(version: int) -> str:
    return f'"{version}"'


def list_etag(revision: int, query: str) -> str:
    digest = hashlib.sha256(query.encode()).hexdigest()[:16]
    return f'W/"{revision}.{digest}"'


def _tags(header: str, name: str) -> list[tuple[bool, str]] | None:
    """The entity tags a header lists, as (weak, opaque) pairs; None for `*`."""
    if header.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    for part in header.split(","):
        if not part.strip():
            continue  # a list may have empty elements (RFC 9110, 5.6.1)
        match = _TAG.fullmatch(part)
        if match is None:
            raise ValidationFailed(
                f'{name} must be * or a list of entity tags, such as "3" or W/"3"',
                loc=("header", name),
            )
        tags.append((match.group(1) is not None, match.group(2)))
    if not tags:
        raise ValidationFailed(f"{name} must not be empty", loc=("header", name))
    return tags


def if_match_versions(header: str | None) -> str | None:
    """What the write statements take (`task_statements.MATCHES`): the versions an `If-Match`
    lists, comma-separated, or None when there is no condition (no header, or `*`). A weak tag,
    or one that is no version of ours, matches nothing."""
    if header is None:
        return None
    tags = _tags(header, "If-Match")
    if tags is None:
        return None
    return ",".join(
        opaque for weak, opaque in tags if not weak and opaque.isdigit() and len(opaque) <= 18
    )


def none_match(header: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` matches `etag` (weak comparison): then the answer is 304."""
    if header is None:
        return False
    tags = _tags(header, "If-None-Match")
    if tags is None:
        return True
    opaque = etag.removeprefix("W/").strip('"')
    return any(tag == opaque for _weak, tag in tags)


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        pattern=_TAGS_PATTERN,
        max_length=_MAX_LENGTH,
        description='Only if the task is still this version: its ETag (`"3"`), several, or `*`. '
        "Otherwise 412 `precondition_failed`, with the task as it is now in `current`.",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        pattern=_TAGS_PATTERN,
        max_length=_MAX_LENGTH,
        description="The ETag of what you have: 304, with no body, while it is still current.",
    ),
]
