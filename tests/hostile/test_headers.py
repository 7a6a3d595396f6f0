"""
Hostile frame headers: garbage, negative, non-numeric and oversized lengths,
10 MB body claims, headers split byte by byte.

Redis's ``tests/unit/protocol.tcl`` is the model (docs/SECURITY.md §5): one
raw-socket test per kind of malformed length, each asserting the refusal.
What a refusal looks like depends on what the server knows about the peer:

- v2 (first byte an uppercase letter): an ERROR frame with a stable code, then close;
- v1 before login: the original refusal string (the only thing the original
  client understands), then close;
- v1 after login: ``[ERROR] code: message`` chunks and ``<GoodBye>``, then close;
- neither (first byte is no digit and no uppercase letter): close, no reply.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.server import PASSWORD, USER

from ._support import (
    HEADER,
    V1_GOODBYE,
    V1_INVALID_USERNAME,
    V1_TERMINATOR,
    Guard,
    parse_v2,
    raw,
    read_until_closed,
    send_quietly,
    v1_chunks,
    v1_error_text,
    v1_login,
    v2_error_codes,
    v2_frame,
    v2_login,
)

pytestmark = pytest.mark.hostile

TEN_MB = 10 * 1024 * 1024


def _pad(header: bytes) -> bytes:
    return header.ljust(HEADER, b" ") if len(header) < HEADER else header


# (name, header bytes, what the server must answer)
BEFORE_LOGIN = [
    # v1: the first byte is a digit
    ("v1_non_numeric", b"12abc", "v1"),
    ("v1_underscore_digits", b"1_2", "v1"),
    ("v1_embedded_minus", b"12-3", "v1"),
    ("v1_exponent", b"1e3", "v1"),
    ("v1_hex", b"0x10", "v1"),
    ("v1_nul_after_digits", b"12\x00", "v1"),
    ("v1_tab_after_digits", b"12\t", "v1"),
    ("v1_digits_after_spaces", b"12 34", "v1"),
    ("v1_twenty_one_digits", b"9" * 21, "v1"),
    ("v1_oversized_twenty_digits", b"9" * 20, "v1"),
    ("v1_over_prelogin_limit", b"4097", "v1"),
    ("v1_ten_mb_claim", str(TEN_MB).encode(), "v1"),
    ("v1_header_of_64_digits", b"1" * 64, "v1"),
    # v2: the first byte is an uppercase letter
    ("v2_negative_length", b"HELLO -5", "protocol_error"),
    ("v2_non_numeric_length", b"HELLO abc", "protocol_error"),
    ("v2_eleven_digit_length", b"HELLO 99999999999", "frame_too_large"),  # refused by value first
    ("v2_eleven_zeros", b"HELLO 00000000000", "protocol_error"),
    ("v2_no_space", b"HELLO5", "protocol_error"),
    ("v2_lowercase_type", b"HEllo 5", "protocol_error"),
    ("v2_type_too_long", b"HELLOHELLOHELLOHELLO 5", "protocol_error"),
    ("v2_over_prelogin_limit", b"HELLO 4097", "frame_too_large"),
    ("v2_ten_mb_claim", b"HELLO " + str(TEN_MB).encode(), "frame_too_large"),
    ("v2_max_ten_digits", b"HELLO 9999999999", "frame_too_large"),
    ("v2_unknown_type", v2_frame("SHOUT", b"{}"), "unexpected_frame"),
    # neither: no protocol can be recognised, the server just closes
    ("negative_length", b"-12", "close"),
    ("plus_sign", b"+12", "close"),
    ("leading_space", b" 12", "close"),
    ("all_spaces", b" " * 64, "close"),
    ("nul_bytes", b"\x00" * 64, "close"),
    ("arabic_indic_digits", "١٢".encode(), "close"),
    ("fullwidth_digits", "１２".encode(), "close"),
    ("lowercase_type", b"hello 5", "close"),
    ("http_request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "protocol_error"),
    ("tls_client_hello", bytes.fromhex("160301020001") + b"\x00" * 58, "close"),
]


@pytest.mark.parametrize(("header", "expect"), [(h, e) for _, h, e in BEFORE_LOGIN],
                         ids=[n for n, _, _ in BEFORE_LOGIN])
def test_malformed_header_before_login_is_refused(guard: Guard, header: bytes, expect: str) -> None:
    sock = raw(guard.server.port)
    send_quietly(sock, _pad(header))
    reply = read_until_closed(sock)
    sock.close()
    if expect == "v1":
        assert reply == V1_INVALID_USERNAME
    elif expect == "close":
        assert reply == b""
    else:
        assert v2_error_codes(reply) == [expect], reply
    guard.check()


AFTER_LOGIN = [
    ("non_numeric", b"12abc", "protocol_error"),
    ("negative", b"-12", "protocol_error"),
    ("twenty_one_digits", b"9" * 21, "frame_too_large"),  # over the limit by the 6th digit
    ("twenty_one_zeros", b"0" * 21, "protocol_error"),  # small value, too many digits
    ("oversized", b"9" * 20, "frame_too_large"),
    ("ten_mb_claim", str(TEN_MB).encode(), "frame_too_large"),
    ("just_over_the_limit", b"65537", "frame_too_large"),
]


@pytest.mark.parametrize(("header", "code"), [(h, c) for _, h, c in AFTER_LOGIN],
                         ids=[n for n, _, _ in AFTER_LOGIN])
def test_malformed_v1_header_after_login_is_refused(guard: Guard, header: bytes, code: str) -> None:
    sock = v1_login(guard.server.port, USER, PASSWORD)
    send_quietly(sock, _pad(header))
    reply = read_until_closed(sock)
    sock.close()
    assert v1_chunks(reply)[-1].strip() == V1_GOODBYE, reply
    assert v1_error_text(reply).startswith(f"[ERROR] {code}:"), reply
    guard.check()


V2_AFTER_LOGIN = [
    ("negative", b"CHAT -5", "protocol_error"),
    ("non_numeric", b"CHAT 5x", "protocol_error"),
    ("digit_first", b"5 CHAT", "protocol_error"),
    ("oversized", b"CHAT 9999999999", "frame_too_large"),
    ("ten_mb_claim", b"CHAT " + str(TEN_MB).encode(), "frame_too_large"),
    ("just_over_the_limit", b"CHAT 65537", "frame_too_large"),
]


@pytest.mark.parametrize(("header", "code"), [(h, c) for _, h, c in V2_AFTER_LOGIN],
                         ids=[n for n, _, _ in V2_AFTER_LOGIN])
def test_malformed_v2_header_after_login_is_refused(guard: Guard, header: bytes, code: str) -> None:
    sock = v2_login(guard.server.port, USER, PASSWORD)
    send_quietly(sock, _pad(header))
    reply = read_until_closed(sock)
    sock.close()
    assert v2_error_codes(reply) == [code], reply
    guard.check()


@pytest.mark.parametrize("when", ["v1_before_login", "v2_before_login", "v1_after_login",
                                  "v2_after_login"])
def test_ten_mb_body_claim_is_refused_from_the_header_before_any_body_byte(
        guard: Guard, when: str) -> None:
    # The header alone gets the refusal: the server never waits for the body.
    port = guard.server.port
    if when == "v1_before_login":
        sock, header = raw(port), str(TEN_MB).encode()
    elif when == "v2_before_login":
        sock, header = raw(port), b"HELLO " + str(TEN_MB).encode()
    elif when == "v1_after_login":
        sock, header = v1_login(port, USER, PASSWORD), str(TEN_MB).encode()
    else:
        sock, header = v2_login(port, USER, PASSWORD), b"CHAT " + str(TEN_MB).encode()
    sock.sendall(_pad(header))
    sock.settimeout(10)
    first = sock.recv(65536)  # arrives although no body byte was sent
    assert first, "closed without a word"
    if when.startswith("v2"):
        assert v2_error_codes(first + read_until_closed(sock)) == ["frame_too_large"]
    elif when == "v1_before_login":
        assert first + read_until_closed(sock) == V1_INVALID_USERNAME
    else:
        assert v1_error_text(first + read_until_closed(sock)).startswith("[ERROR] frame_too_large:")
    # Pushing the body anyway: the server has closed, so it can't be buffering it.
    sent, piece = 0, b"x" * 65536
    while sent < TEN_MB and send_quietly(sock, piece):
        sent += len(piece)
    assert sent < TEN_MB, "the server accepted a 10 MB body after refusing its header"
    sock.close()
    guard.check()


def _drip(sock, data: bytes, pause: float = 0.002) -> None:
    for b in data:
        sock.sendall(bytes([b]))
        time.sleep(pause)


def test_header_split_byte_by_byte_still_works_v2(guard: Guard) -> None:
    sock = raw(guard.server.port)
    _drip(sock, v2_frame("HELLO", {"versions": [2], "agent": "drip/1"}))
    _drip(sock, v2_frame("AUTH", {"user": USER, "password": PASSWORD}))
    _drip(sock, v2_frame("CHAT", {"id": 1, "conversation": "", "text": "one byte at a time"}))
    data = b""
    sock.settimeout(15)
    while not any(kind in ("END", "ERROR") for kind, _ in parse_v2(data)):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    frames = parse_v2(data)
    kinds = [k for k, _ in frames]
    assert kinds[0] == "HELLO" and kinds[1] == "AUTH_RESULT" and kinds[-1] == "END", kinds
    text = "".join(b["text"] for k, b in frames if k == "DELTA")
    assert text.startswith("Echo: one byte at a time")
    sock.close()
    guard.check()


def test_header_split_byte_by_byte_still_works_v1(guard: Guard) -> None:
    sock = raw(guard.server.port)
    sock.settimeout(15)
    _drip(sock, str(len(USER)).encode().ljust(HEADER) + USER.encode())
    assert sock.recv(64) == b" username accepted"
    _drip(sock, str(len(PASSWORD)).encode().ljust(HEADER) + PASSWORD.encode())
    assert sock.recv(64) == b" password accepted"
    text = b"one byte at a time"
    _drip(sock, str(len(text)).encode().ljust(HEADER) + text)
    data = b""
    while not data.endswith(V1_TERMINATOR) or len(data) % HEADER:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.decode().strip().startswith("Echo: one byte at a time")
    sock.close()
    guard.check()
