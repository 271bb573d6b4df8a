"""The report: the machine, a table per configuration, the floor ratios, the login flood, and the
issue's acceptance checks; as Markdown and as JSON."""

import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson
from loadgen import WrkResult

FLOOR_ROUTES = ("list", "get", "create", "toggle")
ACCEPTANCE_ROUTES = ("list", "get", "create", "toggle")
MIN_FLOOR_RATIO = 0.5
MAX_P99_MS = 100.0
MIN_FLOOD_RATIO = 0.5
_PACKAGES = (
    "fastapi", "starlette", "pydantic", "sqlmodel", "sqlalchemy", "asyncpg", "aiosqlite",
    "uvicorn", "uvloop", "httptools", "orjson", "pyjwt", "cryptography", "argon2-cffi",
)  # fmt: skip


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def git_revision(root: Path) -> str:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "backend")
    return f"{commit} (backend/ modified)" if dirty else commit


def describe_machine(*, postgres_version: str | None, wrk_version: str) -> dict[str, Any]:
    memory_kib = _first_line("/proc/meminfo", "MemTotal")
    memory = f"{int(memory_kib.split()[0]) / 1024 / 1024:.1f} GiB" if memory_kib else "unknown"
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _first_line("/proc/cpuinfo", "model name") or platform.processor(),
        "memory": memory,
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version or "not used",
        "wrk": wrk_version,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "packages": {name: _package_version(name) for name in _PACKAGES},
    }


def total_cpu_ms(result: WrkResult) -> float | None:
    """CPU milliseconds per request of the app and its database backends (when measured)."""
    app = result.extra.get("app_cpu_ms_per_request")
    if app is None:
        return None
    return float(app) + float(result.extra.get("db_cpu_ms_per_request") or 0.0)


def _deep_data(settings: dict[str, Any]) -> str:
    deep = settings.get("deep_tasks")
    if not deep:
        return ""
    return f", and one more user with {deep:,} tasks (changes, cursor_deep, offset_deep)"


def _cpu(result: WrkResult, key: str) -> str:
    value = result.extra.get(key)
    return "-" if value is None else f"{value:.2f}"


@dataclass(slots=True)
class Configuration:
    """One app on one database with one worker count, and what each route measured."""

    app: str  # "service" or "floor"
    database: str  # "postgresql" or "sqlite"
    workers: int
    results: dict[str, WrkResult] = field(default_factory=dict)
    flood: dict[str, WrkResult] = field(default_factory=dict)  # list_alone, list, login

    @property
    def key(self) -> str:
        return f"{self.app}-{self.database}-{self.workers}"

    @property
    def title(self) -> str:
        name = "Floor (Starlette + asyncpg + orjson)" if self.app == "floor" else "Service"
        database = "PostgreSQL" if self.database == "postgresql" else "SQLite"
        return f"{name}, {database}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def flood_ratio(self) -> float | None:
        alone, flooded = self.flood.get("list_alone"), self.flood.get("list")
        if alone is None or flooded is None or not alone.requests_per_second:
            return None
        return flooded.requests_per_second / alone.requests_per_second

    @property
    def depth_ratio(self) -> float | None:
        """The deep page by cursor over the same page by offset, in requests/s."""
        cursor, offset = self.results.get("cursor_deep"), self.results.get("offset_deep")
        if cursor is None or offset is None or not offset.requests_per_second:
            return None
        return cursor.requests_per_second / offset.requests_per_second


def database_title(database: str) -> str:
    return "PostgreSQL" if database == "postgresql" else "SQLite"


