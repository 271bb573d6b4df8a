"""Structured logs: one JSON object per line, with the request id of the request being served.

Log records never carry tokens, passwords or request bodies: the access log records the method,
the route template, the status, the duration, the request id and the user id, nothing else.
"""

import asyncio
import contextlib
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from backend.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord attributes that are not "extra" fields (uvicorn adds a terminal-coloured copy of its
# message, which has no place in JSON).
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return super().format(record)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes log lines in batches: one write for the lines of up to 50 ms instead of one (and
    a flush) per request line. Warnings and errors, a full buffer, and lines logged outside the
    event loop are written at once; the rest waits at most 50 ms (and is written at exit)."""

    DELAY_SECONDS = 0.05
    MAX_BUFFERED = 64 * 1024

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._buffer: list[str] = []
        self._size = 0
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a flush is scheduled

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._buffer.append(line)
        self._size += len(line)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not in an event loop's thread
            loop = None
        if record.levelno >= logging.WARNING or self._size >= self.MAX_BUFFERED or loop is None:
            self.flush()
        elif self._flush_loop is not loop:
            # No flush is scheduled, or it was scheduled on a loop that has gone (asyncio.run).
            loop.call_later(self.DELAY_SECONDS, self.flush)
            self._flush_loop = loop

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._flush_loop = None
            if self._buffer:
                lines, self._buffer, self._size = "".join(self._buffer), [], 0
                self.stream.write(lines)
            self.stream.flush()


def configure_logging(settings: Settings) -> None:
    """Send our logs and uvicorn's to stderr in the configured format."""
    # Every request logs a line: skip the work of records' fields that no line shows (the
    # calling source line, which walks the stack, and thread and process names).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for previous in root.handlers:
        previous.flush()  # lines a batching handler still holds
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # We write our own access log line, with the route template and the request id.
    logging.getLogger("uvicorn.access").disabled = True
