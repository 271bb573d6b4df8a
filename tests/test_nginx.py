"""A real nginx, running the committed site file (deploy/nginx/todo-api.conf) with a test's ports
and a certificate made here, in front of a live server: the address the rate limiter counts, the
event stream, and the 413."""

import datetime
import getpass
import ipaddress
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend.cli import build_parser
from tests.conftest import sign_up
from tests.helpers import open_events
from tests.live import ROOT, free_port, live_server
from tests.programs import require_program, stop, wait_until

SITE = ROOT / "deploy" / "nginx" / "todo-api.conf"
WRONG = {"email": "nobody@example.com", "password": "not-the-password-at-all"}


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def rendered_site(
    *, upstream_port: int, http_port: int, https_port: int, cert: Path, key: Path
) -> str:
    """The committed site with this test's ports and certificate, on 127.0.0.1 only."""
    site = SITE.read_text()
    for committed, ours in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("    listen [::]:80;\n", ""),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("/etc/letsencrypt/live/api.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/api.example.com/privkey.pem", str(key)),
    ):
        assert committed in site, f"the site file no longer has {committed!r}"
        site = site.replace(committed, ours)
    return site


@contextmanager
def nginx(workdir: Path, *, upstream: str) -> Iterator[str]:
    """nginx as this user, everything it writes under `workdir`, in front of `upstream`; the
    https URL it serves."""
    binary = require_program("nginx")
    prefix = workdir / "nginx"
    prefix.mkdir()
    cert, key = self_signed_certificate(prefix)
    https_port = free_port()
    (prefix / "todo-api.conf").write_text(
        rendered_site(
            upstream_port=int(upstream.rsplit(":", 1)[1]),
            http_port=free_port(),
            https_port=https_port,
            cert=cert,
            key=key,
        )
    )
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"""
{f"user {getpass.getuser()};" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {prefix / "todo-api.conf"};
}}
"""
    )
    command = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    process = subprocess.Popen(
        [*command, "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{https_port}"
    context = ssl.create_default_context(cafile=cert)
    try:

        def ready() -> bool | None:
            if process.poll() is not None:
                raise RuntimeError((prefix / "error.log").read_text()[-2000:])
            try:
                response = httpx.get(f"{url}/health", verify=context, timeout=1)
            except httpx.TransportError:
                return None
            return response.status_code == 200 or None

        wait_until("nginx ready", ready)
        yield url
    finally:
        stop(process)


@asynccontextmanager
async def client_from(url: str, address: str, workdir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client connecting to nginx from `address` (any 127.x address is this machine)."""
    context = ssl.create_default_context(cafile=workdir / "nginx" / "cert.pem")
    transport = httpx.AsyncHTTPTransport(local_address=address, verify=context)
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        yield client


async def test_the_nginx_site_forwards_the_client_address_streams_and_answers_413_as_the_app(
    tmp_path: Path,
) -> None:
    env = {"TRUSTED_PROXIES": "127.0.0.1", "LOGIN_RATE_LIMIT": "2/minute"}
    with live_server(tmp_path, env=env) as server, nginx(tmp_path, upstream=server.url) as url:
        async with (
            client_from(url, "127.0.0.2", tmp_path) as first,
            client_from(url, "127.0.0.3", tmp_path) as second,
        ):
            # nginx connects from 127.0.0.1; the limiter counts each client's own address.
            first_attempts = [(await first.post("/api/auth/login", json=WRONG)) for _ in range(3)]
            assert [r.status_code for r in first_attempts] == [401, 401, 429]
            assert (await second.post("/api/auth/login", json=WRONG)).status_code == 401
            # A client that writes another address is still counted as itself.
            spoofed = await first.post(
                "/api/auth/login", json=WRONG, headers={"X-Forwarded-For": "198.51.100.7"}
            )
            assert spoofed.status_code == 429
            assert spoofed.headers["content-type"] == "application/problem+json"

            # An event stream through nginx: a change arrives within a second.
            user = await sign_up(second)
            async with open_events(second, user) as reader:
                created = await second.post(
                    user.tasks_url, json={"title": "through nginx"}, headers=user.headers
                )
                assert created.status_code == 201
                sent = time.monotonic()
                event = await reader.next(within=5)
                assert time.monotonic() - sent < 1.0
                assert event.event == "change"
                assert event.json()["task"]["title"] == "through nginx"

            # Too large for nginx, and (straight to the app) too large for the app: one answer.
            body = b'{"title": "' + b"x" * 70_000 + b'"}'
            headers = {**user.headers, "Content-Type": "application/json"}
            by_nginx = await second.post(user.tasks_url, content=body, headers=headers)
        async with httpx.AsyncClient(base_url=server.url) as direct:
            by_app = await direct.post(user.tasks_url, content=body, headers=headers)
    for answer in (by_nginx, by_app):
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "payload_too_large"
        assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert "server" not in by_app.headers and by_nginx.headers["server"].startswith("nginx")
    without_ids = [{**a.json(), "request_id": None} for a in (by_nginx, by_app)]
    assert without_ids[0] == without_ids[1]


def test_the_systemd_unit_serves_what_the_nginx_site_proxies_to() -> None:
    """The unit's command is one `todo-api serve` understands, on the upstream's address."""
    unit = (ROOT / "deploy" / "todo-api.service").read_text()
    (command,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    program, *arguments = command.removeprefix("ExecStart=").split()
    assert program.endswith("/todo-api")
    args = build_parser().parse_args(arguments)
    assert (args.command, args.host, args.port) == ("serve", "127.0.0.1", 8000)
    assert f"server {args.host}:{args.port};" in SITE.read_text()
    assert "Environment=TRUSTED_PROXIES=127.0.0.1" in unit
