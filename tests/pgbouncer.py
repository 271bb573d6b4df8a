"""A private PgBouncer (Debian's package) in transaction mode, on a free loopback port, in front
of the PostgreSQL leg's server: started by the tests that need it, stopped when they end (and
by the kernel when the test process dies first)."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from backend.database_url import normalize_database_url

# Few server connections for the clients of two app instances (12 each): they must take turns,
# so a transaction that relied on its session would meet another client's.
SERVER_CONNECTIONS = 5
_INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
query_wait_timeout = 20
"""


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@dataclass(frozen=True)
class PgBouncer:
    port: int
    server_url: str
    pid: int

    def url_for(self, database: str) -> str:
        """The URL of `database` through this PgBouncer (the server's user and password)."""
        url = make_url(normalize_database_url(self.server_url))
        url = url.set(host="127.0.0.1", port=self.port, database=database, query={})
        return url.render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user() -> list[str]:
    """setpriv's arguments: PgBouncer refuses to run as root, so root runs it as postgres (or
    nobody); and it ends when its parent, the test process, does."""
    switch: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
            user = "postgres"
        except KeyError:
            user = "nobody"
        switch = [f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--clear-groups"]
    return ["setpriv", *switch, "--pdeathsig=TERM", "--"]


@contextmanager
def running_pgbouncer(
    binary: str, server_url: str, *, pool_size: int = SERVER_CONNECTIONS
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of `server_url`'s PostgreSQL server, with
    `pool_size` server connections per database."""
    server = make_url(normalize_database_url(server_url))
    # Readable by the user PgBouncer runs as (pytest's own temporary directories are not).
    directory = Path(tempfile.mkdtemp(prefix="todo-pgbouncer-"))
    directory.chmod(0o755)
    port = _free_port()
    user, password = server.username or "postgres", server.password or ""
    (directory / "users.txt").write_text(f'"{user}" "{password}"\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        _INI.format(
            host=server.host or "127.0.0.1",
            port=server.port or 5432,
            listen_port=port,
            directory=directory,
            pool_size=pool_size,
        )
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    log_path = directory / "pgbouncer.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*_as_user(), binary, str(ini)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PgBouncer did not start:\n{log_path.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        yield PgBouncer(port=port, server_url=server_url, pid=process.pid)
    finally:
        process.terminate()  # SIGTERM: PgBouncer shuts down at once
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
