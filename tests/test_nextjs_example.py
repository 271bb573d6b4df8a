"""The Next.js + Better Auth example (examples/nextjs), end to end in a real browser (issue 22).

The test installs the example as locked (`npm ci`, unless node_modules already holds the pinned
versions), builds it for production (`next build`), and runs it (`next start`) on a free loopback
port next to a real API (`todo-api serve`) that trusts the example's Better Auth: the API's
BETTER_AUTH_URL and CORS_ORIGINS are the example's origin, which is the origin the browser uses
(Better Auth's JWTs carry it as their issuer).

Two browser contexts (two cookie jars, like two devices) of one user then use the app the way a
person would: one signs up, the other signs in; tasks are created, completed, reordered by drag
and drop, deleted and restored, each change showing in the other context within 2 seconds through
the event stream; an edit made on a stale version is refused (412) and the app says so; the user
signs out. Screenshots of the main screens go to test-output/nextjs/.

Debian's Chromium drives it (as tests/test_browser.py). Without Chromium, Node.js or npm the test
is skipped, except under CI=true, where it fails. It takes no `database_url`, so it runs once,
not once per database.
"""

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Request,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.conftest import TEST_PASSWORD
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.live import free_port, live_server
from tests.programs import require_program, stop, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nextjs"
SCREENSHOTS = ROOT / "test-output" / "nextjs"
# A fixed secret for this test's throwaway Better Auth database only; never used elsewhere.
TEST_AUTH_SECRET = "nextjs-example-test-only-secret-8c1f0e6a9b2d4f7e"
LIVE_MS = 2_000  # a change shows in the other context within this
NPM_TIMEOUT_SECONDS = 600
BUILD_TIMEOUT_SECONDS = 600
START_TIMEOUT_SECONDS = 60


def _installed_as_locked() -> bool:
    """Whether node_modules holds every direct dependency at its pinned version (and the native
    SQLite module is built), so that an `npm ci` done beforehand (by .ci/run) is not repeated."""
    manifest = json.loads((EXAMPLE / "package.json").read_text())
    for name, version in {**manifest["dependencies"], **manifest["devDependencies"]}.items():
        installed = EXAMPLE / "node_modules" / name / "package.json"
        if not installed.exists() or json.loads(installed.read_text())["version"] != version:
            return False
    native = EXAMPLE / "node_modules/better-sqlite3/build/Release/better_sqlite3.node"
    return native.exists()


