"""Live updates under load: many open event streams over 2 workers, a steady rate of writes
across their users, and for each bus (PostgreSQL LISTEN/NOTIFY, Redis pub/sub; SQLite's
in-process one with 1 worker): the delay from a change's commit to its delivery on every stream
of its user, the memory an idle stream costs, and the CPU the server uses.

    .venv/bin/python bench/events.py                    # 1,000 streams, 50 writes/s, 30 s each
    .venv/bin/python bench/events.py --streams 200 --duration 5 --buses postgres   # a smoke run

The delay is measured from the task's `created_at` (set by the service just before its insert
commits, same clock) to the moment the client reads the event, so it includes the insert and the
commit: an upper bound. The client runs on the same machine (2 cores here) and takes CPU too.
PostgreSQL: the server at `--pg-url`; the database `todo_bench_events` is dropped and created.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
from servers import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple 42"  # noqa: S105 (the benchmark's users)
DATABASE = "todo_bench_events"
STREAMS_PER_USER = 5


@dataclass
class Measured:
    bus: str
    workers: int
    streams: int
    writes: int = 0
    deliveries: int = 0
    expected: int = 0
    delays_ms: list[float] = field(default_factory=list)
    rss_per_stream_kb: float = 0.0
    idle_cpu_percent: float = 0.0
    load_cpu_percent: float = 0.0

    def row(self) -> str:
        delays = sorted(self.delays_ms) or [float("nan")]

        def pct(p: float) -> float:
            return delays[min(len(delays) - 1, int(p * len(delays)))]

        lost = self.expected - self.deliveries
        return (
            f"| {self.bus} | {self.workers} | {self.streams} | {self.writes} | "
            f"{self.deliveries} ({lost} missing) | {statistics.median(delays):.1f} | "
            f"{pct(0.99):.1f} | {delays[-1]:.1f} | {self.rss_per_stream_kb:.1f} | "
            f"{self.idle_cpu_percent:.1f} | {self.load_cpu_percent:.1f} |"
        )


def rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def signup_users(base_url: str, count: int) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(index: int) -> tuple[str, str]:
            email = f"events-{index}-{os.getpid()}@example.com"
            answer = await client.post(
                "/api/auth/signup", json={"email": email, "password": PASSWORD}
            )
            answer.raise_for_status()
            body = answer.json()
            return body["user"]["id"], body["access_token"]

        users: list[tuple[str, str]] = []
        for start in range(0, count, 8):
            users += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 8))))
        return users


class StreamClient:
    """One raw HTTP/1.1 event stream: counts `data:` lines and records their delay."""

    def __init__(self, measured: Measured) -> None:
        self.measured = measured
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, user_id: str, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer = writer
        writer.write(
            f"GET /api/{user_id}/events HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                now = time.time()
                change = json.loads(line[6:])
                if change.get("op") == "upsert":
                    created = datetime.fromisoformat(change["task"]["created_at"]).timestamp()
                    self.measured.delays_ms.append((now - created) * 1000)
                    self.measured.deliveries += 1

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def drive(
    server: Server, measured: Measured, *, users: int, rate: float, duration: float
) -> None:
    accounts = await signup_users(server.base_url, users)
    pids = server.worker_pids()
    # Warm up every worker's paths before the baseline memory is read.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        for user_id, token in accounts[:20]:
            headers = {"Authorization": f"Bearer {token}"}
            await client.get(f"/api/{user_id}/tasks", headers=headers)
    await asyncio.sleep(2)
    before = rss_kb(pids)
    streams = [StreamClient(measured) for _ in range(measured.streams)]
    for start in range(0, len(streams), 50):
        await asyncio.gather(
            *(
                stream.open(server.port, *accounts[index // STREAMS_PER_USER])
                for index, stream in enumerate(streams[start : start + 50], start)
            )
        )
    await asyncio.sleep(5)
    measured.rss_per_stream_kb = (rss_kb(pids) - before) / measured.streams
    cpu = server.cpu_seconds()
    await asyncio.sleep(10)
    measured.idle_cpu_percent = (server.cpu_seconds() - cpu) / 10 * 100
    served = measured.streams // STREAMS_PER_USER
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=30, limits=httpx.Limits(max_connections=64)
    ) as client:
        cpu, started = server.cpu_seconds(), time.monotonic()
        pending: set[asyncio.Task[httpx.Response]] = set()
        count = int(rate * duration)
        for n in range(count):
            user_id, token = accounts[n % served]
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            task = asyncio.create_task(
                client.post(
                    f"/api/{user_id}/tasks",
                    json={"title": f"bench {n}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
        answers = await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - started
        measured.writes = count
        failed = [a for a in answers if isinstance(a, BaseException) or a.status_code != 201]
        if failed:
            print(f"  {len(failed)} writes failed", file=sys.stderr)
        await asyncio.sleep(3)  # the last deliveries
        measured.load_cpu_percent = (server.cpu_seconds() - cpu) / (elapsed + 3) * 100
    measured.expected = count * STREAMS_PER_USER
    await asyncio.gather(*(stream.close() for stream in streams))


def serve(bus: str, workers: int, database_url: str, workdir: Path, log: Path) -> Server:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "DATABASE_URL": database_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "EVENTS_BUS": bus,
        "SIGNUP_RATE_LIMIT": "100000/minute",
        "TASK_WRITE_RATE_LIMIT": "100000/minute",
        "PASSWORD_HASH_CONCURRENCY": "2",
    }
    if bus == "redis":
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        env["RATE_LIMIT_KEY_PREFIX"] = f"bench-events-{os.getpid()}"
    command = [
        str(ROOT / ".venv/bin/todo-api"), "serve", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return Server(
        f"todo-api ({bus})", command, env=env, cwd=workdir, log_path=log, port=port,
        ready_path="/ready",
    )  # fmt: skip


async def fresh_postgres(server_url: str) -> str:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    return server_url.rsplit("/", 1)[0] + f"/{DATABASE}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50, help="writes per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds of writes per bus")
    parser.add_argument("--buses", default="postgres,redis,local")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    results: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        workdir = Path(tmp)
        for bus in args.buses.split(","):
            if bus == "local":
                workers, url = 1, f"sqlite:///{workdir / 'events.db'}"
            else:
                workers, url = 2, asyncio.run(fresh_postgres(args.pg_url))
            subprocess.run(
                [str(ROOT / ".venv/bin/todo-api"), "migrate"],
                env={**os.environ, "DATABASE_URL": url},
                check=True,
            )
            measured = Measured(bus, workers, args.streams)
            print(f"{bus}: {args.streams} streams, {args.rate:g} writes/s", file=sys.stderr)
            with serve(bus, workers, url, workdir, workdir / f"{bus}.log") as server:
                server.start()
                users = -(-args.streams // STREAMS_PER_USER)
                asyncio.run(
                    drive(server, measured, users=users, rate=args.rate, duration=args.duration)
                )
            results.append(measured)
            print(measured.row(), file=sys.stderr)
    print(
        "| bus | workers | streams | writes | deliveries | p50 ms | p99 ms | max ms "
        "| KB per idle stream | idle CPU % | CPU % under writes |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for measured in results:
        print(measured.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
