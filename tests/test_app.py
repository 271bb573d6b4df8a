"""The foundation: health, readiness, request ids, security headers, problem+json everywhere."""

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from backend import infrastructure
from backend.config import Settings
from backend.routes.sessions import REFRESH_COOKIE
from tests.conftest import TEST_PASSWORD, SettingsFactory, client_for, running_app
from tests.helpers import assert_problem


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("incoming", ["abc-123", "a.b_c-d", "x" * 128])
async def test_a_valid_client_request_id_is_kept(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["", "x" * 129, "has space", "semi;colon", "ünï"])
async def test_an_invalid_client_request_id_is_replaced(
    client: httpx.AsyncClient, incoming: str
) -> None:
    response = await client.get("/health", headers=[(b"X-Request-ID", incoming.encode())])
    assert response.headers["x-request-id"] != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_security_headers_on_api_responses(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/health"), await client.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_unknown_route_is_problem_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_problem_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/health")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_validation_error_is_400_with_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/login", json={"email": "a@example.com"})
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [
        {"loc": ["body", "password"], "msg": "Field required", "type": "missing"}
    ]


async def test_validation_errors_never_echo_the_input(client: httpx.AsyncClient) -> None:
    secret = "s3cret-password-that-is-far-too-long" * 10
    response = await client.post(
        "/api/auth/signup", json={"email": "a@example.com", "password": secret}
    )
    assert_problem(response, 400, "validation_error")
    assert secret not in response.text


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "validation_error")


async def test_an_error_inside_a_route_is_a_generic_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(settings) as app:
        secret_message = "SELECT password_hash FROM users -- internal detail"

        async def boom() -> None:
            raise RuntimeError(secret_message)

        app.add_api_route("/boom", boom)
        async with client_for(app) as client:
            response = await client.get("/boom", headers={"X-Request-ID": "trace-me-42"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "trace-me-42"
    assert secret_message not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and getattr(logged[0], "request_id", None) == "trace-me-42"
    assert logged[0].exc_info is not None


async def test_oversized_body_is_413_problem(client: httpx.AsyncClient) -> None:
    body = b'{"email": "' + b"a" * 70000 + b'"}'
    response = await client.post(
        "/api/auth/login", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


async def test_oversized_chunked_body_is_413_problem(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 4096

    response = await client.post(
        "/api/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_non_json_body_is_415_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login",
        content=b"email=a@example.com&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_cors_allows_the_configured_origin_only(client: httpx.AsyncClient) -> None:
    allowed = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    refused = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


async def test_cors_lets_a_browser_send_and_read_the_v2_headers(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/api/someone/tasks/9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, if-match, "
            "if-none-match, idempotency-key, last-event-id",
        },
    )
    assert preflight.status_code == 200, preflight.text
    answer = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    exposed = {
        name.strip() for name in answer.headers["access-control-expose-headers"].lower().split(",")
    }
    assert {
        "etag",
        "idempotent-replayed",
        "location",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-request-id",
    } <= exposed


async def test_cors_preflight_for_task_routes(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/someone/tasks",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_docs_render_from_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    asset = await client.get("/static/docs/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    redoc = await client.get("/redoc")
    assert redoc.status_code == 200 and "redoc.standalone.js" in redoc.text


async def test_openapi_documents_400_not_422(app: FastAPI) -> None:
    document = app.openapi()
    assert "HTTPValidationError" not in str(document)
    # The one 422 is a reused Idempotency-Key's, never invalid input.
    for item in document["paths"].values():
        for operation in item.values():
            if "422" in operation["responses"]:
                examples = operation["responses"]["422"]["content"]["application/problem+json"]
                assert list(examples["examples"]) == ["idempotency_key_reused"]
    login = document["paths"]["/api/auth/login"]["post"]["responses"]
    assert "application/problem+json" in login["400"]["content"]


async def _refresh_token_in_a_cookie(client: httpx.AsyncClient) -> bool:
    """Sign up, and tell where the refresh token came: in its cookie (True) or the body."""
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post(
        "/api/auth/signup", json={"email": email, "password": TEST_PASSWORD}
    )
    assert response.status_code == 201, response.text
    in_cookie = REFRESH_COOKIE in response.headers.get("set-cookie", "")
    assert in_cookie == (response.json()["refresh_token"] is None)
    return in_cookie


async def test_routes_take_their_infrastructure_from_overridable_dependencies(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, make_settings: SettingsFactory
) -> None:
    """`app.dependency_overrides` reaches what the auth routes use (they no longer read the
    runtime themselves): for that app only, and until the override is removed."""
    assert not await _refresh_token_in_a_cookie(client)
    cookie_settings = make_settings(refresh_token_cookie=True)
    app.dependency_overrides[infrastructure.get_settings] = lambda: cookie_settings
    try:
        assert await _refresh_token_in_a_cookie(client)
        async with running_app(settings) as other, client_for(other) as other_client:
            assert not other.dependency_overrides
            assert not await _refresh_token_in_a_cookie(other_client)
    finally:
        del app.dependency_overrides[infrastructure.get_settings]
    assert not await _refresh_token_in_a_cookie(client)
