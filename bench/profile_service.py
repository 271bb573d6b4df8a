"""Where the service's CPU goes under load: py-spy samples one worker while wrk drives a route.

    .venv/bin/pip install py-spy      # for profiling only; not a project dependency
    .venv/bin/python bench/profile_service.py --route list --seconds 20

It seeds the benchmark's data like bench/run.py, serves the service with one worker on
PostgreSQL (or --database sqlite), drives the route with wrk at 64 connections, and samples the
worker with `py-spy record` meanwhile. It writes the raw stacks (collapsed format: load them in
speedscope or flamegraph.pl) and prints a summary: the share of CPU samples by component (each
sample goes to the innermost frame's library; standard-library frames count for their caller),
the inclusive share of the request's main stages, and the busiest functions.
"""

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loadgen import ROUTES, Load, RunningLoad, find_wrk, run_load
from run import BENCH, Workbench, log, work_directory

# py-spy names a frame's file relative to its sys.path entry: "sqlalchemy/sql/compiler.py",
# "asyncio/runners.py", "backend/services/tasks.py".
# (component, pattern on the frame's file): the first pattern that matches names the component.
_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("JWT verify (PyJWT, cryptography)", r"^(jwt|cryptography)/"),
    ("SQLAlchemy: SQL construction, cache keys, compilation", r"^sqlalchemy/sql/"),
    ("SQLAlchemy: results and rows", r"^sqlalchemy/engine/(result|cursor|row|_py_row|_row_cy)"),
    ("SQLAlchemy: pool (checkout, pre-ping, reset)", r"^sqlalchemy/pool/"),
    (
        "SQLAlchemy: async adapter, greenlet bridge",
        r"^sqlalchemy/(dialects/postgresql/asyncpg|dialects/sqlite/aiosqlite|util/_?concurrency"
        r"|connectors/asyncio|ext/asyncio)",
    ),
    ("SQLAlchemy: ORM session, execution context", r"^sqlalchemy/"),
    ("SQLModel", r"^sqlmodel/"),
    ("asyncpg / aiosqlite (driver)", r"^(asyncpg|aiosqlite)/"),
    ("pydantic (validation, serialisation)", r"^(pydantic|pydantic_core)/"),
    ("FastAPI: dependency solving, parameters", r"^fastapi/dependencies/"),
    ("FastAPI: routing, request handling", r"^fastapi/"),
    ("Starlette: routing, middleware, responses", r"^starlette/"),
    ("logging (the access log line)", r"^(logging/|backend/logs\.py)"),
    ("uvicorn / httptools (HTTP)", r"^(uvicorn|httptools)/"),
    ("event loop (uvloop, asyncio)", r"^(uvloop|asyncio)/"),
    ("greenlet", r"^greenlet/"),
    ("service code (backend/)", r"^backend/"),
)
# (stage, function name, pattern on its file): a sample is in the stage when any frame is.
# SQLAlchemy runs its synchronous core in greenlets, which py-spy shows as stacks of their own
# (rooted at the sync call, without the awaiting coroutine): they count as "inside greenlets".
# py-spy names functions by their qualified name ("TokenVerifier.verify").
_STAGES: tuple[tuple[str, str, str], ...] = (
    ("the whole request (middleware)", "RequestContextMiddleware.__call__", "^backend/"),
    ("FastAPI solve_dependencies (token, user, session, query)", "solve_dependencies", "^fastapi/"),
    ("token verification (TokenVerifier.verify)", "TokenVerifier.verify", "^backend/"),
    ("user lookup (users.find_account)", "find_account", "^backend/"),
    ("list_tasks service, async part", "list_tasks", "^backend/services/"),
    ("rows to TaskRead (tasks._read)", "_read", "^backend/services/"),
    ("AsyncSession.exec, async part", "AsyncSession.exec", "^sqlmodel/"),
    ("json_response (serialisation)", "json_response", "^backend/"),
    ("access log line (Logger.info)", "Logger.info", "^logging/"),
)  # fmt: skip
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str

    @classmethod
    def parse(cls, text: str) -> "Frame":
        match = _FRAME.match(text)
        if match is None:
            return cls(text, "")
        return cls(match["function"], match["file"])

    @property
    def label(self) -> str:
        return f"{self.function} ({self.file})"


