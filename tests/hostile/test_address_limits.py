"""
One client address trying to fill the server, and dead peers.

Two client addresses on one machine: the loopback interface answers for all of
127.0.0.0/8, so sockets bound to 127.0.0.2 reach the server on 127.0.0.1 as a
second client (``OTHER_ADDRESS``). The attacker uses that one; the well-behaved
user connects from 127.0.0.1 as usual.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time

import pytest
from chat_server.admission import KEEPALIVE_IDLE
from chat_server.proxy_protocol import encode_v2

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import logged_in, wait_until

from ._support import (
    OTHER_ADDRESS,
    Guard,
    parse_v2,
    raw,
    read_until_closed,
    rss,
    v2_frame,
)

pytestmark = pytest.mark.hostile

ATTACKER = ("mallory", "mallory's own password")


class IdleHolder:
    """Holds as many idle, never-authenticating sockets from one address as it
    can, reconnecting each one the server cuts (refused, or the login deadline)."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.socks: list[socket.socket] = []
        self.opened = self.cut = 0
        self.most_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IdleHolder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for sock in self.socks:
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            while len(self.socks) < self.target:
                try:
                    self.socks.append(raw(self.port, source=OTHER_ADDRESS))
                    self.opened += 1
                except OSError:
                    break
            readable, _, _ = select.select(self.socks, [], [], 0.05)
            for sock in readable:
                try:
                    closed = sock.recv(65536) == b""
                except OSError:
                    closed = True
                if closed:
                    self.socks.remove(sock)
                    sock.close()
                    self.cut += 1
            # Sockets still open a while after connecting are the ones held.
            self.most_held = max(self.most_held, len(self.socks))


def test_one_address_holding_unauthenticated_sockets_cannot_keep_another_address_out(
        server_factory) -> None:
    # The setting: a limit of 500 connections, one address holding as
    # many idle sockets as it can and reconnecting when they are cut. Before,
    # another address logged in 2 times in 22.
    server = server_factory(CHAT_MAX_CONNECTIONS="500", CHAT_AUTH_TIMEOUT="2",
                            CHAT_RATE_LIMIT="0")
    guard = Guard(server, USER, PASSWORD)
    with IdleHolder(server.port, target=600) as holder:
        time.sleep(3)  # the holder is at it, across a login deadline
        served = 0
        for i in range(20):
            client = logged_in(server.port, USER, PASSWORD)
            assert client.chat(f"still here {i}").text.startswith(f"Echo: still here {i}")
            client.close()
            served += 1
            time.sleep(0.2)
        assert holder.cut > 100  # it kept trying (and was cut off) all along
    assert served == 20
    log = guard.new_log()
    assert "limit=address_unauthenticated" in log
    assert "limit=server" not in log  # it never got near the server's limit
    guard.settle(timeout=30)
    # Tens of thousands of connections a second leave the high-water mark of
    # the accept bursts (up to the listen backlog, 1024, at once) in the heap;
    # what must not happen is growth: a second round costs nothing more.
    after_first = rss(server)
    with IdleHolder(server.port, target=600):
        time.sleep(5)
    guard.settle(timeout=30)
    wait_until(lambda: rss(server) <= after_first + 2 * 2**20, timeout=10)
    guard.check(tolerance=16 * 2**20)


def _try_login(port: int, user: str, password: str, source: str) -> tuple[socket.socket, str, dict]:
    """HELLO + AUTH from ``source``: (socket, "AUTH_RESULT" or "ERROR", its body)."""
    sock = raw(port, source=source)
    sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "hoarder/1"}))
    sock.sendall(v2_frame("AUTH", {"user": user, "password": password}))
    data = b""
    while True:
        frames = [(k, b) for k, b in parse_v2(data) if k in ("AUTH_RESULT", "ERROR")]
        if frames:
            return sock, *frames[0]
        chunk = sock.recv(65536)
        assert chunk, f"closed without a reply: {data!r}"
        data += chunk


