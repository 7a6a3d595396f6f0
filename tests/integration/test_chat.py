"""Chatting through the deployed stack: the client image, the original v1 wire
protocol on the published port, v2 from the host, and moderation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pexpect
import pytest

from tests.fixtures.v1client import (
    CUSS_WARNING,
    DISCONNECTED,
    PASSWORD_ACCEPTED,
    USERNAME_ACCEPTED,
    OriginalV1Client,
    answer_text,
)

from .conftest import REPO, Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def banned_word() -> str:
    """A word from the list the server image ships (cuss_words.txt)."""
    for line in (REPO / "cuss_words.txt").read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if word and not word.startswith("#") and word.isascii() and " " not in word:
            return word
    raise AssertionError(f"no usable word in {Path(REPO, 'cuss_words.txt')}")


def test_client_container_one_shot_gets_the_models_answer(stack: Stack) -> None:
    result = stack.client_container("hello")
    assert result.returncode == 0, result.stderr
    assert "Echo: hello" in result.stdout


def test_client_container_interactive_session(stack: Stack) -> None:
    # `docker compose run --rm client` (what `make chat` runs) on a real pty.
    cmd = [*stack.base_cmd, "run", "--rm", "-e", f"CHAT_USER={stack.user}", "client"]
    child = pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", timeout=60, dimensions=(40, 120))
    try:
        child.expect("[Pp]assword")
        child.sendline(stack.password)
        child.sendline("hello interactive")
        child.expect("Echo: hello interactive")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_v1_session_exactly_as_the_original_client(stack: Stack) -> None:
    with OriginalV1Client(stack.port, stack.host, timeout=30.0) as s:
        assert s.login(stack.user, stack.password) == (USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        chunks, end = s.answer("hello")
        assert end == "terminator"
        assert all(len(c) == 64 for c in chunks)
        assert answer_text(chunks).startswith("Echo: hello")
        # A second turn on the same connection works too.
        chunks, end = s.answer("hello again")
        assert end == "terminator"
        assert "Echo: hello again" in answer_text(chunks)
        assert s.disconnect() == DISCONNECTED
        assert s.sock.recv(64) == b""  # and the server closed the connection


def test_v1_wrong_password_is_refused(stack: Stack) -> None:
    with OriginalV1Client(stack.port, stack.host, timeout=30.0) as s:
        user_reply, password_reply = s.login(stack.user, "not-" + stack.password)
        # Whatever the name, the username step is accepted (no user enumeration).
        assert user_reply == USERNAME_ACCEPTED
        assert password_reply == b"invalid password : closing connection"


def test_v2_one_shot_from_the_host(stack: Stack) -> None:
    token = uuid.uuid4().hex[:8]
    result = stack.client_host(f"hello {token}")
    assert result.returncode == 0, result.stderr
    assert f"Echo: hello {token}" in result.stdout


def test_banned_word_gets_the_v1_warning_and_goodbye(stack: Stack) -> None:
    with OriginalV1Client(stack.port, stack.host, timeout=30.0) as s:
        assert s.login(stack.user, stack.password) == (USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        chunks, end = s.answer(f"you are a {banned_word()}")
        assert [c.rstrip(" ") for c in chunks] == [CUSS_WARNING]
        assert end == "goodbye"
        assert s.sock.recv(64) == b""  # the server closed the connection


def test_user_added_with_the_cli_can_chat(stack: Stack) -> None:
    name, password = f"alice{uuid.uuid4().hex[:6]}", "correct horse battery staple"
    added = stack.exec("server", "chat-server", "users", "add", name, "--password-stdin",
                       input=password + "\n")
    assert added.returncode == 0, added.stderr
    again = stack.exec("server", "chat-server", "users", "add", name, "--password-stdin",
                       input=password + "\n")
    assert again.returncode == 1 and "already exists" in again.stderr

    result = stack.client_host("hi from alice", user=name, password=password)
    assert result.returncode == 0, result.stderr
    assert "Echo: hi from alice" in result.stdout
