"""Text that cannot be stored or read as text is refused as bad input, never a 500: a lone
surrogate (JSON can escape one, UTF-8 cannot encode it) in any text field of any body, a NUL in
any text we store, and a query string whose percent-escapes are not UTF-8 are 400
`validation_error`, naming the field, on both engines; headers we read never fail either."""

import json
from typing import Any

import httpx
import pytest

from tests.conftest import SignedUp
from tests.helpers import assert_problem, create

SURROGATE = "\ud800"
NUL = "\x00"
PASSWORD = "river-lantern-48-quietly"
EMAIL = "ada@example.com"
NEW_PASSWORD = "a new, longer passphrase"


def json_bytes(body: dict[str, Any]) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800, as a browser's JSON.stringify does.
    return json.dumps(body).encode()


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.request(
        method,
        path,
        content=json_bytes(body),
        headers={"content-type": "application/json", **(headers or {})},
    )


def assert_invalid(response: httpx.Response, loc: list[str]) -> None:
    body = assert_problem(response, 400, "validation_error")
    assert isinstance(body["errors"], list)
    assert loc in [error["loc"] for error in body["errors"]], body


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/auth/signup", {"email": f"a{SURROGATE}@example.com", "password": PASSWORD}, "email"),
        ("/api/auth/signup", {"email": SURROGATE, "password": PASSWORD}, "email"),
        ("/api/auth/signup", {"email": EMAIL, "password": PASSWORD, "name": SURROGATE}, "name"),
        ("/api/auth/signup", {"email": EMAIL, "password": f"{PASSWORD}{SURROGATE}"}, "password"),
        ("/api/auth/signup", {"email": EMAIL, "password": PASSWORD, "name": f"Ada{NUL}"}, "name"),
        ("/api/auth/signup", {"email": f"ada{NUL}@example.com", "password": PASSWORD}, "email"),
        ("/api/auth/login", {"email": SURROGATE, "password": PASSWORD}, "email"),
        ("/api/auth/login", {"email": f"a{SURROGATE}@example.com", "password": PASSWORD}, "email"),
        ("/api/auth/login", {"email": "ada@example.com", "password": SURROGATE}, "password"),
        ("/api/auth/login", {"email": f"ada{NUL}@example.com", "password": PASSWORD}, "email"),
        ("/api/auth/refresh", {"refresh_token": SURROGATE}, "refresh_token"),
        ("/api/auth/logout", {"refresh_token": SURROGATE}, "refresh_token"),
    ],
)  # fmt: skip
async def test_unstorable_text_in_account_bodies_is_400(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    assert_invalid(await send(client, "POST", path, body), ["body", field])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_password": SURROGATE, "new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD + SURROGATE}, "new_password"),
    ],
)  # fmt: skip
async def test_unstorable_text_in_a_password_change_is_400(
    client: httpx.AsyncClient, user: SignedUp, body: dict[str, Any], field: str
) -> None:
    response = await send(client, "POST", "/api/auth/password", body, user.headers)
    assert_invalid(response, ["body", field])


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": SURROGATE}, "title"),
        ({"title": f"Buy milk {SURROGATE}"}, "title"),
        ({"title": "Buy milk \udfff\ud800"}, "title"),  # a pair in the wrong order
        ({"title": "Buy milk", "description": f"semi{SURROGATE}skimmed"}, "description"),
        ({"title": "Buy milk", "description": "\udfff"}, "description"),
        ({"title": f"Buy{NUL}milk"}, "title"),
        ({"title": "Buy milk", "description": NUL}, "description"),
    ],
)
async def test_unstorable_text_in_task_bodies_is_400_and_stores_nothing(
    client: httpx.AsyncClient, user: SignedUp, method: str, body: dict[str, Any], field: str
) -> None:
    task = await create(client, user, title="Kept as it was")
    path = user.tasks_url if method == "POST" else f"{user.tasks_url}/{task['id']}"
    assert_invalid(await send(client, method, path, body, user.headers), ["body", field])
    listed = await client.get(user.tasks_url, headers=user.headers)
    assert listed.json()["items"] == [task]


