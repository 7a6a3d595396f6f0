"""The stack survives restarts: the server's history outlives the container, and
chat recovers after the model service was down. Runs last (file order): these
tests stop and start services."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.fixtures.v1client import (
    PASSWORD_ACCEPTED,
    USERNAME_ACCEPTED,
    OriginalV1Client,
    answer_text,
)

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def v1_chat(stack: Stack, message: str) -> tuple[str, str]:
    with OriginalV1Client(stack.port, stack.host, timeout=30.0) as s:
        assert s.login(stack.user, stack.password) == (USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        chunks, end = s.answer(message)
        return answer_text(chunks), end


def test_history_survives_a_server_restart(stack: Stack) -> None:
    token = f"remember-{uuid.uuid4().hex[:8]}"
    answer, end = v1_chat(stack, token)
    assert end == "terminator" and f"Echo: {token}" in answer

    stack.compose("restart", "server")
    assert stack.wait_health("server", "healthy") == "healthy"

    turns = stack.history(stack.user)
    mine = [t for t in turns if t["user"] == token]
    assert len(mine) == 1
    assert f"Echo: {token}" in str(mine[0]["answer"])
    # The restarted server serves the same account.
    answer, end = v1_chat(stack, "after restart")
    assert end == "terminator" and "Echo: after restart" in answer

    # `restart` keeps the container's own filesystem; a NEW container proves the
    # history lives on the data volume (what survives `docker compose up` after
    # an image upgrade).
    old_id = stack.container_id("server")
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "server")
    assert stack.container_id("server") != old_id
    assert stack.wait_health("server", "healthy") == "healthy"
    assert any(t["user"] == token for t in stack.history(stack.user))


def test_chat_reports_a_clear_error_while_the_model_service_is_down(stack: Stack) -> None:
    stack.compose("stop", "ollama")
    try:
        # v2 (host client): one line on stderr, non-zero exit, no answer.
        result = stack.client_host("are you there?")
        assert result.returncode != 0
        assert "Echo" not in result.stdout
        assert "model service" in result.stderr.lower(), result.stderr
        # v1: the answer is an [ERROR] chunk, the session stays usable.
        answer, end = v1_chat(stack, "still there?")
        assert answer.startswith("[ERROR]"), answer
        assert "model service" in answer.lower()
        assert end in ("terminator", "goodbye")
    finally:
        stack.compose("start", "ollama")

    assert stack.wait_health("ollama", "healthy") == "healthy"
    # Recovery needs no restart of the server. (The stand-in, unlike Ollama with
    # its model volume, forgets pulled models when stopped; the server pulls
    # again, so allow for that.)
    deadline = time.monotonic() + 90
    answer, end = v1_chat(stack, "back again")
    while "Echo: back again" not in answer and time.monotonic() < deadline:
        time.sleep(1)
        answer, end = v1_chat(stack, "back again")
    assert "Echo: back again" in answer and end == "terminator"
    assert stack.wait_health("server", "healthy") == "healthy"
