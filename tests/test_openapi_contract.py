"""The OpenAPI document is complete and true, the committed `openapi.json` is what the app serves,
and the committed TypeScript types are what the pinned openapi-typescript makes of it.

The TypeScript tests (the types, `tsc`, and the typed client run by Node against a live server)
need Node.js: they install `clients/typescript` with `npm ci` when its
node_modules is missing or stale, and skip without `node` and `npm`, except under CI=true, where
their absence fails the run.
"""

import asyncio
import fcntl
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from backend.cli import main as todo_api
from backend.config import Settings
from backend.main import create_app
from tests.conftest import IN_CI, TEST_PASSWORD, TEST_SIGNING_KEY
from tests.helpers import mint
from tests.live import live_server

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_JSON = ROOT / "openapi.json"
CLIENT = ROOT / "clients" / "typescript"
SCHEMA_D_TS = CLIENT / "schema.d.ts"
PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PRECONDITION_REF = {"$ref": "#/components/schemas/PreconditionProblem"}

# Every status each operation can answer: the contract, route by route.
BEARER = {401, 403, 503}
OWNER = {400, 401, 403, 503}
BODY = {413, 415}
EXPECTED_STATUSES: dict[str, set[int]] = {
    "health": {200},
    "ready": {200, 503},
    "signup": {201, 400, 409, 429, 503} | BODY,
    "login": {200, 400, 401, 429, 503} | BODY,
    "refreshTokens": {200, 400, 401, 429, 503} | BODY,
    "logout": {204, 400, 503} | BODY,
    "logoutAll": {204} | BEARER,
    "changePassword": {200, 400, 409, 429} | BEARER | BODY,
    "getCurrentUser": {200} | BEARER,
    "updateCurrentUser": {200, 400} | BEARER | BODY,
    "deleteCurrentUser": {204, 400, 429} | BEARER | BODY,
    "forgotPassword": {202, 400, 429, 503} | BODY,
    "resetPassword": {200, 400, 429, 503} | BODY,
    "exportData": {200} | OWNER,
    "getJwks": {200},
    "listTasks": {200, 304} | OWNER,
    "createTask": {201, 409, 422, 429} | OWNER | BODY,
    "getTask": {200, 304, 404} | OWNER,
    "replaceTask": {200, 404, 412, 429} | OWNER | BODY,
    "patchTask": {200, 404, 409, 412, 422, 429} | OWNER | BODY,
    "deleteTask": {204, 412, 429} | OWNER,
    "completeTask": {200, 404, 409, 412, 422, 429} | OWNER | BODY,
    "listChanges": {200, 410} | OWNER,
    "streamEvents": {200, 429} | OWNER,
    "listTrash": {200} | OWNER,
    "restoreTask": {200, 404, 409, 422, 429} | OWNER,
    "purgeTask": {204, 429} | OWNER,
    "emptyTrash": {204, 429} | OWNER,
    "clearCompleted": {200, 409, 422, 429} | OWNER,
    "moveTask": {200, 404, 409, 412, 422, 429} | OWNER | BODY,
    "listTags": {200} | OWNER,
}
PUBLIC_OPERATIONS = {
    "health",
    "ready",
    "signup",
    "login",
    "refreshTokens",
    "logout",
    "getJwks",
    "forgotPassword",
    "resetPassword",
}
RATE_LIMITED = {
    "signup",
    "login",
    "refreshTokens",
    "changePassword",
    "deleteCurrentUser",
    "forgotPassword",
    "resetPassword",
    "createTask",
    "replaceTask",
    "patchTask",
    "deleteTask",
    "completeTask",
    "restoreTask",
    "purgeTask",
    "emptyTrash",
    "clearCompleted",
    "streamEvents",
    "moveTask",
}


def served_app(**settings: Any) -> FastAPI:
    return create_app(
        Settings(
            _env_file=None,
            database_url="sqlite+aiosqlite:///:memory:",
            jwt_private_key=TEST_SIGNING_KEY,
            **settings,
        )
    )


