"""Metrics and status in the compose stack: the metrics port answers inside the
compose network (where Prometheus scrapes it) and is not published; `chat-server
status` works through `docker compose exec`."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import Stack

pytestmark = pytest.mark.integration

FETCH = ("import sys, urllib.request; "
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())")


def test_metrics_are_served_inside_the_compose_network(stack: Stack) -> None:
    assert stack.client_host("hello metrics").returncode == 0
    # From another container, by service name: the way Prometheus scrapes it.
    r = stack.compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "python3", "client",
                      "-c", FETCH, "http://server:9464/metrics", check=False)
    assert r.returncode == 0, r.stderr
    assert 'chat_messages_total{outcome="answered",reason="none"}' in r.stdout
    assert 'chat_backend_up{backend="ollama"} 1.0' in r.stdout


def test_the_metrics_port_is_not_published(stack: Stack) -> None:
    r = subprocess.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}",
                        stack.container_id("server")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    ports = json.loads(r.stdout)
    assert ports["5050/tcp"]  # the chat port is published...
    assert not ports.get("9464/tcp")  # ...the metrics port is not


def test_status_through_docker_compose_exec(stack: Stack) -> None:
    r = stack.exec("server", "chat-server", "status", "--json")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["backends"][0]["state"] == "ready"
    assert snap["queue"]["max_parallel"] >= 1
    once = stack.exec("server", "chat-server", "status", "--once")
    assert once.returncode == 0 and "Queue" in once.stdout, once.stderr


def test_admin_socket_in_the_data_volume_is_private(stack: Stack) -> None:
    r = stack.exec("server", "python3", "-c",
                   "import os, stat; s = os.stat('/data/admin.sock'); "
                   "print(oct(stat.S_IMODE(s.st_mode)), stat.S_ISSOCK(s.st_mode))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0o600", "True"]
