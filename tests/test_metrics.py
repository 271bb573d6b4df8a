"""`GET /metrics`: who may read it, what it counts, and how several workers share it.

The metrics are the process's own (one registry, as in a served worker), so each test compares
what it reads before and after what it does."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import literal, select

from backend import metrics
from backend.auth.keys import LocalKeys, RemoteJwks, generate_private_key_pem
from backend.config import Settings
from backend.db import Database
from backend.main import create_app
from backend.middleware import RequestContextMiddleware
from tests.conftest import (
    SettingsFactory,
    WithSettings,
    client_for,
    running_app,
    sign_up,
)
from tests.helpers import open_events
from tests.live import live_server

TOKEN = "metrics-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one series in a scrape (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def test_metrics_answer_only_the_metrics_token(with_settings: WithSettings) -> None:
    async with with_settings(metrics_token=TOKEN) as (client, user):
        missing = await client.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["code"] == "missing_token"
        # A user's access token is not the metrics token.
        wrong = await client.get("/metrics", headers=user.headers)
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_token"
        assert "todo_http_request_duration_seconds" in await scrape(client)


async def test_without_a_token_there_is_no_metrics_route_and_nothing_measured(
    settings: Settings,
) -> None:
    app = create_app(settings)
    (context,) = [m for m in app.user_middleware if m.cls is cast(Any, RequestContextMiddleware)]
    assert context.kwargs == {"observe": None}
    async with running_app(settings) as started, client_for(started) as client:
        assert (await client.get("/metrics", headers=BEARER)).status_code == 404


def test_metrics_stay_out_of_the_openapi_document(make_settings: SettingsFactory) -> None:
    """An operator's route, for Prometheus's text format and the metrics token: not the API."""
    app = create_app(make_settings(metrics_token=TOKEN))
    assert any(getattr(route, "path", None) == "/metrics" for route in app.routes)
    assert "/metrics" not in app.openapi()["paths"]


async def test_requests_are_counted_by_route_template_method_and_status(
    with_settings: WithSettings,
) -> None:
    async with with_settings(metrics_token=TOKEN) as (client, user):
        before = await scrape(client)
        series = {"route": "/api/{user_id}/tasks", "method": "GET", "status": "200"}
        for _ in range(3):
            assert (await client.get(user.tasks_url, headers=user.headers)).status_code == 200
        created = {"route": "/api/{user_id}/tasks", "method": "POST", "status": "201"}
        await client.post(user.tasks_url, headers=user.headers, json={"title": "count me"})
        # A path that matches no route, and a made-up method: one series each, whatever the path.
        for n in range(3):
            await client.get(f"/no/such/path/{n}")
        await client.request("BREW", f"/coffee/{n}")
        after = await scrape(client)

    def delta(**labels: str) -> float:
        name = "todo_http_request_duration_seconds_count"
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta(**series) == 3
    assert delta(**created) == 1
    assert delta(route="unmatched", method="GET", status="404") == 3
    assert delta(route="unmatched", method="OTHER") == 1
    assert str(user.id) not in after  # never the raw path
    bucket = sample_value(after, "todo_http_request_duration_seconds_bucket", le="+Inf", **series)
    assert bucket >= 3


async def test_rate_limit_refusals_and_logins_are_counted(
    with_settings: WithSettings,
) -> None:
    async with with_settings(
        metrics_token=TOKEN, login_rate_limit="3/minute", login_lockout="1/minute"
    ) as (client, user):
        before = await scrape(client)
        login = {"email": user.email, "password": user.password}
        assert (await client.post("/api/auth/login", json=login)).status_code == 200
        wrong = {"email": user.email, "password": "not-the-password-at-all"}
        assert (await client.post("/api/auth/login", json=wrong)).status_code == 401
        # The account's one failure allowed is spent: locked, even for the right password.
        assert (await client.post("/api/auth/login", json=login)).status_code == 429
        # And the client's three attempts a minute: refused before any check.
        assert (await client.post("/api/auth/login", json=login)).status_code == 429
        after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("todo_logins_total", outcome="succeeded") == 1
    assert delta("todo_logins_total", outcome="failed") == 1
    assert delta("todo_logins_total", outcome="locked") == 1
    assert delta("todo_rate_limit_refusals_total", limit="login-failures") == 1
    assert delta("todo_rate_limit_refusals_total", limit="login") == 1


async def test_better_auth_jwks_fetches_and_failures_are_counted() -> None:
    document = LocalKeys.from_settings(
        Settings(_env_file=None, jwt_private_key=generate_private_key_pem())
    ).public_jwks()
    answers = [httpx.Response(503), httpx.Response(200, json=document)]
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: answers.pop(0)))
    jwks = RemoteJwks(
        url="https://auth.example.com/api/auth/jwks",
        client=client,
        cache_seconds=300,
        cooldown_seconds=0,
        timeout_seconds=1,
        max_bytes=65536,
    )
    before = (fetches("failed"), fetches("succeeded"))
    with pytest.raises(Exception, match="no keys could be fetched"):
        await jwks.get("any")
    await jwks.get(document["keys"][0]["kid"])
    await client.aclose()
    assert (fetches("failed") - before[0], fetches("succeeded") - before[1]) == (1, 1)


def fetches(outcome: str) -> float:
    return current("todo_better_auth_jwks_fetches_total", outcome=outcome)


def current(name: str, **labels: str) -> float:
    """A series' value in this process now."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_pool_and_stream_gauges_are_sampled(make_settings: SettingsFactory) -> None:
    database = Database(make_settings())
    open_streams = 2
    sampler = metrics.Sampler(
        connections_in_use=database.connections_in_use,
        waiting=database.waiting_for_connection,
        open_streams=lambda: open_streams,
    )
    try:
        async with database.reading() as work:
            await work.rows(select(literal(1).label("one")))
            sampler.sample()
            assert current("todo_db_pool_connections_in_use") == 1
        sampler.sample()
        assert current("todo_db_pool_connections_in_use") == 0
        assert current("todo_db_pool_waiting") == 0
        assert current("todo_event_streams_open") == 2
    finally:
        await database.dispose()