def document_served(**settings: Any) -> dict[str, Any]:
    """The document as the app serves it at /openapi.json (it needs no lifespan, no database)."""

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=served_app(**settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/openapi.json")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def served_document() -> dict[str, Any]:
    """The document of the default settings, which `openapi.json` holds."""
    return document_served()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def document_text(document: dict[str, Any]) -> str:
    """The document as `todo-api openapi` writes it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- The committed document -------------------------------------------------------------------


def test_committed_openapi_json_is_what_the_app_serves(served_document: dict[str, Any]) -> None:
    assert OPENAPI_JSON.read_text(encoding="utf-8") == document_text(served_document), (
        "openapi.json is stale: run ./dev openapi (todo-api openapi --output openapi.json)"
    )


def test_the_console_command_exports_the_served_document(
    tmp_path: Path, served_document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JWT_PRIVATE_KEY", TEST_SIGNING_KEY)
    todo_api(["openapi", "--output", "exported.json"])
    assert (tmp_path / "exported.json").read_text(encoding="utf-8") == document_text(
        served_document
    )


# --- Complete and true --------------------------------------------------------------------------


def test_every_operation_has_a_summary_description_tag_and_readable_id(
    served_document: dict[str, Any],
) -> None:
    declared_tags = {tag["name"] for tag in served_document["tags"]}
    ids = [operation["operationId"] for _, _, operation in operations(served_document)]
    assert sorted(ids) == sorted(EXPECTED_STATUSES)
    for path, method, operation in operations(served_document):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert len(operation.get("description", "")) > 20, where
        assert len(operation["tags"]) == 1 and operation["tags"][0] in declared_tags, where
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation["operationId"]), where


def test_every_operation_documents_exactly_the_statuses_it_can_answer(
    served_document: dict[str, Any],
) -> None:
    for _, _, operation in operations(served_document):
        documented = {int(status) for status in operation["responses"]}
        assert documented == EXPECTED_STATUSES[operation["operationId"]], operation["operationId"]
    schemas = served_document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_errors_are_problem_json_with_an_example_per_code(
    served_document: dict[str, Any],
) -> None:
    for _, _, operation in operations(served_document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            where = f"{operation['operationId']} {status}"
            assert list(response["content"]) == [PROBLEM_JSON], where
            content = response["content"][PROBLEM_JSON]
            # A 412 carries the task as it is now (`current`) besides the problem's members.
            expected = PRECONDITION_REF if status == "412" else PROBLEM_REF
            assert content["schema"] == expected, where
            codes = set(content["examples"])
            assert codes and all(f"`{code}`" in response["description"] for code in codes), where
            for code, example in content["examples"].items():
                assert example["value"]["code"] == code and example["value"]["status"] == int(
                    status
                ), where


def test_error_headers_are_documented(served_document: dict[str, Any]) -> None:
    for _, _, operation in operations(served_document):
        operation_id = operation["operationId"]
        responses = operation["responses"]
        if operation_id not in PUBLIC_OPERATIONS:
            assert operation["security"] == [{"bearer": []}], operation_id
            assert "WWW-Authenticate" in responses["401"]["headers"], operation_id
        else:
            assert "security" not in operation, operation_id
        if "429" in responses:
            assert operation_id in RATE_LIMITED
            headers = responses["429"]["headers"].keys()
            assert "Retry-After" in headers, operation_id
            if "rate_limited" in responses["429"]["content"][PROBLEM_JSON]["examples"]:
                assert "RateLimit-Reset" in headers, operation_id
        if "503" in responses:
            assert "Retry-After" in responses["503"]["headers"], operation_id
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], f"{operation_id} {status}"
    create = served_document["paths"]["/api/{user_id}/tasks"]["post"]["responses"]["201"]
    assert "Location" in create["headers"]
    scheme = served_document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"


def test_every_post_and_patch_of_a_user_takes_an_idempotency_key(
    served_document: dict[str, Any],
) -> None:
    idempotent = set()
    for path, method, operation in operations(served_document):
        parameters = {p["name"]: p for p in operation.get("parameters", ())}
        responses = operation["responses"]
        takes_key = path.startswith("/api/{user_id}/") and method in {"post", "patch"}
        assert ("Idempotency-Key" in parameters) is takes_key, f"{method} {path}"
        if not takes_key:
            assert "Idempotent-Replayed" not in json.dumps(responses), f"{method} {path}"
            continue
        idempotent.add(operation["operationId"])
        key = parameters["Idempotency-Key"]
        assert key["in"] == "header" and key["required"] is False
        assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
        success = next(r for status, r in responses.items() if status.startswith("2"))
        assert "Idempotent-Replayed" in success["headers"]
        problems = {
            status: set(r["content"][PROBLEM_JSON]["examples"])
            for status, r in responses.items()
            if int(status) >= 400
        }
        assert "idempotency_key_in_progress" in problems["409"]
        assert problems["422"] == {"idempotency_key_reused"}
        assert "Retry-After" in responses["409"]["headers"]
        assert "Idempotency-Key" in responses["400"]["description"]
    assert idempotent == {
        "createTask",
        "patchTask",
        "completeTask",
        "restoreTask",
        "clearCompleted",
        "moveTask",
    }
    codes = served_document["components"]["schemas"]["Problem"]["properties"]["code"]
    assert "`idempotency_key_reused`" in codes["description"]
    assert "`idempotency_key_in_progress`" in codes["description"]


def test_request_and_success_bodies_have_examples(served_document: dict[str, Any]) -> None:
    for _, _, operation in operations(served_document):
        operation_id = operation["operationId"]
        if "requestBody" in operation:
            assert operation["requestBody"]["content"]["application/json"]["examples"], operation_id
        for status, response in operation["responses"].items():
            if int(status) < 300 and status not in {"202", "204"}:  # no body
                # JSON, but for the event stream.
                [(media, content)] = response["content"].items()
                assert media in {"application/json", "text/event-stream"}, operation_id
                assert "example" in content, f"{operation_id} {status}"


def test_created_tasks_link_to_the_operations_on_them(served_document: dict[str, Any]) -> None:
    create = served_document["paths"]["/api/{user_id}/tasks"]["post"]["responses"]["201"]
    links = create["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getTask",
        "replaceTask",
        "patchTask",
        "completeTask",
        "deleteTask",
    }
    for link in links.values():
        assert link["parameters"] == {
            "user_id": "$response.body#/user_id",
            "task_id": "$response.body#/id",
        }


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example in the document, with the schema it illustrates."""
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        bodies = [("request", operation.get("requestBody", {}).get("content", {}))]
        bodies += [(status, r.get("content", {})) for status, r in operation["responses"].items()]
        for label, content in bodies:
            for media_type, media in content.items():
                if "example" in media:
                    yield f"{where} {label} {media_type}", media["schema"], media["example"]
                for name, example in media.get("examples", {}).items():
                    yield f"{where} {label} {media_type} {name}", media["schema"], example["value"]


def test_every_example_is_valid_against_its_schema(served_document: dict[str, Any]) -> None:
    assert _invalid_examples(served_document) == []


def _invalid_examples(document: dict[str, Any]) -> list[str]:
    components = document["components"]
    invalid = []
    checked = 0
    for where, schema, example in _examples(document):
        validator = jsonschema_rs.validator_for(
            {**schema, "components": components}, validate_formats=True
        )
        invalid += [f"{where}: {error.message}" for error in validator.iter_errors(example)]
        checked += 1
    assert checked > 50
    return invalid


# --- The deployment's own document ----------------------------------------------------------------


@pytest.mark.parametrize("cookie", [False, True])
def test_the_refresh_token_is_required_in_the_body_unless_a_cookie_carries_it(
    cookie: bool,
) -> None:
    document = document_served(refresh_token_cookie=cookie)
    request = document["components"]["schemas"]["RefreshRequest"]
    token = request["properties"]["refresh_token"]
    if cookie:
        assert "required" not in request
        assert {"type": "null"} in token["anyOf"]
    else:
        assert request["required"] == ["refresh_token"]
        assert token["type"] == "string" and token["minLength"] == 1
    for path in ("/api/auth/refresh", "/api/auth/logout"):
        examples = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert ("cookie" in examples["examples"]) is cookie
    assert _invalid_examples(document) == []


def test_what_a_schema_cannot_say_is_in_the_descriptions(served_document: dict[str, Any]) -> None:
    listing = served_document["paths"]["/api/{user_id}/tasks"]["get"]
    parameters = {parameter["name"]: parameter for parameter in listing["parameters"]}
    assert "not earlier than `due_after`" in parameters["due_before"]["description"]
    assert "not later than `due_before`" in parameters["due_after"]["description"]
    assert "not listed here is refused" in listing["description"]
    signup = served_document["components"]["schemas"]["SignupRequest"]["properties"]
    assert "not reserved" in signup["email"]["description"]


# --- TypeScript types and the typed client ------------------------------------------------------


def _pinned(package: str) -> str:
    manifest = json.loads((CLIENT / "package.json").read_text())
    version: str = {**manifest["dependencies"], **manifest["devDependencies"]}[package]
    return version


def _installed(package: str) -> str | None:
    manifest = CLIENT / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="session")
