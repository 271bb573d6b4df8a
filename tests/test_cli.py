"""The `todo-api` command: whatever an operator must fix (a setting, a database it cannot use, a
schema not migrated) is one line on stderr naming what to fix, and a failing exit status."""

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_SERVER_URL, TEST_SIGNING_KEY, database_url_for, require_postgres
from tests.live import free_port, live_server, todo_api


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def server_url(**parts: Any) -> str:
    """The test server's URL with a password and some parts changed, in the `postgresql://`
    spelling operators paste."""
    url = make_url(database_url_for(POSTGRES_SERVER_URL, "test")).set(password="s3cret", **parts)
    return url.render_as_string(hide_password=False).replace("+asyncpg", "")


def shown(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string()


@pytest.fixture
def postgres() -> None:
    require_postgres()


@pytest.mark.usefixtures("postgres")
@pytest.mark.parametrize("command", ["migrate", "purge", "purge-sessions"])
@pytest.mark.parametrize(
    ("parts", "problem"),
    [
        ({"database": "no_such_database"}, 'database "no_such_database" does not exist'),
        ({"username": "no_such_role"}, 'role "no_such_role" does not exist'),
    ],
)
def test_a_database_that_refuses_us_is_one_line(
    tmp_path: Path, command: str, parts: dict[str, Any], problem: str
) -> None:
    url = server_url(**parts)
    line = one_line_failure(todo_api(tmp_path, command, DATABASE_URL=url))
    assert line == f"todo-api: cannot use the database in DATABASE_URL ({shown(url)}): {problem}"
    assert "s3cret" not in line


@pytest.mark.usefixtures("postgres")
def test_nothing_listening_is_one_line(tmp_path: Path) -> None:
    url = server_url(port=free_port())
    line = one_line_failure(todo_api(tmp_path, "migrate", DATABASE_URL=url))
    assert line.startswith(f"todo-api: cannot use the database in DATABASE_URL ({shown(url)}): ")


@pytest.mark.usefixtures("postgres")
@pytest.mark.parametrize("query", ["sslmode=require", "ssl=require"])
def test_tls_required_of_a_server_without_it_is_one_line(tmp_path: Path, query: str) -> None:
    url = f"{server_url()}?{query}"
    line = one_line_failure(todo_api(tmp_path, "migrate", DATABASE_URL=url))
    assert line.startswith(f"todo-api: cannot use the database in DATABASE_URL ({shown(url)}): ")
    assert "SSL" in line


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_migrate_takes_a_hosted_style_url(tmp_path: Path, database_url: str, mode: str) -> None:
    url = f"{database_url}?sslmode={mode}&application_name=deploy&connect_timeout=5"
    result = todo_api(tmp_path, "migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr


def test_a_verifying_sslmode_without_a_ca_is_one_line(tmp_path: Path) -> None:
    url = "postgresql://todo:s3cret@db.example.com/todo?sslmode=verify-full"
    assert one_line_failure(todo_api(tmp_path, "migrate", DATABASE_URL=url)) == (
        "todo-api: DATABASE_URL: sslmode=verify-full checks the server's certificate against a "
        "CA: add sslrootcert=<the CA file> (or put it in ~/.postgresql/root.crt)"
    )


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_purging_an_unmigrated_database_says_to_migrate(
    tmp_path: Path,
    fresh_database_url: str,
) -> None:
    line = one_line_failure(todo_api(tmp_path, "purge-sessions", DATABASE_URL=fresh_database_url))
    assert line.endswith("(the schema is not migrated: run `todo-api migrate`)")


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_production_refuses_to_serve_an_unmigrated_database(
    tmp_path: Path,
    fresh_database_url: str,
) -> None:
    result = todo_api(
        tmp_path,
        "serve",
        "--port",
        str(free_port()),
        ENVIRONMENT="production",
        JWT_PRIVATE_KEY=TEST_SIGNING_KEY,
        SMTP_URL="smtp://mailer:secret@smtp.example.com:587",
        PASSWORD_RESET_URL="https://app.example.com/reset-password?token={token}",
        DATABASE_URL=fresh_database_url,
    )
    assert one_line_failure(result) == (
        f"todo-api: the database in DATABASE_URL ({shown(fresh_database_url)}) is not migrated "
        "to this version's schema; run `todo-api migrate` (or ./dev migrate)"
    )


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_development_serves_an_unmigrated_database_but_says_so_loudly(
    tmp_path: Path,
    fresh_database_url: str,
) -> None:
    with live_server(tmp_path, env={"DATABASE_URL": fresh_database_url}) as server:
        assert httpx.get(f"{server.url}/ready").status_code == 503
        assert any("NOT MIGRATED" in line for line in server.log_lines())


def test_every_bad_setting_is_one_line_without_pydantics_report(tmp_path: Path) -> None:
    result = todo_api(tmp_path, "migrate", CORS_ORIGINS="localhost:3000", DB_POOL_SIZE="0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'todo-api: DB_POOL_SIZE: "0" is not valid; write a whole number from 1 to 200',
        'todo-api: CORS_ORIGINS: "localhost:3000" is not an origin; write http://localhost:3000',
    ]


def test_a_signing_key_that_does_not_parse_is_one_line_before_serving(tmp_path: Path) -> None:
    result = todo_api(tmp_path, "serve", "--port", str(free_port()), JWT_PRIVATE_KEY="not a key")
    assert one_line_failure(result) == (
        "todo-api: JWT_PRIVATE_KEY is not a PEM private key without a passphrase"
    )


def test_the_command_line_does_not_blame_the_database_for_a_file_it_cannot_write(
    tmp_path: Path,
) -> None:
    result = todo_api(tmp_path, "openapi", "--output", str(tmp_path / "missing" / "openapi.json"))
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr
    assert "cannot use the database" not in result.stderr
