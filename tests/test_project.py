"""The project's own files: pins in step, the Python version, the console command, and
documentation whose links all resolve inside the repository."""

import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.strip()):
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_requirements_files_pin_what_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pins(ROOT / "requirements.txt")
    dev = _pins(ROOT / "requirements-dev.txt")
    for spec in project["dependencies"]:
        name, version = _pins_of(spec)
        assert runtime.get(name) == version, f"requirements.txt disagrees on {name}"
    for spec in project["optional-dependencies"]["dev"]:
        name, version = _pins_of(spec)
        assert dev.get(name) == version, f"requirements-dev.txt disagrees on {name}"


def _pins_of(spec: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", spec)
    assert match, f"{spec!r} in pyproject.toml is not pinned with =="
    return re.sub(r"[-_.]+", "-", match[1]).lower(), match[2]


def test_python_version_file_says_3_13() -> None:
    assert (ROOT / ".python-version").read_text().strip() == "3.13"
    assert sys.version_info[:2] == (3, 13)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_command_migrates_sqlite_and_serves_health_and_docs(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "backend.cli", "serve", "--port", str(port)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the server did not start")
                time.sleep(0.2)
        assert health.status_code == 200
        docs = httpx.get(f"{base}/docs", timeout=5)
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        signup = httpx.post(
            f"{base}/api/auth/signup",
            json={"email": "first@example.com", "password": "a fine first password"},
            timeout=10,
        )
        assert signup.status_code == 201, signup.text
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert (tmp_path / "todo.db").exists()
    assert (tmp_path / ".todo-jwt-key.pem").stat().st_mode & 0o077 == 0
    assert "Running upgrade" in output


def test_serve_refuses_production_without_a_signing_key(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ENVIRONMENT": "production"}
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "JWT_PRIVATE_KEY" in result.stderr
    assert "Traceback" not in result.stderr


# --- Documentation links ------------------------------------------------------------------------

DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "clients" / "typescript" / "README.md",
    ROOT / "bench" / "README.md",
]
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(path: Path) -> str:
    """The document without code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the document's headings (repeats get -1, -2, …)."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_the_readme_links_to_the_api_reference() -> None:
    readme = _prose(ROOT / "README.md")
    assert "(docs/API.md)" in readme
    reference = (ROOT / "docs" / "API.md").read_text()
    for route in (
        "POST /api/auth/signup", "POST /api/auth/login", "POST /api/auth/refresh",
        "POST /api/auth/logout", "POST /api/auth/logout-all", "POST /api/auth/password",
        "GET /api/auth/me", "GET /api/auth/jwks", "GET /api/{user_id}/tasks",
        "POST /api/{user_id}/tasks", "GET /api/{user_id}/tasks/{id}",
        "PUT /api/{user_id}/tasks/{id}", "PATCH /api/{user_id}/tasks/{id}",
        "PATCH /api/{user_id}/tasks/{id}/complete", "DELETE /api/{user_id}/tasks/{id}",
        "GET /health", "GET /ready",
    ):  # fmt: skip
        assert f"### {route}\n" in reference or f"`{route}`" in reference, route
    assert reference.count("curl ") >= 17


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    assert "../shared" not in text, "the repository carries its own documents"
    links = _LINK.findall(_prose(document))
    assert links, "no links found: the pattern is broken"
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.is_relative_to(ROOT), f"{link} points outside the repository"
        assert path.exists(), f"{link}: {path.relative_to(ROOT)} does not exist"
        if anchor:
            assert path.suffix == ".md", f"{link}: an anchor in a file that is not Markdown"
            assert anchor in _anchors(path), f"{link}: no heading #{anchor}"


def test_no_test_module_imports_from_another() -> None:
    # Shared helpers live in tests/helpers.py and fixtures in conftest.py: a test module that
    # imports another also collects its tests twice over and ties the two together.
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"\s*(from tests\.test_\w+ import|import tests\.test_)", line)
    ]
    assert offenders == []
