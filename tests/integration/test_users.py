"""Managing users in the deployed stack, with the README's commands
(`docker compose exec server chat-server users ...`): the list's columns, and
disabling a user who is chatting from the host."""

from __future__ import annotations

import uuid

import pytest
from chatcore.protocol import AuthResult, Error, ErrorCode

from tests.server.clients import V2Client

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def add_user(stack: Stack) -> tuple[str, str]:
    name, password = f"bob{uuid.uuid4().hex[:6]}", "bob's long password"
    r = stack.exec("server", "chat-server", "users", "add", name, "--password-stdin",
                   input=password + "\n")
    assert r.returncode == 0, r.stderr
    return name, password


def users_list(stack: Stack) -> dict[str, list[str]]:
    r = stack.exec("server", "chat-server", "users", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["NAME", "CREATED", "LAST LOGIN", "MESSAGES", "STATUS"]
    return {row.split("\t")[0]: row.split("\t") for row in lines[1:]}


def test_users_list_shows_last_login_and_messages(stack: Stack) -> None:
    name, password = add_user(stack)
    assert users_list(stack)[name][2:] == ["never", "0", "enabled"]
    for text in ("one", "two"):
        result = stack.client_host(f"message {text}", user=name, password=password)
        assert result.returncode == 0, result.stderr
    row = users_list(stack)[name]
    assert row[2].endswith("Z") and row[3:] == ["2", "enabled"]


def test_disable_ends_a_live_session_and_enable_restores(stack: Stack) -> None:
    name, password = add_user(stack)
    client = V2Client(stack.port, stack.host, timeout=60)
    assert isinstance(client.login(name, password), AuthResult)
    assert client.chat("before").end is not None

    r = stack.exec("server", "chat-server", "users", "disable", name)
    assert r.returncode == 0, r.stderr
    event = client.next_event(timeout=60)
    while not isinstance(event, Error):
        event = client.next_event(timeout=60)
    assert event.code is ErrorCode.SESSION_REVOKED and event.fatal
    client.close()
    assert users_list(stack)[name][4] == "disabled"

    refused = stack.client_host("hello", user=name, password=password)
    wrong = stack.client_host("hello", user=name, password="not " + password)
    assert refused.returncode == wrong.returncode == 3
    assert refused.stderr == wrong.stderr  # nothing tells a disabled account apart

    r = stack.exec("server", "chat-server", "users", "enable", name)
    assert r.returncode == 0, r.stderr
    result = stack.client_host("after", user=name, password=password)
    assert result.returncode == 0, result.stderr
