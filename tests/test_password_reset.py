"""Forgotten passwords: the reset link goes through a real SMTP server (aiosmtpd, started here on
127.0.0.1), works once, for 30 minutes, until a newer one; the answer is the same for every
email; a mail server that is down costs the client nothing and the log no secret."""

import email
import email.policy
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlmodel import update

from backend.models import PasswordResetToken, utcnow
from backend.runtime import Runtime
from backend.services import password_resets
from tests.conftest import (
    SettingsFactory,
    SignedUp,
    allow_in_logs,
    client_for,
    remember_secrets,
    running_app,
    sign_up,
)
from tests.helpers import NEW_PASSWORD, assert_problem, login, me_status, refresh

RESET_URL = "https://app.example/reset-password?token={token}"
_LINK = re.compile(re.escape(RESET_URL.split("{token}")[0]) + r"([A-Za-z0-9_-]+)")


@dataclass
class Mailbox:
    """What the SMTP server received."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=false"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def forgot(client: httpx.AsyncClient, email_address: str, **kwargs: Any) -> httpx.Response:
    return await client.post("/api/auth/password/forgot", json={"email": email_address}, **kwargs)


async def reset(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/auth/password/reset", json={"token": token, "new_password": password}
    )


def token_in(message: EmailMessage) -> str:
    text = message.get_body(("plain",))
    assert text is not None
    match = _LINK.search(text.get_content())
    assert match is not None, text.get_content()
    token = match.group(1)
    remember_secrets(token)
    return token


async def mailed_token(app: FastAPI, mailbox: Mailbox, to: str) -> str:
    await runtime_of(app).background.drain()
    assert mailbox.messages, "no mail arrived"
    message = mailbox.messages[-1]
    assert message["To"] == to
    return token_in(message)


@pytest.fixture
async def mailing(make_settings: SettingsFactory, mailbox: Mailbox) -> Any:
    settings = make_settings(smtp_url=mailbox.url, password_reset_url=RESET_URL)
    async with running_app(settings) as app, client_for(app) as client:
        yield app, client, await sign_up(client)


async def test_the_mailed_link_resets_the_password_once_and_ends_every_session(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp], mailbox: Mailbox
) -> None:
    app, client, user = mailing
    other_session = await login(client, user)
    answer = await forgot(client, user.email.upper(), headers={"User-Agent": "TestBrowser/1.0"})
    assert answer.status_code == 202 and answer.content == b""

    token = await mailed_token(app, mailbox, user.email)
    message = mailbox.messages[-1]
    assert message["Subject"] == "Reset your Todo password"
    assert message["From"] == "Todo API <no-reply@localhost>"
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    for part in (text.get_content(), page.get_content()):
        assert RESET_URL.replace("{token}", token) in part
        assert "127.0.0.1" in part and "TestBrowser/1.0" in part
        assert "30 minutes" in part and "ignore this email" in part
    assert len(token) >= 43  # 256 bits

    used = await reset(client, token)
    assert used.status_code == 200, used.text
    session = used.json()
    assert set(session) == set(user.body) and session["user"]["id"] == user.id
    assert await me_status(client, session["access_token"]) == 200

    # Every earlier token stops working; the old password too; the new one works.
    assert await me_status(client, user.token) == 401
    assert await me_status(client, other_session["access_token"]) == 401
    for earlier in (user.body["refresh_token"], other_session["refresh_token"]):
        assert_problem(await refresh(client, earlier), 401, "invalid_refresh_token")
    old = await client.post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(old, 401, "invalid_credentials")
    await login(client, user, NEW_PASSWORD)

    assert_problem(
        await reset(client, token, "yet-another-passphrase-9"), 400, "invalid_reset_token"
    )


async def test_an_expired_link_is_invalid(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp], mailbox: Mailbox
) -> None:
    app, client, user = mailing
    await forgot(client, user.email)
    token = await mailed_token(app, mailbox, user.email)
    async with runtime_of(app).db.session(write=True) as session:
        await session.exec(
            update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_problem(await reset(client, token), 400, "invalid_reset_token")
    await login(client, user)


async def test_a_newer_link_and_a_password_change_invalidate_a_link(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp], mailbox: Mailbox
) -> None:
    app, client, user = mailing
    await forgot(client, user.email)
    first = await mailed_token(app, mailbox, user.email)
    await forgot(client, user.email)
    second = await mailed_token(app, mailbox, user.email)
    assert first != second
    assert_problem(await reset(client, first), 400, "invalid_reset_token")

    changed = await client.post(
        "/api/auth/password",
        json={"current_password": user.password, "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text
    assert_problem(
        await reset(client, second, "yet-another-passphrase-9"), 400, "invalid_reset_token"
    )


async def test_a_weak_new_password_is_refused_and_the_link_still_works(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp], mailbox: Mailbox
) -> None:
    app, client, user = mailing
    await forgot(client, user.email)
    token = await mailed_token(app, mailbox, user.email)
    assert_problem(await reset(client, token, "password123"), 400, "weak_password")
    short = await reset(client, token, "short")
    assert_problem(short, 400, "validation_error")
    assert (await reset(client, token)).status_code == 200


async def test_unknown_emails_get_the_same_answer_and_no_mail(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp], mailbox: Mailbox
) -> None:
    app, client, user = mailing
    answers = [
        await forgot(client, address)
        for address in (user.email, "nobody-here@example.com", "not an email")
    ]
    await runtime_of(app).background.drain()
    varying = {"x-request-id", "ratelimit-remaining", "ratelimit-reset"}
    shapes = [
        (a.status_code, a.content, {k: v for k, v in a.headers.items() if k not in varying})
        for a in answers
    ]
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0][0] == 202
    assert [message["To"] for message in mailbox.messages] == [user.email]


async def test_unknown_tokens_are_invalid(
    mailing: tuple[FastAPI, httpx.AsyncClient, SignedUp],
) -> None:
    _, client, _ = mailing
    for token in ("x", "A" * 43, "A" * 512):
        assert_problem(await reset(client, token), 400, "invalid_reset_token")
    assert_problem(await reset(client, "A" * 513), 400, "validation_error")


async def test_with_the_smtp_server_down_forgot_still_answers_and_the_failure_is_logged(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    links: list[str] = []
    compose = password_resets.reset_email

    def spy(request: password_resets.ResetRequest, link: str) -> EmailMessage:
        links.append(link)
        remember_secrets(link.rsplit("=", 1)[1])  # no log line may hold it
        return compose(request, link)

    monkeypatch.setattr(password_resets, "reset_email", spy)
    down = f"smtp://127.0.0.1:{free_port()}?starttls=false"  # nothing listens there
    settings = make_settings(smtp_url=down, password_reset_url=RESET_URL)
    async with running_app(settings) as app, client_for(app) as client:
        user = await sign_up(client)
        with caplog.at_level(logging.WARNING, logger="backend.password_resets"):
            assert (await forgot(client, user.email)).status_code == 202
            await runtime_of(app).background.drain()
    assert len(links) == 1
    failures = [r.getMessage() for r in caplog.records if "could not be sent" in r.getMessage()]
    assert len(failures) == 1
    assert links[0].rsplit("=", 1)[1] not in failures[0]


async def test_in_development_without_smtp_the_link_is_logged(
    client: httpx.AsyncClient, user: SignedUp, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="backend.password_resets"):
        assert (await forgot(client, user.email)).status_code == 202
        await runtime_of(app).background.drain()
    logged = [r for r in caplog.records if "password reset link" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    match = re.search(r"token=([A-Za-z0-9_-]+)", logged[0].getMessage())
    assert match is not None
    # This test's one deliberate secret in the log: the development mailer's whole point.
    allow_in_logs(match.group(1))
    assert (await reset(client, match.group(1))).status_code == 200


@pytest.mark.parametrize("per", ["ip", "email"])
async def test_reset_requests_are_limited_per_ip_and_per_email(
    per: str, make_settings: SettingsFactory
) -> None:
    settings = make_settings(password_reset_rate_limit="2/minute", trusted_proxies="127.0.0.1")
    async with running_app(settings) as app, client_for(app) as client:
        answers = []
        for n in range(3):
            address = "same@example.com" if per == "email" else f"user{n}@example.com"
            ip = f"203.0.113.{n}" if per == "email" else "203.0.113.7"
            answers.append(await forgot(client, address, headers={"X-Forwarded-For": ip}))
        await runtime_of(app).background.drain()
    assert [a.status_code for a in answers[:2]] == [202, 202]
    limited = assert_problem(answers[2], 429, "rate_limited")
    assert "Retry-After" in answers[2].headers and limited["detail"]


async def test_resets_are_limited_per_ip(make_settings: SettingsFactory) -> None:
    settings = make_settings(password_reset_rate_limit="2/minute")
    async with running_app(settings) as app, client_for(app) as client:
        statuses = [(await reset(client, f"guess-{n}")).status_code for n in range(3)]
    assert statuses == [400, 400, 429]
