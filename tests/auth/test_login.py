"""Login against a live server: the v1 and v2 handshakes, generic failures, throttling, deadlines."""

from __future__ import annotations

import socket

from chatcore.protocol import AuthResult, Error, ErrorCode

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import V2Client, logged_in, raw_v2_frame


def test_v2_login_succeeds_and_hello_announces_limits(live_server):
    client = V2Client(live_server.port)
    assert client.hello.model == "llama3.2"
    assert client.hello.limits["max_frame_bytes"] == 65536
    assert client.hello.limits["model_ready"] == 1
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok and result.user == USER
    client.close()


def test_v2_failure_is_generic_whether_or_not_the_user_exists(live_server):
    results = []
    for user in (USER, "no-such-user"):
        client = V2Client(live_server.port)
        results.append(client.login(user, "not the password"))
        client.close()
    assert all(isinstance(r, AuthResult) and not r.ok for r in results)
    assert results[0].message == results[1].message
    assert results[0].user == results[1].user == ""


def test_failed_logins_are_throttled_per_user(server_factory):
    server = server_factory()
    outcomes = []
    for _ in range(8):
        client = V2Client(server.port)
        outcomes.append(client.login(USER, "bad guess"))
        client.close()
    throttled = [r for r in outcomes if isinstance(r, Error) and r.code is ErrorCode.AUTH_THROTTLED]
    assert throttled, outcomes
    # Even the right password is refused while the account is throttled.
    client = V2Client(server.port)
    result = client.login(USER, PASSWORD)
    assert isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED
    client.close()


def test_auth_timeout_closes_a_silent_connection(server_factory):
    server = server_factory(CHAT_AUTH_TIMEOUT="1")
    client = V2Client(server.port)  # says hello, then nothing
    event = client.next_event(timeout=10)
    assert isinstance(event, Error) and event.code is ErrorCode.AUTH_TIMEOUT
    assert client.sock.recv(1) == b""
    client.close()


def test_auth_timeout_also_applies_before_any_byte(server_factory):
    server = server_factory(CHAT_AUTH_TIMEOUT="1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()  # reaching here means the server closed it


def test_nothing_reaches_the_model_before_authentication(live_server):
    client = V2Client(live_server.port)
    client.sock.sendall(raw_v2_frame("CHAT", {"id": 1, "conversation": "", "text": "hello model"}))
    event = client.next_event()
    assert isinstance(event, Error) and event.code is ErrorCode.UNEXPECTED_FRAME
    client.close()
    assert live_server.standin.requests() == []


def test_a_user_added_by_the_cli_can_log_in(live_server):
    live_server.add_user("bob", "bob's long password")
    client = logged_in(live_server.port, "bob", "bob's long password")
    assert client.chat("hi").text.startswith("Echo: hi")
    client.close()


def test_bootstrap_user_is_created_at_start(server_factory):
    server = server_factory(users={}, CHAT_BOOTSTRAP_USER="admin", CHAT_BOOTSTRAP_PASSWORD="boot-strap-pw")
    client = logged_in(server.port, "admin", "boot-strap-pw")
    client.close()
    assert "boot-strap-pw" not in server.log_text()
