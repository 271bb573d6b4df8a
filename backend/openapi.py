"""The OpenAPI document (the pages that show it are in `docs.py`).

Routes declare every response they can give: `success_response(...)` for the one that succeeds,
with a realistic example, and `problem_responses(...)` for the error `code`s they can answer, each
with an example. `install_openapi` then makes the document say what the service really does:
errors are `application/problem+json`, request validation fails with 400 (FastAPI would document
422), and every response carries `X-Request-ID`.

Over 350 lines on purpose: the helpers that routes declare their responses with, and `_rewrite`,
which turns what they declared into the published document, share private conventions (the
`x-example-json` markers, the query schemas collected by `query_parameters`); one module keeps
the two sides in step.
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fastapi import FastAPI
from fastapi.openapi.models import Example
from pydantic import BaseModel

from backend.config import Settings
from backend.errors import (
    AppError,
    EmailNotVerified,
    EmailTaken,
    Forbidden,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidCredentials,
    InvalidCursor,
    InvalidRefreshToken,
    InvalidResetToken,
    InvalidToken,
    MissingToken,
    NotFound,
    PasswordManagedElsewhere,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RefreshTokenReused,
    ServiceUnavailable,
    SyncExpired,
    TaskExists,
    TokenExpired,
    TooManyStreams,
    TooManyTasks,
    UnsupportedMediaType,
    ValidationFailed,
    WeakPassword,
    WrongPassword,
)
from backend.problems import PROBLEM_MEDIA_TYPE, Problem, problem_body
from backend.schemas import TASK_EXAMPLE, TaskRead
from backend.services.idempotency import KEY_HEADER, REPLAYED_HEADER, is_kept

# The error codes a route can answer, by the error class that answers each.
_ERRORS: dict[str, type[AppError]] = {
    error.code: error
    for error in (
        ValidationFailed,
        WeakPassword,
        WrongPassword,
        InvalidResetToken,
        MissingToken,
        InvalidToken,
        TokenExpired,
        InvalidCredentials,
        InvalidRefreshToken,
        RefreshTokenReused,
        Forbidden,
        EmailNotVerified,
        NotFound,
        EmailTaken,
        PasswordManagedElsewhere,
        TooManyTasks,
        TaskExists,
        InvalidCursor,
        SyncExpired,
        PreconditionFailed,
        IdempotencyKeyInProgress,
        IdempotencyKeyReused,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        TooManyStreams,
        ServiceUnavailable,
    )
}
# Example details where the class's default would be vaguer than what clients really see.
_DETAILS = {
    "not_found": "No task with this id.",
    "payload_too_large": "The request body is larger than 65536 bytes.",
    "rate_limited": "Too many task changes; try again in 12 seconds.",
}
_STATUS_DESCRIPTIONS = {
    400: "The request is not valid",
    401: "Not authenticated",
    403: "Not allowed: the path's `{user_id}` is not the caller's, or the Better Auth user's "
    "email is not verified while `BETTER_AUTH_REQUIRE_VERIFIED_EMAIL` is on",
    404: "No such task (a task of another user is 404 too)",
    409: "Conflict",
    410: "Gone: the changes since this cursor are no longer kept; sync again from the start",
    412: "The task is not the version `If-Match` names: `current` is the task as it is now",
    413: "The request body is larger than `MAX_BODY_BYTES`",
    415: "The request body is not JSON",
    422: "Unprocessable",
    429: "Too many requests; `Retry-After` says when to try again",
    503: "The database (or the identity provider) does not answer; try again shortly",
}
# The codes every route that reads a bearer token, or takes a JSON body, can answer.
BEARER_ERRORS = ("missing_token", "invalid_token", "token_expired", "email_not_verified")
BODY_ERRORS = ("payload_too_large", "unsupported_media_type")
# What every route under /api/{user_id}/ can refuse: malformed input, the token, another owner.
OWNER_ERRORS = ("validation_error", *BEARER_ERRORS, "forbidden")
TASK_WRITE_LIMITED = {429: "Too many task changes by this user (`TASK_WRITE_RATE_LIMIT`)."}

REQUEST_ID_HEADER = "X-Request-ID"
# Response headers, shared by reference from the responses that carry them.
HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's id: the client's own `X-Request-ID` when it is 1 to 128 "
        "letters, digits, `.`, `_` or `-`, a new one otherwise. Quote it when reporting a "
        "problem.",
        "required": True,
        "schema": {"type": "string", "examples": ["0f6c1d2e3a4b4c5d8e9f0a1b2c3d4e5f"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "examples": [12]},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the limit's window.",
        "schema": {"type": "integer", "minimum": 0, "examples": [300]},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer", "minimum": 0, "examples": [299]},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window frees a request.",
        "schema": {"type": "integer", "minimum": 0, "examples": [60]},
    },
    "WWW-Authenticate": {
        "description": 'The bearer challenge, e.g. `Bearer realm="todo-api", '
        'error="invalid_token"`.',
        "required": True,
        "schema": {"type": "string"},
    },
    "Content-Disposition": {
        "description": 'A download: `attachment; filename="todo-export-2026-12-10.json"`.',
        "required": True,
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": 'The task\'s version, as a strong entity tag (`"3"`): send it back in '
        "`If-Match` to write only that version, or in `If-None-Match` to be told (304) that "
        "it is still current. A list's is weak, and moves with any change of the caller's "
        "tasks.",
        "required": True,
        "schema": {"type": "string", "examples": ['"3"']},
    },
    "Location": {
        "description": "The new resource's URL.",
        "required": True,
        "schema": {"type": "string", "examples": ["/api/{user_id}/tasks/{id}"]},
    },
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
HEADERS[REPLAYED_HEADER] = {
    "description": "`true` on an answer given again to a repeat of a request with the same "
    "`Idempotency-Key`: the first answer's status, body, `Location` and `ETag`, with nothing "
    "done this time. Absent from other answers.",
    "schema": {"type": "string", "enum": ["true"]},
}


# FastAPI leaves every None out of the document it builds, which would strip `null`s from the
# examples; they travel as JSON text under these keys and `_rewrite` puts them back.
_EXAMPLE_JSON = "x-example-json"
_VALUE_JSON = "x-value-json"


def body_examples(**examples: tuple[str, Any]) -> dict[str, Example]:
    """`openapi_examples=` for a request body: `name=(summary, value)`."""
    return {
        name: cast(Example, {"summary": summary, _VALUE_JSON: json.dumps(value)})
        for name, (summary, value) in examples.items()
    }


def header_refs(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def success_response(
    status: int,
    *,
    description: str,
    example: Any = None,
    headers: Iterable[str] = (),
    links: Mapping[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route's success: its description, an example body, the
    headers it carries (by name, from `HEADERS`) and its OpenAPI links."""
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = header_refs(*headers)
    if example is not None:
        response["content"] = {"application/json": {_EXAMPLE_JSON: json.dumps(example)}}
    if links:
        response["links"] = dict(links)
    return {status: response}


