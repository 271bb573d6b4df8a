"""The memory soak (issue 24): is each worker's memory flat under a long mixed load?

    .venv/bin/python bench/soak.py                 # PostgreSQL, 2 workers, 10 minutes
    .venv/bin/python bench/soak.py --minutes 1     # a quick check (20 s warm-up)
    .venv/bin/python bench/soak.py --only sqlite   # the SQLite default instead

It seeds the benchmark's data (bench/run.py's Workbench: 100 users with 100 tasks each, one with
10,000), serves it with `todo-api serve --workers 2`, and drives the `mixed` route of
requests.lua with wrk for `--minutes`, in consecutive runs of `--interval` seconds (one wrk
thread, `--connections`): every user in turn lists (filters, search, sorts, tags, views,
pages), reads, syncs (the changes feed), creates, patches, replaces, toggles, deletes, restores
and purges, about two reads for every write, with no 404 or 409 by design. Meanwhile this
process keeps `--streams` live event streams open (GET /api/{user}/events, read and discarded,
reopened if they end) and every `--churn-every` seconds opens `--churn` more on other users and
drops them after 1 to 3 seconds, so that the stream path, and its clean-up on disconnect, is
soaked too.

After each wrk run it samples every uvicorn worker's RSS, PSS and USS (/proc/PID/status and
/proc/PID/smaps_rollup) with the run's requests/s, errors and latency. The report gives per
worker the RSS at the end of the warm-up and at the end, the growth, the least-squares slope of
the samples after the warm-up and the peak (VmHWM), and a verdict by the rule below; it is
printed and written as JSON and Markdown to bench/out/soak-<time>.*. Only 127.0.0.1 is used; the
run stops by itself (a watchdog ends it `--minutes` + 10 minutes after the start at the latest),
and the servers are always stopped and the databases dropped, also on Ctrl-C or SIGTERM.

The rule (PASS): for every worker, after the warm-up, RSS grows by at most 10 MB and at most 5 %
(last sample against the first after the warm-up), and the slope over those samples, times
their time span, is at most 10 MB too (a trend, not one noisy end point); the same worker
processes throughout (a worker restarted would hide a leak); and no request errors.
"""

import argparse
import asyncio
import contextlib
import shlex
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx
import orjson
from loadgen import Load, WrkFailed, WrkMissing, WrkResult, find_wrk, run_load, wrk_version
from report import describe_machine, git_revision
from run import DEFAULT_PG_URL, ROOT, Workbench, _overrides, pg, work_directory
from seed import DEEP_TASKS
from servers import Server, ServerFailed

BENCH = Path(__file__).resolve().parent
SOAK_DATABASE = "todo_bench_soak"
MAX_GROWTH_MB = 10.0
MAX_GROWTH_PERCENT = 5.0
WATCHDOG_EXTRA_S = 600  # the whole run ends at the latest this long after the load should have
MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Memory of a process ------------------------------------------------------------------------


def _kib_fields(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in names:
                found[name] = int(value.split()[0])
    return found


def memory_of(pid: int) -> dict[str, float] | None:
    """RSS, peak RSS (VmHWM), PSS and USS (private clean + dirty) of a process, in MB; None when
    it is gone."""
    status = _kib_fields(Path(f"/proc/{pid}/status"), ("VmRSS", "VmHWM"))
    if "VmRSS" not in status:
        return None
    rollup = _kib_fields(
        Path(f"/proc/{pid}/smaps_rollup"), ("Pss", "Private_Clean", "Private_Dirty")
    )
    memory = {"rss": status["VmRSS"] / 1024, "hwm": status.get("VmHWM", 0) / 1024}
    if "Pss" in rollup:
        memory["pss"] = rollup["Pss"] / 1024
        memory["uss"] = (rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)) / 1024
    return memory


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return None
    times = [t for t, _ in points]
    mean_t = statistics.fmean(times)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60


# --- Event streams ------------------------------------------------------------------------------


@dataclass
class StreamStats:
    opened: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # status or exception name
    ended_by_server: int = 0
    dropped_by_client: int = 0
    change_events: int = 0
    bytes: int = 0
    open_now: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "refused": dict(self.refused),
            "ended_by_server": self.ended_by_server,
            "dropped_by_client": self.dropped_by_client,
            "change_events": self.change_events,
            "bytes": self.bytes,
            "open_now": self.open_now,
        }


