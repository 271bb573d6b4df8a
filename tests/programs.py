"""Real programs that tests start beside the service (Prometheus, nginx): found on the machine,
or the test is skipped, except under CI=true, where `.ci/run` installs them and a missing one
fails the run."""

import os
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import IN_CI

# Debian puts nginx in /usr/sbin, which a user's PATH may not hold.
_SEARCH_PATH = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))


def require_program(name: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is not None:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed, and CI=true requires it (.ci/run installs it)")
    pytest.skip(f"{name} is not installed (apt-get install {name})")


def wait_until[T](what: str, probe: Callable[[], T | None], *, seconds: float = 30) -> T:
    """The first answer of `probe` that is not None, asked every 0.1 s; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None:
            return last
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {seconds:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