def node_tools() -> Path:
    """`clients/typescript/node_modules/.bin`, installed from package-lock.json if needed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if IN_CI:
            pytest.fail("node and npm are needed for the TypeScript checks, and CI=true")
        pytest.skip("node and npm are not installed")
    # One test worker installs; the others wait for it.
    with (Path(tempfile.gettempdir()) / "todo-api-npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        packages = ("openapi-typescript", "openapi-fetch", "typescript")
        if any(_installed(package) != _pinned(package) for package in packages):
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=CLIENT,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return CLIENT / "node_modules" / ".bin"


def test_committed_typescript_types_are_current(
    node_tools: Path, served_document: dict[str, Any], tmp_path: Path
) -> None:
    document = tmp_path / "openapi.json"
    document.write_text(document_text(served_document), encoding="utf-8")
    generated = tmp_path / "schema.d.ts"
    subprocess.run(
        [
            node_tools / "openapi-typescript",
            document,
            "--default-non-nullable",
            "false",
            "--output",
            generated,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert generated.read_text() == SCHEMA_D_TS.read_text(), (
        "clients/typescript/schema.d.ts is stale: run ./dev openapi, then "
        "npm --prefix clients/typescript run generate"
    )


def test_typed_client_compiles(node_tools: Path) -> None:
    result = subprocess.run(
        [node_tools / "tsc", "--noEmit", "-p", CLIENT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_typed_client_against_a_live_api(node_tools: Path, tmp_path: Path) -> None:
    """`clients/typescript/test/live.ts`, compiled with the pinned tsc and run by Node against a
    real server: every route through the client, with a token provider whose first token has
    expired (renewed once), and this API's own accounts renewed through /api/auth/refresh."""
    build = tmp_path / "build"
    compiled = subprocess.run(
        [node_tools / "tsc", "-p", CLIENT, "--noEmit", "false", "--rootDir", CLIENT,
         "--outDir", build],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (build / "package.json").write_text('{"type": "module"}\n')
    (build / "node_modules").symlink_to(CLIENT / "node_modules")
    (build / "run.mjs").write_text(
        'import { run } from "./test/live.js";\n'
        "process.stdout.write(JSON.stringify(await run(JSON.parse(process.argv[2]))));\n"
    )
    with live_server(tmp_path) as server:
        email = f"live-{uuid.uuid4().hex[:8]}@example.com"
        signup = httpx.post(
            f"{server.url}/api/auth/signup",
            json={"email": email, "password": TEST_PASSWORD},
            timeout=30,
        )
        assert signup.status_code == 201, signup.text
        user_id = signup.json()["user"]["id"]
        expired = mint(user_id, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        script_input = {
            "baseUrl": server.url,
            "email": email,
            "password": TEST_PASSWORD,
            "expiredToken": expired,
            "freshToken": signup.json()["access_token"],
        }
        ran = subprocess.run(
            ["node", "run.mjs", json.dumps(script_input)],
            cwd=build, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)

    every = result["everyRoute"]
    # The expired token was refused, the provider asked once more (forced), the call retried.
    assert every["callsAfterFirstList"] == [False, True]
    assert every["calls"] == [False, True]  # and the fresh token served every later route
    assert every["firstList"] == {"total": 0, "limit": 20}
    assert every["me"]["id"] == every["userId"] == user_id and every["me"]["email"] == email
    created = every["created"]
    assert (created["title"], created["priority"], created["due_date"]) == (
        "Buy milk", "high", "2026-12-01",
    )  # fmt: skip
    assert every["fetched"] == created
    replaced = every["replaced"]
    assert (replaced["title"], replaced["priority"], replaced["due_date"]) == (
        "Buy oat milk", "medium", None,
    )  # fmt: skip
    patched = every["patched"]
    assert (patched["title"], patched["priority"], patched["description"]) == (
        "Buy oat milk", "high", "Two litres",
    )  # fmt: skip
    assert every["toggled"]["completed"] is True and every["toggled"]["completed_at"]
    assert every["reopened"]["completed"] is False and every["reopened"]["completed_at"] is None
    assert every["pending"] == {"total": 1, "ids": [created["id"]]}
    assert every["deletedAgain"] == {"ok": True}
    assert every["missing"] == {"ok": False, "status": 404, "code": "not_found"}
    assert every["invalid"] == {"ok": False, "status": 400, "code": "validation_error"}
    assert every["jwksKeys"] == 1
    assert every["health"] == {"status": "ok"} and every["ready"] == {"status": "ready"}

    # A create and a toggle sent twice with their keys: done once; another request's key: 422.
    assert result["safeRetries"] == {
        "sameTask": True,
        "tasks": 1,
        "completedAfterTwoToggles": True,
        "reusedKey": {"ok": False, "status": 422, "code": "idempotency_key_reused"},
    }

    # If-Match, the changes feed and the trash through the typed client.
    sync = result["sync"]
    assert sync["staleEditRefusedWithVersion"] == sync["freshVersion"] == 3
    assert sync["fullSync"] == ["upsert"]
    assert sync["afterDelete"] == [{"op": "delete", "id": result["sync"]["trashed"][0]}]
    assert sync["restoredVersion"] == 5
    assert sync["emptyTrash"] == 0

    # Live updates through the client's followChanges: pushed within a second; resumed from the
    # last cursor, the change made meanwhile and the next one, each once.
    live = result["live"]
    assert live["pushed"] == ["Pushed"]
    assert live["delayMs"] < 1000
    assert live["resumed"] == ["While away", "Back"]

    # Three requests refused at once: one renewal.
    assert result["concurrent"] == {"calls": [False, True], "userIds": [user_id]}
    # A renewed token that is expired too: one retry, then the error.
    assert result["twiceExpired"] == {
        "outcome": {"ok": False, "status": 401, "code": "token_expired"},
        "calls": [False, True],
    }

    own = result["own"]
    assert own["userId"] == own["changedUser"] == own["meAfterChange"] == user_id
    assert own["refreshedUser"] == user_id
    assert own["listed"] == 0
    # The swapped (expired) token got 401, a refresh renewed it, the list was sent once more.
    assert own["requests"][:4] == [
        "POST /api/auth/login",
        f"GET /api/{user_id}/tasks",
        "POST /api/auth/refresh",
        f"GET /api/{user_id}/tasks",
    ]
    assert own["meAfterLogout"] == {"ok": False, "status": 401, "code": "missing_token"}
    assert own["wrongPassword"] == {"ok": False, "status": 401, "code": "invalid_credentials"}
    assert result["newcomer"]["userId"] == result["newcomer"]["taskOwner"]
    newcomer = result["newcomer"]
    assert newcomer["profile"] == {"name": "New Comer", "timeZone": "Europe/Paris"}
    assert newcomer["exported"]["format"] == "todo-api/1"
    assert len(newcomer["exported"]["tasks"]) == 2
    assert newcomer["organizing"] == {
        "movedVersion": 2,
        "tagged": ["Second task"],
        "order": ["First task", "Second task"],
        "noDate": 2,
        "tags": [{"name": "home", "count": 1}, {"name": "Work", "count": 1}],
    }
    assert newcomer["badReset"] == {"ok": False, "status": 400, "code": "invalid_reset_token"}
    assert newcomer["wrongDeletion"] == {"ok": False, "status": 400, "code": "wrong_password"}
    assert newcomer["afterDeletion"] == {"ok": False, "status": 401, "code": "invalid_credentials"}
