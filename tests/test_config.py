"""Settings: URL spellings, refusals of insecure combinations, production requirements."""

import pytest
from pydantic import ValidationError

from backend.config import Settings, SmtpServer, normalize_database_url, parse_smtp_url
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
    with pytest.raises(ValidationError, match="DATABASE_URL must be"):
        settings(database_url="mysql://root@db/todo")


def test_default_is_an_sqlite_file_in_the_working_directory() -> None:
    assert settings().database_url == "sqlite+aiosqlite:///./todo.db"


def test_cors_origins_are_comma_separated_and_never_a_wildcard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:3000/")
    assert settings().cors_origins == ["https://app.example.com", "http://localhost:3000"]
    monkeypatch.setenv("CORS_ORIGINS", "*")
    with pytest.raises(ValidationError, match="'\\*' is not allowed"):
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


def test_production_refuses_to_start_without_a_signing_key() -> None:
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
