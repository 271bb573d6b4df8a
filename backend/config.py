"""Every knob of the service, read from the environment and an optional `.env` file.

Each field's environment variable is its name in upper case (`database_url` -> `DATABASE_URL`).
The README lists them all. `Settings()` refuses insecure combinations in production with a
message that names the variable to set.
"""

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

from limits import parse as parse_rate_limit
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
            "SMTP_URL must be smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465"
        )
    query = parse_qs(parts.query)
    unknown = set(query) - {"starttls"}
    starttls = query.get("starttls", ["true"])[-1].lower()
    if unknown or starttls not in {"true", "false"}:
        raise ValueError("SMTP_URL takes one query parameter: starttls=true|false")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("SMTP_URL has an invalid port") from exc
    implicit_tls = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 587),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit_tls,
        start_tls=not implicit_tls and starttls == "true",
    )


def normalize_database_url(url: str) -> str:
    """Map the URL spellings operators paste (Heroku-style `postgres://`, plain `postgresql://`,
    `sqlite://`) onto the async drivers this service uses."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError(
        "DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host/db) "
        "or an SQLite URL (sqlite:///./todo.db)"
    )


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


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

    # Mail (password reset links)
    smtp_url: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = Field(default="Todo API <no-reply@localhost>", min_length=3, max_length=320)
    # Where a reset link leads: the frontend's page, `{token}` standing for the token.
    password_reset_url: str | None = None

    # Password hashing
    password_hash_concurrency: int = Field(default=2, ge=1, le=64)

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("CORS_ORIGINS must list explicit origins; '*' is not allowed")
        return [origin.rstrip("/") for origin in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from exc
        return value

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
    def _valid_rate(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate such as '10/minute'") from exc
        return value

    @field_validator("better_auth_url", "better_auth_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
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

    @field_validator("password_reset_url")
    @classmethod
    def _reset_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")) or "{token}" not in value:
            raise ValueError(
                "PASSWORD_RESET_URL must be an http(s) URL holding {token}, e.g. "
                "https://app.example/reset-password?token={token}"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.better_auth_url and self.better_auth_token_issuer == self.jwt_issuer:
            raise ValueError(
                "JWT_ISSUER must differ from the Better Auth issuer, so that a token's issuer "
                "says unambiguously which keys verify it"
            )
        if not self.local_accounts and not self.better_auth_url:
            raise ValueError(
                "LOCAL_ACCOUNTS=false needs BETTER_AUTH_URL: otherwise nobody could sign in"
            )
        if self.environment == "production":
            self._check_production()
        return self

    def _check_production(self) -> None:
        problems: list[str] = []
        if self.jwt_private_key is None and self.jwt_private_key_file is None:
            problems.append(
                "set JWT_PRIVATE_KEY (an Ed25519 private key in PEM) or JWT_PRIVATE_KEY_FILE; "
                "generate one with `todo-api genkey`"
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
    def better_auth_enabled(self) -> bool:
        return self.better_auth_url is not None

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


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
