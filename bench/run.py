"""The Todo API's load benchmark (issue 8), in one command.

    .venv/bin/python bench/run.py            # everything, about 12 minutes
    .venv/bin/python bench/run.py --quick    # a smoke run, under 2 minutes

It seeds 100 users (real accounts, one shared Argon2id hash) and 10,000 tasks, starts the service
with `todo-api serve` on PostgreSQL (a database of its own, dropped and recreated each run) and
on the SQLite default, with 1 and 2 workers, and drives each route with wrk at 64 connections
on 127.0.0.1. On PostgreSQL it also runs the floor (bench/floor.py: Starlette + asyncpg + orjson
doing the same work per request) with the same worker count, each route on the floor just before
the same route on the service, so that the report gives the service's throughput (and its CPU
per request) as a ratio to the floor's. A login flood (login on 32 connections next to list on
32) shows whether password hashing starves the task routes.

Each configuration starts from the same freshly seeded data. The report (a Markdown table per
configuration and the acceptance checks of the issue) is printed and written, with the JSON,
to bench/out/. Server processes are always stopped at the end, also on Ctrl-C or an error.

    .venv/bin/python bench/run.py --compare HEAD~1 --only pg --workers 2 --routes list,get

compares two backends in one run instead: REV's backend/ ("before") and the working tree's
("after"), on the same seeded data with the same settings, each route on one, then on the
other, for --rounds rounds; one server at a time, started for each run on a fresh copy of the
data. The report gives each side's median figures and the ratio after/before. No floor.

    .venv/bin/python bench/run.py --pgbouncer --only pg --workers 1 --routes list,get,create

compares the same way the working tree's service on PostgreSQL directly ("before") and through
PgBouncer in transaction mode with DB_POOLER=pgbouncer ("after"): Debian's PgBouncer, started
for the run as the tests start theirs (tests/pgbouncer.py), with as many server connections as
the service's pool has.
"""

import argparse
import asyncio
import contextlib
import io
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import orjson
from loadgen import (
    ROUTES,
    Load,
    RunningLoad,
    WrkFailed,
    WrkMissing,
    WrkResult,
    find_wrk,
    run_load,
    wrk_version,
)
from report import (
    FLOOR_ROUTES,
    Comparison,
    Configuration,
    Report,
    describe_machine,
    git_revision,
    write_report,
)
from seed import (
    DEEP_TASKS,
    TOKEN_LIFETIME_SECONDS,
    Dataset,
    generate,
    hash_password,
    mint_tokens,
    public_key_pem,
    seed_postgres,
    seed_sqlite,
    write_lua_data,
)
from servers import Server, ServerFailed, free_port, http_get, process_cpu_seconds

from backend.auth.keys import generate_private_key_pem
from backend.config import Settings

# --pgbouncer starts the tests' private PgBouncer.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.pgbouncer import PgBouncer, pgbouncer_binary, running_pgbouncer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_DATABASE = "todo_bench_seed"
BENCH_DATABASE = "todo_bench"
FLOOR_DATABASE = "todo_bench_floor"
UNLIMITED_RATE = "1000000/second"
# Limits the service may enforce: set out of reach, so that throughput is measured, not limits.
UNLIMITED = {
    "LOGIN_RATE_LIMIT": UNLIMITED_RATE,
    "SIGNUP_RATE_LIMIT": UNLIMITED_RATE,
    "TASK_WRITE_RATE_LIMIT": UNLIMITED_RATE,
    "LOGIN_LOCKOUT": UNLIMITED_RATE,
    "MAX_TASKS_PER_USER": "1000000000",
    # The run's tokens are minted to outlive it; the service refuses ours that outlive this.
    "ACCESS_TOKEN_EXPIRE_MINUTES": str(TOKEN_LIFETIME_SECONDS // 60),
}
# The read routes run first, then the flood (on unchanged data), then the writes.
READ_ROUTES = ("list", "list_filtered", "changes", "cursor_deep", "offset_deep")
FLOOD = "flood"  # --compare: the login flood's place among the routes


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}"
            )
        return items

    return parse