async def test_an_escaped_surrogate_pair_is_one_character(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await send(
        client, "POST", user.tasks_url, {"title": "Smile \U0001f600"}, user.headers
    )
    assert response.status_code == 201, response.text
    assert b"\\ud83d\\ude00" in response.request.content
    assert response.json()["title"] == "Smile \U0001f600"


async def test_a_field_name_with_a_surrogate_is_400(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await send(
        client, "POST", user.tasks_url, {"title": "x", SURROGATE: 1}, user.headers
    )
    body = assert_problem(response, 400, "validation_error")
    assert isinstance(body["errors"], list)
    assert [error["type"] for error in body["errors"]] == ["string_unicode"]


async def test_a_surrogate_in_a_task_body_without_a_token_is_still_401(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await send(client, "POST", user.tasks_url, {"title": SURROGATE})
    assert_problem(response, 401, "missing_token")


@pytest.mark.parametrize("q", ["%ED%A0%80", "milk%FF", "%C3", "%00"])
async def test_a_search_that_is_not_utf_8_text_is_400(
    client: httpx.AsyncClient, user: SignedUp, q: str
) -> None:
    response = await client.get(f"{user.tasks_url}?q={q}", headers=user.headers)
    assert_invalid(response, ["query", "q"])


async def test_a_query_parameter_name_that_is_not_utf_8_is_400(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    response = await client.get(f"{user.tasks_url}?q%FF=1", headers=user.headers)
    assert_invalid(response, ["query", "q\\udcff"])


@pytest.mark.parametrize("token", [b"\xff\xfe", b"a\xe9b.c\xe9d.e\xe9f", b"\xed\xa0\x80"])
async def test_a_bearer_token_that_is_not_ascii_is_401_invalid_token(
    client: httpx.AsyncClient, user: SignedUp, token: bytes
) -> None:
    for path in ("/api/auth/me", user.tasks_url):
        response = await client.get(path, headers=[(b"authorization", b"Bearer " + token)])
        assert_problem(response, 401, "invalid_token")


async def test_a_request_id_that_is_not_ascii_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers=[(b"x-request-id", b"\xed\xa0\x80\xff")])
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32


# A value longer than the document's maxLength as sent, which trimming would bring under it
# (found by schemathesis: a tag of 41 characters, the first a form feed).
OVERLONG_BEFORE_TRIM = [
    ("title", "\f" + "t" * 200),
    ("tags", ["\f" + "t" * 40]),
]


@pytest.mark.parametrize(("field", "value"), OVERLONG_BEFORE_TRIM)
async def test_max_length_counts_what_was_sent_not_what_trimming_leaves(
    client: httpx.AsyncClient, user: SignedUp, field: str, value: Any
) -> None:
    task = await create(client, user)
    body = {"title": "A task", field: value}
    created = await client.post(user.tasks_url, json=body, headers=user.headers)
    assert_problem(created, 400, "validation_error")
    patched = await client.patch(
        f"{user.tasks_url}/{task['id']}",
        json={field: value},
        headers={**user.headers, "Content-Type": "application/merge-patch+json"},
    )
    assert_problem(patched, 400, "validation_error")
    # Exactly at the limit as sent, with the whitespace in it, is fine.
    fits = value[1:] if isinstance(value, str) else [value[0][1:]]
    assert (
        await client.post(user.tasks_url, json={**body, field: fits}, headers=user.headers)
    ).status_code == 201
    listed = (await client.get(user.tasks_url, headers=user.headers)).json()
    assert listed["total"] == 2


async def test_an_overlong_email_before_trimming_is_400(client: httpx.AsyncClient) -> None:
    email = " " + "a" * 64 + "@" + "b" * 251 + ".com"  # 321 as sent, 320 trimmed
    response = await client.post("/api/auth/login", json={"email": email, "password": "x" * 12})
    assert_problem(response, 400, "validation_error")
