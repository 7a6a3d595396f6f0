"""
docker-compose.ha.yml as users run it: the repository's compose files, with
the test overlay (the Ollama stand-in) and CI's local PostgreSQL and HAProxy
images (POSTGRES_IMAGE, HAPROXY_IMAGE), under a compose project of its own.

Proves: the overlay renders as documented (defaults, replicas, no published
replica port, the password only as a secret); the stack comes up healthy from
the repository's files; a client chats through HAProxy, which passes the client's
address on; every replica presents the same TLS certificate and sees the same
history; `deploy/rolling-restart.sh` replaces every replica while a client keeps
connecting, without one refused connection or failed chat.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.engines import LOCAL_HAPROXY_IMAGE, LOCAL_POSTGRES_IMAGE, require_image
from tests.server.clients import V2Client

from .conftest import LOCAL_BASE_IMAGE, REPO, _image_exists, _run, docker_problem, free_port, in_ci

pytestmark = [pytest.mark.integration, pytest.mark.engines, pytest.mark.timeout(1200)]

FILES = ["docker-compose.yml", "docker-compose.test.yml", "docker-compose.ha.yml"]


#: Settings of the stack under test that the caller's environment must not
#: override: compose's interpolation prefers the process environment over
#: --env-file, and other fixtures (the session's plain stack) export theirs.
_OWN = ("COMPOSE_", "CHAT_", "OLLAMA_", "POSTGRES_", "HAPROXY_", "PYTHON_IMAGE")


def run_env(**extra: str) -> dict[str, str]:
    """The process environment for compose and the rollout script: the
    caller's, minus every setting the stack's env file decides."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
    return {**clean, **extra}


def compose_cmd(env_file: Path) -> list[str]:
    cmd = ["docker", "compose", "--env-file", str(env_file)]
    for f in FILES:
        cmd += ["-f", f]
    return cmd


def stack_env(project: str, port: int) -> dict[str, str]:
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "CHAT_PORT": str(port),
        "CHAT_BIND_ADDRESS": "127.0.0.1",
        "CHAT_BOOTSTRAP_USER": "it-admin",
        "CHAT_BOOTSTRAP_PASSWORD": secrets.token_urlsafe(16),
        "CHAT_DB_PASSWORD": secrets.token_urlsafe(16),
        "OLLAMA_MODEL": "llama3.2",
        "POSTGRES_IMAGE": LOCAL_POSTGRES_IMAGE,
        "HAPROXY_IMAGE": LOCAL_HAPROXY_IMAGE,
        "POSTGRES_HEALTH_INTERVAL": "1s",
        # Images of its own: other stacks on this engine build ollama-chat/*.
        "CHAT_IMAGE_PREFIX": f"chat-ha-{project}",
    }
    if _image_exists(LOCAL_BASE_IMAGE):
        env["PYTHON_IMAGE"] = LOCAL_BASE_IMAGE
    return env


def test_overlay_renders_as_documented(tmp_path: Path) -> None:
    if docker_problem():
        pytest.skip("no Docker engine")
    env = stack_env("chatharender", 5999)
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    r = _run([*compose_cmd(env_file), "config", "--format", "json"], cwd=REPO, timeout=60,
             env=run_env())
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout)
    services = config["services"]
    server = services["server"]
    assert server["deploy"]["replicas"] == 2
    assert not server.get("ports"), "replicas must not be published"
    assert server["environment"]["CHAT_DB"] == "postgresql://chat@postgres:5432/chat"
    assert server["environment"]["CHAT_DB_PASSWORD_FILE"] == "/run/secrets/db_password"
    # The password is a secret, never a container's environment.
    for name, service in services.items():
        for value in (service.get("environment") or {}).values():
            assert value != env["CHAT_DB_PASSWORD"], f"{name} carries the password in its env"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert server["environment"]["CHAT_TRUSTED_PROXIES"] == "172.31.250.0/24"
    assert config["networks"]["balancer"]["ipam"]["config"][0]["subnet"] == "172.31.250.0/24"
    published = services["haproxy"]["ports"][0]
    assert (published["target"], published["published"]) == (5050, "5999")
    assert services["haproxy"]["image"] == LOCAL_HAPROXY_IMAGE
    assert services["postgres"]["image"] == LOCAL_POSTGRES_IMAGE
    # The documented defaults for users: official images, pinned.
    text = (REPO / "docker-compose.ha.yml").read_text()
    assert "${POSTGRES_IMAGE:-postgres:15}" in text and "${HAPROXY_IMAGE:-haproxy:2.6}" in text
    # More replicas through CHAT_REPLICAS.
    env_file.write_text(env_file.read_text() + "CHAT_REPLICAS=4\n")
    r = _run([*compose_cmd(env_file), "config", "--format", "json"], cwd=REPO, timeout=60,
             env=run_env())
    assert json.loads(r.stdout)["services"]["server"]["deploy"]["replicas"] == 4