def _workers(value: str) -> list[int]:
    try:
        counts = [int(item) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected worker counts such as 1,2") from exc
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("expected worker counts such as 1,2")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Load benchmark of the Todo API against its floor (see bench/RESULTS.md).",
    )
    parser.add_argument("--duration", type=float, help="seconds per route (default 10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--only", choices=("pg", "sqlite"), help="one database only (default: both)"
    )
    parser.add_argument(
        "--workers", type=_workers, help="worker counts, e.g. 1,2 (default 1,2; --quick: 1)"
    )
    parser.add_argument(
        "--routes", type=_csv(ROUTES), default=list(ROUTES), help=f"default {','.join(ROUTES)}"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor app")
    parser.add_argument("--no-flood", action="store_true", help="skip the login flood")
    parser.add_argument(
        "--flood-connections", type=int, default=32, help="connections for each side (32)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 s per route, no warm-up, 1 worker"
    )
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument(
        "--deep-tasks",
        type=int,
        default=DEEP_TASKS,
        help=f"tasks of the one user of the deep reads (changes, cursor_deep, offset_deep; "
        f"default {DEEP_TASKS:,})",
    )
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help=f"a PostgreSQL database to administer from ({DEFAULT_PG_URL}); the benchmark "
        f"creates {BENCH_DATABASE}, {FLOOR_DATABASE} and {SEED_DATABASE} beside it",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the service (repeatable), e.g. LOG_LEVEL=WARNING",
    )
    parser.add_argument(
        "--output", type=Path, help="the JSON report (default bench/out/<time>.json)"
    )
    revisions = parser.add_mutually_exclusive_group()
    revisions.add_argument(
        "--revision",
        help="serve this commit's backend/ (exported with git archive) instead of the working "
        "tree, e.g. HEAD or a commit from before an optimisation",
    )
    revisions.add_argument(
        "--compare",
        metavar="REV",
        help="serve REV's backend/ (before) and the working tree's (after) in turn, route by "
        "route, and report after/before (no floor)",
    )
    revisions.add_argument(
        "--pgbouncer",
        action="store_true",
        help="serve the working tree's backend on PostgreSQL directly (before) and through "
        "PgBouncer in transaction mode (after) in turn, route by route (PostgreSQL only)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="with --compare or --pgbouncer: runs of each route on each side, alternated "
        "(default 2); the report gives the median",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs) and the databases"
    )
    return parser


@dataclass(frozen=True, slots=True)
class Plan:
    duration_s: float
    warmup_s: float
    pause_s: float
    connections: int
    threads: int
    flood_connections: int
    routes: list[str]
    workers: list[int]
    postgres: bool
    sqlite: bool
    floor: bool
    flood: bool
    rounds: int  # --compare: runs of each route on each side

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Plan":
        return cls(
            duration_s=args.duration or (2.0 if args.quick else 10.0),
            warmup_s=args.warmup if args.warmup is not None else (0.0 if args.quick else 2.0),
            pause_s=0.5 if args.quick else 1.0,
            connections=args.connections,
            threads=args.threads,
            flood_connections=args.flood_connections,
            routes=[route for route in ROUTES if route in args.routes],
            workers=args.workers or ([1] if args.quick else [1, 2]),
            postgres=args.only in (None, "pg"),
            sqlite=args.only in (None, "sqlite") and not args.pgbouncer,
            floor=not args.no_floor and not args.compare and not args.pgbouncer,
            flood=not args.no_flood and "list" in args.routes,
            rounds=args.rounds or 2,
        )


