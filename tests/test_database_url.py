"""DATABASE_URL as hosted PostgreSQL hands it out: libpq's parameters become asyncpg's, the
secrets never reach a message, and every form works against the real server or fails cleanly."""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backend.database_url import PostgresTarget, masked_url, normalize_database_url
from tests.conftest import SettingsFactory, client_for, running_app, sign_up

BASE = "postgresql+asyncpg://todo:s3cret@db.example.com:5432/todo"


def connect_args(query: str) -> dict[str, Any]:
    target = PostgresTarget.parse(normalize_database_url(f"{BASE}?{query}"))
    assert target.url.render_as_string(hide_password=False) == BASE
    return target.connect_args(timeout_seconds=3, application_name="todo-api")


DEFAULTS = {"timeout": 3, "server_settings": {"application_name": "todo-api"}}


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require"])
def test_every_sslmode_goes_to_asyncpgs_libpq_parser(mode: str) -> None:
    assert connect_args(f"sslmode={mode}") == {**DEFAULTS, "dsn": f"postgresql://?sslmode={mode}"}


def test_sqlalchemys_ssl_spelling_is_sslmode() -> None:
    assert connect_args("ssl=require") == {**DEFAULTS, "dsn": "postgresql://?sslmode=require"}


def test_certificate_files_go_with_the_sslmode(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("sslrootcert", "sslcert", "sslkey")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    query = "&".join(f"{name}={path}" for name, path in files.items())
    args = connect_args(f"sslmode=verify-full&{query}&sslpassword=pw")
    assert args["dsn"] == (
        f"postgresql://?sslmode=verify-full&sslrootcert={files['sslrootcert']}"
        f"&sslcert={files['sslcert']}&sslkey={files['sslkey']}&sslpassword=pw"
    ).replace("/", "%2F").replace("postgresql:%2F%2F", "postgresql://")


def test_connect_timeout_application_name_and_options_become_asyncpgs_arguments() -> None:
    args = connect_args(
        "connect_timeout=10&application_name=worker-1&options=-c%20search_path%3Dapp"
        "&target_session_attrs=read-write&channel_binding=prefer"
    )
    assert args == {
        "timeout": 10,
        "server_settings": {"application_name": "worker-1", "options": "-c search_path=app"},
        "dsn": "postgresql://?target_session_attrs=read-write",
    }


def test_a_url_without_parameters_connects_as_before() -> None:
    assert connect_args("") == DEFAULTS


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("foo=1", 'unknown parameter "foo"; accepted: sslmode, sslrootcert'),
        ("sslmode=required", 'verify-ca, verify-full, not "required"'),
        ("sslmode=require&ssl=require", "give sslmode or ssl, not both"),
        ("sslmode=require&sslmode=disable", "sslmode is given more than once"),
        ("sslmode=verify-full&sslrootcert=/no/such.crt", "sslrootcert: no file at /no/such.crt"),
        ("connect_timeout=0", 'connect_timeout must be a whole number of seconds > 0, not "0"'),
        ("channel_binding=require", "channel_binding=require cannot be honoured by the asyncpg"),
        ("target_session_attrs=primary-ish", "target_session_attrs must be one of any, primary"),
    ],
)  # fmt: skip
def test_unusable_parameters_are_refused_naming_database_url(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^DATABASE_URL: ") as refused:
        normalize_database_url(f"postgresql://todo:s3cret@db/todo?{query}")
    assert problem in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_messages_show_the_url_without_its_secrets() -> None:
    assert (
        masked_url(f"{BASE}?sslmode=verify-full&sslpassword=hunter2")
        == "postgresql+asyncpg://todo:***@db.example.com:5432/todo?sslmode=verify-full&sslpassword=***"
    )
    assert masked_url("postgresql+asyncpg://todo@db/todo") == "postgresql+asyncpg://todo@db/todo"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
async def test_plain_connections_serve_with_each_sslmode_that_allows_them(
    make_settings: SettingsFactory, database_url: str, mode: str
) -> None:
    """The local server has no TLS: `prefer` falls back to plain, `allow` starts plain."""
    url = f"{database_url}?sslmode={mode}&application_name=todo-{mode}"
    async with running_app(make_settings(database_url=url)) as app, client_for(app) as client:
        assert (await client.get("/ready")).status_code == 200
        await sign_up(client)
        async with app.state.runtime.db.engine.connect() as connection:
            name = await connection.scalar(text("SHOW application_name"))
    assert name == f"todo-{mode}"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("query", ["sslmode=require", "ssl=require"])
async def test_tls_required_of_a_server_without_it_is_503(
    make_settings: SettingsFactory, database_url: str, query: str
) -> None:
    settings = make_settings(database_url=f"{database_url}?{query}")
    async with running_app(settings) as app, client_for(app) as client:
        ready = await client.get("/ready")
        signup = await client.post(
            "/api/auth/signup", json={"email": "a@example.com", "password": "x" * 12}
        )
    for response in (ready, signup):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"


def test_test_helpers_keep_the_urls_parameters() -> None:
    from tests.conftest import asyncpg_dsn, database_url_for

    assert (
        database_url_for("postgresql://u:p@h:5432/test?sslmode=prefer", "other")
        == "postgresql+asyncpg://u:p@h:5432/other?sslmode=prefer"
    )
    assert asyncpg_dsn("postgres://u@h/db?ssl=require&connect_timeout=5") == (
        "postgresql://u@h/db?sslmode=require"
    )