def _median(results: list[WrkResult], value: Callable[[WrkResult], float | None]) -> float | None:
    values = [v for v in (value(result) for result in results) if v is not None]
    return statistics.median(values) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _figure(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@dataclass(frozen=True, slots=True)
class SideSummary:
    """One side's rounds of one route, summed up: the median of each figure over the rounds
    (each figure on its own), and the errors of all rounds together."""

    rounds: list[WrkResult]

    @property
    def requests_per_second(self) -> float:
        value = _median(self.rounds, lambda result: result.requests_per_second)
        assert value is not None
        return value

    def ms(self, percentile: str) -> float:
        value = _median(self.rounds, lambda result: result.ms(percentile))
        assert value is not None
        return value

    @property
    def errors(self) -> int:
        return sum(result.errors for result in self.rounds)

    @property
    def cpu_ms_per_request(self) -> float | None:
        """App + database CPU per request (the database's when measured), median."""
        return _median(self.rounds, total_cpu_ms)

    @property
    def spread(self) -> float | None:
        """(fastest - slowest round) / median, in requests/s: the noise between the rounds
        (None with one round)."""
        rates = [result.requests_per_second for result in self.rounds]
        median = statistics.median(rates)
        if len(rates) < 2 or not median:
            return None
        return (max(rates) - min(rates)) / median

    def as_json(self) -> dict[str, Any]:
        cpu, spread = self.cpu_ms_per_request, self.spread
        return {
            "requests_per_second": round(self.requests_per_second, 1),
            "p50_ms": round(self.ms("p50"), 2),
            "p99_ms": round(self.ms("p99"), 2),
            "errors": self.errors,
            "cpu_ms_per_request": None if cpu is None else round(cpu, 3),
            "spread": None if spread is None else round(spread, 3),
            "rounds": [result.as_json() for result in self.rounds],
        }


@dataclass(slots=True)
class Comparison:
    """Two backends ("before": an older revision, "after": the working tree) on one database
    with one worker count, each route measured on each in turn, round after round."""

    database: str
    workers: int
    before: str  # the revisions served
    after: str
    rounds: int  # each side's runs of each route
    # route -> side ("before" or "after") -> one result per round, in the order measured
    results: dict[str, dict[str, list[WrkResult]]] = field(default_factory=dict)
    answers_match: bool | None = None  # list and get answered identically by both sides

    @property
    def key(self) -> str:
        return f"compare-{self.database}-{self.workers}"

    @property
    def title(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return (
            f"{database_title(self.database)}, {workers}: after ({self.after}) against "
            f"before ({self.before})"
        )

    def add(self, route: str, side: str, result: WrkResult) -> None:
        self.results.setdefault(route, {"before": [], "after": []})[side].append(result)

    def summaries(self, route: str) -> tuple[SideSummary, SideSummary] | None:
        sides = self.results.get(route, {})
        before, after = sides.get("before"), sides.get("after")
        if not before or not after:
            return None
        return SideSummary(before), SideSummary(after)

    def as_json(self) -> dict[str, Any]:
        routes: dict[str, Any] = {}
        for route in self.results:
            pair = self.summaries(route)
            if pair is None:
                continue
            before, after = pair
            ratio = _ratio(after.requests_per_second, before.requests_per_second)
            cpu_ratio = _ratio(after.cpu_ms_per_request, before.cpu_ms_per_request)
            routes[route] = {
                "before": before.as_json(),
                "after": after.as_json(),
                "ratio_after_before_percent": None if ratio is None else round(ratio * 100, 1),
                "cpu_ratio_after_before_percent": None
                if cpu_ratio is None
                else round(cpu_ratio * 100, 1),
            }
        return {
            "key": self.key,
            "database": self.database,
            "workers": self.workers,
            "before": self.before,
            "after": self.after,
            "rounds": self.rounds,
            "answers_match": self.answers_match,
            "routes": routes,
        }

    def markdown(self) -> list[str]:
        rounds = f"{self.rounds} round{'s' if self.rounds > 1 else ''}"
        lines = [
            f"**{self.title}**, median of {rounds} per side",
            "",
            "| route | before req/s | after req/s | after/before | p50 ms before | p50 ms after "
            "| p99 ms before | p99 ms after | errors before / after | CPU ms/req before "
            "| CPU ms/req after | CPU after/before | round spread |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for route in self.results:
            pair = self.summaries(route)
            if pair is None:
                continue
            before, after = pair
            ratio = _ratio(after.requests_per_second, before.requests_per_second)
            cpu_ratio = _ratio(after.cpu_ms_per_request, before.cpu_ms_per_request)
            spreads = [s for s in (before.spread, after.spread) if s is not None]
            spread = max(spreads) if spreads else None
            lines.append(
                f"| {route} | {before.requests_per_second:,.0f} | "
                f"{after.requests_per_second:,.0f} | {_figure(ratio, '.1%')} | "
                f"{before.ms('p50'):.1f} | {after.ms('p50'):.1f} | {before.ms('p99'):.1f} | "
                f"{after.ms('p99'):.1f} | {before.errors} / {after.errors} | "
                f"{_figure(before.cpu_ms_per_request, '.2f')} | "
                f"{_figure(after.cpu_ms_per_request, '.2f')} | {_figure(cpu_ratio, '.1%')} | "
                f"{_figure(spread, '.0%')} |"
            )
        lines.append("")
        if self.answers_match is True:
            lines += ["Both sides answer list and get identically.", ""]
        elif self.answers_match is False:
            lines += ["**The two sides answer list or get differently** (see the run's log).", ""]
        return lines


@dataclass(slots=True)
class Report:
    command: str
    started_at: datetime
    revision: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    configurations: list[Configuration] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)  # --compare
    finished_at: datetime | None = None

    def floor_of(self, configuration: Configuration) -> Configuration | None:
        if configuration.app != "service" or configuration.database != "postgresql":
            return None
        return next(
            (
                other
                for other in self.configurations
                if other.app == "floor" and other.workers == configuration.workers
            ),
            None,
        )

    def ratio(self, configuration: Configuration, route: str) -> float | None:
        floor = self.floor_of(configuration)
        ours = configuration.results.get(route)
        theirs = floor.results.get(route) if floor else None
        if ours is None or theirs is None or not theirs.requests_per_second:
            return None
        return ours.requests_per_second / theirs.requests_per_second

    def cpu_ratio(self, configuration: Configuration, route: str) -> float | None:
        """The floor's CPU per request (app + database) over ours: how much of our CPU the
        same work needs at least. Unlike req/s it hardly depends on the machine's other load."""
        floor = self.floor_of(configuration)
        ours = configuration.results.get(route)
        theirs = floor.results.get(route) if floor else None
        if ours is None or theirs is None:
            return None
        ours_cpu, theirs_cpu = total_cpu_ms(ours), total_cpu_ms(theirs)
        if not ours_cpu or theirs_cpu is None:
            return None
        return theirs_cpu / ours_cpu

    # --- acceptance ---------------------------------------------------------------------------

    def acceptance(self) -> list[tuple[str, bool | None, str]]:
        """(criterion, passed or None when not measured, the figures behind it)."""
        checks: list[tuple[str, bool | None, str]] = []
        pg2 = self._find("service", "postgresql", 2)
        for route in ACCEPTANCE_ROUTES:
            name = f"PostgreSQL, 2 workers, {route}: >= 50% of floor, p99 <= 100 ms, 0 errors"
            result = pg2.results.get(route) if pg2 else None
            ratio = self.ratio(pg2, route) if pg2 else None
            if result is None or ratio is None:
                checks.append((name, None, "not measured"))
                continue
            passed = (
                ratio >= MIN_FLOOR_RATIO and result.ms("p99") <= MAX_P99_MS and result.errors == 0
            )
            checks.append(
                (
                    name,
                    passed,
                    f"{ratio:.0%} of floor, p99 {result.ms('p99'):.1f} ms, {result.errors} errors",
                )
            )
        sqlite1 = self._find("service", "sqlite", 1)
        for route in ACCEPTANCE_ROUTES:
            name = f"SQLite, 1 worker, {route}: 0 errors"
            result = sqlite1.results.get(route) if sqlite1 else None
            if result is None:
                checks.append((name, None, "not measured"))
                continue
            checks.append(
                (
                    name,
                    result.errors == 0,
                    f"{result.requests_per_second:.0f} req/s, p99 {result.ms('p99'):.1f} ms, "
                    f"{result.errors} errors",
                )
            )
        for configuration in self.configurations:
            ratio = configuration.flood_ratio
            if configuration.app != "service" or ratio is None:
                continue
            checks.append(
                (
                    f"Login flood, {configuration.title.removeprefix('Service, ')}: list keeps "
                    ">= 50% of its throughput",
                    ratio >= MIN_FLOOD_RATIO,
                    f"{ratio:.0%} ({configuration.flood['list'].requests_per_second:.0f} vs "
                    f"{configuration.flood['list_alone'].requests_per_second:.0f} req/s)",
                )
            )
        return checks

    def _find(self, app: str, database: str, workers: int) -> Configuration | None:
        return next(
            (
                c
                for c in self.configurations
                if (c.app, c.database, c.workers) == (app, database, workers)
            ),
            None,
        )

    # --- output -------------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        configurations = []
        for configuration in self.configurations:
            routes = {}
            for route, result in configuration.results.items():
                entry = result.as_json()
                ratio = self.ratio(configuration, route)
                entry["ratio_to_floor"] = None if ratio is None else round(ratio, 3)
                cpu_ratio = self.cpu_ratio(configuration, route)
                entry["cpu_ratio_to_floor"] = None if cpu_ratio is None else round(cpu_ratio, 3)
                routes[route] = entry
            flood = {name: result.as_json() for name, result in configuration.flood.items()}
            ratio = configuration.flood_ratio
            depth_ratio = configuration.depth_ratio
            configurations.append(
                {
                    "key": configuration.key,
                    "app": configuration.app,
                    "database": configuration.database,
                    "workers": configuration.workers,
                    "routes": routes,
                    "cursor_over_offset_deep": None
                    if depth_ratio is None
                    else round(depth_ratio, 3),
                    "login_flood": {
                        **flood,
                        "list_ratio": None if ratio is None else round(ratio, 3),
                    }
                    if flood
                    else None,
                }
            )
        return {
            "command": self.command,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": self.finished_at.isoformat(timespec="seconds")
            if self.finished_at
            else None,
            "revision": self.revision,
            "machine": self.machine,
            "settings": self.settings,
            "configurations": configurations,
            **(
                {"comparisons": [comparison.as_json() for comparison in self.comparisons]}
                if self.comparisons
                else {}
            ),
            "acceptance": [
                {"criterion": name, "passed": passed, "figures": figures}
                for name, passed, figures in self.acceptance()
            ]
            if self.configurations
            else [],
        }

    def markdown(self) -> str:
        machine = self.machine
        packages = ", ".join(f"{name} {v}" for name, v in machine["packages"].items())
        settings = self.settings
        lines = [
            f"Run of {self.started_at:%Y-%m-%d %H:%M} (revision {self.revision}): `{self.command}`",
            "",
            f"- Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory']} "
            f"memory, {machine['os']}, Linux {machine['kernel']}; load average at start "
            f"{' / '.join(str(load) for load in machine['load_average_at_start'])}",
            f"- Software: Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
            f"{machine['wrk']}",
            f"- Packages: {packages}",
            f"- Load: wrk, {settings['connections']} connections, {settings['threads']} "
            f"thread(s), {settings['duration_s']:g} s per route after a {settings['warmup_s']:g} s "
            f"warm-up, on 127.0.0.1; data: {settings['users']} users, {settings['tasks']} tasks"
            f"{_deep_data(settings)}; login flood: {settings['flood_connections']} + "
            f"{settings['flood_connections']} connections",
        ]
        if self.configurations:
            lines += [
                "- Each ratio to the floor compares two runs of the same route seconds apart "
                "(the floor first, on its own copy of the same data); every configuration starts "
                "from freshly seeded data. CPU ms/req: CPU time of the server's processes (app) "
                "and of its PostgreSQL backends (DB) over the requests served; the CPU ratio is "
                "the floor's app + DB CPU per request over ours, a figure that other load on the "
                "machine hardly moves; writes/req: the app's write system calls per request (one "
                "per round trip to PostgreSQL, one per HTTP answer, one per log line)",
            ]
        if self.comparisons:
            sides = (
                "on the service connected to PostgreSQL directly (before), then through "
                "PgBouncer in transaction mode with DB_POOLER=pgbouncer and as many server "
                "connections as the service's pool (after; its CPU ms/req includes PgBouncer's)"
                if settings.get("compare", {}).get("pgbouncer")
                else "on the older revision's backend (before), then on the working tree's (after)"
            )
            lines += [
                f"- Comparison: each route runs {sides}, and again, round after round; each run "
                "on a server "
                "started for it alone (the other one stopped) with the same settings, on a fresh "
                "copy of the same seeded data. A figure is the median over a side's rounds; "
                "errors are summed over them. after/before: the after side's requests/s over the "
                "before side's (above 100%: faster). CPU ms/req: CPU time of the server's "
                "processes and of its PostgreSQL backends over the requests served; CPU "
                "after/before below 100% means the after side needs less CPU per request, a "
                "figure other load on the machine hardly moves. Round spread: (fastest - slowest "
                "round) / median requests/s, the larger of the two sides; a ratio within it is "
                "noise",
            ]
        lines.append("")
        for configuration in self.configurations:
            lines += self._table(configuration)
        for comparison in self.comparisons:
            lines += comparison.markdown()
        lines += self._flood_table()
        lines += self._depth_table()
        if not self.configurations:
            return "\n".join(lines)
        lines += [
            "**Acceptance (issue 8)**",
            "",
            "| criterion | result | figures |",
            "|---|---|---|",
        ]
        for name, passed, figures in self.acceptance():
            verdict = "not measured" if passed is None else ("PASS" if passed else "FAIL")
            lines.append(f"| {name} | {verdict} | {figures} |")
        lines.append("")
        return "\n".join(lines)

    def _table(self, configuration: Configuration) -> list[str]:
        has_floor = self.floor_of(configuration) is not None
        header = (
            "| route | req/s | p50 ms | p99 ms | errors | app CPU ms/req | DB CPU ms/req "
            "| writes/req |"
        )
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
        if has_floor:
            header += " ratio to floor | CPU ratio |"
            rule += "---:|---:|"
        lines = [f"**{configuration.title}**", "", header, rule]
        for route, result in configuration.results.items():
            row = (
                f"| {route} | {result.requests_per_second:,.0f} | {result.ms('p50'):.1f} | "
                f"{result.ms('p99'):.1f} | {result.errors} | "
                f"{_cpu(result, 'app_cpu_ms_per_request')} | "
                f"{_cpu(result, 'db_cpu_ms_per_request')} | "
                f"{result.extra.get('app_writes_per_request', '-')} |"
            )
            if has_floor:
                ratio = self.ratio(configuration, route)
                cpu_ratio = self.cpu_ratio(configuration, route)
                row += f" {'-' if ratio is None else f'{ratio:.0%}'} |"
                row += f" {'-' if cpu_ratio is None else f'{cpu_ratio:.0%}'} |"
            lines.append(row)
        return [*lines, ""]

    def _depth_table(self) -> list[str]:
        deep = [c for c in self.configurations if c.depth_ratio is not None]
        if not deep:
            return []
        lines = [
            "**Paging at depth** (the page 9,980 tasks into a 10,000-task list, by cursor and by "
            "offset)",
            "",
            "| configuration | cursor req/s | offset req/s | cursor/offset | cursor p50 ms | "
            "offset p50 ms | cursor DB CPU ms/req | offset DB CPU ms/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in deep:
            cursor, offset = c.results["cursor_deep"], c.results["offset_deep"]
            ratio = c.depth_ratio
            assert ratio is not None
            lines.append(
                f"| {c.title.removeprefix('Service, ')} | {cursor.requests_per_second:,.0f} | "
                f"{offset.requests_per_second:,.0f} | {ratio:.1f}x | {cursor.ms('p50'):.1f} | "
                f"{offset.ms('p50'):.1f} | {_cpu(cursor, 'db_cpu_ms_per_request')} | "
                f"{_cpu(offset, 'db_cpu_ms_per_request')} |"
            )
        return [*lines, ""]

    def _flood_table(self) -> list[str]:
        flooded = [c for c in self.configurations if c.flood_ratio is not None]
        if not flooded:
            return []
        lines = [
            "**Login flood** (list alone, then list and login at once, each on its own "
            "connections)",
            "",
            "| configuration | list alone req/s | list p99 alone | list req/s in flood | "
            "list p99 in flood | ratio | login req/s | login p99 | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in flooded:
            alone, listed, login = c.flood["list_alone"], c.flood["list"], c.flood["login"]
            ratio = c.flood_ratio
            assert ratio is not None
            errors = alone.errors + listed.errors + login.errors
            lines.append(
                f"| {c.title.removeprefix('Service, ')} | {alone.requests_per_second:,.0f} | "
                f"{alone.ms('p99'):.1f} | {listed.requests_per_second:,.0f} | "
                f"{listed.ms('p99'):.1f} | {ratio:.0%} | {login.requests_per_second:,.0f} | "
                f"{login.ms('p99'):.1f} | {errors} |"
            )
        return [*lines, ""]


def write_report(output: Path, data: dict[str, Any], markdown: str) -> None:
    """Write a run's report as JSON (`output`) and Markdown (beside it), and print the Markdown."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    output.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