class HAStack:
    def __init__(self, env_file: Path, env: dict[str, str]) -> None:
        self.env_file = env_file
        self.env = env
        self.port = int(env["CHAT_PORT"])

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        r = _run([*compose_cmd(self.env_file), *args], cwd=REPO, timeout=timeout,
                 env=run_env())
        if check:
            assert r.returncode == 0, f"compose {args}: {r.stdout}\n{r.stderr}"
        return r

    def replicas(self) -> list[str]:
        return self.compose("ps", "-q", "server").stdout.split()

    def logs(self, container: str) -> str:
        r = _run(["docker", "logs", container], timeout=60)
        return r.stdout + r.stderr

    def wait_balanced(self, timeout: float = 60.0) -> None:
        """Until HAProxy sees every replica up, twice 2.5 s apart (its checks
        need two passes, 1 s apart, to mark a server up or down)."""
        haproxy = self.compose("ps", "-q", "haproxy").stdout.strip()
        want = len(self.replicas())

        def up() -> int:
            state: dict[str, bool] = {}
            for m in re.finditer(r"^Server replicas/(\w+) .*?is (UP|DOWN)", self.logs(haproxy),
                                 re.M):
                state[m.group(1)] = m.group(2) == "UP"
            return sum(state.values())

        deadline = time.monotonic() + timeout
        while True:
            if up() >= want:
                time.sleep(2.5)
                if up() >= want:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy never saw {want} replicas up:\n"
                                   f"{self.logs(haproxy)[-3000:]}")
            time.sleep(0.5)

    def login(self) -> V2Client:
        client = V2Client(self.port, timeout=20)
        result = client.login(self.env["CHAT_BOOTSTRAP_USER"], self.env["CHAT_BOOTSTRAP_PASSWORD"])
        assert getattr(result, "ok", False), result
        return client


@pytest.fixture(scope="module")
def ha_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAStack]:
    problem = docker_problem()
    if problem:
        if in_ci():
            pytest.fail(f"{problem}; CI=true requires a Docker engine", pytrace=False)
        pytest.skip(problem)
    require_image(LOCAL_POSTGRES_IMAGE)
    require_image(LOCAL_HAPROXY_IMAGE)
    project = f"chatha{uuid.uuid4().hex[:8]}"
    env = stack_env(project, free_port())
    env_file = tmp_path_factory.mktemp("ha") / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    stack = HAStack(env_file, env)
    try:
        r = stack.compose("up", "-d", "--build", "--wait", timeout=900, check=False)
        if r.returncode != 0:
            logs = stack.compose("logs", "--no-color", "--tail=60", check=False).stdout
            pytest.fail(f"the HA stack did not come up:\n{r.stderr[-3000:]}\n{logs[-6000:]}",
                        pytrace=False)
        stack.wait_balanced()
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5",
                      check=False, timeout=300)
        _run(["docker", "image", "rm", f"{env['CHAT_IMAGE_PREFIX']}/server:local",
              f"{env['CHAT_IMAGE_PREFIX']}/ollama-standin:local"], timeout=120)


def test_chat_through_haproxy_with_the_clients_address(ha_stack: HAStack) -> None:
    client = ha_stack.login()
    reply = client.chat("hello through the balancer")
    assert reply.end is not None and reply.text.startswith("Echo: hello through the balancer")
    client.close()
    # The replica that served it logged the client's address (the published
    # port's far side), never HAProxy's address on the balancer network.
    peers = set()
    for container in ha_stack.replicas():
        peers |= set(re.findall(r"authenticated .*peer=(\S+)", ha_stack.logs(container)))
    assert peers and not any(p.startswith("172.31.250.") for p in peers), peers


def test_every_replica_presents_one_certificate_and_sees_all_history(ha_stack: HAStack) -> None:
    fingerprints = set()
    for container in ha_stack.replicas():
        fingerprints |= set(re.findall(r"SHA-256 fingerprint ([0-9A-F:]{95})",
                                       ha_stack.logs(container)))
    assert len(fingerprints) == 1, fingerprints
    client = ha_stack.login()
    assert client.chat("remember the word teapot").end is not None
    client.close()
    user = ha_stack.env["CHAT_BOOTSTRAP_USER"]
    for container in ha_stack.replicas():
        r = _run(["docker", "exec", container, "chat-server", "history", "export", user],
                 timeout=60)
        assert r.returncode == 0, r.stderr
        assert "remember the word teapot" in r.stdout


def test_rolling_restart_refuses_nobody(ha_stack: HAStack) -> None:
    before = set(ha_stack.replicas())
    results: list[str] = []
    stop = threading.Event()

    def keep_chatting() -> None:
        while not stop.is_set():
            try:
                client = ha_stack.login()
                reply = client.chat("are you there")
                results.append("ok" if reply.end is not None else f"no end: {reply.events}")
                client.close()
            except Exception as exc:  # any refusal or broken session is a failure here
                results.append(repr(exc))
            time.sleep(0.05)

    worker = threading.Thread(target=keep_chatting)
    worker.start()
    try:
        r = _run([str(REPO / "deploy" / "rolling-restart.sh"), "--env-file", str(ha_stack.env_file),
                  *[a for f in FILES for a in ("-f", f)]], cwd=REPO, timeout=900,
                 env=run_env(SETTLE="3"))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop.set()
        worker.join(60)
    after = set(ha_stack.replicas())
    assert len(after) == 2 and not (before & after), (before, after)  # every replica replaced
    assert results.count("ok") >= 10, results
    assert [x for x in results if x != "ok"] == []