def read_stacks(path: Path) -> list[tuple[list[Frame], int]]:
    """py-spy's raw output: one `frame;frame;...;frame count` line per distinct stack, root
    first (the first element names the thread)."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([Frame.parse(part) for part in stack.split(";")], int(count)))
    return stacks


def component_of(frames: list[Frame]) -> str:
    """The library of the innermost frame that belongs to one; the standard library's frames
    count for their caller."""
    for frame in reversed(frames):
        for name, pattern in _COMPONENTS:
            if re.search(pattern, frame.file):
                return name
    return "other (standard library, interpreter)"


def _thread_of(frames: list[Frame]) -> str:
    root = frames[0]
    if root.function == "<module>":
        return "event loop"
    if any(
        frame.function.endswith("_bootstrap") and frame.file == "threading.py" for frame in frames
    ):
        return "other threads"
    return "greenlet"


def summarise(stacks: Iterable[tuple[list[Frame], int]]) -> str:
    components: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        thread = _thread_of(frames)
        threads[thread] += count
        if thread == "other threads":
            continue  # thread-pool workers waiting for work, which py-spy may count as busy
        components[component_of(frames)] += count
        leaves[frames[-1].label] += count
        for stage, function, pattern in _STAGES:
            if any(f.function == function and re.search(pattern, f.file) for f in frames):
                stages[stage] += count
    total = threads["event loop"] + threads["greenlet"] or 1

    def share(count: int) -> str:
        return f"{count / total:.1%}"

    lines = [
        f"{total} samples of the worker's event-loop thread (of which {share(threads['greenlet'])}"
        f" in SQLAlchemy's greenlets); {threads['other threads']} samples of other threads "
        "(idle thread pools) left out.",
        "",
        "| component (innermost frame's library) | share of samples |",
        "|---|---:|",
        *(f"| {name} | {share(count)} |" for name, count in components.most_common()),
        "",
        "| stage (inclusive, async frames only; greenlet stacks separate) | share |",
        "|---|---:|",
        *(f"| {name} | {share(stages[name])} |" for name, _, _ in _STAGES),
        f"| inside SQLAlchemy's greenlets (its synchronous core) | {share(threads['greenlet'])} |",
        "",
        "| busiest functions (self time) | share |",
        "|---|---:|",
        *(f"| `{name}` | {share(count)} |" for name, count in leaves.most_common(25)),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profile_service.py", description=__doc__)
    parser.add_argument("--route", choices=ROUTES, default="list")
    parser.add_argument("--seconds", type=float, default=20.0, help="sampling time (20)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (200)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--native", action="store_true", help="also sample native frames (C, Cython, Rust)"
    )
    parser.add_argument("--revision", help="profile this commit's backend/ (see run.py)")
    parser.add_argument("--output", type=Path, help="raw stacks (default bench/out/profile-…)")
    args = parser.parse_args(argv)

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("profile: py-spy is missing: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    wrk = find_wrk()
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    output: Path = args.output or BENCH / "out" / f"profile-{args.route}-{stamp}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)

    with work_directory(keep=False) as workdir:
        bench = Workbench(workdir=workdir, pg_url=args.pg_url, users=100, tasks=10_000)
        if args.revision:
            log(f"serving backend/ of {bench.export_revision(args.revision)}")
        bench.prepare_data()
        if args.database == "postgresql":
            bench.prepare_postgres()
            url = bench.reset_postgres()
        else:
            bench.prepare_sqlite()
            url = bench.reset_sqlite()
        try:
            with bench.service(url, 1, "service-profiled") as server:
                server.start()
                load = Load(args.route, args.connections, 2, 3)
                run_load(wrk, load, server.base_url, bench.data_file)  # warm-up
                driven = Load(args.route, args.connections, 2, args.seconds + 4)
                running = RunningLoad(wrk, driven, server.base_url, bench.data_file)
                try:
                    time.sleep(1)
                    command = [
                        py_spy, "record", "--pid", str(server.pid), "--rate", str(args.rate),
                        "--duration", str(round(args.seconds)), "--format", "raw",
                        "--nolineno", "--output", str(output),
                    ]  # fmt: skip
                    if args.native:
                        command.append("--native")
                    log(f"sampling: {' '.join(command)}")
                    subprocess.run(command, check=True, capture_output=True)
                    result = running.result()
                finally:
                    running.kill()
                log(
                    f"{args.route} under the profiler: {result.requests_per_second:,.0f} req/s, "
                    f"p99 {result.ms('p99'):.1f} ms, {result.errors} errors"
                )
        finally:
            if args.database == "postgresql":
                bench.drop_postgres()

    summary = summarise(read_stacks(output))
    output.with_suffix(".md").write_text(summary, encoding="utf-8")
    print(summary)
    log(f"raw stacks in {output}, summary in {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
