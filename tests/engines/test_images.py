"""
The local PostgreSQL and HAProxy images (.ci/images/) behave like the official
ones where our compose overlays rely on it: PostgreSQL initialises itself from
POSTGRES_* on an empty volume, keeps its data on the volume and reports
readiness through pg_isready; HAProxy reads the official configuration path,
proxies TCP, speaks the PROXY protocol and stops gracefully on `docker stop`.
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.engines import (
    LOCAL_HAPROXY_IMAGE,
    LOCAL_POSTGRES_IMAGE,
    free_port,
    require_image,
    run,
)

pytestmark = pytest.mark.engines

POSTGRES_IMAGE = os.environ.get("POSTGRES_TEST_IMAGE") or LOCAL_POSTGRES_IMAGE
HAPROXY_IMAGE = os.environ.get("HAPROXY_TEST_IMAGE") or LOCAL_HAPROXY_IMAGE
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Docker:
    """Containers and volumes one test makes, all removed afterwards."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def run(self, *args: str) -> str:
        name = f"chat-test-{self.tag}-{len(self.containers)}"
        r = run(["docker", "run", "-d", "--name", name, *args], timeout=60)
        self.containers.append(name)
        assert r.returncode == 0, r.stderr
        return name

    def volume(self) -> str:
        name = f"chat-test-{self.tag}-data"
        self.volumes.append(name)
        return name

    def logs(self, name: str) -> str:
        r = run(["docker", "logs", name], timeout=30)
        return r.stdout + r.stderr

    def cleanup(self) -> None:
        for name in self.containers:
            run(["docker", "rm", "-f", "-v", name], timeout=60)
        for name in self.volumes:
            run(["docker", "volume", "rm", "-f", name], timeout=60)


@pytest.fixture
def docker() -> Iterator[Docker]:
    d = Docker()
    try:
        yield d
    finally:
        d.cleanup()


def _wait_pg_isready(docker: Docker, name: str, user: str, db: str,
                     timeout: float = 90) -> None:
    """The healthcheck a compose file gives the official image, run the same way."""
    deadline = time.monotonic() + timeout
    while True:
        r = run(["docker", "exec", name, "pg_isready", "-h", "127.0.0.1", "-U", user, "-d", db],
                timeout=30)
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, f"not ready:\n{r.stdout}{docker.logs(name)}"
        time.sleep(0.2)


def _start_postgres(docker: Docker, volume: str, password: str, port: int) -> str:
    name = docker.run("-e", "POSTGRES_USER=chat", "-e", f"POSTGRES_PASSWORD={password}",
                      "-e", "POSTGRES_DB=chatdb", "-v", f"{volume}:/var/lib/postgresql/data",
                      "-p", f"127.0.0.1:{port}:5432", POSTGRES_IMAGE)
    _wait_pg_isready(docker, name, "chat", "chatdb")
    return name


def test_postgres_image_initialises_from_the_environment_and_keeps_its_volume(
        docker: Docker) -> None:
    require_image(POSTGRES_IMAGE)
    volume, port = docker.volume(), free_port()
    first = _start_postgres(docker, volume, "first-password", port)
    url = f"postgresql://chat:first-password@127.0.0.1:{port}/chatdb"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "chat", "chatdb")
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('on the volume')")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace("first-password", "wrong"), connect_timeout=10)

    # A new container on the same volume: no second initialisation (the new
    # POSTGRES_PASSWORD is ignored, as with the official image), data intact.
    run(["docker", "rm", "-f", first], timeout=60)
    _start_postgres(docker, volume, "second-password", port)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("on the volume",)]


def test_postgres_image_refuses_to_initialise_without_a_password(docker: Docker) -> None:
    require_image(POSTGRES_IMAGE)
    name = docker.run(POSTGRES_IMAGE)
    r = run(["docker", "wait", name], timeout=60)
    assert r.stdout.strip() == "1"
    assert "POSTGRES_PASSWORD is not set" in docker.logs(name)


HAPROXY_CFG = """\
global
    log stdout format raw local0

defaults
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

# TCP mode in front, passing the client's address on with PROXY protocol v2 ...
frontend chat
    mode tcp
    bind :5050
    default_backend replicas

backend replicas
    mode tcp
    server r1 127.0.0.1:8081 send-proxy-v2 check

# ... to a backend that accepts it and answers with the address it was told.
frontend replica
    mode http
    bind 127.0.0.1:8081 accept-proxy
    http-request return status 200 content-type text/plain lf-string "client=%[src]"
"""


def test_haproxy_image_proxies_tcp_with_proxy_protocol_and_stops_gracefully(
        docker: Docker, tmp_path: Path) -> None:
    require_image(HAPROXY_IMAGE)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG)
    cfg.chmod(0o644)
    port = free_port()
    name = docker.run("-v", f"{cfg}:/usr/local/etc/haproxy/haproxy.cfg:ro",
                      "-p", f"127.0.0.1:{port}:5050", HAPROXY_IMAGE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with _OPENER.open(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                body = resp.read().decode()
            break
        except OSError as exc:
            assert time.monotonic() < deadline, f"{exc}\n{docker.logs(name)}"
            time.sleep(0.2)
    # The replica saw the real client (the Docker host's side of the published
    # port), not HAProxy's own loopback connection.
    assert body.startswith("client="), body
    assert body != "client=127.0.0.1", body

    user = run(["docker", "exec", name, "id", "-un"], timeout=30).stdout.strip()
    assert user == "haproxy"  # not root, like the official image

    run(["docker", "stop", "-t", "10", name], timeout=60)
    code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", name], timeout=30)
    assert code.stdout.strip() == "0", docker.logs(name)
