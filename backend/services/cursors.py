"""Opaque cursors: the base64url of a small versioned JSON object, validated on the way back in.
A cursor says what it is a cursor of (`kind`), so that one is never taken for another; it is
not secret (it holds positions in the owner's own data), and any that does not decode to what
its kind needs is 400 `invalid_cursor`."""

import base64
import binascii
from typing import Any

import orjson

from backend.errors import InvalidCursor

VERSION = 1
MAX_LENGTH = 4096  # a task-list cursor holds its filters and the last title: up to about 3 KiB


def encode(kind: str, **fields: Any) -> str:
    raw = orjson.dumps({"v": VERSION, "k": kind, **fields})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str, kind: str) -> dict[str, Any]:
    """The fields of a cursor of `kind` (InvalidCursor otherwise)."""
    if not text or len(text) > MAX_LENGTH or not text.isascii():
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        fields = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor() from exc
    if not isinstance(fields, dict) or fields.get("v") != VERSION or fields.get("k") != kind:
        raise InvalidCursor()
    return fields


def integer(fields: dict[str, Any], name: str) -> int:
    """A non-negative integer field (bool is not one)."""
    value = fields.get(name)
    if type(value) is not int or value < 0 or value > 2**63 - 1:
        raise InvalidCursor()
    return value
