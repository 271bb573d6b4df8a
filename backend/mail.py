"""Outgoing mail, and the work a request leaves to run after its response.

`Mailer` sends through the SMTP server of `SMTP_URL` (aiosmtplib), or, in development without
one, logs what it would send (`log_instead`). `Background` runs coroutines after the response
has gone (a request must not wait for a mail server, nor reveal by its timing what it did);
the lifespan waits for them at shutdown, a bounded time, then cancels what is left.
"""

import asyncio
import logging
from collections.abc import Coroutine
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from backend.config import Settings, SmtpServer, parse_smtp_url

logger = logging.getLogger("backend.mail")


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.sender = settings.mail_from
        self._timeout = settings.smtp_timeout_seconds
        self.server: SmtpServer | None = (
            parse_smtp_url(settings.smtp_url.get_secret_value()) if settings.smtp_url else None
        )

    @property
    def configured(self) -> bool:
        return self.server is not None

    async def send(self, message: EmailMessage) -> None:
        """Send `message` (its From is set here); raises on any failure of the SMTP server."""
        assert self.server is not None, "no SMTP_URL: log the message instead"
        del message["From"]
        message["From"] = self.sender
        server = self.server
        await aiosmtplib.send(
            message,
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.implicit_tls,
            start_tls=server.start_tls,
            timeout=self._timeout,
        )


class Background:
    """Coroutines that run after the response, kept so that none is lost or left unawaited."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, job: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(self._guarded(job, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(job: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await job
        except Exception:
            logger.exception("background job %s failed", name)

    async def drain(self) -> None:
        """Wait until every job started so far (and any they started) has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    async def close(self, timeout_seconds: float) -> None:
        """At shutdown: let running jobs finish for up to `timeout_seconds`, then cancel."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.drain()
        except TimeoutError:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            logger.warning("background jobs cancelled at shutdown")
