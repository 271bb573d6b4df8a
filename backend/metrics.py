"""Prometheus metrics: `GET /metrics` for a bearer of METRICS_TOKEN, correct with several workers.

With more than one worker, `todo-api serve` points PROMETHEUS_MULTIPROC_DIR at a directory of its
own (or empties the one it is given) before the workers start; each worker then keeps its values
in files there (prometheus-client's multiprocess mode) and a scrape, answered by any worker, adds
up every worker's. Counters of workers that have exited stay counted; their gauges are dropped.

- Per request (`RequestContextMiddleware` calls `RequestMetrics.observe`): one histogram by route
  template, method and status; its `_count` series is the request count. A path that matches no
  route counts as route `unmatched` and a method we do not serve as `OTHER`, so the series stay
  bounded whatever clients send.
- Where they happen: rate-limit refusals by limit, logins by outcome, Better Auth JWKS fetches by
  outcome.
- Sampled every second by each worker (nothing on the request path): the database pool's
  connections in use and the requests waiting for one, and the open event streams; each a gauge
  summed over the live workers.
"""

import asyncio
import contextlib
import hmac
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from backend.errors import InvalidToken, MissingToken

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0

REQUEST_DURATION = Histogram(
    "todo_http_request_duration_seconds",
    "Time to answer a request (its _count is the number of requests), by route template, "
    "method and status.",
    ("method", "route", "status"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMIT_REFUSALS = Counter(
    "todo_rate_limit_refusals", "Requests refused with 429, by limit.", ("limit",)
)
LOGINS = Counter(
    "todo_logins",
    "Password logins, by outcome: succeeded, failed (wrong email or password), locked (too many "
    "failures for the account).",
    ("outcome",),
)
LOGIN_SUCCEEDED = LOGINS.labels("succeeded")
LOGIN_FAILED = LOGINS.labels("failed")
LOGIN_LOCKED = LOGINS.labels("locked")
JWKS_FETCHES = Counter(
    "todo_better_auth_jwks_fetches", "Fetches of Better Auth's JWKS, by outcome.", ("outcome",)
)
JWKS_FETCH_SUCCEEDED = JWKS_FETCHES.labels("succeeded")
JWKS_FETCH_FAILED = JWKS_FETCHES.labels("failed")
DB_CONNECTIONS_IN_USE = Gauge(
    "todo_db_pool_connections_in_use",
    "Database connections checked out of the pools.",
    multiprocess_mode="livesum",
)
DB_WAITING = Gauge(
    "todo_db_pool_waiting",
    "Requests waiting for a database connection.",
    multiprocess_mode="livesum",
)
EVENT_STREAMS_OPEN = Gauge(
    "todo_event_streams_open", "Open live-update streams.", multiprocess_mode="livesum"
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """The request histogram's series, looked up once per (method, route, status)."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        self._series: dict[tuple[str, str | None, int], Any] = {}

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self._new_series(method, route, status)
        series.observe(seconds)

    def _new_series(self, method: str, route: str | None, status: int) -> Any:
        known = method in _METHODS
        series = REQUEST_DURATION.labels(
            method if known else "OTHER", route or "unmatched", str(status)
        )
        if known:  # a made-up method is not remembered: the cache stays bounded too
            self._series[(method, route, status)] = series
        return series


def render() -> bytes:
    """Every worker's values (multiprocess mode), or this process's own."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def install_metrics_route(app: FastAPI, token: str) -> None:
    """`GET /metrics`, for a bearer of `token` only. Outside the OpenAPI document: it is for the
    operator's scraper, exists only when configured, and answers Prometheus's text format."""
    expected = token.encode()

    async def metrics(request: Request) -> Response:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise MissingToken()
        if not hmac.compare_digest(presented.strip().encode(), expected):
            raise InvalidToken("The metrics token is not valid.")
        body = await anyio.to_thread.run_sync(render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


class Sampler:
    """Sets the gauges of one worker every `SAMPLE_SECONDS` from what it holds now."""

    def __init__(
        self,
        *,
        connections_in_use: Callable[[], int | None],
        waiting: Callable[[], int],
        open_streams: Callable[[], int],
    ) -> None:
        self._connections_in_use = connections_in_use
        self._waiting = waiting
        self._open_streams = open_streams
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        in_use = self._connections_in_use()
        if in_use is not None:
            DB_CONNECTIONS_IN_USE.set(in_use)
        DB_WAITING.set(self._waiting())
        EVENT_STREAMS_OPEN.set(self._open_streams())

    def start(self) -> None:
        forget_dead_workers()
        self._task = asyncio.create_task(self._run(), name="metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # This worker's gauges leave the sums (its counters stay counted).
        directory = os.environ.get(MULTIPROCESS_DIRECTORY)
        if directory:
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)


def _pid_of(path: Path) -> int | None:
    _, _, pid = path.stem.rpartition("_")
    return int(pid) if pid.isdigit() else None


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def forget_dead_workers() -> None:
    """Drop the gauges of workers that ended without saying so (killed): uvicorn starts a new
    worker in a dead one's place, and the new one does this first."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*.db"):
        pid = _pid_of(path)
        if pid is not None and pid != os.getpid() and not _is_running(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def prepare_directory(*, workers: int) -> Path | None:
    """Before the workers start: empty PROMETHEUS_MULTIPROC_DIR of a previous run's files, or,
    without one and with several workers, make a private one (returned, for `release_directory`
    when the server stops). This process's own files, if it made any already, stay."""
    given = os.environ.get(MULTIPROCESS_DIRECTORY)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.glob("*.db"):
            if _pid_of(path) != os.getpid():
                path.unlink(missing_ok=True)
        return None
    if workers <= 1:
        return None  # one process: its own values, in memory
    made = Path(tempfile.mkdtemp(prefix="todo-api-metrics-"))
    os.environ[MULTIPROCESS_DIRECTORY] = str(made)
    return made


def release_directory(made: Path | None) -> None:
    """When the server has stopped: remove the directory `prepare_directory` made, or take this
    process's gauges out of the operator's (its workers took theirs out as they ended)."""
    if made is not None:
        os.environ.pop(MULTIPROCESS_DIRECTORY, None)
        with contextlib.suppress(OSError):
            shutil.rmtree(made)
    elif directory := os.environ.get(MULTIPROCESS_DIRECTORY):
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
