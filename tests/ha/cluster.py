"""
A chat cluster for tests: several real ``chat-server`` processes (replicas) on
one database, and a real HAProxy in front of them, run from the HAProxy image
(the local one in CI, ``HAPROXY_TEST_IMAGE`` to use another) with the host's
network so that it reaches the replicas on 127.0.0.1.

HAProxy's configuration is the repository's own ``deploy/haproxy/haproxy.cfg``
with two lines rewritten for this setting: the ``bind`` (a free port on
127.0.0.1 instead of :5050) and the ``server-template`` (the replicas' static
addresses instead of Docker DNS). Everything else (checks, timeouts, retries,
redispatch, PROXY protocol v2) is what users run.

Clients can come from different loopback addresses (127.0.0.2, 127.0.0.3, ...:
Linux routes all of 127.0.0.0/8 to lo), so per-address behaviour behind the
balancer is observable; HAProxy itself connects from 127.0.0.1, the only
trusted proxy.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.engines import LOCAL_HAPROXY_IMAGE, free_port, require_image, run
from tests.fixtures.server import LiveServer, make_server_env, run_cli

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY_LUA = REPO / "deploy" / "haproxy" / "hold.lua"


def haproxy_image() -> str:
    import os

    return os.environ.get("HAPROXY_TEST_IMAGE") or LOCAL_HAPROXY_IMAGE


def haproxy_volumes(cfg: Path) -> list[str]:
    """``docker run`` arguments that give the image a rendered configuration
    and the Lua file it loads (deploy/haproxy/hold.lua)."""
    return ["-v", f"{cfg}:/usr/local/etc/haproxy/haproxy.cfg:ro",
            "-v", f"{HAPROXY_LUA}:/usr/local/etc/haproxy/hold.lua:ro"]


def render_haproxy_cfg(listen_port: int, replicas: list[tuple[int, int]]) -> str:
    """The repository's configuration for replicas on 127.0.0.1 (chat, health ports)."""
    text = HAPROXY_CFG.read_text()
    bind = re.compile(r"^(\s*)bind :5050\s*$", re.M)
    template = re.compile(r"^(\s*)server-template .*$", re.M)
    assert len(bind.findall(text)) == 1 and len(template.findall(text)) == 1, \
        "deploy/haproxy/haproxy.cfg changed shape: update tests/ha/cluster.py"
    text = bind.sub(rf"\1bind 127.0.0.1:{listen_port}", text)
    servers = "\n".join(f"    server r{i} 127.0.0.1:{chat} port {health}"
                        for i, (chat, health) in enumerate(replicas, 1))
    return template.sub(lambda m: servers, text)


@dataclass
class HAProxy:
    name: str
    port: int
    cfg: Path

    def logs(self) -> str:
        r = run(["docker", "logs", self.name], timeout=30)
        return r.stdout + r.stderr

    def stop(self) -> None:
        run(["docker", "rm", "-f", self.name], timeout=60)


@dataclass
class Cluster:
    replicas: list[LiveServer]
    haproxy: HAProxy
    env: dict[str, str]
    health_ports: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The balancer's chat port."""
        return self.haproxy.port

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(list(args), self.env, stdin=stdin)

    def history(self, user: str) -> list[dict[str, Any]]:
        import json

        r = self.cli("history", "export", user)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def ready(self, index: int) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_ports[index]}/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_balanced(self, timeout: float = 30.0) -> None:
        """Until HAProxy has seen every running replica up (its checks run every second)."""
        deadline = time.monotonic() + timeout
        up = {i for i, r in enumerate(self.replicas) if r.proc is not None}
        while True:
            logs = self.haproxy.logs()
            state = run(["docker", "inspect", "--format", "{{.State.Status}}", self.haproxy.name],
                        timeout=30).stdout.strip()
            if state != "running":
                raise RuntimeError(f"HAProxy is {state}:\n{logs}")
            seen = {i for i in up if re.search(rf"replicas/r{i + 1} is UP", logs)
                    or not re.search(rf"replicas/r{i + 1} is DOWN", logs)}
            if seen == up and all(self.ready(i) for i in up):
                # HAProxy starts with every server UP until a check fails, so
                # give its checks a moment to have run at least twice.
                time.sleep(2.5)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not all up behind HAProxy:\n{logs}")
            time.sleep(0.2)

    def sessions_on(self, index: int, user: str) -> int:
        """How many times ``user`` logged in on replica ``index``."""
        return len(re.findall(rf"authenticated\b.*\buser={re.escape(user)}\b",
                              self.replicas[index].log_text()))


def connect_from(port: int, source: str = "127.0.0.1", timeout: float = 15.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from the loopback address ``source``."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def start_cluster(tmp_path: Path, standin_url: str, *, replicas: int = 2,
                  users: dict[str, str], db: str | None = None, **env: str) -> Iterator[Cluster]:
    """Start replicas and HAProxy; yields the cluster, then stops everything."""
    require_image(haproxy_image())
    base = make_server_env(tmp_path, standin_url, **{
        "CHAT_TRUSTED_PROXIES": "127.0.0.1/32",
        "CHAT_HEALTH_HOST": "127.0.0.1",
        **({"CHAT_DB": db} if db else {}),
        **env,
    })
    # Side by side (the schema's migrations take a lock: concurrent starts are safe).
    results: list[subprocess.CompletedProcess[str]] = []
    adders = [threading.Thread(target=lambda n=name, p=password: results.append(
        run_cli(["users", "add", n, "--password-stdin"], base, stdin=p + "\n")))
        for name, password in users.items()]
    for t in adders:
        t.start()
    for t in adders:
        t.join(120)
    assert len(results) == len(users) and all(r.returncode == 0 for r in results), \
        [r.stderr for r in results]
    servers: list[LiveServer] = []
    health_ports: list[int] = []
    haproxy: HAProxy | None = None
    try:
        for i in range(replicas):
            d = tmp_path / f"replica{i}"
            d.mkdir()
            health = free_port()
            server = LiveServer(env={**base, "CHAT_HEALTH_PORT": str(health),
                                     "CHAT_ADMIN_SOCKET": str(d / "admin.sock")},
                                log_path=d / "server.log")
            servers.append(server)
            health_ports.append(health)
        # The replicas start side by side (each waits for its model check).
        starters = [threading.Thread(target=s.start) for s in servers]
        for t in starters:
            t.start()
        for t in starters:
            t.join(120)
        for s in servers:
            assert s.proc is not None and s.port, f"replica did not start:\n{s.log_text()}"
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(render_haproxy_cfg(port, [(s.port, h) for s, h in zip(servers, health_ports,
                                                                               strict=True)]))
        cfg.chmod(0o644)
        name = f"chat-ha-test-{uuid.uuid4().hex[:8]}"
        # Removed in any case below, even if it was created but did not start.
        haproxy = HAProxy(name, port, cfg)
        r = run(["docker", "run", "-d", "--name", name, "--network", "host",
                 *haproxy_volumes(cfg), haproxy_image()],
                timeout=120)
        assert r.returncode == 0, r.stderr
        cluster = Cluster(servers, haproxy, base, health_ports)
        cluster.wait_balanced()
        yield cluster
    finally:
        if haproxy is not None:
            haproxy.stop()
        for s in servers:
            s.stop(timeout=15)
