"""The load generator: wrk (Debian's package) driving one route through `requests.lua`."""

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SCRIPT = Path(__file__).resolve().parent / "requests.lua"
ROUTES = (
    "list", "list_filtered", "changes", "cursor_deep", "offset_deep", "get", "create", "replace",
    "toggle", "delete", "login",
)  # fmt: skip
WRK_TIMEOUT_SECONDS = 10  # a slower answer counts as an error (a timeout), not as a latency

INSTALL_HINT = (
    "wrk, the load generator, is not installed. On Debian or Ubuntu: "
    "`sudo apt-get update && sudo apt-get install -y wrk`; elsewhere see "
    "https://github.com/wg/wrk (it must be built with LuaJIT, as the packages are)."
)


class WrkMissing(RuntimeError):
    pass


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(INSTALL_HINT)
    return path


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its banner and the usage, and exits non-zero.
    output = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (output.stdout or output.stderr).splitlines()[0].strip()


@dataclass(frozen=True, slots=True)
class WrkResult:
    route: str
    connections: int
    duration_s: float
    requests: int
    latency_us: dict[str, float]
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        """Every request that did not get a 2xx answer: other statuses, socket errors and
        timeouts."""
        return self.non_2xx + sum(self.socket_errors.values())

    def ms(self, percentile: str) -> float:
        return self.latency_us[percentile] / 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "requests_per_second": round(self.requests_per_second, 1),
            "p50_ms": round(self.ms("p50"), 2),
            "p90_ms": round(self.ms("p90"), 2),
            "p99_ms": round(self.ms("p99"), 2),
            "p999_ms": round(self.ms("p999"), 2),
            "max_ms": round(self.ms("max"), 2),
            "mean_ms": round(self.ms("mean"), 2),
            "errors": self.errors,
            "statuses": dict(sorted(self.statuses.items())),
            "socket_errors": self.socket_errors,
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run: which route, how hard, how long."""

    route: str
    connections: int
    threads: int
    duration_s: float
    arguments: tuple[str, ...] = ()  # the route's own (`path`: the path and the token)

    def command(self, wrk: str, base_url: str, data_file: Path) -> list[str]:
        threads = max(1, min(self.threads, self.connections))
        return [
            wrk,
            f"--threads={threads}",
            f"--connections={self.connections}",
            f"--duration={max(1, round(self.duration_s))}s",
            f"--timeout={WRK_TIMEOUT_SECONDS}s",
            f"--script={SCRIPT}",
            base_url,
            "--",
            str(data_file),
            self.route,
            str(threads),
            *self.arguments,
        ]


class WrkFailed(RuntimeError):
    pass


class RunningLoad:
    """A wrk process under way; `result()` waits for it and reads its summary line."""

    def __init__(self, wrk: str, load: Load, base_url: str, data_file: Path) -> None:
        self.load = load
        self._process = subprocess.Popen(
            load.command(wrk, base_url, data_file),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self) -> WrkResult:
        stdout, stderr = self._process.communicate(timeout=self.load.duration_s + 60)
        summary = next(
            (line for line in stdout.splitlines() if line.startswith("BENCH_RESULT ")), None
        )
        if self._process.returncode != 0 or summary is None:
            raise WrkFailed(
                f"wrk failed on {self.load.route} (status {self._process.returncode}):\n"
                f"{stdout}\n{stderr}"
            )
        data = orjson.loads(summary.removeprefix("BENCH_RESULT "))
        return WrkResult(
            route=self.load.route,
            connections=self.load.connections,
            duration_s=data["duration_us"] / 1e6,
            requests=data["requests"],
            latency_us={key: float(value) for key, value in data["latency_us"].items()},
            statuses={str(key): int(value) for key, value in data["statuses"].items()},
            socket_errors={key: int(value) for key, value in data["socket_errors"].items()},
        )

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def run_load(wrk: str, load: Load, base_url: str, data_file: Path) -> WrkResult:
    running = RunningLoad(wrk, load, base_url, data_file)
    try:
        return running.result()
    finally:
        running.kill()
