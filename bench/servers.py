"""Server processes under test: started in a process group of their own, awaited until they
answer, and always stopped (the whole group: uvicorn's workers too)."""

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) a process has used; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_syscalls(pid: int) -> tuple[int, int]:
    """The read and write system calls a process has made (each round trip to the database is
    one write and at least one read); (0, 0) when it is gone."""
    counts = {"syscr": 0, "syscw": 0}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in counts:
                counts[name] = int(value)
    except OSError:
        pass
    return counts["syscr"], counts["syscw"]


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(url: str, headers: Mapping[str, str] | None = None) -> bytes:
    """GET a URL of a server under test (loopback only); its body, or HTTPError."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark only talks to 127.0.0.1, not {url}")
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 (checked)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (checked)
        body: bytes = response.read()
        return body


class ServerFailed(RuntimeError):
    pass


class Server:
    """One server process (and its workers), logging to a file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        port: int,
        ready_path: str,
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.port = port
        self.ready_path = ready_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.database: str | None = None  # the PostgreSQL database it uses, if any
        # Processes that serve it too (PgBouncer in front of its database): in its CPU time.
        self.helper_pids: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, *, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that stop() reaches the workers
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = self.base_url + self.ready_path
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with status {self._process.returncode} before it "
                    f"answered; see {self.log_path}"
                )
            try:
                http_get(url)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            else:
                return
            time.sleep(0.2)
        raise ServerFailed(f"{self.name} did not answer {url} within {timeout:.0f} s")

    def process_ids(self) -> list[int]:
        """The server's process and all its descendants (uvicorn's workers)."""
        found, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending += _children(pid)
        return found

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (and its helpers')."""
        return sum(process_cpu_seconds(pid) for pid in [*self.process_ids(), *self.helper_pids])

    def syscalls(self) -> tuple[int, int]:
        """Read and write system calls made so far by the server's processes."""
        reads = writes = 0
        for pid in self.process_ids():
            process_reads, process_writes = process_syscalls(pid)
            reads, writes = reads + process_reads, writes + process_writes
        return reads, writes

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers, or the process itself."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except OSError:
            pids = []
        # With several workers uvicorn's supervisor may also start a resource tracker;
        # the workers are the children that multiprocessing spawned.
        workers = [pid for pid in pids if "spawn_main" in _cmdline(pid)]
        return workers or [self.pid]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if process is not None:
            # Workers left behind by a supervisor that died first.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
