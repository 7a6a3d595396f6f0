"""Helpers for the chat-client tests: run the real ``chat-client`` executable."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.v1_peer import V1Peer

REPO = Path(__file__).resolve().parents[2]
#: The installed console script, exactly what a user runs.
CHAT_CLIENT = str(REPO / ".venv" / "bin" / "chat-client")


def client_env(**extra: str) -> dict[str, str]:
    """The environment minus any CHAT_* settings of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(extra)
    return env


def run_client(args: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHAT_CLIENT, *args], input=stdin if stdin is not None else "",
        env=env if env is not None else client_env(), capture_output=True, text=True,
        timeout=timeout, cwd=REPO,
    )


def server_args(server: object) -> list[str]:
    return ["--host", str(server.host), "--port", str(server.port)]  # type: ignore[attr-defined]


@pytest.fixture
def v1_peer() -> Iterator[V1Peer]:
    peer = V1Peer().start()
    yield peer
    peer.stop()
