"""Settings: URL spellings, refusals of insecure combinations, production requirements."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.auth.keys import LocalKeys
from backend.config import Settings, SettingsError, SmtpServer, load_settings, parse_smtp_url
from backend.database_url import normalize_database_url
from tests.conftest import TEST_SIGNING_KEY

# What production needs besides a signing key while local accounts are on.
MAIL = {
    "smtp_url": "smtp://mailer:secret@smtp.example.com:587",
    "password_reset_url": "https://app.example.com/reset-password?token={token}",
}


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/todo", "postgresql+asyncpg://u:p@db:5432/todo"),
        ("postgresql://u:p@db/todo", "postgresql+asyncpg://u:p@db/todo"),
        ("postgresql+asyncpg://u@db/todo", "postgresql+asyncpg://u@db/todo"),
        ("sqlite:///./todo.db", "sqlite+aiosqlite:///./todo.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_spellings_are_normalized(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert settings(database_url=given).database_url == expected


def test_unknown_database_is_refused() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL: must be"):
        settings(database_url="mysql://root@db/todo")


def test_default_is_an_sqlite_file_in_the_working_directory() -> None:
    assert settings().database_url == "sqlite+aiosqlite:///./todo.db"


def test_cors_origins_are_comma_separated_and_never_a_wildcard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:3000/")
    assert settings().cors_origins == ["https://app.example.com", "http://localhost:3000"]
    monkeypatch.setenv("CORS_ORIGINS", "*")
    with pytest.raises(ValidationError, match='"\\*" is not allowed'):
        settings()


def test_rates_must_be_in_limits_notation() -> None:
    assert settings(login_rate_limit="5/second").login_rate_limit == "5/second"
    with pytest.raises(ValidationError, match="is not a rate"):
        settings(login_rate_limit="lots")


def test_trusted_proxies_must_be_networks() -> None:
    assert settings(trusted_proxies="10.0.0.0/8,127.0.0.1").trusted_proxies == [
        "10.0.0.0/8",
        "127.0.0.1",
    ]
    with pytest.raises(ValidationError, match="not an IP address"):
        settings(trusted_proxies="proxy.internal")


def test_production_refuses_to_start_without_a_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="set JWT_PRIVATE_KEY"):
        settings(environment="production")
    assert settings(environment="production", jwt_private_key=TEST_SIGNING_KEY, **MAIL)


def test_production_with_local_accounts_needs_smtp_and_a_reset_url() -> None:
    for missing in MAIL:
        values = {k: v for k, v in MAIL.items() if k != missing}
        with pytest.raises(ValidationError, match="set SMTP_URL and PASSWORD_RESET_URL"):
            settings(environment="production", jwt_private_key=TEST_SIGNING_KEY, **values)
    assert settings(
        environment="production",
        jwt_private_key=TEST_SIGNING_KEY,
        local_accounts=False,
        better_auth_url="https://auth.example.com",
    )


def test_reset_url_must_hold_the_token() -> None:
    with pytest.raises(ValidationError, match="holding \\{token\\}"):
        settings(password_reset_url="https://app.example.com/reset")
    with pytest.raises(ValidationError, match="holding \\{token\\}"):
        settings(password_reset_url="javascript:alert({token})")
    assert settings().reset_link_template == "http://localhost:3000/reset-password?token={token}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://mailer:s%40cret@smtp.example.com:587",
            SmtpServer("smtp.example.com", 587, "mailer", "s@cret", False, True),
        ),
        ("smtp://smtp.example.com", SmtpServer("smtp.example.com", 587, None, None, False, True)),
        (
            "smtps://u:p@smtp.example.com",
            SmtpServer("smtp.example.com", 465, "u", "p", True, False),
        ),
        (
            "smtp://127.0.0.1:1025?starttls=false",
            SmtpServer("127.0.0.1", 1025, None, None, False, False),
        ),
    ],
)
def test_smtp_urls(url: str, expected: SmtpServer) -> None:
    assert parse_smtp_url(url) == expected
    assert settings(smtp_url=url).smtp_url is not None


@pytest.mark.parametrize(
    "url", ["http://smtp.example.com", "smtp://", "smtp://h?tls=no", "smtp://h:port"]
)
def test_bad_smtp_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="SMTP_URL"):
        settings(smtp_url=url)


def test_production_uses_a_key_file_at_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".todo-jwt-key.pem").write_text(TEST_SIGNING_KEY)
    production = settings(environment="production", **MAIL)
    assert (
        LocalKeys.from_settings(production).kid
        == LocalKeys.from_settings(settings(jwt_private_key=TEST_SIGNING_KEY)).kid
    )


def test_production_refuses_plain_http_better_auth() -> None:
    with pytest.raises(ValidationError, match="must use https"):
        settings(
            environment="production",
            jwt_private_key=TEST_SIGNING_KEY,
            better_auth_url="http://auth.example.com",
            **MAIL,
        )
    assert settings(
        environment="production",
        jwt_private_key=TEST_SIGNING_KEY,
        better_auth_url="https://auth.example.com",
        **MAIL,
    )


def test_better_auth_endpoints_default_from_its_url() -> None:
    configured = settings(better_auth_url="https://auth.example.com/")
    assert configured.jwks_url == "https://auth.example.com/api/auth/jwks"
    assert configured.better_auth_token_issuer == "https://auth.example.com"
    assert configured.better_auth_token_audience == "https://auth.example.com"
    overridden = settings(
        better_auth_url="https://auth.example.com",
        better_auth_jwks_url="https://keys.example.com/jwks.json",
        better_auth_issuer="https://issuer.example.com",
        better_auth_audience="todo-frontend",
    )
    assert overridden.jwks_url == "https://keys.example.com/jwks.json"
    assert overridden.better_auth_token_issuer == "https://issuer.example.com"
    assert overridden.better_auth_token_audience == "todo-frontend"


def test_our_issuer_must_differ_from_better_auths() -> None:
    with pytest.raises(ValidationError, match="JWT_ISSUER must differ"):
        settings(better_auth_url="https://auth.example.com", jwt_issuer="https://auth.example.com")


def test_better_auth_issuer_defaults_to_the_origin_of_its_url() -> None:
    configured = settings(better_auth_url="https://example.com/auth")
    assert configured.jwks_url == "https://example.com/auth/api/auth/jwks"
    assert configured.better_auth_token_issuer == "https://example.com"
    assert configured.better_auth_token_audience == "https://example.com"


# One nonsense value per setting, and the line that says what to write instead (after the
# variable's name).
REFUSALS = [
    (
        "METRICS_TOKEN",
        "secret",
        "too short or not plain text; write at least 16 random printable characters, such as "
        "the output of `openssl rand -hex 32`",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "collector:4318",
        '"collector:4318" is not an http(s) URL; write the collector\'s OTLP/HTTP address, such '
        "as http://localhost:4318",
    ),
    ("ENVIRONMENT", "prod", '"prod" is not valid; write one of development, production'),
    ("LOG_LEVEL", "loud", '"LOUD" is not valid; write one of DEBUG, INFO, WARNING, ERROR'),
    ("LOG_FORMAT", "xml", '"xml" is not valid; write one of json, text'),
    (
        "DATABASE_URL",
        "mysql://root@db/todo",
        "must be a PostgreSQL URL (postgresql://user:pass@host/db) or an SQLite URL (sqlite:///./todo.db)",
    ),
    ("DB_POOL_SIZE", "0", '"0" is not valid; write a whole number from 1 to 200'),
    ("DB_MAX_OVERFLOW", "many", '"many" is not valid; write a whole number from 0 to 200'),
    ("DB_POOL_TIMEOUT_SECONDS", "0", '"0" is not valid; write a number greater than 0, at most 60'),
    (
        "DB_CONNECT_TIMEOUT_SECONDS",
        "3s",
        '"3s" is not valid; write a number greater than 0, at most 60',
    ),
    ("DB_POOL_PRE_PING", "maybe", '"maybe" is not valid; write true or false'),
    ("DB_POOL_PING_IDLE_SECONDS", "-1", '"-1" is not valid; write a number from 0 to 3600'),
    (
        "DB_STATEMENT_TIMEOUT_SECONDS",
        "0",
        '"0" is not valid; write a number greater than 0, at most 600',
    ),
    ("DB_POOLER", "session", '"session" is not valid; write one of none, pgbouncer'),
    (
        "DB_POOLER",
        "pgbouncer",
        "pgbouncer needs a PostgreSQL DATABASE_URL (the pooler's address); write none for SQLite",
    ),
    ("SQLITE_BUSY_TIMEOUT_MS", "1.5", '"1.5" is not valid; write a whole number from 0 to 600000'),
    (
        "CORS_ORIGINS",
        "localhost:3000",
        '"localhost:3000" is not an origin; write http://localhost:3000',
    ),
    (
        "CORS_ORIGINS",
        "http://localhost:3000/app",
        '"http://localhost:3000/app" is not an origin; write http://localhost:3000',
    ),
    (
        "CORS_ORIGINS",
        "https://app.example.com:443",
        '"https://app.example.com:443" is not an origin; write https://app.example.com',
    ),
    (
        "CORS_ORIGINS",
        "ftp://files.example.com",
        '"ftp://files.example.com" is not an origin; write scheme://host[:port], such as http://localhost:3000',
    ),
    ("CORS_ORIGINS", "*", '"*" is not allowed; list each origin, such as https://app.example.com'),
    (
        "CORS_ORIGINS",
        '["http://localhost:3000",',
        'not a JSON array of strings; write a, b or ["a", "b"]',
    ),
    (
        "TRUSTED_PROXIES",
        "proxy.internal",
        '"proxy.internal" is not an IP address or CIDR; write one such as 10.0.0.5 or 10.0.0.0/8',
    ),
    ("MAX_BODY_BYTES", "10", '"10" is not valid; write a whole number from 1024 to 16777216'),
    (
        "JWT_PRIVATE_KEY_FILE",
        "/no/such/key.pem",
        "no file at /no/such/key.pem; write the path of a PEM key made with `todo-api genkey`",
    ),
    ("JWT_ISSUER", "", '"" is not valid; write a text that is not empty'),
    ("JWT_AUDIENCE", "", '"" is not valid; write a text that is not empty'),
    ("ACCESS_TOKEN_EXPIRE_MINUTES", "0", '"0" is not valid; write a whole number from 1 to 1440'),
    ("JWT_LEEWAY_SECONDS", "0", '"0" is not valid; write a whole number from 1 to 300'),
    ("MAX_TOKEN_BYTES", "100", '"100" is not valid; write a whole number from 512 to 65536'),
    ("TOKEN_CACHE_SIZE", "-1", '"-1" is not valid; write a whole number from 0 to 1000000'),
    ("REFRESH_TOKEN_EXPIRE_DAYS", "0", '"0" is not valid; write a whole number from 1 to 365'),
    ("REFRESH_TOKEN_IDLE_DAYS", "400", '"400" is not valid; write a whole number from 1 to 365'),
    ("REFRESH_TOKEN_COOKIE", "yes please", '"yes please" is not valid; write true or false'),
    ("REFRESH_COOKIE_SAMESITE", "loose", '"loose" is not valid; write one of strict, lax, none'),
    ("MAX_SESSIONS_PER_USER", "0", '"0" is not valid; write a whole number from 1 to 10000'),
    (
        "SMTP_URL",
        "http://mail.example.com",
        "not an SMTP URL; write smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465",
    ),
    ("SMTP_TIMEOUT_SECONDS", "0", '"0" is not valid; write a number greater than 0, at most 120'),
    (
        "MAIL_FROM",
        "nobody",
        '"nobody" is not an email address; write one such as Todo <no-reply@example.com>',
    ),
    (
        "PASSWORD_RESET_URL",
        "https://app.example/reset",
        '"https://app.example/reset" is not an http(s) URL holding {token}; write one such as '
        "https://app.example/reset-password?token={token}",
    ),
    (
        "PASSWORD_RESET_RATE_LIMIT",
        "often",
        '"often" is not a rate; write one such as 10/minute or 100/hour',
    ),
    ("LOCAL_ACCOUNTS", "maybe", '"maybe" is not valid; write true or false'),
    (
        "LOCAL_ACCOUNTS",
        "false",
        "false needs BETTER_AUTH_URL (otherwise nobody could sign in); set it too, or write true",
    ),
    (
        "BETTER_AUTH_URL",
        "auth.example.com",
        '"auth.example.com" is not an http(s) URL; write one such as https://auth.example.com',
    ),
    (
        "BETTER_AUTH_JWKS_URL",
        "https://keys.example.com",
        "needs BETTER_AUTH_URL; set it too, or unset this one",
    ),
    (
        "BETTER_AUTH_ISSUER",
        "https://auth.example.com",
        "needs BETTER_AUTH_URL; set it too, or unset this one",
    ),
    (
        "BETTER_AUTH_AUDIENCE",
        "todo",
        "needs BETTER_AUTH_URL; set it too, or unset this one",
    ),
    (
        "BETTER_AUTH_REQUIRE_VERIFIED_EMAIL",
        "true",
        "needs BETTER_AUTH_URL; set it too, or unset this one",
    ),
    (
        "BETTER_AUTH_JWKS_CACHE_SECONDS",
        "0",
        '"0" is not valid; write a whole number from 1 to 86400',
    ),
    (
        "BETTER_AUTH_JWKS_REFETCH_COOLDOWN_SECONDS",
        "-1",
        '"-1" is not valid; write a number from 0 to 3600',
    ),
    (
        "BETTER_AUTH_JWKS_TIMEOUT_SECONDS",
        "0",
        '"0" is not valid; write a number greater than 0, at most 60',
    ),
    (
        "BETTER_AUTH_JWKS_MAX_BYTES",
        "1",
        '"1" is not valid; write a whole number from 1024 to 4194304',
    ),
    (
        "REDIS_URL",
        "localhost:6379",
        "not a Redis URL; write redis://host:6379/0 (or rediss:// for TLS)",
    ),
    ("RATE_LIMIT_KEY_PREFIX", "", '"" is not valid; write 1 to 64 characters'),
    ("SIGNUP_RATE_LIMIT", "lots", '"lots" is not a rate; write one such as 10/minute or 100/hour'),
    ("LOGIN_RATE_LIMIT", "lots", '"lots" is not a rate; write one such as 10/minute or 100/hour'),
    ("LOGIN_LOCKOUT", "10", '"10" is not a rate; write one such as 10/minute or 100/hour'),
    ("REFRESH_RATE_LIMIT", "fast", '"fast" is not a rate; write one such as 10/minute or 100/hour'),
    (
        "PASSWORD_CHANGE_RATE_LIMIT",
        "x/hour",
        '"x/hour" is not a rate; write one such as 10/minute or 100/hour',
    ),
    (
        "TASK_WRITE_RATE_LIMIT",
        "300",
        '"300" is not a rate; write one such as 10/minute or 100/hour',
    ),
    ("MAX_TASKS_PER_USER", "0", '"0" is not valid; write a whole number of at least 1'),
    ("TRASH_RETENTION_DAYS", "0", '"0" is not valid; write a whole number from 1 to 3650'),
    ("POSITION_MAX_LENGTH", "7", '"7" is not valid; write a whole number from 8 to 64'),
    ("IDEMPOTENCY_TTL_HOURS", "0", '"0" is not valid; write a whole number from 1 to 720'),
    (
        "IDEMPOTENCY_LEASE_SECONDS",
        "1m",
        '"1m" is not valid; write a whole number from 5 to 3600',
    ),
    ("PASSWORD_HASH_CONCURRENCY", "0", '"0" is not valid; write a whole number from 1 to 64'),
    ("EVENTS_BUS", "kafka", '"kafka" is not valid; write one of auto, postgres, redis, local'),
    ("EVENTS_BUS", "redis", "redis needs REDIS_URL; set it too, or write auto"),
    (
        "EVENTS_BUS",
        "postgres",
        "postgres needs a PostgreSQL DATABASE_URL; write auto (in-process on SQLite)",
    ),
    (
        "DATABASE_LISTEN_URL",
        "sqlite:///listen.db",
        "LISTEN needs PostgreSQL; write postgresql://user@host/db (the database of DATABASE_URL, "
        "reached without a pooler)",
    ),
    (
        "DATABASE_LISTEN_URL",
        "postgresql://todo@db.internal/todo",
        "needs a PostgreSQL DATABASE_URL; unset it",
    ),
    ("MAX_STREAMS_PER_USER", "0", '"0" is not valid; write a whole number from 1 to 100'),
    (
        "EVENTS_HEARTBEAT_SECONDS",
        "0",
        '"0" is not valid; write a number greater than 0, at most 60',
    ),
    ("EVENTS_CHECK_SECONDS", "10", '"10" is not valid; write a number from 0.1 to 5'),
    (
        "EVENTS_SEND_TIMEOUT_SECONDS",
        "0",
        '"0" is not valid; write a number greater than 0, at most 120',
    ),
]
# Any text is a valid value of these (a key's content is checked when the server starts).
ANY_TEXT = {"JWT_PRIVATE_KEY"}


@pytest.mark.parametrize(
    ("variable", "value", "message"), REFUSALS, ids=[f"{v}={x}" for v, x, _ in REFUSALS]
)
def test_every_setting_names_its_variable_and_what_to_write(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert refused.value.problems == [f"{variable}: {message}"]


def test_every_setting_has_a_refusal_tested() -> None:
    tested = {variable for variable, _, _ in REFUSALS} | ANY_TEXT
    assert tested == {name.upper() for name in Settings.model_fields}


def test_behind_a_pooler_live_updates_need_a_direct_listen_url_or_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://todo@pgbouncer.internal:6432/todo")
    monkeypatch.setenv("DB_POOLER", "pgbouncer")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    [problem] = refused.value.problems
    assert problem.startswith("DB_POOLER: live updates LISTEN")
    assert "DATABASE_LISTEN_URL" in problem and "REDIS_URL" in problem
    monkeypatch.setenv("DATABASE_LISTEN_URL", "postgresql://todo@db.internal:5432/todo")
    assert load_settings(_env_file=None).live_bus == "postgres"
    monkeypatch.delenv("DATABASE_LISTEN_URL")
    monkeypatch.setenv("REDIS_URL", "redis://redis.internal:6379/0")
    assert load_settings(_env_file=None).live_bus == "redis"


def test_every_bad_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "0")
    monkeypatch.setenv("CORS_ORIGINS", "localhost:3000")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert [problem.split(":")[0] for problem in refused.value.problems] == [
        "DB_POOL_SIZE",
        "CORS_ORIGINS",
    ]


@pytest.mark.parametrize(
    ("given", "origins"),
    [
        ("http://localhost:3000", ["http://localhost:3000"]),
        ("HTTPS://App.Example.com/, http://127.0.0.1:8080", ["https://app.example.com", "http://127.0.0.1:8080"]),
        ('["https://app.example.com", "http://[::1]:3000"]', ["https://app.example.com", "http://[::1]:3000"]),
        ("", []),
    ],
)  # fmt: skip
def test_cors_origins_are_a_list_or_a_json_array_of_origins(
    monkeypatch: pytest.MonkeyPatch, given: str, origins: list[str]
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", given)
    assert settings().cors_origins == origins


def test_a_pooler_refuses_session_settings_in_the_url() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            _env_file=None,
            database_url="postgresql://todo@pgbouncer:6432/todo?options=-c%20work_mem%3D64MB",
            db_pooler="pgbouncer",
        )
    assert refused.value.problems[0].startswith("DB_POOLER: a transaction-mode pooler does not")


@pytest.mark.parametrize(
    ("variable", "given", "read"),
    [("LOG_LEVEL", "debug", "DEBUG"), ("ENVIRONMENT", "Production", "production")],
)
def test_choices_are_read_whatever_their_case(
    monkeypatch: pytest.MonkeyPatch, variable: str, given: str, read: str
) -> None:
    monkeypatch.setenv(variable, given)
    if variable == "ENVIRONMENT":
        monkeypatch.setenv("JWT_PRIVATE_KEY", TEST_SIGNING_KEY)
        for name, value in MAIL.items():
            monkeypatch.setenv(name.upper(), value)
    assert getattr(settings(), variable.lower()) == read
