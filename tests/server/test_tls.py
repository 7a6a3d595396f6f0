"""
TLS on the chat port: a real server process, real sockets, real handshakes.

One port serves TLS v2, plaintext v2 and v1 (the first byte decides); the
server's own certificate is generated once and reused; an operator's
certificate is served as given; the operator can turn v1 off and plaintext v2
off; a handshake that stalls or is junk ends only that connection.
"""

from __future__ import annotations

import signal
import socket
import ssl
import stat
import threading
import warnings

import psutil
import pytest
from chatcore.protocol import AuthResult, Ping, Pong

from tests.fixtures.server import PASSWORD, USER, run_cli
from tests.fixtures.tls import (
    client_hello,
    insecure_context,
    logged_fingerprints,
    make_operator_certs,
    pem_fingerprint,
    sha256_fingerprint,
    tls_socket,
)
from tests.fixtures.v1client import OriginalV1Client, answer_text
from tests.hostile._support import parse_v2, raw, read_until_closed, v1_frame, v2_frame
from tests.server.clients import V2Client, logged_in

V1_INVALID_USERNAME = b"invalid username : closing connection"


def tls_client(port: int, ctx: ssl.SSLContext | None = None, *,
               server_hostname: str | None = None) -> V2Client:
    return V2Client(port, sock=tls_socket(port, ctx, server_hostname=server_hostname))


def tls_logged_in(port: int, ctx: ssl.SSLContext | None = None) -> V2Client:
    client = tls_client(port, ctx)
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok, result
    return client


def ping_answered(client: V2Client, nonce: str) -> None:
    client.send(Ping(nonce))
    event = client.next_event(timeout=10)  # a hang guard, not a timing assertion
    assert event == Pong(nonce), event


def generated_cert(server) -> tuple:  # (cert path, key path)
    data = server.env["CHAT_DB"].rsplit("/", 1)[0]
    from pathlib import Path

    d = Path(data) / "tls"
    return d / "cert.pem", d / "key.pem"


# ---------------------------------------------------------------------------- certificates
def test_tls_chat_with_the_generated_certificate_whose_fingerprint_is_logged(live_server):
    cert_path, _ = generated_cert(live_server)
    [logged] = logged_fingerprints(live_server.log_text())
    client = tls_logged_in(live_server.port)
    try:
        presented = sha256_fingerprint(client.sock.getpeercert(binary_form=True))  # type: ignore[attr-defined]
        assert presented == logged == pem_fingerprint(cert_path)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
        reply = client.chat("over TLS")
        assert reply.text.startswith("Echo: over TLS"), reply.events
    finally:
        client.close()
    assert "connection opened (protocol v2 over TLS)" in live_server.log_text()


def test_generated_key_is_private_and_reused_across_restarts(live_server):
    _, key_path = generated_cert(live_server)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    key_before = key_path.read_bytes()
    first = logged_fingerprints(live_server.log_text())
    live_server.restart()
    second = logged_fingerprints(live_server.log_text(since_start=True))
    assert second == first, "a restart must keep the certificate clients have pinned"
    assert key_path.read_bytes() == key_before
    assert live_server.log_text().count("generated a self-signed TLS certificate") == 1
    client = tls_logged_in(live_server.port)
    try:
        assert sha256_fingerprint(client.sock.getpeercert(binary_form=True)) == first[0]  # type: ignore[attr-defined]
    finally:
        client.close()


def test_a_key_made_readable_by_others_is_made_private_again(live_server):
    _, key_path = generated_cert(live_server)
    key_path.chmod(0o644)
    live_server.restart()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "was readable by others" in live_server.log_text(since_start=True)


def test_a_half_generated_certificate_is_replaced(live_server):
    cert_path, key_path = generated_cert(live_server)
    old = logged_fingerprints(live_server.log_text())[0]
    live_server.stop()
    cert_path.unlink()  # as if the first start died between the key and the certificate
    live_server.start()
    [new] = logged_fingerprints(live_server.log_text(since_start=True))
    assert new != old and new == pem_fingerprint(cert_path)
    assert key_path.exists()


def test_fingerprint_command_prints_what_the_server_presents(live_server):
    r = live_server.cli("fingerprint")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == logged_fingerprints(live_server.log_text())[0]


def test_operator_certificate_is_served_and_verifies_against_its_ca(server_factory, tmp_path):
    certs = make_operator_certs(tmp_path / "pki")
    server = server_factory(CHAT_TLS_CERT=str(certs.cert), CHAT_TLS_KEY=str(certs.key))
    ctx = ssl.create_default_context(cafile=str(certs.ca))  # hostname checked too
    client = tls_client(server.port, ctx, server_hostname="localhost")
    try:
        assert isinstance(client.login(USER, PASSWORD), AuthResult)
        assert client.chat("verified").text.startswith("Echo: verified")
        presented = sha256_fingerprint(client.sock.getpeercert(binary_form=True))  # type: ignore[attr-defined]
    finally:
        client.close()
    assert logged_fingerprints(server.log_text()) == [presented]
    assert "(configured)" in server.log_text()
    assert not (tmp_path / "server0" / "tls").exists(), "nothing is generated when one is configured"
    # The wrong name fails verification on the client, as it must.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_socket(server.port, ctx, server_hostname="not-this-server.example")


