"""Errors: one problem shape everywhere (responses, the schema, the examples of the document),
and only the database's own errors taken for a database outage."""

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text

from backend.config import Settings
from backend.infrastructure import runtime_of
from backend.problems import PROBLEM_MEDIA_TYPE, Problem, problem_body
from tests.conftest import TEST_SIGNING_KEY, SettingsFactory, client_for, running_app, sign_up
from tests.helpers import assert_problem, create
from tests.live import free_port


def test_the_problem_schema_has_the_members_of_the_body_in_their_order() -> None:
    body = problem_body(status=400, code="validation_error", detail="d", request_id="r", errors=[])
    assert list(body) == list(Problem.model_fields)
    without_errors = problem_body(status=404, code="not_found", detail="d", request_id="r")
    assert list(without_errors) == [name for name in Problem.model_fields if name != "errors"]


def _problem_examples(document: dict[str, Any]) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for response in operation["responses"].values():
                media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {})
                examples.extend(example["value"] for example in media.get("examples", {}).values())
    return examples


async def test_the_documents_examples_have_the_members_of_real_error_responses(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    not_found = assert_problem(await client.get("/no/such/route"), 404, "not_found")
    invalid = assert_problem(
        await client.post("/api/auth/login", json={"email": "a@example.com"}),
        400,
        "validation_error",
    )
    user = await sign_up(client)
    task = await create(client, user)
    stale = await client.put(
        f"{user.tasks_url}/{task['id']}",
        json={"title": "x"},
        headers={**user.headers, "If-Match": '"9"'},
    )
    precondition = assert_problem(stale, 412, "precondition_failed")
    examples = _problem_examples(app.openapi())
    assert {example["code"] for example in examples} >= {
        "not_found",
        "validation_error",
        "precondition_failed",
    }
    real_of = {"validation_error": invalid, "precondition_failed": precondition}
    for example in examples:
        real = real_of.get(example["code"], not_found)
        assert set(example) == set(real), example["code"]


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "No such file or directory"),
        ConnectionRefusedError(111, "Connection refused"),  # a mail server, the JWKS URL
        TimeoutError("timed out"),  # a socket's timeout
        OSError("any other"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_os_error_outside_the_database_is_a_generic_500(
    settings: Settings, caplog: pytest.LogCaptureFixture, error: OSError
) -> None:
    async with running_app(settings) as app:

        async def fails() -> None:
            raise error

        app.add_api_route("/fails", fails)
        async with client_for(app) as client:
            response = await client.get("/fails", headers={"X-Request-ID": "trace-me-7"})
    body = assert_problem(response, 500, "internal_error")
    assert "database" not in str(body["detail"]).lower()
    assert "retry-after" not in response.headers
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in logged] == ["unhandled error while serving GET /fails"]
    assert getattr(logged[0], "request_id", None) == "trace-me-7"
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is error


async def test_a_postgresql_server_that_does_not_answer_is_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncpg reports a refused connection as a plain OSError: still the database's."""
    settings = Settings(
        _env_file=None,
        database_url=f"postgresql+asyncpg://todo@127.0.0.1:{free_port()}/todo",
        jwt_private_key=TEST_SIGNING_KEY,
        log_format="text",
        password_hash_concurrency=4,
    )
    async with running_app(settings) as app, client_for(app) as client:
        signup = {"email": "nobody@example.com", "password": "river-lantern-48-quietly"}
        response = await client.post("/api/auth/signup", json=signup)
        ready = await client.get("/ready")
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["retry-after"]
    assert_problem(ready, 503, "service_unavailable")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_statement_timeout_is_503(make_settings: SettingsFactory) -> None:
    """asyncpg reports its statement timeout as the built-in TimeoutError: still the database's."""
    async with running_app(make_settings(db_statement_timeout_seconds=0.2)) as app:

        async def slow(request: Request) -> None:
            async with runtime_of(request).db.engine.connect() as connection:
                await connection.execute(text("SELECT pg_sleep(5)"))

        app.add_api_route("/slow", slow)
        async with client_for(app) as client:
            assert_problem(await client.get("/slow"), 503, "service_unavailable")
