"""A real browser against a real server: headless Chromium, driven by Playwright, uses Swagger UI
at /docs the way a person would. It logs in with "Try it out" on the login route, pastes the
access token into "Authorize", runs "List tasks" and sees a 200 with the task it created.

It drives Debian's `chromium` (Playwright does not download a browser here), in a fresh profile,
and leaves a screenshot of the answered call in `test-output/browser/swagger-list-tasks.png`.
Without `/usr/bin/chromium` the test is skipped, except under CI=true, where it fails.
"""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.conftest import TEST_PASSWORD
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.live import LiveServer, live_server

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "test-output" / "browser" / "swagger-list-tasks.png"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    require_chromium()
    with live_server(tmp_path) as server:
        yield server


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def execute(operation: Locator) -> Locator:
    """Open an operation, press "Try it out" (after the caller's `fill`), and return its form."""
    operation.locator(".opblock-summary-control").click()
    operation.locator("button.try-out__btn").click()
    return operation


def answer_of(operation: Locator) -> tuple[str, str]:
    """Press "Execute" and read the status and the response body that Swagger UI shows."""
    operation.locator("button.execute").click()
    live = operation.locator(".live-responses-table .response")
    expect(live.locator(".response-col_status")).not_to_have_text("", timeout=15_000)
    status = live.locator(".response-col_status").inner_text().strip()
    body = live.locator(".response-col_description .highlight-code pre").first.inner_text()
    return status, body


def test_swagger_ui_logs_in_authorizes_and_lists_tasks(server: LiveServer, page: Page) -> None:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    title = f"Water the plants {uuid.uuid4().hex[:6]}"
    signup = httpx.post(
        f"{server.url}/api/auth/signup", json={"email": email, "password": TEST_PASSWORD}
    )
    assert signup.status_code == 201, signup.text
    user_id = signup.json()["user"]["id"]
    created = httpx.post(
        f"{server.url}/api/{user_id}/tasks",
        json={"title": title, "priority": "high", "due_date": "2026-12-01"},
        headers={"Authorization": f"Bearer {signup.json()['access_token']}"},
    )
    assert created.status_code == 201, created.text

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.url}/docs")

    # Log in with "Try it out" on POST /api/auth/login, and read the token off the page.
    login = execute(page.locator("#operations-auth-login"))
    login.locator("textarea.body-param__text").fill(
        json.dumps({"email": email, "password": TEST_PASSWORD})
    )
    status, body = answer_of(login)
    assert status == "200", body
    token = json.loads(body)["access_token"]

    # Authorize: paste the token into the bearer scheme's dialog.
    page.locator(".auth-wrapper button.authorize").click()
    page.locator("#auth-bearer-value").fill(token)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.locator(".auth-btn-wrapper button.btn-done").click()
    expect(page.locator(".auth-wrapper button.authorize")).to_have_class("btn authorize locked")

    # List tasks, as the user, from the page.
    list_tasks = execute(page.locator("#operations-tasks-listTasks"))
    list_tasks.locator('tr[data-param-name="user_id"] input').fill(user_id)
    status, body = answer_of(list_tasks)
    assert status == "200", body
    page_of_tasks = json.loads(body)
    assert [task["title"] for task in page_of_tasks["items"]] == [title]
    curl = list_tasks.locator(".curl-command").inner_text()
    assert f"Authorization: Bearer {token}" in curl

    # The operation, from its header down to the server's answer (not the documented responses).
    top = list_tasks.evaluate("e => e.getBoundingClientRect().top + window.scrollY")
    bottom = list_tasks.locator(".live-responses-table").evaluate(
        "e => e.getBoundingClientRect().bottom + window.scrollY"
    )
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=SCREENSHOT,
        full_page=True,
        clip={"x": 0, "y": top - 8, "width": 1280, "height": bottom - top + 16},
    )
    assert errors == []
