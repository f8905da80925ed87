"""config/nginx.conf for real: Debian's nginx on loopback, TLS, two upstream nodes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import REDIS_URL, ROOT, TEST_API_KEY, ServerProcess, free_port, require_service
from tests.ops.conftest import wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SAMPLE = ROOT / "config" / "nginx.conf"
UPSTREAM = re.compile(r"(?m)^(\s*)server 10\.0\.0\.\d+:8888( [^;\n]*)?;\n")


def render_site(sample: str, nodes: list[int], http: int, https: int, tmp: Path) -> str:
    """Return the sample site on loopback ports, with the test nodes and paths under ``tmp``."""
    found = list(UPSTREAM.finditer(sample))
    assert len(found) >= 2, "the sample should list several upstream nodes"
    indent, options = found[0].group(1), found[0].group(2) or ""
    servers = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in nodes)
    site = sample[: found[0].start()] + servers + UPSTREAM.sub("", sample[found[0].end() :])
    site = re.sub(r"(?m)^\s*listen \[::\]:.*\n", "", site)  # no IPv6 in the sandbox
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http};")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;")
    site = re.sub(r"/etc/letsencrypt/live/[^/]+/fullchain\.pem", str(tmp / "cert.pem"), site)
    site = re.sub(r"/etc/letsencrypt/live/[^/]+/privkey\.pem", str(tmp / "key.pem"), site)
    return site.replace("/var/log/nginx/", f"{tmp}/").replace("/var/www/", f"{tmp}/www/")


def main_conf(tmp: Path, site: Path) -> str:
    """A minimal nginx.conf around the site (what Debian's /etc/nginx/nginx.conf provides)."""
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read files under tmp
    return (
        f"{user}worker_processes 1;\nerror_log {tmp}/error.log warn;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n{temp}\n    access_log {tmp}/access.log;\n    include {site};\n}}\n"
    )


@dataclass
class Nginx:
    http: int
    https: int
    ssl: ssl.SSLContext
    tmp: Path

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.https}/ws"

    def request(self, path: str, data: bytes | None = None, **headers: str) -> tuple[int, Any]:
        """HTTPS request through nginx; return (status, body or Location for redirects)."""
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.https}{path}", data=data, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def make_cert(tmp: Path) -> ssl.SSLContext:
    """Self-signed certificate for 127.0.0.1; return a client context that trusts it."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return ssl.create_default_context(cafile=str(tmp / "cert.pem"))


@pytest.fixture
def nodes(server_factory: Any, prefix: str) -> list[ServerProcess]:
    """Two server nodes on the shared Redis."""
    url = require_service(REDIS_URL, 6379)
    return [
        server_factory(broker_url=url, redis_prefix=prefix, trust_proxy_headers="true")
        for _ in range(2)
    ]


@pytest.fixture
def nginx(nodes: list[ServerProcess], tmp_path: Path) -> Iterator[Nginx]:
    """nginx (non-daemon child) serving the rendered sample site; stopped by PID."""
    if not os.path.exists(NGINX):
        message = f"{NGINX} missing (apt-get install -y nginx-light)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path / "nginx"
    tmp.mkdir()
    context = make_cert(tmp)
    proxy = Nginx(free_port(), free_port(), context, tmp)
    site = tmp / "realtime.conf"
    site.write_text(
        render_site(SAMPLE.read_text(), [n.port for n in nodes], proxy.http, proxy.https, tmp)
    )
    (tmp / "nginx.conf").write_text(main_conf(tmp, site))
    command = [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")]
    command += ["-g", f"daemon off; pid {tmp}/nginx.pid;"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"nginx exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                return proxy.request("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=10, what="nginx answering")
        yield proxy
    finally:
        proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets do not hold it up
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_websocket_clients_through_nginx_spread_over_nodes_and_get_events(
    nginx: Nginx, nodes: list[ServerProcess]
) -> None:
    """wss:// through nginx: clients land on both nodes and all get a published event."""

    async def scenario() -> list[dict[str, Any]]:
        clients = [await Client.open(nginx.wss_url, ssl=nginx.ssl) for _ in range(4)]
        try:
            for c in clients:
                assert (await c.subscribe("contest:11"))["op"] == "subscribed"
            # least_conn: two clients on each node
            for node in nodes:
                assert json.loads(node.get("/healthz")[1])["connections"] == 2
            body = json.dumps({"channel": "contest:11", "type": "t", "data": {"x": 1}}).encode()
            status, answer = await asyncio.to_thread(
                nginx.request,
                "/api/publish",
                body,
                Authorization=f"Bearer {TEST_API_KEY}",
                **{"Content-Type": "application/json"},
            )
            assert status == 200, answer
            return [(await c.events(1))[0] for c in clients]
        finally:
            for c in clients:
                await c.ws.close()

    events = asyncio.run(scenario())
    assert [(e["offset"], e["data"]) for e in events] == [(1, {"x": 1})] * 4


def test_client_cannot_spoof_its_address_through_nginx(
    nginx: Nginx, nodes: list[ServerProcess]
) -> None:
    """nginx overwrites a client's X-Real-IP; the node (xheaders) logs the real address."""

    async def scenario() -> str:
        async with await Client.open(
            nginx.wss_url, ssl=nginx.ssl, additional_headers={"X-Real-IP": "203.0.113.9"}
        ) as c:
            return str(c.welcome["session"])

    session = asyncio.run(scenario())
    line = wait_for(
        lambda: next(
            (ln for n in nodes for ln in n.log().splitlines() if f"{session} opened" in ln), None
        ),
        what="the connection's log line",
    )
    assert "from 127.0.0.1" in line and "203.0.113.9" not in line


def test_plain_http_redirects_to_https(nginx: Nginx) -> None:
    """Port 80 answers with a redirect to https."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(f"http://127.0.0.1:{nginx.http}/ws", timeout=5)
    assert info.value.code == 301
    assert info.value.headers["Location"].startswith("https://127.0.0.1")


def test_metrics_are_not_exposed_through_nginx(nginx: Nginx) -> None:
    """/metrics is scraped per node, never through the public balancer."""
    assert nginx.request("/metrics")[0] == 403


def test_static_client_is_served_through_nginx(nginx: Nginx) -> None:
    """The browser client script comes through the proxy."""
    status, body = nginx.request("/static/realtime.js")
    assert status == 200 and b"RealtimeClient" in body
