"""TLS in the deployed stack: the client container speaks TLS by default and
remembers the server's generated certificate in its volume; a host client pins
it through the published port."""

from __future__ import annotations

import re

import pytest

from .conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

_FP = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")


def server_fingerprint(stack: Stack) -> str:
    r = stack.exec("server", "chat-server", "fingerprint")
    assert r.returncode == 0, r.stderr
    fp = r.stdout.strip()
    assert _FP.match(fp), fp
    return fp


def test_client_container_chats_over_tls_and_remembers_the_certificate(stack: Stack) -> None:
    fp = server_fingerprint(stack)
    result = stack.client_container("over tls")
    assert result.returncode == 0, result.stderr
    assert "Echo: over tls" in result.stdout
    # The first run (this one or an earlier test's) remembered the certificate in
    # the client-trust volume; from then on nothing is announced.
    known = stack.compose("run", "--rm", "-T", "client",
                          "cat", "/home/chat/.config/chat-client/known_hosts").stdout
    assert f"server:5050 SHA256:{fp}" in known.splitlines()
    again = stack.client_container("again")
    assert again.returncode == 0 and "trusting" not in again.stderr, again.stderr
    assert "protocol v2 over TLS" in stack.logs("server", tail=400)


def test_host_client_pins_the_generated_certificate(stack: Stack) -> None:
    fp = server_fingerprint(stack)
    result = stack.client_host("pinned", extra=("--fingerprint", fp))
    assert result.returncode == 0, result.stderr
    assert "Echo: pinned" in result.stdout
    wrong = stack.client_host("x", extra=("--fingerprint", "00:" * 31 + "00"))
    assert wrong.returncode == 7
