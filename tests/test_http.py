"""HTTP around the routes: HEAD, trailing slashes, and CORS on every answer, refusals and 500s
included."""

import uuid

import httpx
import pytest
from fastapi import FastAPI

from backend.config import Settings
from tests.conftest import SignedUp, client_for, running_app
from tests.helpers import assert_problem, create

ORIGIN = "http://localhost:3000"
# Headers that differ between two answers to the same request.
_PER_ANSWER = {"x-request-id", "date"}


async def test_a_500_carries_the_cors_headers(settings: Settings) -> None:
    async with running_app(settings) as app:

        async def boom() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/boom", boom)
        async with client_for(app) as client:
            response = await client.get("/boom", headers={"Origin": ORIGIN})
    assert_problem(response, 500, "internal_error")
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize(
    ("origin", "method", "headers", "refused"),
    [
        ("https://evil.example", "POST", "authorization", ["origin"]),
        (ORIGIN, "TRACE", "authorization", ["access-control-request-method"]),
        (ORIGIN, "POST", "authorization, x-secret", ["access-control-request-headers"]),
        ("null", "CONNECT", "x-secret", [
            "origin", "access-control-request-method", "access-control-request-headers"
        ]),
    ],
)  # fmt: skip
async def test_a_refused_preflight_is_a_problem_400(
    client: httpx.AsyncClient, origin: str, method: str, headers: str, refused: list[str]
) -> None:
    response = await client.options(
        "/api/someone/tasks",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
            "X-Request-ID": "preflight-1",
        },
    )
    body = assert_problem(response, 400, "validation_error")
    assert response.headers["x-request-id"] == "preflight-1"
    assert isinstance(body["errors"], list)
    assert [error["loc"] for error in body["errors"]] == [["header", name] for name in refused]


async def test_an_allowed_preflight_for_head_is_200(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/someone/tasks",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "HEAD",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    for path in (f"{user.tasks_url}/", "/health/", "/api/auth/me/"):
        response = await client.get(path, headers={**user.headers, "Host": "evil.example"})
        assert_problem(response, 404, "not_found")
        assert "location" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ready",
        "/api/auth/me",
        "/api/auth/jwks",
        "/openapi.json",
        "/docs",
        "tasks",
        "task",
        "missing task",
        "foreign tasks",
    ],
)
async def test_head_answers_as_get_without_a_body(
    client: httpx.AsyncClient, user: SignedUp, other_user: SignedUp, path: str
) -> None:
    if path == "tasks":
        await create(client, user)
        path = f"{user.tasks_url}?q=task"
    elif path == "task":
        path = f"{user.tasks_url}/{(await create(client, user))['id']}"
    elif path == "missing task":
        path = f"{user.tasks_url}/{uuid.uuid4()}"
    elif path == "foreign tasks":
        path = other_user.tasks_url
    get = await client.get(path, headers=user.headers)
    head = await client.head(path, headers=user.headers)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) > 0
    assert {k: v for k, v in head.headers.items() if k not in _PER_ANSWER} == {
        k: v for k, v in get.headers.items() if k not in _PER_ANSWER
    }


async def test_head_without_a_token_is_401_without_a_body(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.head(user.tasks_url)
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_head_where_there_is_no_get_is_405(client: httpx.AsyncClient) -> None:
    response = await client.head("/api/auth/login")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "POST"
    assert response.content == b""


async def test_405_lists_head_wherever_get_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.delete("/health")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_is_no_operation_of_the_openapi_document(app: FastAPI) -> None:
    operations = [method for item in app.openapi()["paths"].values() for method in item]
    assert "get" in operations and "head" not in operations
