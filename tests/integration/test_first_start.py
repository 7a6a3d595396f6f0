"""The stack's first start as a new user meets it: no .env, no password
setting; the server generated admin's password into its volume, privately,
and said how to read it. (The session's stack fixture logs in with that
password: every other integration test depends on it.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml

from .conftest import FIRST_USER, REPO, Stack, docker_problem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PASSWORD_SHAPE = re.compile(r"[0-9a-z]{4}(-[0-9a-z]{4}){6}")


def test_the_stack_came_up_without_any_password_setting(stack: Stack) -> None:
    r = stack.exec("server", "sh", "-c", 'printf "[%s]" "${CHAT_BOOTSTRAP_PASSWORD-unset}"')
    assert r.returncode == 0, r.stderr
    assert r.stdout in ("[]", "[unset]")
    assert stack.user == FIRST_USER
    assert PASSWORD_SHAPE.fullmatch(stack.password), stack.password


def test_the_password_file_is_private_to_the_servers_user_in_the_volume(stack: Stack) -> None:
    r = stack.exec("server", "sh", "-c",
                   "id -u; stat -c '%a %u' /data /data/initial-password")
    assert r.returncode == 0, r.stderr
    uid, data_dir, password_file = r.stdout.splitlines()
    assert uid == "10001"  # the image's non-root user
    assert data_dir == "700 10001"
    assert password_file == "600 10001"
    # Another user in the container (here: nobody) cannot read it.
    r = stack.compose("exec", "-T", "--user", "65534", "server", "cat", "/data/initial-password",
                      check=False)
    assert r.returncode != 0 and stack.password not in r.stdout


def test_the_log_says_how_to_read_it_and_never_shows_it(stack: Stack) -> None:
    r = stack.compose("logs", "--no-color", "server")
    logs = r.stdout + r.stderr
    lines = [line for line in logs.splitlines() if "first start: created user 'admin'" in line]
    assert len(lines) == 1, logs[-3000:]
    assert "docker compose exec server chat-server initial-password" in lines[0]
    assert stack.password not in logs


def test_the_first_start_warns_only_about_the_generated_password(stack: Stack) -> None:
    # A fresh volume is already private (the image makes /data 0700), so the
    # server has nothing to tighten; the one warning is the password's.
    r = stack.compose("logs", "--no-color", "server")
    logs = (r.stdout + r.stderr).split("chat-server listening on")[0]
    loud = [line for line in logs.splitlines()
            if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]
    assert len(loud) == 1 and "first start: created user 'admin'" in loud[0], loud


def test_the_client_container_logs_in_with_the_initial_password(stack: Stack) -> None:
    result = stack.client_container("hello from the first start")
    assert result.returncode == 0, result.stderr
    assert "Echo: hello from the first start" in result.stdout
    wrong = stack.client_container("hello", password="not-" + stack.password)
    assert wrong.returncode == 3, wrong.stderr  # authentication failed


def test_starting_from_scratch_deletes_every_volume_of_the_stack() -> None:
    # README's "Start again from scratch" must reach every volume, the client's
    # remembered certificate included: left behind, it made the client refuse
    # the new server's certificate (exit 7) after a plain `down -v`.
    if problem := docker_problem():
        pytest.skip(problem)
    readme = (REPO / "README.md").read_text()
    found = re.search(r"\*\*Start again from scratch\*\*: `(docker compose[^`]*) down -v`", readme)
    assert found, "README's troubleshooting lost its 'Start again from scratch' command"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    r = subprocess.run([*shlex.split(found.group(1)), "config", "--volumes"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    declared = set(yaml.safe_load((REPO / "docker-compose.yml").read_text())["volumes"])
    assert set(r.stdout.split()) == declared
