"""The OpenAPI document and the documentation pages.

Routes declare their error responses with `problem_responses(...)`; `install_openapi` then makes
the document say what the service really does: errors are `application/problem+json`, request
validation fails with 400 (FastAPI would document 422), and Swagger UI and ReDoc are served from
assets shipped with the package (no CDN), with the bearer scheme ready to authorize.
"""

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from backend.errors import PROBLEM_MEDIA_TYPE, Problem

_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Invalid input", "validation_error", "body.title: must not be empty"),
    401: ("Missing, invalid or expired token", "invalid_token", "The access token is not valid."),
    403: (
        "The path's user id is not the caller's",
        "forbidden",
        "This path belongs to another user.",
    ),
    404: ("No such task (or it belongs to someone else)", "not_found", "No task with this id."),
    409: ("Conflict", "email_taken", "An account with this email already exists."),
    413: ("Request body too large", "payload_too_large", "The request body is too large."),
    415: (
        "Request body is not JSON",
        "unsupported_media_type",
        "Request bodies must be JSON (Content-Type: application/json).",
    ),
    429: ("Too many requests", "rate_limited", "Too many requests; try again later."),
    503: (
        "Database or identity provider unreachable",
        "service_unavailable",
        "The service is temporarily unavailable; try again shortly.",
    ),
}
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
# Every route can answer these: bad input and a database outage.
COMMON_ERRORS = (400, 503)


def problem_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error statuses, each with a problem+json example."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *COMMON_ERRORS}):
        description, code, detail = _EXAMPLES[status]
        example: dict[str, Any] = {
            "type": "about:blank",
            "title": _PHRASES[status],
            "status": status,
            "detail": detail,
            "code": code,
            "request_id": "0f6c1d2e3a4b4c5d8e9f0a1b2c3d4e5f",
        }
        if status == 400:
            example["errors"] = [
                {"loc": ["body", "title"], "msg": "must not be empty", "type": "value_error"}
            ]
        responses[status] = {
            "model": Problem,
            "description": (descriptions or {}).get(status, description),
            "content": {"application/json": {"example": example}},
        }
    return responses


def _rewrite_errors(document: dict[str, Any]) -> dict[str, Any]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses: dict[str, Any] = operation.get("responses", {})
            responses.pop("422", None)
            for status, response in responses.items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI builds and caches the document; the rewrite is idempotent.
        return _rewrite_errors(generate())

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, from assets shipped in a Python package."""
    assets = str(files("fastapi_offline") / "static")
    app.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/docs/favicon.png",
            with_google_fonts=False,
        )