def not_modified(what: str) -> dict[int | str, dict[str, Any]]:
    """The 304 of a GET that honours `If-None-Match`."""
    return success_response(
        304, description=f"{what} is unchanged since that ETag: no body.", headers=("ETag",)
    )


def link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link: how to call `operation_id` with values from this response."""
    return {"operationId": operation_id, "parameters": parameters, "description": description}


# Example validation failures (`loc`, `msg`, `type`), one per kind of input a route takes.
INVALID_BODY = (["body", "title"], "must not be empty", "value_error")
INVALID_ID = (
    ["path", "task_id"],
    "Input should be a valid UUID, invalid character: found `x` at 0",
    "uuid_parsing",
)
INVALID_QUERY = (["query", "limit"], "Input should be less than or equal to 100", "less_than_equal")


def problem_responses(
    *codes: str,
    descriptions: Mapping[int, str] | None = None,
    invalid: tuple[list[str], str, str] = INVALID_BODY,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error codes, grouped by status, each code with an
    example (`invalid` is the example of `validation_error`). `service_unavailable` is always
    included: every such route uses the database."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, "service_unavailable"):
        codes_of_status = by_status.setdefault(_ERRORS[code].status_code, [])
        if code not in codes_of_status:
            codes_of_status.append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, status_codes in sorted(by_status.items()):
        listed = ", ".join(f"`{code}`" for code in status_codes)
        description = (descriptions or {}).get(status) or f"{_STATUS_DESCRIPTIONS[status]}."
        response: dict[str, Any] = {
            "model": PreconditionProblem if status == 412 else Problem,
            "description": f"{description} Codes: {listed}.",
            "content": {
                "application/json": {
                    "examples": {code: _problem_example(code, invalid) for code in status_codes}
                }
            },
        }
        headers = _problem_headers(status, status_codes)
        if headers:
            response["headers"] = header_refs(*headers)
        responses[status] = response
    return responses


# Members of a problem beyond the standard ones, in the examples.
_EXAMPLE_MEMBERS = {"precondition_failed": {"current": {**TASK_EXAMPLE, "version": 4}}}


def _problem_example(code: str, invalid: tuple[list[str], str, str]) -> dict[str, Any]:
    error = _ERRORS[code]
    loc, msg, type_ = invalid
    if code == "validation_error":
        detail = f"{'.'.join(loc)}: {msg}"
    else:
        detail = _DETAILS.get(code, error.default_detail)
    value = problem_body(
        status=error.status_code,
        code=code,
        detail=detail,
        request_id="0f6c1d2e3a4b4c5d8e9f0a1b2c3d4e5f",
        errors=[{"loc": loc, "msg": msg, "type": type_}] if code == "validation_error" else None,
        members={"current": {**TASK_EXAMPLE, "version": 4}}
        if code == "precondition_failed"
        else None,
    )
    if "errors" in value:
        value["errors"] = value.pop("errors")  # listed last in the published document
    return {"summary": detail, _VALUE_JSON: json.dumps(value)}  # its nulls kept (`_rewrite`)


class PreconditionProblem(Problem):
    """A 412: the problem, and the task as it is now."""

    current: TaskRead


def _problem_headers(status: int, codes: list[str]) -> tuple[str, ...]:
    if status == 401 and set(codes) & set(BEARER_ERRORS):
        return ("WWW-Authenticate",)
    if status == 429:
        return ("Retry-After", *RATE_LIMIT_HEADERS) if "rate_limited" in codes else ("Retry-After",)
    if status == 503:
        return ("Retry-After",)
    return ()


# --- Safe retries (`Idempotency-Key`) ---------------------------------------------------------

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "Makes the request safe to send again (after a timeout, a lost connection, a "
    "5xx): 1 to 255 printable ASCII characters of the client's choosing (a UUID), new for each "
    "new request; keys belong to the user. The first request with a key runs; for "
    "`IDEMPOTENCY_TTL_HOURS` (24) a repeat with the same method, path and body gets its "
    "answer again (status, body, `Location`, `ETag`) with `Idempotent-Replayed: true`, and "
    "nothing is done. 400, 401, 403, 429 and 5xx answers are not kept: the repeat runs anew. "
    "The same key with another method, path or body is 422 `idempotency_key_reused`; a repeat "
    "while the first request runs is 409 `idempotency_key_in_progress`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]{1,255}$"},
    "example": "5f0c9b7e-3d6a-4f1e-9a2b-8c4d7e6f1a03",
}
_IDEMPOTENCY_REFUSALS = {
    "idempotency_key_in_progress": "a request with this `Idempotency-Key` is still running; "
    "send it again after `Retry-After` seconds to get its answer",
    "idempotency_key_reused": "this `Idempotency-Key` was used for another request (another "
    "method, path or body)",
}
_BAD_KEY = "An `Idempotency-Key` that is not 1 to 255 printable ASCII characters is 400 too."
_RETRY_AFTER_IN_PROGRESS = {
    "description": "With `idempotency_key_in_progress`: seconds to wait before sending the "
    "request again.",
    "schema": {"type": "integer", "minimum": 0, "examples": [1]},
}
# Answered before any route runs (`backend/middleware.py`), so never kept for a repeat.
_BEFORE_ROUTES = frozenset({413, 415})


def idempotent_operation(
    responses: Mapping[int | str, dict[str, Any]], openapi_extra: Mapping[str, Any] | None
) -> tuple[dict[int | str, dict[str, Any]], dict[str, Any]]:
    """The `responses` and `openapi_extra` of an operation that takes an `Idempotency-Key`
    (`routing.OwnerScopedRoute` applies it to every POST and PATCH): the request header,
    `Idempotent-Replayed` on the answers a repeat can get again, and the key's refusals."""
    documented = {status: dict(response) for status, response in responses.items()}
    for status, response in documented.items():
        if is_kept(int(status)) and int(status) not in _BEFORE_ROUTES:
            response["headers"] = {**response.get("headers", {}), **header_refs(REPLAYED_HEADER)}
    for code, description in _IDEMPOTENCY_REFUSALS.items():
        _add_problem(documented, code, description)
    for status, response in documented.items():
        if int(status) == 400:
            text, _, codes = response["description"].rpartition(" Codes: ")
            response["description"] = f"{text} {_BAD_KEY} Codes: {codes}"
        if int(status) == 409:
            response["headers"] = {
                **response.get("headers", {}),
                "Retry-After": _RETRY_AFTER_IN_PROGRESS,
            }
    extra = dict(openapi_extra or {})
    extra["parameters"] = [*extra.get("parameters", ()), IDEMPOTENCY_KEY_PARAMETER]
    return dict(sorted(documented.items(), key=lambda item: int(item[0]))), extra


