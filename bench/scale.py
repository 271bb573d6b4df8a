"""Cost at scale (issue 24): every shape of the task list for a user with 100 tasks against the
same shape for a user with 10,000 (the per-user cap), on the same server, in one run.

    .venv/bin/python bench/scale.py                      # PostgreSQL, 2 workers, every shape
    .venv/bin/python bench/scale.py --shapes default,search --duration 4
    .venv/bin/python bench/scale.py --only sqlite --workers 1
    .venv/bin/python bench/scale.py --revision f217e6a    # an older backend, for a before/after

The data is bench/run.py's (100 users with 100 tasks each, and the deep user with 10,000; tasks
carry tags), seeded once. One server (`todo-api serve`, the benchmark's settings: limits out of
reach) serves every shape. For each shape, wrk (16 connections by default, as the issue measured)
sends the same GET again and again, first for the light user (the first of the 100), then for the
deep user; the ratio is deep/light requests/s, and the goal is at least 0.7 for every shape.
Deep pages are the last full page of each user's default list: by `offset` and by the cursor that
paging there would have given (made by the service's own code).

On PostgreSQL, the report also gives the plans (EXPLAIN ANALYZE) of the statements that the
service runs for the deep user's page of each shape: the service's own statements
(`backend/services/task_lists.py`), compiled for PostgreSQL and bound as the service binds them.
The report is printed and written to bench/out/scale-<time>.json and .md.
"""

import argparse
import asyncio
import contextlib
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from loadgen import Load, WrkFailed, WrkMissing, find_wrk, run_load, wrk_version
from report import describe_machine, git_revision, write_report
from run import (
    BENCH_DATABASE,
    DEFAULT_PG_URL,
    Workbench,
    _stop_on_sigterm,
    log,
    work_directory,
)
from seed import TAG, SeedUser
from servers import Server, ServerFailed, http_get
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql import ClauseElement

from backend.schemas import TaskListQuery
from backend.services.task_pages import explainable_statements

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
GOAL = 0.7  # deep/light requests/s, every shape


@dataclass(frozen=True, slots=True)
class Shape:
    """One list query: its name, and its query string for a user (and today's date)."""

    name: str
    query: Callable[[SeedUser, str], str]
    what: str


def _fixed(query: str) -> Callable[[SeedUser, str], str]:
    return lambda _user, _today: query


SHAPES = (
    Shape("default", _fixed(""), "newest first (`-created_at`), the first page"),
    Shape("offset_deep", lambda user, _: f"offset={user.depth}", "the last page, by offset"),
    Shape(
        "cursor_deep",
        lambda user, _: f"cursor={quote(user.list_cursor())}",
        "the last page, by the cursor that paging there gave",
    ),
    Shape("search", _fixed("q=plumber"), "`q=plumber` (4 % of titles)"),
    Shape("search_common", _fixed("q=report"), "`q=report` (about 1 task in 3)"),
    Shape("sort_title", _fixed("sort=title"), "by title"),
    Shape("pending_by_due", _fixed("status=pending&sort=due_date"), "pending, by due date"),
    Shape("completed", _fixed("status=completed"), "completed, newest first"),
    Shape("priority", _fixed("priority=high&sort=-updated_at"), "high priority, latest changed"),
    Shape(
        "due_range",
        lambda _, today: f"due_after={today}&due_before={_days_after(today, 14)}",
        "due in the next 14 days",
    ),
    Shape("view_today", _fixed("view=today"), "the `today` view"),
    Shape("view_overdue", _fixed("view=overdue"), "the `overdue` view"),
    Shape("view_upcoming", _fixed("view=upcoming"), "the `upcoming` view"),
    Shape("view_no_date", _fixed("view=no_date"), "the `no_date` view"),
    Shape("tag", _fixed(f"tag={TAG}"), f"`tag={TAG}` (about 1 task in 5)"),
    Shape("manual_order", _fixed("sort=position"), "the manual order (`sort=position`)"),
)
SHAPE_NAMES = tuple(shape.name for shape in SHAPES)


def _days_after(today: str, days: int) -> str:
    return (datetime.fromisoformat(today) + timedelta(days=days)).date().isoformat()