def test_serve_starts_from_an_empty_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of a previous run (workers long gone) are removed before the workers start; a
    worker killed while serving loses its gauges when the next one starts, not its counts."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    dead = dead_pid()
    for name in (f"counter_{dead}.db", f"gauge_livesum_{dead}.db", f"histogram_{dead}.db"):
        (directory / name).write_bytes(b"")
    monkeypatch.setenv(metrics.MULTIPROCESS_DIRECTORY, str(directory))
    assert metrics.prepare_directory(workers=2) is None  # the operator's: kept
    assert list(directory.iterdir()) == []

    for name in (f"counter_{dead}.db", f"gauge_livesum_{dead}.db"):
        (directory / name).write_bytes(b"")
    metrics.forget_dead_workers()
    assert [path.name for path in directory.iterdir()] == [f"counter_{dead}.db"]


def test_several_workers_get_a_private_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROCESS_DIRECTORY, raising=False)
    assert metrics.prepare_directory(workers=1) is None
    made = metrics.prepare_directory(workers=2)
    assert made is not None and made.is_dir()
    assert os.environ[metrics.MULTIPROCESS_DIRECTORY] == str(made)
    metrics.release_directory(made)
    assert not made.exists() and metrics.MULTIPROCESS_DIRECTORY not in os.environ


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_sigterm_ends_the_streams_and_each_worker_takes_its_gauges_along(
    tmp_path: Path,
) -> None:
    """A restart (`systemctl restart`: SIGTERM to `todo-api serve`): open streams end at once,
    the server exits cleanly, and the operator's metrics directory, emptied of the previous
    run's files at the start, keeps the counts but no gauge of a process that has gone."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = directory / f"counter_{dead_pid()}.db"
    stale.write_bytes(b"")
    env = {"METRICS_TOKEN": TOKEN, metrics.MULTIPROCESS_DIRECTORY: str(directory)}
    with live_server(tmp_path, workers=2, env=env) as server:
        assert not stale.exists()
        async with httpx.AsyncClient(base_url=server.url) as client:
            user = await sign_up(client)
            async with open_events(client, user) as reader:
                server.process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                assert await reader.ended(within=5)  # the server ends the stream
                assert time.monotonic() - started < 5
        assert await asyncio.to_thread(server.process.wait, 20) == 0
    left = {path.name.split("_")[0] for path in directory.iterdir()}
    assert "counter" in left and "histogram" in left
    assert not any(path.name.startswith("gauge_live") for path in directory.iterdir())
