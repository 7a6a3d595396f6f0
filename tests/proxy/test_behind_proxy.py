"""
The PROXY protocol on a live server: the test plays the load balancer (it
connects from 127.0.0.1, which the server trusts through CHAT_TRUSTED_PROXIES)
and names clients from the documentation ranges (192.0.2.0/24, 2001:db8::/32).

Proves: the named address is the session's (logs, login throttling per
address); the header is taken off byte-exactly (v1, v2 and TLS follow it); a
trusted peer without a valid header is dropped; a PROXY header from an
untrusted address is a protocol error.
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from chat_server.proxy_protocol import encode_v1, encode_v2
from chatcore.protocol import AuthResult, Error, ErrorCode

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.tls import insecure_context
from tests.fixtures.v1client import PASSWORD_ACCEPTED, TERMINATOR, OriginalV1Client
from tests.hostile._support import read_until_closed
from tests.server.clients import V2Client, wait_until

CLIENT_A = ("192.0.2.7", 40001)
CLIENT_B = ("192.0.2.8", 40002)
TRUST_LOOPBACK = {"CHAT_TRUSTED_PROXIES": "127.0.0.1/32", "CHAT_LOG_LEVEL": "debug"}


def proxied_socket(port: int, header: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(header)
    return sock


def proxied_client(port: int, header: bytes) -> V2Client:
    return V2Client(port, sock=proxied_socket(port, header))


def session_peers(log: str, user: str) -> set[str]:
    """The peer field of the user's authenticated sessions in the text log."""
    return set(re.findall(rf"authenticated .*peer=(\S+).*user={re.escape(user)}\b", log)
               + re.findall(rf"authenticated .*user={re.escape(user)}\b.*peer=(\S+)", log))


@pytest.fixture
def proxied_server(server_factory):
    return server_factory(**TRUST_LOOPBACK)


@pytest.mark.parametrize("encode", [encode_v1, encode_v2], ids=["v1", "v2"])
def test_the_named_client_is_the_sessions_address(proxied_server, encode):
    server_port = proxied_server.port
    client = proxied_client(server_port, encode(CLIENT_A, ("127.0.0.1", server_port)))
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok
    assert client.chat("hello").end is not None
    client.close()
    wait_until(lambda: session_peers(proxied_server.log_text(), USER))
    assert session_peers(proxied_server.log_text(), USER) == {CLIENT_A[0]}


def test_ipv6_client_behind_an_ipv4_balancer(proxied_server):
    client = proxied_client(proxied_server.port, encode_v2(("2001:db8::7", 5), ("2001:db8::1", 5050)))
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    client.close()
    wait_until(lambda: session_peers(proxied_server.log_text(), USER))
    assert session_peers(proxied_server.log_text(), USER) == {"2001:db8::7"}


def test_local_header_keeps_the_balancers_address(proxied_server):
    # HAProxy's own health checks (check-send-proxy) say LOCAL.
    client = proxied_client(proxied_server.port, encode_v2(None, local=True))
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    client.close()
    wait_until(lambda: session_peers(proxied_server.log_text(), USER))
    assert session_peers(proxied_server.log_text(), USER) == {"127.0.0.1"}


def test_header_is_taken_byte_exactly_before_tls(proxied_server):
    # The header and the ClientHello in one TCP segment would do too; here the
    # header goes first and TLS runs over the same socket right after it.
    sock = proxied_socket(proxied_server.port, encode_v2(CLIENT_B))
    tls = insecure_context().wrap_socket(sock)
    client = V2Client(proxied_server.port, sock=tls)
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    assert client.chat("over TLS behind a balancer").end is not None
    client.close()
    wait_until(lambda: session_peers(proxied_server.log_text(), USER))
    assert session_peers(proxied_server.log_text(), USER) == {CLIENT_B[0]}


def test_header_and_first_frame_in_one_segment(proxied_server):
    # The balancer may coalesce its header with the client's first bytes.
    from chatcore.protocol import ClientHello, Connection, Role
    hello = Connection(Role.CLIENT, version=2).send(ClientHello((2,), agent="tests/1"))
    sock = socket.create_connection(("127.0.0.1", proxied_server.port), timeout=15)
    sock.sendall(encode_v1(CLIENT_A) + hello)
    data = sock.recv(4096)
    assert data.startswith(b"HELLO "), data[:80]
    sock.close()