def test_one_address_cannot_fill_the_server_with_logged_in_connections(server_factory) -> None:
    server = server_factory(users={USER: PASSWORD, ATTACKER[0]: ATTACKER[1]},
                            CHAT_MAX_CONNECTIONS="30", CHAT_MAX_CONNECTIONS_PER_ADDRESS="10",
                            CHAT_RATE_LIMIT="0")
    guard = Guard(server, USER, PASSWORD)
    guard.settle()
    held: list[socket.socket] = []
    refusals: list[dict] = []
    try:
        for _ in range(15):
            sock, kind, body = _try_login(server.port, *ATTACKER, OTHER_ADDRESS)
            if kind == "AUTH_RESULT":
                assert body["ok"] is True, body
                held.append(sock)
            else:
                refusals.append(body)
                assert read_until_closed(sock) == b""
                sock.close()
        assert len(held) == 10
        assert len(refusals) == 5
        for body in refusals:
            assert body["code"] == "too_many_connections"
            assert "your address" in body["message"]
        # Another address is unaffected.
        client = logged_in(server.port, USER, PASSWORD)
        assert client.chat("room for me?").text.startswith("Echo: room for me?")
        client.close()
        # Leaving frees the places of that address.
        held.pop().close()
        def relogged() -> bool:
            sock, kind, _ = _try_login(server.port, *ATTACKER, OTHER_ADDRESS)
            if kind == "AUTH_RESULT":
                held.append(sock)
                return True
            sock.close()
            return False
        wait_until(relogged, timeout=10, interval=0.2)
    finally:
        for sock in held:
            sock.close()
    assert "limit=address " in guard.new_log() or "limit=address\n" in guard.new_log()
    guard.settle()
    guard.check()


def _server_side_timers(port: int) -> dict[int, tuple[int, int]]:
    """From /proc/net/tcp: peer port -> (timer kind, clock ticks to expiry) of the
    server's established connections on ``port``."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, timer = fields[1], fields[2], fields[3], fields[5]
            if int(local.split(":")[1], 16) == port and state == "01":
                kind, when = timer.split(":")
                out[int(remote.split(":")[1], 16)] = (int(kind, 16), int(when, 16))
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
def test_idle_connections_have_tcp_keepalive_well_before_the_idle_timeout(live_server) -> None:
    # A peer that vanished without a FIN (laptop lid, dropped NAT entry) is found
    # by keepalive probes, not after the 15-minute idle timeout.
    idle = logged_in(live_server.port, USER, PASSWORD)
    unauthenticated = raw(live_server.port)
    try:
        ports = [idle.sock.getsockname()[1], unauthenticated.getsockname()[1]]

        def armed() -> dict[int, tuple[int, int]] | None:
            # While sent data awaits its ACK the retransmit timer (1) shows
            # instead; keepalive (2) is the timer of a quiet connection.
            timers = _server_side_timers(live_server.port)
            return timers if all(timers.get(p, (0, 0))[0] == 2 for p in ports) else None

        timers = wait_until(armed, timeout=10, interval=0.1)
        for port in ports:
            # /proc reports clock ticks (USER_HZ, 100 a second)
            assert timers[port][1] <= KEEPALIVE_IDLE * 100 + 100
    finally:
        idle.close()
        unauthenticated.close()


def test_behind_a_balancer_the_limits_apply_to_each_named_client(server_factory) -> None:
    # Every connection comes from the balancer (127.0.0.1, trusted); its PROXY
    # header names the client. One client is held to its own limit; the
    # balancer's own address is not a limit for everyone behind it.
    server = server_factory(CHAT_TRUSTED_PROXIES="127.0.0.1/32",
                            CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS="2")
    held: list[socket.socket] = []

    def hello_from(client: tuple[str, int]) -> list[tuple[str, dict]]:
        sock = raw(server.port)
        held.append(sock)
        sock.sendall(encode_v2(client, ("127.0.0.1", server.port)))
        sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "behind/1"}))
        data = b""
        while not parse_v2(data):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        return parse_v2(data)

    try:
        assert [k for k, _ in hello_from(("192.0.2.7", 1))] == ["HELLO"]
        assert [k for k, _ in hello_from(("192.0.2.7", 2))] == ["HELLO"]
        [(kind, body)] = hello_from(("192.0.2.7", 3))
        assert kind == "ERROR" and body["code"] == "too_many_connections"
        assert "not logged in yet" in body["message"]
        for i in range(5):  # other clients behind the same balancer
            assert [k for k, _ in hello_from((f"192.0.2.{20 + i}", 1))] == ["HELLO"]
    finally:
        for sock in held:
            sock.close()
    assert "peer=192.0.2.7" in server.log_text()