def _csv(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected shapes among {', '.join(SHAPE_NAMES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/scale.py",
        description="Every task-list shape: a user with 100 tasks against one with 10,000.",
    )
    parser.add_argument("--only", choices=("pg", "sqlite"), default="pg")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each")
    parser.add_argument(
        "--rounds", type=int, default=3, help="light and deep in turn, this often (medians)"
    )
    parser.add_argument("--shapes", type=_csv, default=list(SHAPE_NAMES))
    parser.add_argument("--no-explain", action="store_true", help="skip the plans (PostgreSQL)")
    parser.add_argument(
        "--revision",
        help="serve this commit's backend/ (migrations included) instead of the working tree's, "
        "for a before/after; the plans are the working tree's, so they are left out",
    )
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for the service (repeatable)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="default bench/out/scale-<time>.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def measure(
    wrk: str, server: Server, bench: Workbench, path: str, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One run of the GET: requests/s, latency, errors, and the CPU the service (and its
    PostgreSQL backends) spent per request."""
    arguments = (path, token)
    if args.warmup > 0:
        warm = Load("path", args.connections, args.threads, args.warmup, arguments)
        run_load(wrk, warm, server.base_url, Path("/dev/null"))
    app_before, db_before = server.cpu_seconds(), bench.backend_cpu(server.database)
    load = Load("path", args.connections, args.threads, args.duration, arguments)
    result = run_load(wrk, load, server.base_url, Path("/dev/null"))
    app = server.cpu_seconds() - app_before
    db_after = bench.backend_cpu(server.database)
    db = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
    requests = max(result.requests, 1)
    return {
        "requests_per_second": round(result.requests_per_second, 1),
        "p50_ms": round(result.ms("p50"), 2),
        "p99_ms": round(result.ms("p99"), 2),
        "errors": result.errors,
        "cpu_ms_per_request": round((app + db) * 1000 / requests, 3),
    }


def _expected_total(shape: str, user: SeedUser) -> int | None:
    """The total a shape must answer, where the seed says it simply (the kept counts)."""
    if shape in ("default", "offset_deep", "cursor_deep", "sort_title", "manual_order"):
        return len(user.tasks)
    if shape == "completed":
        return user.completed_count
    if shape == "pending_by_due":
        return len(user.tasks) - user.completed_count
    return None


def _median(runs: list[dict[str, Any]], name: str) -> float:
    return float(statistics.median(run[name] for run in runs))


def run_shapes(
    wrk: str, server: Server, bench: Workbench, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Each shape, light then deep, `--rounds` times; the medians and their ratios."""
    assert bench.dataset is not None
    assert bench.dataset.deep is not None
    users = {"light": bench.dataset.users[0], "deep": bench.dataset.deep}
    today = datetime.now(UTC).date().isoformat()
    rows = []
    for shape in SHAPES:
        if shape.name not in args.shapes:
            continue
        row: dict[str, Any] = {"shape": shape.name, "what": shape.what}
        runs: dict[str, list[dict[str, Any]]] = {"light": [], "deep": []}
        for _ in range(args.rounds):
            for label, user in users.items():
                query = shape.query(user, today)
                path = f"/api/{user.id}/tasks" + (f"?{query}" if query else "")
                token = bench.tokens[user.id]
                headers = {"Authorization": f"Bearer {token}"}
                answer = orjson.loads(http_get(server.base_url + path, headers))
                expected = _expected_total(shape.name, user)
                if expected is not None and answer["total"] != expected:
                    raise SystemExit(
                        f"bench: {shape.name} of a user with {len(user.tasks)} tasks answers "
                        f"total {answer['total']}, not {expected}"
                    )
                run = measure(wrk, server, bench, path, token, args)
                runs[label].append({**run, "total": answer["total"]})
                log(
                    f"{shape.name:>15} {label:>5}: {run['requests_per_second']:8.1f} req/s, "
                    f"p99 {run['p99_ms']:6.1f} ms, {run['cpu_ms_per_request']:5.2f} ms CPU, "
                    f"total {answer['total']}, errors {run['errors']}"
                )
        for label, measured in runs.items():
            row[label] = {
                "requests_per_second": _median(measured, "requests_per_second"),
                "p99_ms": _median(measured, "p99_ms"),
                "cpu_ms_per_request": _median(measured, "cpu_ms_per_request"),
                "errors": sum(run["errors"] for run in measured),
                "total": measured[-1]["total"],
                "runs": measured,
            }
        light, deep = row["light"], row["deep"]
        row["ratio"] = round(deep["requests_per_second"] / max(light["requests_per_second"], 1), 3)
        # CPU per request hardly depends on the machine's other load: the steadier figure.
        row["cpu_ratio"] = round(
            light["cpu_ms_per_request"] / max(deep["cpu_ms_per_request"], 0.001), 3
        )
        row["meets_goal"] = row["ratio"] >= GOAL
        rows.append(row)
    return rows


# --- the plans ------------------------------------------------------------------------------


async def _explain(dsn: str, user: SeedUser, args: argparse.Namespace) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of the count and page statements the service runs for the deep user's
    page of each shape (offset and cursor pages of the default list included)."""
    today = datetime.now(UTC).date()
    engine = create_async_engine("postgresql+asyncpg://" + dsn.removeprefix("postgresql://"))
    plans: dict[str, list[str]] = {}
    try:
        async with engine.connect() as connection:
            for shape in SHAPES:
                if shape.name not in args.shapes:
                    continue
                raw = shape.query(user, today.isoformat())
                params: dict[str, Any] = {
                    name: values if name == "tag" else values[0]
                    for name, values in parse_qs(raw).items()
                }
                if "cursor" in params:
                    params["cursor"] = user.list_cursor()
                query = TaskListQuery.model_validate(params)
                lines: list[str] = []
                for label, statement, bound in explainable_statements(
                    query, user.id, today, "postgresql"
                ):
                    assert isinstance(statement, ClauseElement)
                    compiled: Any = statement.compile(
                        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
                    )
                    values = {**compiled.params, **bound}
                    arguments = []
                    for name in compiled.positiontup or ():
                        # The value as the service's statement binds it (an enum's rank, ...).
                        process = compiled.binds[name].type.bind_processor(connection.dialect)
                        value = values[name]
                        arguments.append(value if process is None else process(value))
                    pooled = await connection.get_raw_connection()
                    driver: Any = pooled.driver_connection
                    plan = await driver.fetch(
                        f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {compiled}",
                        *arguments,
                    )
                    lines.append(f"-- {label}")
                    lines += [row[0] for row in plan]
                plans[shape.name] = lines
    finally:
        await engine.dispose()
    return plans


# --- the report -----------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"# Task lists at scale: {report['database']}, {report['workers']} workers",
        "",
        f"- command: `{report['command']}`",
        f"- revision: {report['revision']}; started {report['started_at']}",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory']}, "
        f"{machine['os']}, Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
        f"load average at start {machine['load_average_at_start']}",
        f"- wrk: {report['connections']} connections, {report['duration_s']} s per measurement "
        f"after {report['warmup_s']} s of warm-up, {report['rounds']} rounds; light user: 100 "
        "tasks, deep user: 10,000",
        "",
        "Medians of the rounds; CPU is the service's and its PostgreSQL backends' per request, and",
        "the CPU ratio is light/deep (what the deep user's request costs more, steadier than req/s",
        "on a busy machine).",
        "",
        "| shape | query | 100 tasks: req/s, p99, CPU | 10,000 tasks: req/s, p99, CPU "
        f"| total (light / deep) | ratio | CPU ratio | goal ≥ {GOAL} |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["shapes"]:
        light, deep = row["light"], row["deep"]
        errors = light["errors"] + deep["errors"]
        lines.append(
            f"| {row['shape']} | {row['what']} "
            f"| {light['requests_per_second']:,.0f}, {light['p99_ms']:.1f} ms, "
            f"{light['cpu_ms_per_request']:.2f} ms "
            f"| {deep['requests_per_second']:,.0f}, {deep['p99_ms']:.1f} ms, "
            f"{deep['cpu_ms_per_request']:.2f} ms "
            f"| {light['total']:,} / {deep['total']:,} "
            f"| {row['ratio']:.2f} | {row['cpu_ratio']:.2f} "
            f"| {'yes' if row['meets_goal'] else '**no**'}"
            f"{f' ({errors} errors)' if errors else ''} |"
        )
    met = sum(row["meets_goal"] for row in report["shapes"])
    lines += ["", f"{met} of {len(report['shapes'])} shapes meet the goal."]
    if report.get("plans"):
        lines += ["", "## Plans of the deep user's statements (EXPLAIN ANALYZE)", ""]
        for name, plan in report["plans"].items():
            lines += [f"### {name}", "", "```", *plan, "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        wrk = find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    started_at = datetime.now().astimezone()
    output: Path = args.output or BENCH / "out" / f"scale-{started_at:%Y%m%d-%H%M%S}.json"
    command = shlex.join(["python", "bench/scale.py", *(sys.argv[1:] if argv is None else argv)])
    postgres = args.only == "pg"
    with work_directory(args.keep) as workdir:
        bench = Workbench(workdir=workdir, pg_url=args.pg_url, users=100, tasks=10_000)
        bench.service_overrides = dict(pair.split("=", 1) for pair in args.service_env)
        revision = git_revision(ROOT)
        if args.revision:
            revision = bench.export_revision(args.revision)
            args.no_explain = True
        report: dict[str, Any] = {
            "command": command,
            "revision": revision,
            "started_at": started_at.isoformat(timespec="seconds"),
            "database": "PostgreSQL" if postgres else "SQLite",
            "workers": args.workers,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "machine": describe_machine(
                postgres_version=bench.postgres_version() if postgres else None,
                wrk_version=wrk_version(wrk),
            ),
        }
        try:
            bench.prepare_data()
            if postgres:
                bench.prepare_postgres()
                url = bench.reset_postgres()
            else:
                bench.prepare_sqlite()
                url = bench.reset_sqlite()
            with bench.service(url, args.workers, "service") as server:
                server.database = BENCH_DATABASE if postgres else None
                server.start()
                report["shapes"] = run_shapes(wrk, server, bench, args)
            if postgres and not args.no_explain:
                assert bench.dataset is not None
                assert bench.dataset.deep is not None
                report["plans"] = asyncio.run(_explain(url, bench.dataset.deep, args))
        except (ServerFailed, WrkFailed) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            if postgres and not args.keep:
                with contextlib.suppress(Exception):
                    bench.drop_postgres()
    report["finished_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    write_report(output, report, markdown(report))
    log(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; the server is stopped", file=sys.stderr)
        sys.exit(130)