def _add_problem(responses: dict[int | str, dict[str, Any]], code: str, description: str) -> None:
    """Add `code` to the problem response of its status, or add that response."""
    status = _ERRORS[code].status_code
    existing = next((key for key in responses if int(key) == status), None)
    example = _problem_example(code, INVALID_BODY)
    if existing is None:
        responses[status] = {
            "model": Problem,
            "description": f"{description[0].upper()}{description[1:]}. Codes: `{code}`.",
            "content": {"application/json": {"examples": {code: example}}},
        }
        return
    response = responses[existing]
    text, _, codes = response["description"].rpartition(" Codes: ")
    examples = response["content"]["application/json"]["examples"]
    response["description"] = f"{text} Or {description}. Codes: {codes[:-1]}, `{code}`."
    response["content"] = {"application/json": {"examples": {**examples, code: example}}}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a body (or a header) that may be left out, without FastAPI's `null`
    alternative: a body `null` is not "no body" (it is a 400)."""
    alternatives = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(alternatives) != 1:
        return schema
    return {**alternatives[0], **{k: v for k, v in schema.items() if k != "anyOf"}}


def _rewrite(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, made true: no 422, errors as problem+json, `X-Request-ID` on every
    response. Idempotent, since FastAPI caches the document it returns."""
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            # Path parameters in the order the path names them (FastAPI lists a dependency's
            # parameters after the route's own), so forms show `user_id` before `task_id`.
            operation.get("parameters", []).sort(
                key=lambda p: path.find("{" + p["name"] + "}") if p["in"] == "path" else len(path)
            )
            for parameter in operation.get("parameters", []):
                # An optional header is left out, never sent as `null`.
                if parameter["in"] == "header" and "schema" in parameter:
                    parameter["schema"] = _not_null(parameter["schema"])
            request_body = operation.get("requestBody", {})
            if not request_body.get("required", False):
                for media in request_body.get("content", {}).values():
                    media["schema"] = _not_null(media["schema"])
            responses: dict[str, Any] = operation.get("responses", {})
            if _is_fastapi_validation(responses.get("422")):
                responses.pop("422")
            bodies = [operation.get("requestBody", {}), *responses.values()]
            for media in (m for body in bodies for m in body.get("content", {}).values()):
                if _EXAMPLE_JSON in media:
                    media["example"] = json.loads(media.pop(_EXAMPLE_JSON))
                for example in media.get("examples", {}).values():
                    if _VALUE_JSON in example:
                        example["value"] = json.loads(example.pop(_VALUE_JSON))
            for status, response in responses.items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                response["headers"] = {
                    **header_refs(REQUEST_ID_HEADER),
                    **response.get("headers", {}),
                }
    components = document.setdefault("components", {})
    components["headers"] = HEADERS
    schemas = components.setdefault("schemas", {})
    for name, schema in _QUERY_SCHEMAS.items():
        schemas.setdefault(name, schema)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for name in ("Problem", "PreconditionProblem"):
        if name in schemas:
            problem = schemas[name]
            problem["properties"]["code"]["description"] = PROBLEM_CODE_DESCRIPTION
            # Every problem carries every member but `errors` (`type` too, despite its default).
            problem["required"] = [key for key in problem["properties"] if key != "errors"]
    return document


