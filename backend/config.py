"""Every knob of the service, read from the environment and an optional `.env` file.

Each field's environment variable is its name in upper case (`database_url` -> `DATABASE_URL`).
The README lists them all. `Settings()` refuses insecure combinations in production with a
message that names the variable to set.

Over 350 lines on purpose: one `Settings` class, each field next to the validator that checks it,
reads best whole.
"""

import ipaddress
import json
import re
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin
from urllib.parse import parse_qs, unquote, urlsplit

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from limits import parse as parse_rate_limit
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.database_url import PostgresTarget, normalize_database_url

# What to write instead of a URL that is not http(s), by setting (Better Auth's by default).
_URL_EXAMPLES = {
    "otel_exporter_otlp_endpoint": "the collector's OTLP/HTTP address, such as "
    "http://localhost:4318"
}
DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./todo.db"
DEFAULT_KEY_FILE = Path(".todo-jwt-key.pem")
DEFAULT_PASSWORD_RESET_URL = "http://localhost:3000/reset-password?token={token}"  # noqa: S105


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where mail goes: `smtp://` speaks STARTTLS (required, unless `?starttls=false`, for a
    local test server), `smtps://` TLS from the first byte."""

    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    start_tls: bool


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://user:pass@host:587`, `smtps://user:pass@host:465`, `smtp://host:25?starttls=false`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ValueError(
            "SMTP_URL: not an SMTP URL; write smtp://user:pass@host:587 (STARTTLS) or "
            "smtps://user:pass@host:465"
        )
    query = parse_qs(parts.query)
    unknown = set(query) - {"starttls"}
    starttls = query.get("starttls", ["true"])[-1].lower()
    if unknown or starttls not in {"true", "false"}:
        raise ValueError("SMTP_URL: takes one query parameter; write ?starttls=true or false")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("SMTP_URL: the port is not valid; write a number such as 587") from exc
    implicit_tls = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 587),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit_tls,
        start_tls=not implicit_tls and starttls == "true",
    )


def _split_list(name: str, value: object) -> object:
    """A comma-separated list, or a JSON array of strings (what some deploy tools write)."""
    if not isinstance(value, str):
        return value
    if value.strip().startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(f'{name}: not a JSON array of strings; write a, b or ["a", "b"]')
        return [item.strip() for item in items if item.strip()]
    return [item.strip() for item in value.split(",") if item.strip()]


_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return all(_HOST_LABEL.fullmatch(label) for label in host.split("."))
    return True


def _origin_of(value: str) -> str:
    """A browser origin (`scheme://host[:port]`), spelled as browsers send it (lower case, no
    default port), or a ValueError that says what to write instead."""
    refusal = f"CORS_ORIGINS: {json.dumps(value)} is not an origin; write "
    if value == "*":
        raise ValueError(
            'CORS_ORIGINS: "*" is not allowed; list each origin, such as https://app.example.com'
        )
    parts = urlsplit(value if "://" in value else f"http://{value}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = (parts.hostname or "").lower()
    if parts.scheme not in _DEFAULT_PORTS or not _is_host(host) or port == -1:
        raise ValueError(refusal + "scheme://host[:port], such as http://localhost:3000")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        netloc += f":{port}"
    origin = f"{parts.scheme}://{netloc}"
    if origin != value.lower().rstrip("/") or parts.username or parts.password:
        raise ValueError(refusal + origin)
    return origin


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Database
    database_url: str = DEFAULT_SQLITE_URL
    # Requests beyond the pool wait for a connection in arrival order (db._Turns). A small pool
    # that is always busy beats a large one: fewer PostgreSQL backends compete for the CPU, and
    # overflow connections are closed again on return, so under steady load they churn.
    db_pool_size: int = Field(default=12, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    db_pool_pre_ping: bool = True
    db_pool_ping_idle_seconds: float = Field(default=1.0, ge=0, le=3600)
    db_statement_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    sqlite_busy_timeout_ms: int = Field(default=15000, ge=0, le=600000)
    # `pgbouncer`: DATABASE_URL leads to a transaction-mode pooler (PgBouncer, or any that hands
    # a server connection to another client between transactions), so nothing may outlive a
    # transaction on a connection: no prepared statement cache (see backend/db/engine.py).
    db_pooler: Literal["none", "pgbouncer"] = "none"

    # HTTP
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    trusted_proxies: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)

    # Our own tokens
    jwt_private_key: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_issuer: str = Field(default="todo-api", min_length=1)
    jwt_audience: str = Field(default="todo-api", min_length=1)
    access_token_expire_minutes: int = Field(default=15, ge=1, le=24 * 60)
    jwt_leeway_seconds: int = Field(default=10, ge=1, le=300)
    max_token_bytes: int = Field(default=8192, ge=512, le=65536)
    token_cache_size: int = Field(default=10000, ge=0, le=1_000_000)

    # Sessions (refresh tokens)
    refresh_token_expire_days: int = Field(default=30, ge=1, le=365)
    refresh_token_idle_days: int = Field(default=7, ge=1, le=365)
    refresh_token_cookie: bool = False
    refresh_cookie_samesite: Literal["strict", "lax", "none"] = "strict"
    max_sessions_per_user: int = Field(default=50, ge=1, le=10000)
    # Local accounts (signup, login, refresh, logout, password change); off for a deployment
    # where Better Auth signs everyone in.
    local_accounts: bool = True

    # Better Auth
    better_auth_url: str | None = None
    better_auth_jwks_url: str | None = None
    better_auth_issuer: str | None = None
    better_auth_audience: str | None = None
    better_auth_require_verified_email: bool = False
    better_auth_jwks_cache_seconds: int = Field(default=300, ge=1, le=86400)
    better_auth_jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0, le=3600)
    better_auth_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    better_auth_jwks_max_bytes: int = Field(default=262144, ge=1024, le=4 * 1024 * 1024)

    # Limits
    redis_url: str | None = None
    rate_limit_key_prefix: str = Field(default="todo-api", min_length=1, max_length=64)
    signup_rate_limit: str = "10/minute"
    login_rate_limit: str = "30/minute"
    login_lockout: str = "10/15minutes"
    refresh_rate_limit: str = "60/minute"
    password_change_rate_limit: str = "10/hour"  # noqa: S105 (a rate, not a password)
    task_write_rate_limit: str = "300/minute"
    # Forgotten-password requests and resets, per client IP and per email, each.
    password_reset_rate_limit: str = "5/hour"  # noqa: S105 (a rate, not a password)
    max_tasks_per_user: int = Field(default=10000, ge=1)
    # Days a deleted task stays in the trash (which holds at most MAX_TASKS_PER_USER tasks).
    trash_retention_days: int = Field(default=30, ge=1, le=3650)
    # The longest position key (manual order) a move may write; past it, the user's tasks are
    # rebalanced to short keys first (backend/services/positions.py). The column holds 64.
    position_max_length: int = Field(default=32, ge=8, le=64)

    # Safe retries (`Idempotency-Key`): how long an answer is kept for a repeat, and how long a
    # request may hold its key before a repeat may take it over (its worker is deemed gone).
    # The lease must outlast the slowest request (see DB_STATEMENT_TIMEOUT_SECONDS).
    idempotency_ttl_hours: int = Field(default=24, ge=1, le=720)
    idempotency_lease_seconds: int = Field(default=60, ge=5, le=3600)

    # Live updates (`GET /api/{user_id}/events`). The bus carries "this user's tasks changed"
    # between workers: PostgreSQL LISTEN/NOTIFY, Redis pub/sub, or in-process (SQLite, one
    # worker); `auto` picks Redis when REDIS_URL is set, else PostgreSQL or in-process.
    events_bus: Literal["auto", "postgres", "redis", "local"] = "auto"
    # LISTEN needs a session of its own: behind a transaction-mode pooler, point this at
    # PostgreSQL itself (default: DATABASE_URL).
    database_listen_url: str | None = None
    max_streams_per_user: int = Field(default=5, ge=1, le=100)
    # A comment line at least this often keeps proxies from closing an idle stream.
    events_heartbeat_seconds: float = Field(default=15, gt=0, le=60)
    # How often each worker checks its streams' users (revoked tokens, deleted accounts, a
    # missed notification) and renews their leases.
    events_check_seconds: float = Field(default=2, ge=0.1, le=5)
    # A reader that takes longer than this to accept an event is dropped (it resumes later).
    events_send_timeout_seconds: float = Field(default=10, gt=0, le=120)

    # Mail (password reset links)
    smtp_url: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = Field(default="Todo API <no-reply@localhost>", min_length=1, max_length=320)
    # Where a reset link leads: the frontend's page, `{token}` standing for the token.
    password_reset_url: str | None = None

    # Password hashing
    password_hash_concurrency: int = Field(default=2, ge=1, le=64)

    # Operations. `GET /metrics` (Prometheus) answers only a bearer of METRICS_TOKEN; unset, there
    # is no /metrics and nothing is measured. Traces go to this OpenTelemetry collector (OTLP over
    # HTTP, the standard variable); unset, nothing of OpenTelemetry is even imported.
    metrics_token: SecretStr | None = None
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator(
        "environment", "log_format", "refresh_cookie_samesite", "db_pooler", mode="before"
    )
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_lists(cls, value: object, info: ValidationInfo) -> object:
        return _split_list(str(info.field_name).upper(), value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [_origin_of(origin) for origin in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"TRUSTED_PROXIES: {json.dumps(item)} is not an IP address or CIDR; "
                    "write one such as 10.0.0.5 or 10.0.0.0/8"
                ) from exc
        return value

    @field_validator("jwt_private_key_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"JWT_PRIVATE_KEY_FILE: no file at {value}; write the path of a PEM key made "
                "with `todo-api genkey`"
            )
        return value

    @field_validator("database_listen_url", mode="before")
    @classmethod
    def _listen_url(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return None
        normalized = normalize_database_url(value.strip())
        if normalized.startswith("sqlite"):
            raise ValueError(
                "DATABASE_LISTEN_URL: LISTEN needs PostgreSQL; write postgresql://user@host/db "
                "(the database of DATABASE_URL, reached without a pooler)"
            )
        return normalized

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return None
        if not value.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "REDIS_URL: not a Redis URL; write redis://host:6379/0 (or rediss:// for TLS)"
            )
        return value.strip()

    @field_validator(
        "signup_rate_limit",
        "login_rate_limit",
        "login_lockout",
        "refresh_rate_limit",
        "password_change_rate_limit",
        "password_reset_rate_limit",
        "task_write_rate_limit",
    )
    @classmethod
    def _valid_rate(cls, value: str, info: ValidationInfo) -> str:
        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(
                f"{str(info.field_name).upper()}: {json.dumps(value)} is not a rate; "
                "write one such as 10/minute or 100/hour"
            ) from exc
        return value

    @field_validator("better_auth_url", "better_auth_jwks_url", "otel_exporter_otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            what = _URL_EXAMPLES.get(str(info.field_name), "one such as https://auth.example.com")
            raise ValueError(
                f"{str(info.field_name).upper()}: {json.dumps(value)} is not an http(s) URL; "
                f"write {what}"
            )
        return value

    @field_validator("smtp_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value.get_secret_value())  # refuses a bad URL at start
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c.isspace() for c in address):
            raise ValueError(
                f"MAIL_FROM: {json.dumps(value)} is not an email address; write one such as "
                "Todo <no-reply@example.com>"
            )
        return value

    @field_validator("password_reset_url")
    @classmethod
    def _reset_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")) or "{token}" not in value:
            raise ValueError(
                f"PASSWORD_RESET_URL: {json.dumps(value)} is not an http(s) URL holding {{token}}; "
                "write one such as https://app.example/reset-password?token={token}"
            )
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if len(value) < 16 or not value.isascii() or any(c.isspace() for c in value):
            raise ValueError(
                "METRICS_TOKEN: too short or not plain text; write at least 16 random printable "
                "characters, such as the output of `openssl rand -hex 32`"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.db_pooler != "none":
            self._check_pooler()
        if not self.better_auth_url:
            for name in (
                "better_auth_jwks_url",
                "better_auth_issuer",
                "better_auth_audience",
                "better_auth_require_verified_email",
            ):
                if getattr(self, name):
                    raise ValueError(
                        f"{name.upper()}: needs BETTER_AUTH_URL; set it too, or unset this one"
                    )
        if self.better_auth_url and self.better_auth_token_issuer == self.jwt_issuer:
            raise ValueError(
                "JWT_ISSUER must differ from the Better Auth issuer, so that a token's issuer "
                "says unambiguously which keys verify it"
            )
        if not self.local_accounts and not self.better_auth_url:
            raise ValueError(
                "LOCAL_ACCOUNTS: false needs BETTER_AUTH_URL (otherwise nobody could sign in); "
                "set it too, or write true"
            )
        if self.events_bus == "redis" and self.redis_url is None:
            raise ValueError("EVENTS_BUS: redis needs REDIS_URL; set it too, or write auto")
        if self.events_bus == "postgres" and self.is_sqlite:
            raise ValueError(
                "EVENTS_BUS: postgres needs a PostgreSQL DATABASE_URL; write auto (in-process "
                "on SQLite)"
            )
        if self.database_listen_url is not None and self.is_sqlite:
            raise ValueError("DATABASE_LISTEN_URL: needs a PostgreSQL DATABASE_URL; unset it")
        if self.environment == "production":
            self._check_production()
        return self

    def _check_pooler(self) -> None:
        if self.is_sqlite:
            raise ValueError(
                f"DB_POOLER: {self.db_pooler} needs a PostgreSQL DATABASE_URL (the pooler's "
                "address); write none for SQLite"
            )
        if "options" in PostgresTarget.parse(self.database_url).server_settings:
            raise ValueError(
                "DB_POOLER: a transaction-mode pooler does not keep the session settings of "
                "DATABASE_URL's options parameter; remove it and set them on the database or "
                "role (ALTER ROLE ... SET ...)"
            )
        if self.live_bus == "postgres" and self.database_listen_url is None:
            raise ValueError(
                "DB_POOLER: live updates LISTEN on a session of their own, which a transaction-"
                "mode pooler does not keep; set DATABASE_LISTEN_URL to PostgreSQL itself (past "
                "the pooler), or REDIS_URL (they then go through Redis)"
            )

    def _check_production(self) -> None:
        problems: list[str] = []
        if self.jwt_private_key is None and not self.key_file.is_file():
            # A key at the default path is used (never generated) in production too.
            problems.append(
                "set JWT_PRIVATE_KEY (an Ed25519 private key in PEM) or JWT_PRIVATE_KEY_FILE, "
                f"or put the key in {DEFAULT_KEY_FILE}; generate one with `todo-api genkey`"
            )
        if self.jwks_url and not _is_secure_url(self.jwks_url):
            problems.append(
                "BETTER_AUTH_URL / BETTER_AUTH_JWKS_URL must use https:// (keys fetched over "
                "plain http could be replaced in transit)"
            )
        if self.refresh_token_cookie and any(o.startswith("http://") for o in self.cors_origins):
            problems.append("with REFRESH_TOKEN_COOKIE, CORS_ORIGINS must be https:// origins")
        if self.local_accounts and (self.smtp_url is None or self.password_reset_url is None):
            problems.append(
                "set SMTP_URL and PASSWORD_RESET_URL (local accounts reset forgotten passwords "
                "by email), or LOCAL_ACCOUNTS=false"
            )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def live_bus(self) -> Literal["postgres", "redis", "local"]:
        """The bus of live updates, `auto` resolved."""
        if self.events_bus != "auto":
            return self.events_bus
        if self.redis_url is not None:
            return "redis"
        return "local" if self.is_sqlite else "postgres"

    @property
    def jwks_url(self) -> str | None:
        """Where Better Auth publishes its public keys."""
        if self.better_auth_jwks_url:
            return self.better_auth_jwks_url
        if self.better_auth_url:
            return f"{self.better_auth_url}/api/auth/jwks"
        return None

    @property
    def better_auth_token_issuer(self) -> str | None:
        # Better Auth's default `iss` (and `aud`) is the origin of its base URL, without a path.
        return self.better_auth_issuer or _origin(self.better_auth_url)

    @property
    def better_auth_token_audience(self) -> str | None:
        return self.better_auth_audience or _origin(self.better_auth_url)

    @property
    def reset_link_template(self) -> str:
        """The reset link, `{token}` standing for the token (a development default)."""
        return self.password_reset_url or DEFAULT_PASSWORD_RESET_URL

    @property
    def key_file(self) -> Path:
        return self.jwt_private_key_file or DEFAULT_KEY_FILE


def _origin(url: str | None) -> str | None:
    if url is None:
        return None
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _is_secure_url(url: str) -> bool:
    if url.startswith("https://"):
        return True
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in {"localhost", "127.0.0.1", "::1"}


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming its variable and what to
    write instead (pydantic's own report names fields, not variables, and links its docs)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


_SECRET_SETTINGS = frozenset(
    {"jwt_private_key", "database_url", "database_listen_url", "redis_url", "metrics_token"}
)


def _bounds(metadata: list[Any]) -> str:
    low = next((f"from {m.ge}" for m in metadata if isinstance(m, Ge)), None)
    low = low or next((f"greater than {m.gt}" for m in metadata if isinstance(m, Gt)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    if low and high is not None:
        return f" {low} to {high}" if low.startswith("from") else f" {low}, at most {high}"
    return f" {low.replace('from', 'of at least')}" if low else ""


def _what_to_write(name: str) -> str:
    field = Settings.model_fields[name]
    annotation = field.annotation
    choices = get_args(annotation) if get_origin(annotation) is Literal else ()
    if choices:
        return "one of " + ", ".join(choices)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number" + _bounds(field.metadata)
    if annotation is float:
        return "a number" + _bounds(field.metadata)
    longest = next((m.max_length for m in field.metadata if isinstance(m, MaxLen)), None)
    if any(isinstance(m, MinLen) for m in field.metadata):
        return f"1 to {longest} characters" if longest else "a text that is not empty"
    return "a valid value"


def _problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"] or error["type"] == "value_error":
        return message  # ours: they name the variable and what to write
    name = str(error["loc"][0])
    given = "" if name in _SECRET_SETTINGS else f" {json.dumps(str(error['input']))}"
    return f"{name.upper()}:{given} is not valid; write {_what_to_write(name)}"


def load_settings(**values: Any) -> Settings:
    """Settings from the environment (and `values`), or a SettingsError listing every problem."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError([_problem(error) for error in exc.errors()]) from None


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
