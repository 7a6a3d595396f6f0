"""
Lockout as a weapon (docs/SECURITY.md §6), against a live server: strangers guessing an
account's password must not lock its owner out of their own address, while the
guessers are slowed down.

Client addresses come from the loopback network: sockets bound to 127.0.0.2,
127.0.0.3 ... reach the server on 127.0.0.1 as different clients.
"""

from __future__ import annotations

import socket

import pytest

from tests.fixtures.server import PASSWORD, USER

from ._support import Guard, parse_v2, raw, v2_frame

pytestmark = pytest.mark.hostile


def login(port: int, password: str, source: str) -> tuple[str, dict]:
    """One v2 login attempt from ``source``: ("AUTH_RESULT" | "ERROR", body)."""
    sock: socket.socket = raw(port, source=source)
    try:
        sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "lockout/1"}))
        sock.sendall(v2_frame("AUTH", {"user": USER, "password": password}))
        data = b""
        while True:
            frames = [(k, b) for k, b in parse_v2(data) if k in ("AUTH_RESULT", "ERROR")]
            if frames:
                return frames[0]
            chunk = sock.recv(65536)
            assert chunk, f"closed without a reply: {data!r}"
            data += chunk
    finally:
        sock.close()


def ok(reply: tuple[str, dict]) -> bool:
    return reply[0] == "AUTH_RESULT" and reply[1]["ok"] is True


def throttled(reply: tuple[str, dict]) -> bool:
    return reply[0] == "ERROR" and reply[1]["code"] == "auth_throttled"


def test_guesses_from_one_address_at_any_rate_do_not_lock_out_the_owner(live_server) -> None:
    guard = Guard(live_server, USER, PASSWORD)
    attacker, owner = "127.0.0.2", "127.0.0.1"
    replies = [login(live_server.port, f"guess {i}", attacker) for i in range(40)]
    assert not any(ok(r) for r in replies)
    assert sum(throttled(r) for r in replies) >= 30  # the attacker is slowed down at once
    # Even the right password from the attacker's address waits now...
    assert throttled(login(live_server.port, PASSWORD, attacker))
    # ...while the owner logs in from their own address at the first try.
    assert ok(login(live_server.port, PASSWORD, owner))
    assert ok(login(live_server.port, PASSWORD, "127.0.0.9"))  # and from a new one
    guard.check()


def test_distributed_guessing_is_slowed_for_the_account_but_not_at_the_owners_address(
        live_server) -> None:
    guard = Guard(live_server, USER, PASSWORD)  # the owner has logged in from 127.0.0.1
    attackers = [f"127.0.1.{i}" for i in range(1, 6)]
    for _ in range(3):
        for address in attackers:
            assert not ok(login(live_server.port, "guess", address))
    # The account as a whole is slowed: a fresh address waits before guessing.
    assert throttled(login(live_server.port, "guess", "127.0.1.99"))
    # The owner's usual address is not.
    assert ok(login(live_server.port, PASSWORD, "127.0.0.1"))
    guard.check()