@pytest.mark.parametrize("problem", ["only-cert", "missing-file", "encrypted-key", "mismatched"])
def test_unusable_operator_certificate_stops_the_start_with_one_clear_line(
        server_factory, tmp_path, problem):
    certs = make_operator_certs(tmp_path / "pki")
    env = server_factory(start=False).env
    if problem == "only-cert":
        env["CHAT_TLS_CERT"] = str(certs.cert)
        expect_code, expect = 2, "CHAT_TLS_CERT and CHAT_TLS_KEY: expected both or neither"
    elif problem == "missing-file":
        env.update(CHAT_TLS_CERT=str(tmp_path / "nope.pem"), CHAT_TLS_KEY=str(certs.key))
        expect_code, expect = 1, "cannot read the TLS certificate"
    elif problem == "encrypted-key":
        locked = make_operator_certs(tmp_path / "locked", passphrase=b"secret")
        env.update(CHAT_TLS_CERT=str(locked.cert), CHAT_TLS_KEY=str(locked.key))
        expect_code, expect = 1, "the private key is encrypted"
    else:
        other = make_operator_certs(tmp_path / "other")
        env.update(CHAT_TLS_CERT=str(certs.cert), CHAT_TLS_KEY=str(other.key))
        expect_code, expect = 1, "cannot be used together"
    r = run_cli(["serve"], env, timeout=60)
    assert r.returncode == expect_code, r.stdout + r.stderr
    assert expect in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_tls_older_than_1_2_is_refused(live_server):
    ctx = insecure_context()
    with warnings.catch_warnings():  # deprecated on purpose: that is what is refused
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot offer TLS 1.1 at all")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_socket(live_server.port, ctx).close()
    client = tls_logged_in(live_server.port)  # the server is fine
    client.close()


# ---------------------------------------------------------------------------- one port, three ways
def test_v1_and_plaintext_v2_are_served_on_the_same_port_while_tls_clients_chat(live_server):
    secure = tls_logged_in(live_server.port)
    plain = logged_in(live_server.port, USER, PASSWORD)
    original = OriginalV1Client(live_server.port)
    try:
        assert original.login(USER, PASSWORD) == (b" username accepted", b" password accepted")
        # Interleaved: each one answered while the others stay open.
        assert secure.chat("tls one").text.startswith("Echo: tls one")
        assert answer_text(original.chat("v1 one")).startswith("Echo: v1 one")
        assert plain.chat("plain one").text.startswith("Echo: plain one")
        ping_answered(secure, "a")
        assert answer_text(original.chat("v1 two")).startswith("Echo: v1 two")
        assert secure.chat("tls two").text.startswith("Echo: tls two")
        ping_answered(plain, "b")
    finally:
        for c in (secure, plain, original):
            c.close()
    log = live_server.log_text()
    assert "protocol v1)" in log and "protocol v2)" in log and "protocol v2 over TLS)" in log


def test_tls_and_plaintext_clients_at_once(live_server):
    errors: list[BaseException] = []

    def chat(i: int, secure: bool) -> None:
        try:
            client = tls_logged_in(live_server.port) if secure else logged_in(
                live_server.port, USER, PASSWORD)
            try:
                ping_answered(client, f"p{i}")
            finally:
                client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(i, i % 2 == 0)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    log = live_server.log_text()
    assert log.count("protocol v2 over TLS)") == 8 and log.count("protocol v2)") == 8


def test_inside_tls_only_v2_is_spoken(live_server):
    sock = tls_socket(live_server.port)
    try:
        sock.sendall(v1_frame(USER))
        reply = read_until_closed(sock)
    finally:
        sock.close()
    [(kind, body)] = parse_v2(reply)
    assert (kind, body["code"]) == ("ERROR", "protocol_error")


# ---------------------------------------------------------------------------- operator policy
def test_require_tls_refuses_plaintext_v2_with_a_clear_error(server_factory):
    server = server_factory(CHAT_REQUIRE_TLS="true")
    sock = raw(server.port)
    try:
        sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "plain/1"}))
        reply = read_until_closed(sock)
    finally:
        sock.close()
    [(kind, body)] = parse_v2(reply)
    assert kind == "ERROR" and body["code"] == "tls_required"
    assert "TLS" in body["message"]
    # TLS v2 and v1 (governed by CHAT_ALLOW_V1) are still served, and the
    # container healthcheck speaks TLS to such a server.
    client = tls_logged_in(server.port)
    assert client.chat("secure").text.startswith("Echo: secure")
    client.close()
    original = OriginalV1Client(server.port)
    assert original.login(USER, PASSWORD)[1] == b" password accepted"
    original.close()
    r = run_cli(["healthcheck"], {**server.env, "CHAT_PORT": str(server.port)})
    assert r.returncode == 0, r.stderr


