"""Helpers for the chat-client tests: run the real ``chat-client`` executable."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.terminal import CHAT_CLIENT, REPO, Client, client_env
from tests.client.v1_peer import V1Peer


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


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    clients: list[Client] = []

    def make(args: list[str], **env: str) -> Client:
        c = Client(args, tmp_path, **env)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
