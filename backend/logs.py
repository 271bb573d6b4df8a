"""Structured logs: one JSON object per line, with the request id of the request being served.

Log records never carry tokens, passwords or request bodies: the access log records the method,
the route template, the status, the duration, the request id and the user id, nothing else.
"""

import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

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


def configure_logging(settings: Settings) -> None:
    """Send our logs and uvicorn's to stderr in the configured format."""
    # Every request logs a line: skip the work of records' fields that no line shows (the
    # calling source line, which walks the stack, and thread and process names).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # We write our own access log line, with the route template and the request id.
    logging.getLogger("uvicorn.access").disabled = True
