"""
Fixtures for the integration suite: the real compose stack.

One session-wide stack is built and started from the repository's own
``docker-compose.yml`` + ``docker-compose.test.yml`` (the Ollama API stand-in in
place of Ollama) through testcontainers' ``DockerCompose``, under a compose
project name of its own and a free host port, so it never collides with a
developer's ``make up`` or a leftover from an earlier run. It is torn down with
its volumes at the end.

Like a new user's, the stack starts with no settings at all beyond those two
(no password anywhere): the tests log in as ``admin`` with the password the
server generated at its first start, read the way the README says
(``docker compose exec server chat-server initial-password``).

Without a Docker engine (or the compose plugin) the tests are skipped, except
under ``CI=true`` where that is a failure: CI provisions the engine itself
(.ci/run), so a missing engine there is a bug, not an environment quirk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.test.yml"]
# The base image .ci/build-base-image.sh makes where no registry is reachable.
LOCAL_BASE_IMAGE = "chat-local/python:3.11-bookworm"
MODEL = "llama3.2"
#: The user the server creates at its first start (CHAT_BOOTSTRAP_USER's default).
FIRST_USER = "admin"

# Upper bounds against hangs only, never timing assertions.
COMMAND_TIMEOUT = 120
BUILD_TIMEOUT = 900


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def docker_problem() -> str | None:
    """Why the stack can't run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` hung"
    if info.returncode != 0 or not info.stdout.strip():
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers ({last})"
    if _run(["docker", "compose", "version"], timeout=30).returncode != 0:
        return "the docker compose v2 plugin is missing"
    return None


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (never the fixed 5050)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image_exists(name: str) -> bool:
    return _run(["docker", "image", "inspect", name], timeout=30).returncode == 0


