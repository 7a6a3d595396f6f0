"""
docker-compose.ha.yml as users run it: the repository's compose files, with
the test overlay (the Ollama stand-in) and CI's local PostgreSQL and HAProxy
images (POSTGRES_IMAGE, HAPROXY_IMAGE), under a compose project of its own.

Proves: the overlay renders as documented (defaults, replicas, no published
replica port, the password only as a secret); the stack comes up healthy from
the repository's files; a client chats through HAProxy, which passes the client's
address on; every replica presents the same TLS certificate and sees the same
history; after a new server image is built, `deploy/rolling-restart.sh`
replaces the replicas one at a time (a new one healthy before an old one is
stopped, never no ready replica) while clients chat on, with no refused
connection, no failed chat and every acknowledged turn stored exactly once;
plain `docker compose up -d` with a new image recreates the replicas but keeps
HAProxy, the replicas it stops finish their answers in flight, and clients that
connect while no replica is ready wait for a new one instead of being refused.
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
from chatcore.protocol import ErrorCode

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
        #: Server images the tests built; removed with the stack.
        self.images: list[str] = []

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

    def image_of(self, container: str) -> str:
        r = _run(["docker", "inspect", "--format", "{{.Image}}", container], timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def build_new_server_image(self) -> str:
        """What a user's `docker compose build server` (or pull) does: the
        server's image name now names a new image (here: the same one plus a
        label). Returns its id."""
        name = f"{self.env['CHAT_IMAGE_PREFIX']}/server:local"
        old = _run(["docker", "image", "inspect", "--format", "{{.Id}}", name], timeout=60)
        assert old.returncode == 0, old.stderr
        self.images.append(old.stdout.strip())
        r = _run(["docker", "build", "--quiet", "--tag", name, "-"], timeout=300,
                 input=f"FROM {name}\nLABEL org.chat.test.build={uuid.uuid4().hex}\n")
        assert r.returncode == 0, r.stdout + r.stderr
        new = r.stdout.strip().splitlines()[-1]
        assert new and new != self.images[-1]
        return new

    def history(self, container: str) -> list[dict[str, str]]:
        user = self.env["CHAT_BOOTSTRAP_USER"]
        r = _run(["docker", "exec", container, "chat-server", "history", "export", user],
                 timeout=60)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def login(self, timeout: float = 20) -> V2Client:
        client = V2Client(self.port, timeout=timeout)
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
        for image in reversed(stack.images):  # the older server images, newest first
            _run(["docker", "image", "rm", image], timeout=120)


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


class Chatters:
    """Clients that chat on, each on its own session through HAProxy, as the
    chat client does: a message the server did not take because it was shutting
    down (PROTOCOL §7) is sent again once on a new session; anything else that
    goes wrong (a refused connection or login, an answer cut or failed) is a
    failure. Every message is unique; ``acked`` holds those that got their END."""

    def __init__(self, stack: HAStack, count: int, message: str = "") -> None:
        self.stack = stack
        self.message = message
        self.acked: list[str] = []
        self.resent: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._chat, args=(i,)) for i in range(count)]

    def __enter__(self) -> Chatters:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _chat(self, worker: int) -> None:
        client: V2Client | None = None
        n = 0
        while not self._stop.is_set():
            text = f"worker {worker} message {n} {self.message}".strip()
            n += 1
            for attempt in (1, 2):
                try:
                    if client is None:
                        # HAProxy holds a connection while no replica is
                        # ready (plain `up -d`): wait as long as it may.
                        client = self.stack.login(timeout=100)
                except Exception as exc:  # a refused connection or login
                    self.failures.append(f"{text}: login: {exc!r}")
                    client = None
                    break
                try:
                    mid = client.start_chat(text, conversation=f"rollout-{worker}")
                except OSError:
                    # The session was already closed (a draining replica told
                    # it to reconnect): the message never left.
                    client.close()
                    client = None
                    self.resent.append(text)
                    continue
                try:
                    reply = client.collect(mid)
                except Exception as exc:  # a broken session
                    self.failures.append(f"{text}: {exc!r}")
                    client = None
                    break
                if reply.end is not None:
                    self.acked.append(text)
                    break
                err = reply.error
                client.close()
                client = None
                if (attempt == 1 and err is not None and err.code is ErrorCode.SHUTTING_DOWN
                        and not reply.text):
                    self.resent.append(text)  # not taken by a draining replica
                    continue
                self.failures.append(f"{text}: {reply.events}")
                break
            # At most ~10 messages/s for three chatters: well under the test
            # stack's rate limit (1000 a minute, one user) across tests.
            time.sleep(0.3)
        if client is not None:
            client.close()


class ServerEvents:
    """The engine's events for the stack's server containers, streamed while the
    block runs (the engine keeps only its last 256 events, and every
    healthcheck adds three)."""

    def __init__(self, stack: HAStack) -> None:
        self.events: list[dict] = []
        self._proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter",
             f"label=com.docker.compose.project={stack.env['COMPOSE_PROJECT_NAME']}",
             "--filter", "label=com.docker.compose.service=server",
             *[a for e in ("start", "kill", "die", "destroy", "health_status")
               for a in ("--filter", f"event={e}")]],
            stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))

    def __enter__(self) -> ServerEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)  # the last events reach the stream
        self._proc.terminate()
        self._proc.wait(30)
        self._reader.join(30)
        self.events.sort(key=lambda e: int(e["timeNano"]))


def test_a_new_image_rolls_out_one_replica_at_a_time_and_refuses_nobody(ha_stack: HAStack) -> None:
    before = set(ha_stack.replicas())
    assert len(before) == 2
    new_image = ha_stack.build_new_server_image()
    with ServerEvents(ha_stack) as engine, Chatters(ha_stack, 3) as chat:
        time.sleep(1)
        r = _run([str(REPO / "deploy" / "rolling-restart.sh"), "--env-file", str(ha_stack.env_file),
                  *[a for f in FILES for a in ("-f", f)]], cwd=REPO, timeout=900,
                 env=run_env(SETTLE="3"))
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1)
    after = set(ha_stack.replicas())
    assert len(after) == 2 and not (before & after), (before, after)  # every replica replaced
    assert {ha_stack.image_of(c) for c in after} == {new_image}

    # The engine's record: a replica is ready from its first healthy check
    # until it is sent SIGTERM (it drains from then on: /ready answers 503).
    ready, draining, new_healthy = set(before), set[str](), set[str]()
    old_stopped: list[str] = []
    timeline: list[str] = []
    for event in engine.events:
        cid, action = event["id"], event.get("Action") or event.get("status", "")
        if action.startswith("health_status: healthy") and cid not in before:
            ready.add(cid)
            new_healthy.add(cid)
        elif action == "kill" and cid in ready | draining:
            ready.discard(cid)
            draining.add(cid)
            if cid in before:
                old_stopped.append(cid)
                # One at a time: a new replica is healthy for each old one stopped.
                assert len(new_healthy) >= len(old_stopped), [*timeline, action]
        elif action in ("die", "destroy") or action.startswith("health_status: unhealthy"):
            ready.discard(cid)
            draining.discard(cid)
        timeline.append(f"{action} {cid[:12]}: ready={len(ready)} draining={len(draining)}")
        assert ready, "no ready replica at some moment:\n" + "\n".join(timeline)
        assert len(draining) <= 1, "\n".join(timeline)
    assert sorted(old_stopped) == sorted(before), "\n".join(timeline)
    assert new_healthy == after, "\n".join(timeline)

    assert chat.failures == [], chat.failures
    assert len(chat.acked) >= 20, chat.acked
    # Every acknowledged turn is stored, once; nothing else is stored answered.
    history = ha_stack.history(sorted(after)[0])
    complete = [t["user"] for t in history
                if t["status"] == "complete" and t["conversation"].startswith("rollout-")]
    assert sorted(complete) == sorted(chat.acked)


def test_plain_up_with_a_new_image_keeps_haproxy_finishes_answers_and_refuses_nobody(
        ha_stack: HAStack) -> None:
    # Compose recreates every replica of the service at once (README "Scaling
    # out"); what must hold: HAProxy, which depends on no replica, is not
    # recreated (so it cuts no session by itself); each replica it stops
    # drains (its answer in flight finishes and is stored); and clients that
    # connect while no replica is ready are held by HAProxy until a new one is
    # (deploy/haproxy/hold.lua), so the chatters see no refused connection.
    haproxy = ha_stack.compose("ps", "-q", "haproxy").stdout.strip()
    before = set(ha_stack.replicas())
    new_image = ha_stack.build_new_server_image()
    client = ha_stack.login()
    text = f"a long answer across plain up {uuid.uuid4().hex[:8]} [standin:tokens=40] [standin:delay-ms=50]"
    with Chatters(ha_stack, 3, "across plain up") as chat:
        mid = client.start_chat(text)
        first = client.next_event(timeout=30)
        done: list[subprocess.CompletedProcess[str]] = []
        up = threading.Thread(target=lambda: done.append(
            ha_stack.compose("up", "-d", "--wait", timeout=600, check=False)))
        up.start()
        reply = client.collect(mid)
        up.join(600)
        client.close()
        time.sleep(2)  # the chatters go on against the new replicas for a moment
    assert done and done[0].returncode == 0, done
    assert reply.end is not None and reply.end.reason == "stop", [first, *reply.events]
    assert ha_stack.compose("ps", "-q", "haproxy").stdout.strip() == haproxy
    after = set(ha_stack.replicas())
    assert len(after) == 2 and not (before & after), (before, after)
    assert {ha_stack.image_of(c) for c in after} == {new_image}
    history = ha_stack.history(sorted(after)[0])
    assert [t["status"] for t in history if t["user"] == text] == ["complete"]

    assert chat.failures == [], chat.failures
    assert chat.resent, "no chatter had to reconnect: the gap was not exercised"
    held = re.findall(r"^held a new connection \d+ ms until a replica was ready",
                      ha_stack.logs(haproxy), re.M)
    assert held, ha_stack.logs(haproxy)[-3000:]
    complete = [t["user"] for t in history
                if t["status"] == "complete" and t["user"].endswith("across plain up")]
    assert sorted(complete) == sorted(chat.acked)
    ha_stack.wait_balanced()
    assert ha_stack.login().chat("still there").end is not None