def asyncpg_dsn(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


def database_dsn(server_url: str, database: str) -> str:
    return f"{asyncpg_dsn(server_url).rsplit('/', 1)[0]}/{database}"


async def _pg(dsn: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return [await connection.fetchval(statement) for statement in statements]
    finally:
        await connection.close()


def pg(dsn: str, *statements: str) -> list[Any]:
    return asyncio.run(_pg(dsn, *statements))


async def _pg_value(dsn: str, query: str, *args: object) -> Any:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


def pg_value(dsn: str, query: str, *args: object) -> Any:
    return asyncio.run(_pg_value(dsn, query, *args))


class Workbench:
    """Data, databases and servers of one benchmark run, all under one work directory."""

    def __init__(
        self, *, workdir: Path, pg_url: str, users: int, tasks: int, deep_tasks: int = DEEP_TASKS
    ) -> None:
        self.workdir = workdir
        self.pg_url = asyncpg_dsn(pg_url)
        self.private_key = generate_private_key_pem()
        self.data_file = workdir / "data.lua"
        self.sqlite_template = workdir / "template.db"
        self.users = users
        self.tasks = tasks
        self.deep_tasks = deep_tasks
        self.service_overrides: dict[str, str] = {}
        self.app_root: Path | None = None  # an exported backend/ to serve instead of ours
        self.dataset: Dataset | None = None
        self.tokens: dict[str, str] = {}
        self._counter = 0

    def export_revision(self, revision: str) -> str:
        """Export `revision`'s backend/ into the work directory, to be served from there; its
        short commit id."""
        commit, root = self.export_backend(revision)
        self.app_root = root
        return commit

    def export_backend(self, revision: str) -> tuple[str, Path]:
        """Export `revision`'s backend/ into the work directory: its short commit id, and the
        directory that holds the exported backend/ (to put on a server's PYTHONPATH)."""
        commit = subprocess.run(
            ["git", "rev-parse", "--short", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        root = self.workdir / f"app-{commit}"
        root.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "backend"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
        self.check_backend(root)
        return commit, root

    def check_backend(self, app_root: Path) -> None:
        """Make sure that a server given `app_root` imports its backend package from there,
        not from the editable install (which maps `backend` to some checkout's backend/)."""
        found = subprocess.run(
            [sys.executable, "-c", "import backend; print(backend.__file__)"],
            env=self._env("sqlite://", app_root),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        expected = app_root / "backend" / "__init__.py"
        if Path(found).resolve() != expected.resolve():
            raise SystemExit(
                f"bench: a server given {app_root} would import backend from {found}, "
                f"not {expected}"
            )

    def todo_api(self) -> str:
        path = Path(sys.executable).parent / "todo-api"
        if not path.exists():
            raise SystemExit(
                f"bench: {path} is missing; run bench/run.py with the project's virtualenv "
                "(.venv/bin/python bench/run.py) after ./dev has installed it"
            )
        return str(path)

    def prepare_data(self) -> Dataset:
        started = time.perf_counter()
        dataset = generate(
            users=self.users,
            tasks=self.tasks,
            deep_tasks=self.deep_tasks,
            password_hash=hash_password(),
        )
        tokens = mint_tokens(self.private_key, [user.id for user in dataset.everyone])
        write_lua_data(self.data_file, dataset, tokens)
        self.tokens = tokens
        self.dataset = dataset
        log(
            f"generated {len(dataset.everyone)} users and {dataset.task_count} tasks "
            f"in {time.perf_counter() - started:.1f} s"
        )
        return dataset

    def _env(self, database_url: str, app_root: Path | None = None) -> dict[str, str]:
        """The environment of a server (or `todo-api migrate`): it serves the backend/ in
        `app_root`, by default the exported revision's, or else the installed package."""
        inherited = {
            name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ
        }
        app_root = app_root or self.app_root
        if app_root is not None:
            # Ahead of the installed (editable) package on the import path.
            inherited["PYTHONPATH"] = str(app_root)
        return {
            **inherited,
            "ENVIRONMENT": "development",
            "DATABASE_URL": database_url,
            "JWT_PRIVATE_KEY": self.private_key,
            **UNLIMITED,
            **self.service_overrides,
        }

    def _migrate(self, database_url: str) -> None:
        subprocess.run(
            [self.todo_api(), "migrate"],
            env=self._env(database_url),
            cwd=self.workdir,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # --- PostgreSQL ---------------------------------------------------------------------------

    def postgres_version(self) -> str:
        (version,) = pg(self.pg_url, "SHOW server_version")
        return str(version)

    def prepare_postgres(self) -> None:
        """Drop and recreate the seed database, migrate it with `todo-api migrate`, COPY the data
        in. Each configuration then gets a copy of it (CREATE DATABASE ... TEMPLATE)."""
        assert self.dataset is not None
        started = time.perf_counter()
        self.drop_postgres()
        pg(self.pg_url, f'CREATE DATABASE "{SEED_DATABASE}"')
        self._migrate(database_dsn(self.pg_url, SEED_DATABASE))
        asyncio.run(seed_postgres(database_dsn(self.pg_url, SEED_DATABASE), self.dataset))
        log(f"seeded PostgreSQL in {time.perf_counter() - started:.1f} s")

    def reset_postgres(self, database: str = BENCH_DATABASE) -> str:
        """A fresh copy of the seeded database; its URL."""
        pg(
            self.pg_url,
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            f'CREATE DATABASE "{database}" TEMPLATE "{SEED_DATABASE}"',
        )
        return database_dsn(self.pg_url, database)

    def drop_postgres(self) -> None:
        pg(
            self.pg_url,
            *(
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
                for database in (BENCH_DATABASE, FLOOR_DATABASE, SEED_DATABASE)
            ),
        )

    # --- SQLite -------------------------------------------------------------------------------

    def prepare_sqlite(self) -> None:
        assert self.dataset is not None
        started = time.perf_counter()
        self._migrate(f"sqlite:///{self.sqlite_template}")
        seed_sqlite(self.sqlite_template, self.dataset)
        # One file, no WAL left over: the copies below are complete databases.
        with contextlib.closing(sqlite3.connect(self.sqlite_template)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log(f"seeded SQLite in {time.perf_counter() - started:.1f} s")

    def reset_sqlite(self) -> str:
        path = self.workdir / "todo.db"
        for stale in (path, path.with_name("todo.db-wal"), path.with_name("todo.db-shm")):
            stale.unlink(missing_ok=True)
        shutil.copy(self.sqlite_template, path)
        return f"sqlite:///{path}"

    # --- servers ------------------------------------------------------------------------------

    def _log_path(self, name: str) -> Path:
        self._counter += 1
        return self.workdir / f"{self._counter:02d}-{name}.log"

    def backend_cpu(self, database: str | None) -> dict[int, float]:
        """CPU seconds used so far by each PostgreSQL backend connected to `database` (when
        the server runs on this machine: /proc must show its processes)."""
        if database is None:
            return {}
        pids = pg_value(
            self.pg_url, "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        return {pid: process_cpu_seconds(pid) for pid in pids or []}

    def service(
        self,
        database_url: str,
        workers: int,
        name: str,
        app_root: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        port = free_port()
        return Server(
            name,
            [self.todo_api(), "serve", "--port", str(port), "--workers", str(workers)],
            env={**self._env(database_url, app_root), **(env or {})},
            cwd=self.workdir,  # no .env of the developer's is read
            log_path=self._log_path(name),
            port=port,
            ready_path="/ready",
        )

    def floor(self, database_url: str, workers: int, name: str) -> Server:
        port = free_port()
        env = {
            **self._env(database_url),
            "FLOOR_DATABASE_URL": asyncpg_dsn(database_url),
            "FLOOR_JWT_PUBLIC_KEY": public_key_pem(self.private_key),
        }
        return Server(
            name,
            [
                sys.executable,
                str(BENCH / "floor.py"),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=self.workdir,
            log_path=self._log_path(name),
            port=port,
            ready_path="/health",
        )


@dataclass(frozen=True, slots=True)
class Side:
    """One backend of a comparison: "before" (an exported revision's backend/) or "after" (the
    working tree's), served from the backend/ in `app_root`."""

    name: str
    revision: str
    app_root: Path
    pooled: bool = False  # --pgbouncer: through PgBouncer, DB_POOLER=pgbouncer


class Benchmark:
    def __init__(
        self,
        plan: Plan,
        bench: Workbench,
        wrk: str,
        report: Report,
        sides: tuple[Side, Side] | None = None,
        pgbouncer: PgBouncer | None = None,
    ) -> None:
        self.plan = plan
        self.bench = bench
        self.wrk = wrk
        self.report = report
        self.sides = sides  # --compare: (before, after)
        self.pgbouncer = pgbouncer
        self.floor_answers: dict[str, Any] | None = None

    def _load(self, route: str, connections: int, duration: float) -> Load:
        return Load(route, connections, self.plan.threads, duration)

    def measure(self, server: Server, route: str, connections: int | None = None) -> WrkResult:
        connections = connections or self.plan.connections
        data = self.bench.data_file
        if self.plan.warmup_s > 0:
            run_load(
                self.wrk, self._load(route, connections, self.plan.warmup_s), server.base_url, data
            )
            time.sleep(self.plan.pause_s)
        app_before, db_before = server.cpu_seconds(), self.bench.backend_cpu(server.database)
        reads_before, writes_before = server.syscalls()
        result = run_load(
            self.wrk, self._load(route, connections, self.plan.duration_s), server.base_url, data
        )
        app = server.cpu_seconds() - app_before
        reads, writes = server.syscalls()
        db_after = self.bench.backend_cpu(server.database)
        db = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
        if result.requests:
            # CPU per request hardly depends on what else the machine runs, unlike req/s.
            result.extra["app_cpu_ms_per_request"] = round(app * 1000 / result.requests, 3)
            if server.database is not None:
                result.extra["db_cpu_ms_per_request"] = round(db * 1000 / result.requests, 3)
            # Each round trip to PostgreSQL is one write (and a read) of the app's; so are the
            # HTTP answer and a log line. Requests cut off at the end of the run skew it a bit.
            result.extra["app_writes_per_request"] = round(
                (writes - writes_before) / result.requests, 2
            )
            result.extra["app_reads_per_request"] = round(
                (reads - reads_before) / result.requests, 2
            )
        time.sleep(self.plan.pause_s)
        return result

    def sample(self, server: Server) -> dict[str, Any]:
        """The answers to list and get of one user, parsed: the floor's must equal ours."""
        assert self.bench.dataset is not None
        user = self.bench.dataset.users[0]
        headers = {"Authorization": f"Bearer {self.bench.tokens[user.id]}"}
        answers = {}
        for route, path in (
            ("list", f"/api/{user.id}/tasks"),
            ("get", f"/api/{user.id}/tasks/{user.addressed_task_ids[0]}"),
        ):
            answers[route] = orjson.loads(http_get(server.base_url + path, headers))
        return answers

    def compare_with_floor(self, server: Server) -> None:
        if self.floor_answers is None:
            return
        ours = self.sample(server)
        same = ours == self.floor_answers
        self.report.settings["floor_answers_match"] = same
        if same:
            log("the floor and the service answer list and get identically")
        else:
            log(
                "WARNING: the floor's answers differ from the service's:\n"
                f"floor:   {orjson.dumps(self.floor_answers).decode()[:1500]}\n"
                f"service: {orjson.dumps(ours).decode()[:1500]}"
            )

    def _record(self, key: str, name: str, result: WrkResult) -> None:
        statuses = ", ".join(
            f"{status}: {count}" for status, count in sorted(result.statuses.items())
        )
        log(
            f"{key:<22} {name:<14} {result.requests_per_second:8,.0f} req/s  "
            f"p50 {result.ms('p50'):7.1f} ms  p99 {result.ms('p99'):7.1f} ms  "
            f"errors {result.errors}  ({statuses})"
        )

    def run_route(self, server: Server, configuration: Configuration, route: str) -> None:
        load_average = os.getloadavg()[0]
        result = self.measure(server, route)
        result.extra["load_average_1m"] = round(load_average, 2)
        configuration.results[route] = result
        self._record(configuration.key, route, result)

    def run_routes(
        self,
        service: tuple[Server, Configuration],
        floor: tuple[Server, Configuration] | None,
        routes: Sequence[str],
    ) -> None:
        """Each route on the floor (when it has the route), then at once on the service: the
        two figures of a ratio are measured seconds apart."""
        for route in routes:
            if floor is not None and route in FLOOR_ROUTES:
                self.run_route(*floor, route)
            self.run_route(*service, route)

    def run_flood(self, server: Server, configuration: Configuration) -> None:
        """list on its own, then list while login floods the same server."""
        connections = self.plan.flood_connections
        alone = self.measure(server, "list", connections)
        configuration.flood["list_alone"] = alone
        self._record(configuration.key, "list alone", alone)
        listed, login = self.flooded(server)
        configuration.flood["list"] = listed
        configuration.flood["login"] = login
        self._record(configuration.key, "list in flood", listed)
        self._record(configuration.key, "login flood", login)

    def flooded(self, server: Server) -> tuple[WrkResult, WrkResult]:
        """list measured while login floods the same server, each on its own connections:
        (list, login)."""
        connections = self.plan.flood_connections
        data = self.bench.data_file
        flood = RunningLoad(
            self.wrk,
            self._load("login", connections, self.plan.duration_s + 2 * self.plan.warmup_s + 1),
            server.base_url,
            data,
        )
        try:
            time.sleep(self.plan.warmup_s + 0.5)  # the hashing pool's queue fills first
            listed = run_load(
                self.wrk,
                self._load("list", connections, self.plan.duration_s),
                server.base_url,
                data,
            )
            login = flood.result()
        finally:
            flood.kill()
        time.sleep(self.plan.pause_s + 1)  # let the hashing queue drain
        return listed, login

    def run_configuration(self, database: str, workers: int) -> None:
        """The service with this database and worker count; on PostgreSQL also the floor with
        as many workers, on a database of its own, measured route by route just before it."""
        service = Configuration("service", database, workers)
        floor: Configuration | None = None
        if database == "postgresql" and self.plan.floor:
            floor = Configuration("floor", database, workers)
            self.report.configurations.append(floor)
        self.report.configurations.append(service)
        with contextlib.ExitStack() as servers:
            floor_server = None
            if floor is not None:
                floor_url = self.bench.reset_postgres(FLOOR_DATABASE)
                floor_server = servers.enter_context(
                    self.bench.floor(floor_url, workers, floor.key)
                )
                floor_server.database = FLOOR_DATABASE
                floor_server.start()
                log(f"{floor.key}: serving on {floor_server.base_url}")
                self.floor_answers = self.sample(floor_server)
            if database == "postgresql":
                url = self.bench.reset_postgres()
            else:
                url = self.bench.reset_sqlite()
            server = servers.enter_context(self.bench.service(url, workers, service.key))
            server.database = BENCH_DATABASE if database == "postgresql" else None
            server.start()
            log(f"{service.key}: serving on {server.base_url}")
            if floor_server is not None:
                self.compare_with_floor(server)
            pair = (server, service)
            floor_pair = None if floor is None or floor_server is None else (floor_server, floor)
            reads = [route for route in self.plan.routes if route in READ_ROUTES]
            writes = [route for route in self.plan.routes if route not in READ_ROUTES]
            self.run_routes(pair, floor_pair, reads)
            if self.plan.flood:
                self.run_flood(server, service)
            self.run_routes(pair, floor_pair, writes)

    # --- --compare ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, side: Side, database: str, workers: int) -> Iterator[Server]:
        """A server of `side`'s backend on a fresh copy of the seeded data; stopped (all its
        processes gone) on leaving, so that it never runs next to the other side's."""
        reset = self.bench.reset_postgres if database == "postgresql" else self.bench.reset_sqlite
        url = reset()
        env: dict[str, str] = {}
        if side.pooled:
            assert self.pgbouncer is not None
            # Live updates listen past the pooler, on the database itself (the direct URL).
            env = {"DB_POOLER": "pgbouncer", "DATABASE_LISTEN_URL": url}
            url = self.pgbouncer.url_for(BENCH_DATABASE)
        name = f"{side.name}-{database}-{workers}"
        with self.bench.service(url, workers, name, side.app_root, env) as server:
            server.database = BENCH_DATABASE if database == "postgresql" else None
            if side.pooled and self.pgbouncer is not None:
                server.helper_pids.append(self.pgbouncer.pid)
            server.start()
            yield server

    def compare_answers(self, comparison: Comparison, answers: dict[str, Any]) -> None:
        before, after = answers["before"], answers["after"]
        comparison.answers_match = before == after
        if comparison.answers_match:
            log("before and after answer list and get identically")
        else:
            log(
                "WARNING: before and after answer list or get differently:\n"
                f"before: {orjson.dumps(before).decode()[:1500]}\n"
                f"after:  {orjson.dumps(after).decode()[:1500]}"
            )

    def run_comparison(self, database: str, workers: int) -> None:
        """Each route (and the login flood) on the before side, then on the after side, round
        after round; each run on a server of its own, on fresh data."""
        assert self.sides is not None
        before, after = self.sides
        comparison = Comparison(
            database, workers, before=before.revision, after=after.revision, rounds=self.plan.rounds
        )
        self.report.comparisons.append(comparison)
        reads = [route for route in self.plan.routes if route in READ_ROUTES]
        writes = [route for route in self.plan.routes if route not in READ_ROUTES]
        items = [*reads, *([FLOOD] if self.plan.flood else []), *writes]
        answers: dict[str, Any] = {}
        for item in items:
            for round_number in range(1, self.plan.rounds + 1):
                for side in self.sides:
                    log(
                        f"{item}, round {round_number} of {self.plan.rounds}: {side.name} "
                        f"({side.revision}), {database}, {workers} worker(s)"
                    )
                    with self.serve(side, database, workers) as server:
                        if side.name not in answers:
                            answers[side.name] = self.sample(server)
                            if len(answers) == 2:
                                self.compare_answers(comparison, answers)
                        key = f"{side.name}-{database}-{workers}"
                        load_average = round(os.getloadavg()[0], 2)
                        if item == FLOOD:
                            if self.plan.warmup_s > 0:  # list alone warms the fresh server up
                                warmup = self._load(
                                    "list", self.plan.flood_connections, self.plan.warmup_s
                                )
                                run_load(self.wrk, warmup, server.base_url, self.bench.data_file)
                                time.sleep(self.plan.pause_s)
                            listed, login = self.flooded(server)
                            results = {"list_in_flood": listed, "login_in_flood": login}
                        else:
                            results = {item: self.measure(server, item)}
                    for route, result in results.items():
                        result.extra["load_average_1m"] = load_average
                        comparison.add(route, side.name, result)
                        self._record(key, route, result)

    def run(self) -> None:
        configure = self.run_configuration if self.sides is None else self.run_comparison
        if self.plan.postgres:
            for workers in self.plan.workers:
                configure("postgresql", workers)
        if self.plan.sqlite:
            for workers in self.plan.workers:
                configure("sqlite", workers)


def _stop_on_sigterm() -> None:
    """SIGTERM stops the run like Ctrl-C: the servers are stopped and the databases dropped."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="todo-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept the work directory {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _start_pgbouncer(
    pg_url: str, plan: Plan, overrides: dict[str, str]
) -> contextlib.AbstractContextManager[PgBouncer]:
    """PgBouncer with as many server connections as the service's pool has (all workers')."""
    binary = pgbouncer_binary()
    if binary is None:
        raise SystemExit("bench: --pgbouncer needs PgBouncer (apt-get install pgbouncer)")
    pool_size = int(overrides.get("DB_POOL_SIZE", Settings.model_fields["db_pool_size"].default))
    return running_pgbouncer(binary, pg_url, pool_size=max(plan.workers) * pool_size)


def _overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"bench: --service-env wants NAME=VALUE, not {pair!r}")
        overrides[name] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds is not None and (not (args.compare or args.pgbouncer) or args.rounds < 1):
        parser.error("--rounds wants --compare or --pgbouncer and a count of 1 or more")
    plan = Plan.from_args(args)
    try:
        wrk = find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    started_at = datetime.now().astimezone()
    output: Path = args.output or BENCH / "out" / f"{started_at:%Y%m%d-%H%M%S}.json"
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])

    with contextlib.ExitStack() as servers, work_directory(args.keep) as workdir:
        bench = Workbench(
            workdir=workdir,
            pg_url=args.pg_url,
            users=args.users,
            tasks=args.tasks,
            deep_tasks=args.deep_tasks,
        )
        bench.service_overrides = _overrides(args.service_env)
        revision = git_revision(ROOT)
        if args.revision:
            try:
                revision = bench.export_revision(args.revision)
            except subprocess.CalledProcessError as exc:
                print(f"bench: cannot export {args.revision!r}: {exc.stderr}", file=sys.stderr)
                return 2
        sides: tuple[Side, Side] | None = None
        if args.compare:
            try:
                before, before_root = bench.export_backend(args.compare)
            except subprocess.CalledProcessError as exc:
                print(f"bench: cannot export {args.compare!r}: {exc.stderr}", file=sys.stderr)
                return 2
            # The after side gets this checkout's backend/ on its path too: the working tree's
            # whichever checkout the virtualenv's editable install points to.
            bench.check_backend(ROOT)
            sides = (Side("before", before, before_root), Side("after", revision, ROOT))
            revision = f"{revision} against {before}"
        if args.pgbouncer:
            bench.check_backend(ROOT)
            sides = (
                Side("before", f"{revision}, direct", ROOT),
                Side("after", f"{revision}, through PgBouncer", ROOT, pooled=True),
            )
        postgres_version = None
        if plan.postgres:
            try:
                postgres_version = bench.postgres_version()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                print(
                    f"bench: PostgreSQL at {args.pg_url} does not answer ({exc}); start it, "
                    "give another server with --pg-url, or run --only sqlite",
                    file=sys.stderr,
                )
                return 2
        report = Report(
            command=command,
            started_at=started_at,
            revision=revision,
            machine=describe_machine(
                postgres_version=postgres_version, wrk_version=wrk_version(wrk)
            ),
            settings={
                "duration_s": plan.duration_s,
                "warmup_s": plan.warmup_s,
                "connections": plan.connections,
                "threads": plan.threads,
                "flood_connections": plan.flood_connections,
                "users": args.users,
                "tasks": args.tasks,
                "deep_tasks": args.deep_tasks,
                "workers": plan.workers,
                "routes": plan.routes,
                "service_env": bench.service_overrides,
                **(
                    {
                        "compare": {
                            "pgbouncer": args.pgbouncer,
                            "before": sides[0].revision,
                            "after": sides[1].revision,
                            "rounds": plan.rounds,
                        }
                    }
                    if sides
                    else {}
                ),
            },
        )
        busy = os.getloadavg()[0]
        if busy > 0.5:
            log(
                f"note: the load average is {busy:.1f} before the run; other work on this "
                "machine makes the figures noisier (the ratios less so)"
            )
        try:
            bench.prepare_data()
            if plan.postgres:
                bench.prepare_postgres()
            if plan.sqlite:
                bench.prepare_sqlite()
            if args.pgbouncer:
                pgbouncer = _start_pgbouncer(args.pg_url, plan, bench.service_overrides)
                Benchmark(plan, bench, wrk, report, sides, servers.enter_context(pgbouncer)).run()
            else:
                Benchmark(plan, bench, wrk, report, sides).run()
        except (ServerFailed, WrkFailed, subprocess.CalledProcessError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            logs = output.with_name(output.stem + "-logs")
            shutil.copytree(workdir, logs, ignore=shutil.ignore_patterns("*.db*", "*.lua"))
            print(f"bench: the servers' logs are in {logs}", file=sys.stderr)
            return 1
        finally:
            if plan.postgres and not args.keep:
                with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                    bench.drop_postgres()
        report.finished_at = datetime.now().astimezone()

    write_report(output, report.as_json(), report.markdown())
    log(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; the servers are stopped", file=sys.stderr)
        sys.exit(130)
