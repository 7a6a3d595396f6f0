"""
A reconnect storm from one address (docs/SECURITY.md §7, §10): new connections
per address are admitted up to ``CHAT_CONNECT_BURST_PER_ADDRESS`` at once and
``CHAT_CONNECT_RATE_PER_ADDRESS`` a second after that; the rest are refused
with ``too_many_connections`` (a few a second get the reply, the others are
dropped as they are accepted), every one counted under
``chat_connections_rejected_total{reason="address_rate"}``. A logged-in session
from another address is answered throughout, in order; behind a trusted
balancer the rate applies to each client its PROXY header names.

The storm is opened while the server is stopped (SIGSTOP), so all of it waits
in the listen queue and arrives at once: what is admitted is then the burst
(plus at most the tokens that refill while the server works through it), not
whatever a race between the test and the server lets through.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from chat_server.admission import RATE_REPLY_BURST
from chat_server.proxy_protocol import encode_v2

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import wait_until

from ._support import (
    OTHER_ADDRESS,
    Guard,
    connections_rejected,
    parse_v2,
    raw,
    v2_frame,
    v2_login,
)

pytestmark = pytest.mark.hostile

HELLO = v2_frame("HELLO", {"versions": [2], "agent": "storm/1"})
BURST = 10
STORM = 60


def first_reply(sock: socket.socket) -> str:
    """``HELLO``, ``ERROR <code>``, or ``dropped`` (closed without a frame)."""
    data = b""
    try:
        while not parse_v2(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    frames = parse_v2(data)
    if not frames:
        return "dropped"
    kind, body = frames[0]
    return kind if kind != "ERROR" else f"ERROR {body['code']}: {body['message']}"


def test_a_reconnect_storm_gets_its_burst_then_is_refused_and_others_are_served(
        server_factory) -> None:
    server = server_factory(CHAT_CONNECT_RATE_PER_ADDRESS="1",
                            CHAT_CONNECT_BURST_PER_ADDRESS=str(BURST),
                            CHAT_METRICS_PORT="0", CHAT_RATE_LIMIT="0")
    guard = Guard(server, USER, PASSWORD)
    guard.settle()
    bystander = v2_login(server.port, USER, PASSWORD)  # from 127.0.0.1
    rejected = connections_rejected(server)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        storm = []
        for _ in range(STORM):
            sock = raw(server.port, source=OTHER_ADDRESS)
            sock.sendall(HELLO)
            storm.append(sock)
        bystander.sendall(b"".join(v2_frame("PING", {"nonce": str(n)}) for n in range(20)))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    replies = [first_reply(sock) for sock in storm]
    admitted = replies.count("HELLO")
    told = [r for r in replies if r.startswith("ERROR")]
    dropped = replies.count("dropped")
    # The burst, and at most a token that refilled meanwhile (1 a second).
    assert BURST <= admitted <= BURST + 2, replies
    assert all(r.startswith("ERROR too_many_connections: too many new connections") for r in told)
    assert 1 <= len(told) <= RATE_REPLY_BURST + 2, told
    assert dropped == STORM - admitted - len(told) and dropped > STORM // 2
    wait_until(lambda: connections_rejected(server) - rejected >= STORM - admitted, timeout=15)
    assert connections_rejected(server) - rejected == STORM - admitted

    # The logged-in session from another address: every PING answered, in order.
    data = b""
    while sum(kind == "PONG" for kind, _ in parse_v2(data)) < 20:
        chunk = bystander.recv(65536)
        assert chunk, data
        data += chunk
    assert [b["nonce"] for k, b in parse_v2(data) if k == "PONG"] == [str(n) for n in range(20)]
    bystander.close()

    # The storm's address gets in again once the rate allows it.
    def admitted_again() -> bool:
        return first_reply(_hello(server.port, OTHER_ADDRESS)) == "HELLO"

    wait_until(admitted_again, timeout=15, interval=0.5)
    # One log line for the whole storm, not one per refusal.
    assert 1 <= guard.new_log().count("connection refused: too_many_connections") <= 3
    guard.check()


def _hello(port: int, source: str | None = None) -> socket.socket:
    sock = raw(port, source=source)
    sock.sendall(HELLO)
    return sock


def test_behind_a_balancer_the_connection_rate_applies_to_each_named_client(
        server_factory) -> None:
    server = server_factory(CHAT_TRUSTED_PROXIES="127.0.0.1/32",
                            CHAT_CONNECT_RATE_PER_ADDRESS="1", CHAT_CONNECT_BURST_PER_ADDRESS="3")

    def via_balancer(client: str) -> str:
        sock = raw(server.port)
        sock.sendall(encode_v2((client, 4000), ("127.0.0.1", server.port)) + HELLO)
        return first_reply(sock)

    assert [via_balancer("192.0.2.7") for _ in range(3)] == ["HELLO"] * 3
    over = [via_balancer("192.0.2.7") for _ in range(3)]
    assert "HELLO" not in over[1:], over  # (one token may refill in a second)
    assert any(r.startswith("ERROR too_many_connections") for r in over), over
    # Everyone else behind the same balancer still gets in: its own address is no limit.
    for i in range(6):
        assert via_balancer(f"192.0.2.{20 + i}") == "HELLO"


def test_a_logged_in_session_is_answered_in_order_while_twenty_connections_dribble_bytes(
        guard: Guard) -> None:
    # 20 connections that never log in send a HELLO body one byte per send();
    # before login the wire reads such a peer a few times, then pauses it
    # (tests/wire/test_read_budget.py proves the budget); meanwhile a session
    # that is logged in gets every PING answered, in order.
    port = guard.server.port
    dribblers = [raw(port, source=OTHER_ADDRESS) for _ in range(20)]
    for sock in dribblers:
        sock.sendall(b"HELLO 4000".ljust(64))
    stop = threading.Event()
    sent = [0]

    def dribble() -> None:
        while not stop.is_set():
            for sock in dribblers:
                try:
                    sock.send(b" ")
                    sent[0] += 1
                except OSError:
                    pass
            time.sleep(0.0005)

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    session = v2_login(port, USER, PASSWORD)
    wait_until(lambda: sent[0] > 2000, timeout=30)  # the dribble is under way
    try:
        data = b""
        for n in range(50):
            time.sleep(0.01)  # 50 PINGs over half a second or more of dribbling
            session.sendall(v2_frame("PING", {"nonce": f"p{n}"}))
            while sum(k == "PONG" for k, _ in parse_v2(data)) <= n:
                chunk = session.recv(65536)
                assert chunk, data
                data += chunk
        nonces = [b["nonce"] for k, b in parse_v2(data) if k == "PONG"]
        assert nonces == [f"p{n}" for n in range(50)]
    finally:
        stop.set()
        thread.join(10)
        session.close()
        for sock in dribblers:
            sock.close()
    guard.check()
