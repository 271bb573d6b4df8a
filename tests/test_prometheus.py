"""A real Prometheus scrapes a real two-worker server (`todo-api serve --workers 2`), and what it
stored, read back through its HTTP API, is what was sent: every worker's requests summed."""

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import sign_up
from tests.helpers import open_events
from tests.live import LiveServer, free_port, live_server
from tests.programs import require_program, stop, wait_until

TOKEN = "scrape-me-0123456789abcdef"
TASKS = {"route": "/api/{user_id}/tasks", "method": "GET", "status": "200"}


@contextmanager
def prometheus(workdir: Path, *, target: str) -> Iterator[str]:
    """Prometheus scraping `target`'s /metrics every second with the metrics token, storing in
    `workdir`, on a free port; stopped at the end."""
    binary = require_program("prometheus")
    config = workdir / "prometheus.yml"
    # JSON is YAML: no YAML library needed to write it.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "todo-api",
                        "metrics_path": "/metrics",
                        "authorization": {"type": "Bearer", "credentials": TOKEN},
                        "static_configs": [{"targets": [target.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{free_port()}"
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool | None:
            if process.poll() is not None:
                raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200 or None
            except httpx.TransportError:
                return None

        wait_until("Prometheus ready", ready)
        yield url
    finally:
        stop(process)
        log.close()


def query(prometheus_url: str, promql: str) -> float | None:
    """The value of a PromQL expression that has one, or None while it has none."""
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def becomes(prometheus_url: str, promql: str, expected: float) -> None:
    """`promql` reaches `expected` in Prometheus within the wait (a scrape or two)."""
    seen: list[float | None] = []

    def probe() -> bool | None:
        seen.append(query(prometheus_url, promql))
        return True if seen[-1] == expected else None

    wait_until(f"{promql} == {expected} (last seen: {seen[-1:] or None})", probe)


def pids_serving(server: LiveServer, route: str) -> set[int]:
    return {
        line["pid"]
        for line in map(json.loads, (text for text in server.log_lines() if text.startswith("{")))
        if line.get("logger") == "backend.access" and line.get("route") == route
    }


def metrics_directories(tmp: Path) -> list[Path]:
    return list(tmp.glob("todo-api-metrics-*"))


def writers_in(directory: Path) -> set[str]:
    """The processes that wrote request histograms there (by the pid in the file names)."""
    return {path.stem.rpartition("_")[2] for path in directory.glob("histogram_*.db")}


def selector(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{value}"' for name, value in labels.items()) + "}"


async def test_prometheus_reads_every_workers_requests_summed(tmp_path: Path) -> None:
    env = {"METRICS_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    with (
        live_server(tmp_path, workers=2, env=env) as server,
        prometheus(tmp_path, target=server.url) as prometheus_url,
    ):
        # A connection per request, so that the kernel hands them to both workers.
        async with httpx.AsyncClient(base_url=server.url, headers={"Connection": "close"}) as c:
            user = await sign_up(c)
            sent = 0
            while sent < 20 or len(pids_serving(server, TASKS["route"])) < 2:
                assert sent < 400, "one worker took every connection"
                response = await c.get(user.tasks_url, headers=user.headers)
                assert response.status_code == 200
                sent += 1
            for _ in range(2):
                wrong = {"email": user.email, "password": "not-the-password-at-all"}
                assert (await c.post("/api/auth/login", json=wrong)).status_code == 401

            count = "sum(todo_http_request_duration_seconds_count" + selector(**TASKS) + ")"
            becomes(prometheus_url, count, sent)
            becomes(prometheus_url, 'sum(todo_logins_total{outcome="failed"})', 2)
            signups = selector(route="/api/auth/signup", status="201")
            becomes(prometheus_url, f"sum(todo_http_request_duration_seconds_count{signups})", 1)
            # Each worker's samples are its own series; the sum is the service's.
            assert query(prometheus_url, 'count(up{job="todo-api"} == 1)') == 1

            # A live gauge: the stream is counted while it is open, summed over the workers.
            async with open_events(c, user):
                becomes(prometheus_url, "sum(todo_event_streams_open)", 1)
            becomes(prometheus_url, "sum(todo_event_streams_open)", 0)
        becomes(prometheus_url, "sum(todo_db_pool_connections_in_use)", 0)
        # `serve` gave its two workers a directory of their own, each writing its files there.
        (shared,) = metrics_directories(tmp_path)
        assert len(writers_in(shared)) == 2
    assert not metrics_directories(tmp_path), "not removed when the server stopped"
