"""Health reporting of the deployed server: the container HEALTHCHECK and the
``chat-server healthcheck`` exit codes."""

from __future__ import annotations

import pytest

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_services_report_healthy(stack: Stack) -> None:
    assert stack.health("ollama") == "healthy"
    assert stack.health("server") == "healthy"


def test_server_logged_the_model_pull_before_becoming_healthy(stack: Stack) -> None:
    # The stand-in starts without the model, so the server had to pull it.
    logs = stack.logs("server", tail=5000)
    pulling = logs.find("pulling llama3.2")
    ready = logs.find("model ready")
    assert pulling != -1, logs[-2000:]
    assert "pulling llama3.2: success" in logs
    assert ready > pulling  # progress first, ready after


def test_healthcheck_exits_zero_against_the_running_server(stack: Stack) -> None:
    result = stack.exec("server", "chat-server", "healthcheck")
    assert result.returncode == 0, result.stderr


def test_healthcheck_exits_non_zero_without_a_server(stack: Stack) -> None:
    # A fresh container of the server image where no server runs: nothing
    # listens on its 5050, so the probe must fail (and fail fast).
    result = stack.compose("run", "--rm", "--no-deps", "-T", "server",
                           "chat-server", "healthcheck", check=False)
    assert result.returncode != 0
    assert "cannot reach" in result.stderr
