"""
Attacks before the chat protocol starts: a TLS handshake dribbled one byte at
a time (slowloris on the handshake), and PROXY headers that are too big or
from a peer that is no balancer (docs/PROTOCOL.md §13, §14; docs/SECURITY.md
§7). Each ends only the attacker's connection, without a reply, within the
deadlines, while a bystander's session stays answered. (tests/server/test_tls.py
and tests/proxy/ have the stalled and malformed handshakes and headers.)
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from chat_server.proxy_protocol import encode_v2
from chatcore.protocol import Ping, Pong

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.tls import client_hello
from tests.server.clients import V2Client, logged_in

from ._support import raw, read_until_closed

DEADLINE = 2  # CHAT_AUTH_TIMEOUT and CHAT_FRAME_TIMEOUT of these servers
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _closed_while_dribbling(sock: socket.socket, data: bytes, every: float) -> int:
    """Send ``data`` one byte per ``every`` seconds until the server closes;
    how many bytes it took. Fails if all of it went through."""
    for sent, byte in enumerate(data):
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sock.settimeout(every)
        try:
            if sock.recv(4096) == b"":
                return sent + 1
        except TimeoutError:
            continue
        except ConnectionResetError:
            return sent + 1
    raise AssertionError("the server let a dribbled handshake run its whole length")


def _pinged(client: V2Client) -> None:
    client.send(Ping("still-there"))
    while not isinstance(event := client.next_event(timeout=10), Pong):
        pass
    assert event.nonce == "still-there"


def test_a_tls_handshake_dribbled_byte_by_byte_is_cut_at_the_deadline(server_factory) -> None:
    # The deadline is for the whole handshake, not between two bytes: a byte
    # every 0.4 s (well inside any idle timeout) still ends at DEADLINE.
    server = server_factory(CHAT_AUTH_TIMEOUT=str(DEADLINE), CHAT_FRAME_TIMEOUT=str(DEADLINE))
    bystander = logged_in(server.port, USER, PASSWORD)
    hello = client_hello()
    attackers = [raw(server.port) for _ in range(3)]
    try:
        t0 = time.monotonic()
        sent = _closed_while_dribbling(attackers[0], hello, 0.4)
        took = time.monotonic() - t0
        # Cut near the deadline: far fewer bytes than a ClientHello has.
        assert sent < len(hello) // 4, (sent, len(hello))
        assert took < DEADLINE + 8, took  # a hang guard, not a measurement
        _pinged(bystander)
    finally:
        for sock in attackers:
            sock.close()
        bystander.close()
    log = server.log_text()
    assert "TLS handshake failed" in log and "Traceback" not in log


@pytest.mark.parametrize("header", [
    # len 65535: the rest would be a TLV of 64 KiB
    V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 65535) + b"\x7f\x00\x00\x01" * 3,
    # one valid-looking TLV of 5000 bytes after the address block (past 4096)
    encode_v2(("192.0.2.7", 40001), ("127.0.0.1", 1), tlvs=[(0xE0, b"x" * 5000)]),
], ids=["announced-64k", "tlv-5000"])
def test_a_proxy_v2_header_with_huge_tlvs_is_refused_without_buffering(
        server_factory, header: bytes) -> None:
    server = server_factory(CHAT_TRUSTED_PROXIES="127.0.0.1/32")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    try:
        try:
            sock.sendall(header[:16])  # refused from the 16th byte: the length is known
            reply = read_until_closed(sock, timeout=10)
        except (BrokenPipeError, ConnectionResetError):
            reply = b""
        assert reply == b""  # no reply: a balancer is not a chat client
    finally:
        sock.close()
    assert server.proc is not None and server.proc.poll() is None
    assert "Traceback" not in server.log_text()


def test_a_proxy_header_from_a_peer_that_is_no_balancer_names_nobody(server_factory) -> None:
    # Only CHAT_TRUSTED_PROXIES may name a client; from anyone else the header
    # is a protocol error, the connection closed without a reply, and the
    # server's limits and logs go on counting the sender's own address.
    server = server_factory(CHAT_TRUSTED_PROXIES="10.255.255.0/24")
    for header in (b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 1\r\n",
                   encode_v2(("192.0.2.7", 40001), ("127.0.0.1", 1))):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        try:
            sock.sendall(header)
            assert read_until_closed(sock, timeout=10) == b""
        finally:
            sock.close()
    client = V2Client(server.port)
    client.login(USER, PASSWORD)
    client.close()
    log = server.log_text()
    assert "192.0.2.7" not in log and "Traceback" not in log