def _is_fastapi_validation(response: dict[str, Any] | None) -> bool:
    """Whether a 422 is FastAPI's own for invalid input, which is answered as 400 instead."""
    content = (response or {}).get("content", {}).get("application/json", {})
    return bool(content.get("schema") == {"$ref": "#/components/schemas/HTTPValidationError"})


# Codes that the framework's own refusals and the catch-all answer too.
_OTHER_CODES = ("method_not_allowed", "internal_error")
PROBLEM_CODE_DESCRIPTION = (
    "Stable machine-readable error code: "
    + ", ".join(f"`{code}`" for code in (*_ERRORS, *_OTHER_CODES))
    + ". New codes may be added; existing ones never change meaning."
)


# Component schemas that query-string models documented by `query_parameters` refer to.
_QUERY_SCHEMAS: dict[str, Any] = {}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The `parameters` of a query-string model that a dependency validates itself (see
    `dependencies.query_model`), documented as FastAPI documents a `Query()` model."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _QUERY_SCHEMAS.update(schema.get("$defs", {}))
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema["properties"].items():
        parameter = {"name": name, "in": "query", "required": name in required}
        parameter["schema"] = property_schema
        if "description" in property_schema:
            parameter["description"] = property_schema["description"]
        parameters.append(parameter)
    return parameters


def _refresh_token_in_the_body(document: dict[str, Any]) -> None:
    """Without the cookie transport, /refresh and /logout need the refresh token in the body:
    the document says so (FastAPI documents the model, which also serves the cookie transport).
    Idempotent, as `_rewrite` is."""
    request = document["components"]["schemas"]["RefreshRequest"]
    token = request["properties"]["refresh_token"]
    if "anyOf" in token:
        token.update(next(s for s in token.pop("anyOf") if s.get("type") != "null"))
    token["description"] = "The refresh token that signup, login or the last refresh returned."
    request["required"] = ["refresh_token"]
    refresh_request = {"$ref": "#/components/schemas/RefreshRequest"}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if media.get("schema") == refresh_request:
                media.get("examples", {}).pop("cookie", None)  # `{}`: only with the cookie


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """The document of this deployment: what it accepts depends on its settings."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = _rewrite(generate())
        if settings.local_accounts and not settings.refresh_token_cookie:
            _refresh_token_in_the_body(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