def _run(command: list[str], timeout: int) -> None:
    environment = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=EXAMPLE, env=environment, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` took more than {timeout} s")
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed:\n{(result.stdout + result.stderr)[-4000:]}")
    print(f"{' '.join(command)}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def built_example() -> Path:
    """examples/nextjs, installed as locked and built for production."""
    require_chromium()
    require_program("node")
    require_program("npm")
    if not _installed_as_locked():
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], NPM_TIMEOUT_SECONDS)
    _run(["npm", "run", "build"], BUILD_TIMEOUT_SECONDS)
    return EXAMPLE


@dataclass
class Running:
    app_url: str
    api_url: str


@contextmanager
def next_start(workdir: Path, port: int, api_url: str) -> Iterator[str]:
    """`next start` on 127.0.0.1:port, with a Better Auth database of its own in workdir."""
    app_url = f"http://127.0.0.1:{port}"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "NEXT_TELEMETRY_DISABLED": "1",
        "BETTER_AUTH_URL": app_url,
        "BETTER_AUTH_SECRET": TEST_AUTH_SECRET,
        "AUTH_DATABASE": str(workdir / "auth.db"),
        "TODO_API_URL": api_url,
    }
    log_path = workdir / "next.log"
    command = [str(EXAMPLE / "node_modules/.bin/next"), "start", "-H", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=EXAMPLE, env=environment, stdout=log, stderr=subprocess.STDOUT
        )

    def ready() -> bool | None:
        if process.poll() is not None:
            pytest.fail(f"next start ended:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{app_url}/api/auth/jwks", timeout=2).status_code == 200 or None
        except httpx.TransportError:
            return None

    try:
        wait_until("next start answering", ready, seconds=START_TIMEOUT_SECONDS)
        yield app_url
    finally:
        stop(process)
        print(log_path.read_text(errors="replace")[-2000:])


@pytest.fixture
def running(built_example: Path, tmp_path: Path) -> Iterator[Running]:
    """The API, trusting the example's Better Auth, and the example, on free loopback ports."""
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    env = {"BETTER_AUTH_URL": app_url, "CORS_ORIGINS": app_url}
    with live_server(tmp_path, env=env) as api, next_start(tmp_path, port, api.url) as url:
        assert url == app_url
        yield Running(app_url, api.url)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def task(page: Page, title: str) -> Locator:
    return page.get_by_test_id("task").filter(has_text=title)


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / name, full_page=True)


def arrives(change: str, assertion: Callable[[float], None]) -> None:
    """Runs a Playwright assertion on the other context, given LIVE_MS to hold, and says how long
    the change took to arrive."""
    started = time.monotonic()
    assertion(LIVE_MS)
    print(f"{change}: in the other context after {(time.monotonic() - started) * 1000:.0f} ms")


def create(page: Page, title: str, *, priority: str, tags: str, due: str = "") -> None:
    form = page.get_by_role("form", name="New task")
    form.get_by_label("Title").fill(title)
    form.get_by_label("Priority").select_option(priority)
    form.get_by_label("Due date").fill(due)
    form.get_by_label("Tags").fill(tags)
    form.get_by_role("button", name="Add").click()


def edit_title(page: Page, title: str, new_title: str) -> None:
    editor = page.get_by_role("form", name=f"Edit {title}")
    editor.get_by_label("Title").fill(new_title)
    editor.get_by_role("button", name="Save").click()


def test_two_tabs_of_one_user_stay_in_sync_and_see_conflicts(
    running: Running, browser: Browser
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    errors: list[str] = []
    viewport: ViewportSize = {"width": 1100, "height": 760}
    first = browser.new_context(viewport=viewport).new_page()
    second = browser.new_context(viewport=viewport).new_page()
    writes: list[Request] = []  # what the app sent to the API, other than reads
    for page in (first, second):
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "request",
            lambda request: (
                writes.append(request)
                if request.url.startswith(running.api_url)
                and request.method not in {"GET", "OPTIONS"}
                else None
            ),
        )

    # The first context signs up, the second signs in as the same user.
    first.goto(running.app_url)
    first.get_by_role("button", name="Create an account").click()
    first.get_by_label("Name").fill("Ada")
    first.get_by_label("Email").fill(email)
    first.get_by_label("Password").fill(TEST_PASSWORD)
    shot(first, "01-sign-up.png")
    first.get_by_role("button", name="Create account").click()
    second.goto(running.app_url)
    second.get_by_label("Email").fill(email)
    second.get_by_label("Password").fill(TEST_PASSWORD)
    second.get_by_role("button", name="Sign in").click()
    for page in (first, second):
        expect(page.get_by_test_id("who")).to_have_text(email)
        expect(page.get_by_test_id("live")).to_have_attribute("data-live", "true")

    # Create in one, see it in the other.
    milk, plumber, taxes = "Buy oat milk", "Call the plumber", "File the taxes"
    create(first, milk, priority="high", tags="errands, home")
    arrives("create", lambda ms: expect(task(second, milk)).to_be_visible(timeout=ms))
    create(second, plumber, priority="medium", tags="home", due="2026-12-24")
    arrives("create", lambda ms: expect(task(first, plumber)).to_be_visible(timeout=ms))
    create(first, taxes, priority="low", tags="admin")
    arrives("create", lambda ms: expect(task(second, taxes)).to_be_visible(timeout=ms))

    # Complete in the second, see it checked in the first.
    second.get_by_label(f"Complete {plumber}").check()
    checkbox = first.get_by_label(f"Complete {plumber}")
    arrives("complete", lambda ms: expect(checkbox).to_be_checked(timeout=ms))

    # Reorder by drag and drop (POST …/move): newest first, so the order is taxes, plumber, milk.
    titles = [taxes, plumber, milk]
    expect(first.get_by_test_id("task").locator(".title")).to_have_text(titles)
    task(first, milk).drag_to(task(first, taxes))
    expect(first.get_by_test_id("task").locator(".title")).to_have_text([milk, taxes, plumber])
    order = second.get_by_test_id("task").locator(".title")
    arrives("move", lambda ms: expect(order).to_have_text([milk, taxes, plumber], timeout=ms))

    # Filters: a tag, then a status.
    first.get_by_role("button", name="#home").click()
    expect(first.get_by_test_id("task").locator(".title")).to_have_text([milk, plumber])
    first.get_by_role("button", name="#home").click()
    first.get_by_role("group", name="Status").get_by_role("button", name="Pending").click()
    expect(first.get_by_test_id("task").locator(".title")).to_have_text([milk, taxes])
    first.get_by_role("group", name="Status").get_by_role("button", name="All").click()
    expect(first.get_by_test_id("task")).to_have_count(3)
    shot(first, "02-tasks.png")

    # A conflict: both open the same task; the first saves; the second saves an edit of the
    # version it opened, which the API refuses (412), and the app says so and shows the latest.
    task(first, taxes).get_by_role("button", name="Edit").click()
    task(second, taxes).get_by_role("button", name="Edit").click()
    edit_title(first, taxes, "File the taxes by Friday")
    expect(task(first, "File the taxes by Friday")).to_have_attribute("data-version", "2")
    with second.expect_response(lambda answer: answer.status == 412) as refused:
        edit_title(second, taxes, "File the taxes next year")
    assert refused.value.request.headers["if-match"] == '"1"'
    notice = second.get_by_test_id("notice")
    expect(notice).to_contain_text("Conflict")
    expect(notice).to_contain_text("File the taxes by Friday")
    expect(task(second, "File the taxes by Friday")).to_be_visible()
    expect(task(second, "File the taxes next year")).to_have_count(0)
    expect(task(first, "File the taxes by Friday")).to_be_visible()
    shot(second, "03-conflict.png")
    notice.get_by_role("button", name="Dismiss").click()

    # Delete in the first: gone from the second, and in its trash; restore it there.
    task(first, milk).get_by_role("button", name="Delete").click()
    arrives("delete", lambda ms: expect(task(second, milk)).to_have_count(0, timeout=ms))
    second.get_by_role("button", name="Trash (1)").click()
    trashed = second.get_by_test_id("trashed").filter(has_text=milk)
    expect(trashed).to_be_visible()
    shot(second, "04-trash.png")
    trashed.get_by_role("button", name="Restore").click()
    arrives("restore", lambda ms: expect(task(first, milk)).to_be_visible(timeout=ms))
    expect(second.get_by_test_id("trashed")).to_have_count(0)

    # Sign out: back to the sign-in form; the other context stays signed in.
    first.get_by_role("button", name="Sign out").click()
    expect(first.get_by_role("form", name="Sign in")).to_be_visible()
    expect(second.get_by_test_id("who")).to_have_text(email)
    shot(first, "05-signed-out.png")
    assert errors == []

    # Every create and change carried a fresh Idempotency-Key, and every change to a task (also a
    # delete, which needs no key) the version it was based on.
    keys = [write.headers["idempotency-key"] for write in writes if write.method != "DELETE"]
    assert len(keys) == len(set(keys)) == len(writes) - 1
    changes = [write for write in writes if "/tasks/" in write.url]
    assert {write.method for write in changes} == {"PATCH", "POST", "DELETE"}
    assert all(re.fullmatch(r'"\d+"', write.headers["if-match"]) for write in changes)
