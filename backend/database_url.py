"""DATABASE_URL: the spellings operators paste, made into what SQLAlchemy and asyncpg take.

Hosted PostgreSQL hands out libpq URLs (`?sslmode=require&sslrootcert=…`), whose parameters
asyncpg does not take as keyword arguments. The TLS ones go to asyncpg's own parser of libpq
URLs, which implements them as libpq does (`prefer` falls back to plain, `verify-full` checks
the host name); the others become asyncpg's arguments; anything else is refused at start.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_CHOICES = {
    "sslmode": SSL_MODES,
    "target_session_attrs": (
        "any", "primary", "standby", "read-write", "read-only", "prefer-standby",
    ),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}  # fmt: skip
# Read by asyncpg's libpq parser: given to it as a DSN holding only them.
_LIBPQ_PARAMETERS = (
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
)  # fmt: skip
_FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
# Sent to the server in the startup message, as libpq sends them.
_STARTUP_PARAMETERS = ("application_name", "options")
ACCEPTED_PARAMETERS = (
    *_LIBPQ_PARAMETERS, *_STARTUP_PARAMETERS, "connect_timeout", "ssl", "channel_binding",
)  # fmt: skip
_SECRET_PARAMETERS = frozenset({"sslpassword"})
# Where libpq (and asyncpg) look for the CA when sslrootcert is not given.
DEFAULT_ROOT_CERT = Path("~/.postgresql/root.crt")


def _refused(problem: str) -> ValueError:
    return ValueError(f"DATABASE_URL: {problem}")


def normalize_database_url(url: str) -> str:
    """Map the URL spellings operators paste (Heroku-style `postgres://`, plain `postgresql://`,
    `sqlite://`) onto the async drivers this service uses, and check a PostgreSQL URL's
    parameters."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite://"):
        url = "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    if url.startswith("postgresql+asyncpg://"):
        PostgresTarget.parse(url)
        return url
    if url.startswith("sqlite+aiosqlite://"):
        return url
    raise _refused(
        "must be a PostgreSQL URL (postgresql://user:pass@host/db) "
        "or an SQLite URL (sqlite:///./todo.db)"
    )


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise _refused("is not a URL such as postgresql://user:pass@host:5432/db") from None


def masked_url(url: str) -> str:
    """The URL with its secrets (the password, `sslpassword`) replaced by `***`, for messages."""
    parsed = _parse(url)
    query = "&".join(
        f"{name}={'***' if name in _SECRET_PARAMETERS else quote(str(value), safe='/,:')}"
        for name, value in parsed.query.items()
    )
    base = parsed.set(query={}).render_as_string(hide_password=True)
    return f"{base}?{query}" if query else base


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A PostgreSQL DATABASE_URL taken apart: where SQLAlchemy connects (without the query),
    and what the query asks of asyncpg."""

    url: URL
    libpq: dict[str, str]
    server_settings: dict[str, str]
    connect_timeout_seconds: int | None

    @classmethod
    def parse(cls, url: str) -> "PostgresTarget":
        parsed = _parse(url)
        query: dict[str, str] = {}
        for name, value in parsed.query.items():
            if not isinstance(value, str):
                raise _refused(f"{name} is given more than once")
            if name not in ACCEPTED_PARAMETERS:
                accepted = ", ".join(ACCEPTED_PARAMETERS)
                raise _refused(f"unknown parameter {json.dumps(name)}; accepted: {accepted}")
            query[name] = value
        if "ssl" in query:  # SQLAlchemy's and asyncpg's spelling of sslmode
            if "sslmode" in query:
                raise _refused("give sslmode or ssl, not both")
            query["sslmode"] = query.pop("ssl")
        if query.pop("channel_binding", "prefer") not in ("disable", "prefer"):
            # asyncpg never binds the channel, so `require` could only be ignored.
            raise _refused(
                "channel_binding=require cannot be honoured by the asyncpg driver; remove it "
                "(sslmode=verify-full authenticates the server instead)"
            )
        for name, choices in _CHOICES.items():
            if name in query and query[name] not in choices:
                raise _refused(
                    f"{name} must be one of {', '.join(choices)}, not {json.dumps(query[name])}"
                )
        for name in _FILE_PARAMETERS:
            if name in query and not Path(query[name]).expanduser().is_file():
                raise _refused(f"{name}: no file at {query[name]}")
        if (
            query.get("sslmode", "").startswith("verify")
            and "sslrootcert" not in query
            and not DEFAULT_ROOT_CERT.expanduser().is_file()
        ):
            raise _refused(
                f"sslmode={query['sslmode']} checks the server's certificate against a CA: "
                f"add sslrootcert=<the CA file> (or put it in {DEFAULT_ROOT_CERT})"
            )
        timeout = query.pop("connect_timeout", None)
        if timeout is not None and not (timeout.isdigit() and int(timeout) > 0):
            raise _refused(
                f"connect_timeout must be a whole number of seconds > 0, not {json.dumps(timeout)}"
            )
        return cls(
            url=parsed.set(query={}),
            libpq={name: query[name] for name in _LIBPQ_PARAMETERS if name in query},
            server_settings={name: query[name] for name in _STARTUP_PARAMETERS if name in query},
            connect_timeout_seconds=int(timeout) if timeout is not None else None,
        )

    def connect_args(self, *, timeout_seconds: float, application_name: str) -> dict[str, Any]:
        """asyncpg's connect arguments: the URL's own (its `connect_timeout`, its
        `application_name`) win over the service's."""
        args: dict[str, Any] = {
            "timeout": self.connect_timeout_seconds or timeout_seconds,
            "server_settings": {"application_name": application_name, **self.server_settings},
        }
        if self.libpq:
            # Keyword arguments (host, user, database…) win over a DSN, so this one holds
            # only what asyncpg reads nowhere else.
            args["dsn"] = "postgresql://?" + urlencode(self.libpq)
        return args