@dataclass
class Stack:
    """A running stack and the commands to poke at it."""

    project: str
    port: int
    user: str
    password: str
    base_cmd: list[str]
    host: str = "127.0.0.1"

    # -- compose ------------------------------------------------------------------------
    def compose(self, *args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker compose <the stack's -f/--env-file/project> ARGS``."""
        result = _run([*self.base_cmd, *args], input=input, timeout=timeout, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def exec(self, service: str, *command: str, input: str | None = None,
             timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``docker compose exec -T SERVICE COMMAND``; the exit code is left to the caller."""
        return self.compose("exec", "-T", service, *command, input=input, timeout=timeout,
                            check=False)

    def container_id(self, service: str) -> str:
        cid = self.compose("ps", "-a", "-q", service).stdout.strip()
        assert cid, f"no container for service {service}"
        return cid.splitlines()[0]

    def health(self, service: str) -> str:
        """starting / healthy / unhealthy (or 'none', or the state when not running)."""
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        out = _run(["docker", "inspect", "--format", fmt, self.container_id(service)],
                   timeout=30).stdout.split()
        if not out:
            return "missing"
        return out[1] if out[0] == "running" else out[0]

    def wait_health(self, service: str, wanted: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        state = self.health(service)
        while state != wanted and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.health(service)
        return state

    def logs(self, *services: str, tail: int = 200) -> str:
        r = self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False)
        return r.stdout + r.stderr

    # -- clients ------------------------------------------------------------------------
    def client_container(self, message: str, *, user: str | None = None,
                         password: str | None = None) -> subprocess.CompletedProcess[str]:
        """The client image, one-shot, exactly as a user would run it."""
        return self.compose(
            "run", "--rm", "-T", "client",
            "chat-client", "--user", user or self.user, "--password-stdin", "--message", message,
            input=(password or self.password) + "\n", check=False,
        )

    def client_host(self, message: str, *, user: str | None = None,
                    password: str | None = None, extra: tuple[str, ...] = (),
                    timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """The chat-client of this virtualenv against the published port (v2)."""
        exe = Path(sys.executable).with_name("chat-client")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "chat_client"]
        env = {
            **os.environ,
            "CHAT_SERVER_HOST": self.host,
            "CHAT_SERVER_PORT": str(self.port),
        }
        return _run([*cmd, "--user", user or self.user, "--password-stdin", *extra,
                     "--message", message],
                    input=(password or self.password) + "\n", env=env, timeout=timeout)

    def initial_password(self) -> str:
        """What a new user runs: ``docker compose exec server chat-server initial-password``."""
        r = self.exec("server", "chat-server", "initial-password")
        assert r.returncode == 0, f"initial-password exited {r.returncode}: {r.stderr}"
        password = r.stdout.strip()
        assert password and "\n" not in password, r.stdout
        return password

    def history(self, user: str) -> list[dict[str, object]]:
        r = self.exec("server", "chat-server", "history", "export", user)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _stack_environment(project: str, port: int) -> dict[str, str]:
    return {
        "COMPOSE_PROJECT_NAME": project,
        "CHAT_PORT": str(port),
        # Publish on loopback only: tests talk to 127.0.0.1 and nothing else.
        "CHAT_BIND_ADDRESS": "127.0.0.1",
        "OLLAMA_MODEL": MODEL,
        **local_base_image(),  # no registry on this machine: the local base image
    }


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    problem = docker_problem()
    if problem:
        if in_ci():
            pytest.fail(f"{problem}; CI=true requires a Docker engine (see .ci/run)",
                        pytrace=False)
        pytest.skip(f"{problem} (run .ci/provision-docker.sh to get one)")
    values = _stack_environment(f"chatit-{uuid.uuid4().hex[:10]}", free_port())
    with compose_stack(request, files=COMPOSE_FILES, values=values, user=FIRST_USER,
                       password="") as st:
        # The password is known once the server has made it (after `up`).
        st.password = st.initial_password()
        yield st


def _report(request: pytest.FixtureRequest, title: str, text: str) -> None:
    """Print past pytest's output capture (teardown output is otherwise hidden)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n===== {title} =====\n{text}", file=sys.stderr)


def local_base_image() -> dict[str, str]:
    """``PYTHON_IMAGE`` for the builds: the caller's, else the local base image
    when it exists (no registry on this machine), else none (compose's default)."""
    base = os.environ.get("PYTHON_IMAGE")
    if not base and _image_exists(LOCAL_BASE_IMAGE):
        base = LOCAL_BASE_IMAGE
    return {"PYTHON_IMAGE": base} if base else {}


@contextlib.contextmanager
def compose_stack(request: pytest.FixtureRequest, *, files: list[str], values: dict[str, str],
                  user: str, password: str, build_client: bool = True) -> Iterator[Stack]:
    """Build and start a stack from ``files`` with ``values`` as its only
    settings (``COMPOSE_PROJECT_NAME`` and ``CHAT_PORT`` among them), wait
    until every service is healthy, yield it, and remove it with its volumes.

    The values go into an env file of our own, which replaces the repository's
    .env (a developer's settings must not leak in), and into os.environ, which
    wins over any env file in compose's interpolation."""
    from testcontainers.compose import DockerCompose

    project = values["COMPOSE_PROJECT_NAME"]
    with tempfile.TemporaryDirectory(prefix="chatit-") as tmp, pytest.MonkeyPatch.context() as mp:
        env_file = Path(tmp) / "stack.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        for key, value in values.items():
            mp.setenv(key, value)
        compose = DockerCompose(context=str(REPO), compose_file_name=files,
                                env_file=str(env_file), build=True, wait=True)
        st = Stack(project=project, port=int(values["CHAT_PORT"]), user=user, password=password,
                   base_cmd=[*compose.compose_command_property])
        try:
            if build_client:
                # The client service sits in a profile, so `up` would not build
                # it; build every image first, so no test runs a stale client image.
                st.compose("--profile", "client", "build", timeout=BUILD_TIMEOUT)
            try:
                compose.start()
            except subprocess.CalledProcessError as exc:
                pytest.fail(
                    "the stack did not come up healthy:\n"
                    f"{(exc.stderr or b'').decode(errors='replace')[-3000:]}\n"
                    f"--- logs\n{st.logs(tail=80)}",
                    pytrace=False,
                )
            yield st
        finally:
            if request.session.testsfailed:
                _report(request, f"compose logs of {project} (tests failed)", st.logs(tail=150))
            # Everything, volumes included, also one-off client containers.
            st.compose("--profile", "client", "down", "--volumes", "--remove-orphans",
                       "--timeout", "5", check=False, timeout=180)