def test_allow_v1_false_answers_the_original_client_with_its_login_refusal(server_factory):
    server = server_factory(CHAT_ALLOW_V1="false")
    original = OriginalV1Client(server.port)
    try:
        user_reply, password_reply = original.login(USER, PASSWORD)
        assert user_reply == V1_INVALID_USERNAME and password_reply == b""
        assert original.sock.recv(64) == b""  # and the connection is closed (no reset)
    finally:
        original.close()
    assert "v1 connection refused (CHAT_ALLOW_V1=false)" in server.log_text()
    plain = logged_in(server.port, USER, PASSWORD)
    assert plain.chat("v2 still").text.startswith("Echo: v2 still")
    plain.close()


def test_require_tls_and_no_v1_leave_only_tls(server_factory):
    server = server_factory(CHAT_REQUIRE_TLS="1", CHAT_ALLOW_V1="0")
    original = OriginalV1Client(server.port)
    assert original.login(USER, PASSWORD)[0] == V1_INVALID_USERNAME
    original.close()
    sock = raw(server.port)
    sock.sendall(v2_frame("HELLO", {"versions": [2]}))
    assert [b["code"] for _, b in parse_v2(read_until_closed(sock))] == ["tls_required"]
    sock.close()
    tls_logged_in(server.port).close()


# ---------------------------------------------------------------------------- hostile handshakes
@pytest.mark.parametrize("attack", ["first-byte-only", "half-client-hello", "whole-client-hello",
                                    "junk-record", "junk-after-hello"])
def test_stalled_or_junk_handshake_ends_only_that_connection(server_factory, attack):
    server = server_factory(CHAT_AUTH_TIMEOUT="2", CHAT_FRAME_TIMEOUT="2")
    bystander_tls = tls_logged_in(server.port)
    bystander_plain = logged_in(server.port, USER, PASSWORD)
    hello = client_hello()
    payload = {
        "first-byte-only": b"\x16",
        "half-client-hello": hello[: len(hello) // 2],
        "whole-client-hello": hello,  # then silence: the client never finishes
        "junk-record": b"\x16\x03\x01\x00\x20" + b"\xff" * 32,
        "junk-after-hello": hello + b"\x00" * 200,
    }[attack]
    attackers = [raw(server.port) for _ in range(3)]
    try:
        for sock in attackers:
            sock.sendall(payload)
        # While the handshakes hang (or fail), everyone else is served.
        ping_answered(bystander_tls, "during")
        ping_answered(bystander_plain, "during")
        for sock in attackers:
            read_until_closed(sock, timeout=15)  # closed by the server: a hang guard
    finally:
        for sock in attackers:
            sock.close()
    ping_answered(bystander_tls, "after")
    assert bystander_tls.chat("still here").text.startswith("Echo: still here")
    bystander_tls.close()
    bystander_plain.close()
    log = server.log_text()
    assert log.count("TLS handshake failed") == 3, log
    assert "Traceback" not in log


def test_silent_connection_is_closed_after_the_auth_timeout(server_factory):
    server = server_factory(CHAT_AUTH_TIMEOUT="1")
    sock = raw(server.port)
    try:
        assert read_until_closed(sock, timeout=10) == b""
    finally:
        sock.close()
    tls_logged_in(server.port).close()


def test_shutdown_does_not_wait_for_a_silent_tls_client(live_server):
    client = tls_logged_in(live_server.port)  # logged in, then never reads again
    try:
        code = live_server.stop(signal.SIGTERM, timeout=15)
    finally:
        client.close()
    assert code == 0, live_server.log_text()


def test_over_the_connection_limit_a_tls_client_is_told_in_v2(server_factory):
    server = server_factory(CHAT_MAX_CONNECTIONS="1")
    first = tls_logged_in(server.port)
    try:
        sock = tls_socket(server.port)
        sock.sendall(v2_frame("HELLO", {"versions": [2]}))
        reply = read_until_closed(sock)
        sock.close()
        assert [b["code"] for _, b in parse_v2(reply)] == ["too_many_connections"]
        ping_answered(first, "still")
    finally:
        first.close()


def test_a_peer_that_closes_at_once_costs_nothing(live_server):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", live_server.port))
        s.close()
    tls_logged_in(live_server.port).close()
    assert "Traceback" not in live_server.log_text()


def test_idle_tls_sessions_cost_tens_not_hundreds_of_kib(server_factory):
    """asyncio's default TLS read buffer (256 KiB, resident) per connection would
    let a few thousand idle TLS sessions take gigabytes."""
    # 160 connections from one address within a second or two: past the
    # connection rate's burst, which this test is not about.
    live_server = server_factory(CHAT_CONNECT_RATE_PER_ADDRESS="0")
    warm = [tls_logged_in(live_server.port) for _ in range(10)]
    process = psutil.Process(live_server.pid)
    before = process.memory_info().rss
    clients = [tls_logged_in(live_server.port) for _ in range(150)]
    try:
        for c in clients[::15]:
            ping_answered(c, "idle")
        per_session = (process.memory_info().rss - before) / len(clients)
    finally:
        for c in warm + clients:
            c.close()
    assert per_session < 100 * 1024, f"{per_session / 1024:.0f} KiB per idle TLS session"