def test_the_original_v1_client_behind_a_balancer(proxied_server):
    with OriginalV1Client(proxied_server.port) as client:
        client.sock.sendall(encode_v1(CLIENT_A))
        assert client.login(USER, PASSWORD)[1] == PASSWORD_ACCEPTED
        assert client.chat("hello")[-1] == TERMINATOR
    wait_until(lambda: session_peers(proxied_server.log_text(), USER))
    assert session_peers(proxied_server.log_text(), USER) == {CLIENT_A[0]}


def test_failed_logins_are_throttled_per_named_address(proxied_server):
    """Ten failures from one client behind the balancer throttle that client,
    not the balancer: another client through the same balancer logs in."""
    port = proxied_server.port
    failures = 0
    for i in range(30):
        client = proxied_client(port, encode_v2(CLIENT_A))
        result = client.login(f"nobody{i}", "wrong password")
        client.close()
        if isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED:
            break
        assert isinstance(result, AuthResult) and not result.ok
        failures += 1
    else:
        pytest.fail("the address was never throttled")
    assert failures >= 3
    # Same address, the real user with the right password: still throttled.
    client = proxied_client(port, encode_v2(CLIENT_A))
    result = client.login(USER, PASSWORD)
    assert isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED
    client.close()
    # Another client behind the same balancer is not.
    client = proxied_client(port, encode_v2(CLIENT_B))
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok
    client.close()


@pytest.mark.parametrize("opening", [
    b"",                                             # connects and says nothing
    b"HELLO 12",                                     # a client that bypassed the balancer
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",          # bare LF
    b"PROXY TCP4 192.0.2.700 10.0.0.1 1 2\r\n",      # not an address
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",       # oversized v2
    b"\x16\x03\x01\x00\x05",                         # TLS straight away
], ids=["silence", "chat-first", "bare-lf", "bad-address", "oversized", "tls-first"])
def test_trusted_peer_without_a_valid_header_is_dropped(proxied_server, opening):
    sock = socket.create_connection(("127.0.0.1", proxied_server.port), timeout=15)
    sock.sendall(opening)
    # Dropped without a reply (the PROXY deadline is a few seconds; 15 s is a hang guard).
    assert read_until_closed(sock, timeout=15) == b""
    sock.close()
    wait_until(lambda: "connection from trusted proxy dropped" in proxied_server.log_text()
               or opening == b"")
    # The server goes on serving.
    client = proxied_client(proxied_server.port, encode_v1(CLIENT_A))
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    client.close()


@pytest.mark.parametrize("header", [encode_v1(CLIENT_A), encode_v2(CLIENT_A)], ids=["v1", "v2"])
@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8"], ids=["none-trusted", "others-trusted"])
def test_untrusted_sender_of_a_proxy_header_is_refused(server_factory, header, trusted):
    server = server_factory(CHAT_TRUSTED_PROXIES=trusted)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    sock.sendall(header)
    assert read_until_closed(sock, timeout=15) == b""
    sock.close()
    wait_until(lambda: "PROXY protocol header from an address not in CHAT_TRUSTED_PROXIES"
               in server.log_text())
    # Nothing it named was believed: no session was opened for it.
    assert CLIENT_A[0] not in server.log_text()


def test_untrusted_clients_still_chat_directly(server_factory):
    server = server_factory(CHAT_TRUSTED_PROXIES="10.0.0.0/8")
    client = V2Client(server.port)
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    client.close()


def test_a_stalled_header_ends_only_that_connection(proxied_server):
    port = proxied_server.port
    stalled = socket.create_connection(("127.0.0.1", port), timeout=15)
    stalled.sendall(b"PROXY TCP4 192.0.2.7")  # and then nothing
    started = time.monotonic()
    client = proxied_client(port, encode_v1(CLIENT_B))
    assert client.login(USER, PASSWORD).ok  # type: ignore[union-attr]
    client.close()
    assert read_until_closed(stalled, timeout=15) == b""
    assert time.monotonic() - started < 15  # hang guard: the header deadline is seconds
    stalled.close()
    wait_until(lambda: "no PROXY header in time" in proxied_server.log_text())