class Streams:
    """Live event streams held open by this process: `steady` ones (reopened when they end) and
    short-lived ones opened and dropped in turn on other users."""

    def __init__(self, base_url: str, accounts: list[tuple[str, str]], steady: int) -> None:
        self.base_url = base_url
        self.accounts = accounts
        self.steady = min(steady, len(accounts))
        self.stats = StreamStats()
        self._next_churn = self.steady
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(10, read=60),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    async def _hold(self, user_id: str, token: str, seconds: float | None) -> bool:
        """One stream, read and discarded until it ends or `seconds` pass; whether it opened."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        opened = False
        try:
            async with (
                asyncio.timeout(seconds),
                self._client.stream("GET", f"/api/{user_id}/events", headers=headers) as answer,
            ):
                if answer.status_code != 200:
                    self.stats.refused[str(answer.status_code)] += 1
                    return False
                opened = True
                self.stats.opened += 1
                self.stats.open_now += 1
                async for chunk in answer.aiter_raw():
                    self.stats.bytes += len(chunk)
                    self.stats.change_events += chunk.count(b"event: change")
            self.stats.ended_by_server += 1
        except TimeoutError:
            if opened:
                self.stats.dropped_by_client += 1
            else:
                self.stats.refused["timeout"] += 1
        except httpx.HTTPError as exc:
            self.stats.refused[type(exc).__name__] += 1
        finally:
            if opened:
                self.stats.open_now -= 1
        return opened

    async def _steady(self, user_id: str, token: str) -> None:
        while True:
            if not await self._hold(user_id, token, None):
                await asyncio.sleep(1)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        for user_id, token in self.accounts[: self.steady]:
            self._spawn(self._steady(user_id, token))

    def churn(self, count: int) -> None:
        """Open `count` streams on the next users, each dropped after 1 to 3 seconds."""
        others = len(self.accounts) - self.steady
        if others <= 0:
            return
        for n in range(count):
            index = self.steady + (self._next_churn - self.steady) % others
            self._next_churn += 1
            self._spawn(self._hold(*self.accounts[index], 1.0 + (n % 5) / 2))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


# --- The soak -----------------------------------------------------------------------------------


@dataclass
class Sample:
    at_s: float  # seconds since the load began
    workers: dict[int, dict[str, float] | None]
    supervisor_rss: float | None
    load: WrkResult | None
    streams: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        load = None
        if self.load is not None:
            load = {
                "requests": self.load.requests,
                "requests_per_second": round(self.load.requests_per_second, 1),
                "errors": self.load.errors,
                "p50_ms": round(self.load.ms("p50"), 2),
                "p99_ms": round(self.load.ms("p99"), 2),
                "statuses": dict(sorted(self.load.statuses.items())),
                "socket_errors": self.load.socket_errors,
            }
        return {
            "at_s": round(self.at_s, 1),
            "workers": {
                str(pid): None if memory is None else {k: round(v, 2) for k, v in memory.items()}
                for pid, memory in self.workers.items()
            },
            "supervisor_rss_mb": None
            if self.supervisor_rss is None
            else round(self.supervisor_rss, 2),
            "load": load,
            "streams": self.streams,
        }


@dataclass
class Plan:
    minutes: float
    warmup_s: float
    interval_s: float
    connections: int
    streams: int
    churn: int
    churn_every_s: float


def sample(server: Server, pids: list[int], at_s: float, load: WrkResult | None) -> Sample:
    supervisor = memory_of(server.pid)
    return Sample(
        at_s=at_s,
        workers={pid: memory_of(pid) for pid in pids},
        supervisor_rss=None if supervisor is None else supervisor["rss"],
        load=load,
        streams={},
    )


async def soak(
    plan: Plan, server: Server, wrk: str, data_file: Path, accounts: list[tuple[str, str]]
) -> tuple[list[int], list[Sample]]:
    pids = server.worker_pids()
    log(f"workers: {', '.join(map(str, pids))}")
    streams = Streams(server.base_url, accounts, plan.streams)
    samples = [sample(server, pids, 0.0, None)]
    streams.start()
    started = time.monotonic()
    total_s = plan.minutes * 60

    async def churn() -> None:
        while True:
            await asyncio.sleep(plan.churn_every_s)
            streams.churn(plan.churn)

    churner = asyncio.create_task(churn())
    try:
        while (elapsed := time.monotonic() - started) < total_s - 0.5:
            seconds = max(1.0, min(plan.interval_s, round(total_s - elapsed)))
            load = Load("mixed", plan.connections, 1, seconds)
            result = await asyncio.to_thread(run_load, wrk, load, server.base_url, data_file)
            point = sample(server, pids, time.monotonic() - started, result)
            point.streams = streams.stats.as_json()
            samples.append(point)
            workers = "  ".join(
                f"{pid}: {memory['rss']:.1f} MB" if memory else f"{pid}: gone"
                for pid, memory in point.workers.items()
            )
            log(
                f"{point.at_s:6.0f} s  {result.requests_per_second:7.0f} req/s  "
                f"errors {result.errors}  p99 {result.ms('p99'):6.1f} ms  RSS {workers}  "
                f"streams open {streams.stats.open_now}, opened {streams.stats.opened}"
            )
    finally:
        churner.cancel()
        await asyncio.gather(churner, return_exceptions=True)
        await streams.close()
    now = server.worker_pids()
    if sorted(now) != sorted(pids):
        log(f"WARNING: the workers changed during the soak: {pids} -> {now}")
    return now, samples


# --- The report ---------------------------------------------------------------------------------


def summarize(plan: Plan, samples: list[Sample], final_pids: list[int]) -> dict[str, Any]:
    pids = list(samples[0].workers)
    warm = next((s for s in samples if s.at_s >= plan.warmup_s), samples[-1])
    after = [s for s in samples if s.at_s >= warm.at_s]
    workers: dict[str, Any] = {}
    passed = True
    for pid in pids:
        points = [(s.at_s, m["rss"]) for s in after if (m := s.workers.get(pid)) is not None]
        start, end = warm.workers.get(pid), samples[-1].workers.get(pid)
        if start is None or end is None or len(points) < 2:
            workers[str(pid)] = {"verdict": "FAIL", "why": "the worker was gone"}
            passed = False
            continue
        growth = end["rss"] - start["rss"]
        percent = growth / start["rss"] * 100
        slope = slope_per_minute(points) or 0.0
        span_min = (points[-1][0] - points[0][0]) / 60
        trend = slope * span_min
        ok = growth <= MAX_GROWTH_MB and percent <= MAX_GROWTH_PERCENT and trend <= MAX_GROWTH_MB
        passed = passed and ok
        first = samples[0].workers.get(pid)
        workers[str(pid)] = {
            "rss_start_mb": None if first is None else round(first["rss"], 1),
            "rss_warm_mb": round(start["rss"], 1),
            "rss_end_mb": round(end["rss"], 1),
            "growth_mb": round(growth, 2),
            "growth_percent": round(percent, 2),
            "slope_mb_per_min": round(slope, 3),
            "trend_mb": round(trend, 2),
            "peak_rss_mb": round(max(end["hwm"], max(v for _, v in points)), 1),
            "pss_warm_mb": round(start.get("pss", 0.0), 1),
            "pss_end_mb": round(end.get("pss", 0.0), 1),
            "uss_warm_mb": round(start.get("uss", 0.0), 1),
            "uss_end_mb": round(end.get("uss", 0.0), 1),
            "verdict": "PASS" if ok else "FAIL",
        }
    loads = [s.load for s in samples if s.load is not None]
    requests = sum(load.requests for load in loads)
    seconds = sum(load.duration_s for load in loads)
    errors = sum(load.errors for load in loads)
    statuses: Counter[str] = Counter()
    for load in loads:
        statuses.update(load.statuses)
    same_workers = sorted(final_pids) == sorted(pids)
    verdict = passed and same_workers and errors == 0
    return {
        "warm_at_s": round(warm.at_s, 1),
        "end_at_s": round(samples[-1].at_s, 1),
        "workers": workers,
        "same_workers": same_workers,
        "requests": requests,
        "requests_per_second": round(requests / seconds, 1) if seconds else 0.0,
        "errors": errors,
        "statuses": dict(sorted(statuses.items())),
        "p99_ms_worst_interval": round(max((load.ms("p99") for load in loads), default=0.0), 1),
        "streams": samples[-1].streams,
        "verdict": "PASS" if verdict else "FAIL",
    }


def _rule() -> str:
    return (
        f"The rule: PASS when, for every worker, RSS after the warm-up grows by at most "
        f"{MAX_GROWTH_MB:g} MB and at most {MAX_GROWTH_PERCENT:g} % (last sample against the "
        f"first after the warm-up), the least-squares slope of those samples times their span "
        f"is at most {MAX_GROWTH_MB:g} MB, the worker processes are the same throughout, and "
        f"no request failed."
    )


def markdown(report: dict[str, Any]) -> str:
    summary, machine, settings = report["summary"], report["machine"], report["settings"]
    lines = [
        f"# Memory soak: {settings['database']}, {settings['workers']} workers, "
        f"{settings['minutes']:g} minute{'' if settings['minutes'] == 1 else 's'}",
        "",
        f"`{report['command']}`, {report['started_at']}, revision {report['revision']}.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory']}, "
        f"{machine['os']}, kernel {machine['kernel']}, Python {machine['python']}, PostgreSQL "
        f"{machine['postgresql']}, {machine['wrk']}; load average at start "
        f"{machine['load_average_at_start']}.",
        "",
        f"Load: wrk `mixed` (1 thread, {settings['connections']} connections) in "
        f"{settings['interval_s']:g}-s runs; {settings['streams']} steady event streams, "
        f"{settings['churn']} more opened and dropped every {settings['churn_every_s']:g} s. "
        f"Warm-up: {settings['warmup_s']:g} s (first sample at or after it: "
        f"{summary['warm_at_s']:g} s).",
        "",
        f"Requests: {summary['requests']:,} ({summary['requests_per_second']:,.0f} req/s), "
        f"errors {summary['errors']}, statuses {summary['statuses']}, worst interval p99 "
        f"{summary['p99_ms_worst_interval']} ms. Streams: {summary['streams']}.",
        "",
        "| worker | RSS at start MB | RSS after warm-up MB | RSS at end MB | growth MB | "
        "growth % | slope MB/min | peak RSS MB | PSS warm → end MB | USS warm → end MB | "
        "verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for pid, worker in summary["workers"].items():
        if "rss_warm_mb" not in worker:
            lines.append(f"| {pid} | | | | | | | | | | FAIL ({worker['why']}) |")
            continue
        lines.append(
            f"| {pid} | {worker['rss_start_mb']} | {worker['rss_warm_mb']} | "
            f"{worker['rss_end_mb']} | {worker['growth_mb']:+.1f} | "
            f"{worker['growth_percent']:+.1f} | {worker['slope_mb_per_min']:+.3f} | "
            f"{worker['peak_rss_mb']} | {worker['pss_warm_mb']} → {worker['pss_end_mb']} | "
            f"{worker['uss_warm_mb']} → {worker['uss_end_mb']} | {worker['verdict']} |"
        )
    lines += [
        "",
        f"**{summary['verdict']}**. {_rule()}"
        + ("" if summary["same_workers"] else " (the worker processes changed)"),
        "",
        "RSS per worker over time (MB), with the interval's load:",
        "",
    ]
    pids = list(summary["workers"])
    lines.append(
        "| time | "
        + " | ".join(f"worker {n + 1} RSS" for n in range(len(pids)))
        + " | req/s | errors | p99 ms | streams open |"
    )
    lines.append("|---:|" + "---:|" * len(pids) + "---:|---:|---:|---:|")
    for point in report["samples"]:
        rss = []
        for pid in pids:
            memory = point["workers"].get(pid)
            rss.append("gone" if memory is None else f"{memory['rss']:.1f}")
        load = point["load"] or {}
        lines.append(
            f"| {point['at_s'] / 60:.1f} min | "
            + " | ".join(rss)
            + f" | {load.get('requests_per_second', '-')} | {load.get('errors', '-')} | "
            f"{load.get('p99_ms', '-')} | {point['streams'].get('open_now', '-')} |"
        )
    return "\n".join(lines) + "\n"


# --- The command --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="the load's length (10)")
    parser.add_argument(
        "--warmup",
        type=float,
        help="warm-up minutes, not judged (default 2; a third of --minutes below 6)",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds a sample (10)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--streams", type=int, default=8, help="steady event streams (8)")
    parser.add_argument("--churn", type=int, default=4, help="streams opened and dropped (4)")
    parser.add_argument("--churn-every", type=float, default=5.0, help="seconds (5)")
    parser.add_argument("--only", choices=("pg", "sqlite"), default="pg", help="the database")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--deep-tasks", type=int, default=DEEP_TASKS)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument("--output", type=Path, help="default bench/out/soak-<time>.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.interval < 1 or args.workers < 1:
        raise SystemExit("bench: --minutes > 0, --interval >= 1 and --workers >= 1, please")
    warmup_min = args.warmup
    if warmup_min is None:
        warmup_min = 2.0 if args.minutes >= 6 else args.minutes / 3
    plan = Plan(
        minutes=args.minutes,
        warmup_s=warmup_min * 60,
        interval_s=args.interval,
        connections=args.connections,
        streams=args.streams,
        churn=args.churn,
        churn_every_s=args.churn_every,
    )
    try:
        wrk = find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)  # the watchdog
    signal.alarm(int(args.minutes * 60) + WATCHDOG_EXTRA_S)
    started_at = datetime.now().astimezone()
    output: Path = args.output or BENCH / "out" / f"soak-{started_at:%Y%m%d-%H%M%S}.json"
    command = shlex.join(["python", "bench/soak.py", *(sys.argv[1:] if argv is None else argv)])
    postgres = args.only == "pg"
    overrides = _overrides(args.service_env)

    with work_directory(args.keep) as workdir:
        bench = Workbench(
            workdir=workdir,
            pg_url=args.pg_url,
            users=args.users,
            tasks=args.tasks,
            deep_tasks=args.deep_tasks,
        )
        bench.service_overrides = overrides
        postgres_version = None
        try:
            if postgres:
                postgres_version = bench.postgres_version()
            bench.prepare_data()
            assert bench.dataset is not None
            accounts = [(user.id, bench.tokens[user.id]) for user in bench.dataset.users]
            if postgres:
                bench.prepare_postgres()
                url = bench.reset_postgres(SOAK_DATABASE)
            else:
                bench.prepare_sqlite()
                url = bench.reset_sqlite()
            with bench.service(url, args.workers, f"soak-{args.only}") as server:
                server.start()
                log(f"serving on {server.base_url}; {plan.minutes:g} minutes of mixed load")
                final_pids, samples = asyncio.run(
                    soak(plan, server, wrk, bench.data_file, accounts)
                )
        except (ServerFailed, WrkFailed, asyncpg.PostgresError, OSError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            logs = output.with_name(output.stem + "-logs")
            shutil.copytree(workdir, logs, ignore=shutil.ignore_patterns("*.db*", "*.lua"))
            print(f"bench: the server's log is in {logs}", file=sys.stderr)
            return 1
        finally:
            signal.alarm(0)
            if postgres and not args.keep:
                with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                    bench.drop_postgres()
                    pg(bench.pg_url, f'DROP DATABASE IF EXISTS "{SOAK_DATABASE}" WITH (FORCE)')

    report: dict[str, Any] = {
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "revision": git_revision(ROOT),
        "machine": describe_machine(
            postgres_version=postgres_version, wrk_version=wrk_version(wrk)
        ),
        "settings": {
            "database": "PostgreSQL" if postgres else "SQLite",
            "workers": args.workers,
            "minutes": plan.minutes,
            "warmup_s": plan.warmup_s,
            "interval_s": plan.interval_s,
            "connections": plan.connections,
            "streams": plan.streams,
            "churn": plan.churn,
            "churn_every_s": plan.churn_every_s,
            "users": args.users,
            "tasks": args.tasks,
            "deep_tasks": args.deep_tasks,
            "service_env": overrides,
        },
        "rule": _rule(),
        "summary": summarize(plan, samples, final_pids),
        "samples": [point.as_json() for point in samples],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    text = markdown(report)
    output.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    log(f"wrote {output} and {output.with_suffix('.md')}")
    return 0 if report["summary"]["verdict"] == "PASS" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; the servers are stopped", file=sys.stderr)
        sys.exit(130)
