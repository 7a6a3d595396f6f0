"""docs/PROTOCOL.md read by an independent client, against a real server over
real sockets: the bytes are built here from the document's grammar (§3) and
the replies read with a reader of our own (tests/hostile/_support.py), not with
the codec under test. Each test is a place where a reader of the document
alone could have built a client that the server disagreed with."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.server import PASSWORD, USER, LiveServer, shared_server
from tests.hostile._support import (
    V1_TERMINATOR,
    parse_v2,
    raw,
    read_until_closed,
    v1_chunks,
    v1_frame,
    v1_login,
    v2_login,
)

AUTH_TIMEOUT = 2
#: The limit before login (§10), which every header here is judged by.
UNAUTH_LIMIT = 4096
HELLO_BODY = b'{"versions":[2]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Hundreds of connections from one address in seconds: shared_server lifts
    # the message and connection rates, which this module is not about.
    with shared_server(tmp_path_factory, "spec-conformance",
                       CHAT_AUTH_TIMEOUT=str(AUTH_TIMEOUT),
                       CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS="1000") as live:
        yield live


def _answer(sock: socket.socket, mid: int, timeout: float = 15.0) -> list[tuple[str, dict]]:
    """Frames up to the END or ERROR of message ``mid`` (or the close)."""
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = parse_v2(data)
        if any((kind in ("END", "ERROR") and body.get("id") == mid)
               or (kind == "ERROR" and "id" not in body) for kind, body in frames):
            return frames
        chunk = sock.recv(65536)
        if not chunk:
            return parse_v2(data)
        data += chunk
    raise AssertionError(f"no END or ERROR for {mid}: {data!r}")


def _chat_body(extra: bytes) -> bytes:
    """A CHAT body with ``extra`` (``"key":value``) among its keys."""
    return b'{"id":1,"text":"hi",' + extra + b"}"


# -- §3: numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("number", [
    b"1" + b"0" * 5000,           # beyond CPython's 4300-digit int() limit
    b"-" + b"9" * 4400,
    b"1" + b"0" * 4000,           # within it: still far beyond 2**53-1
    b"123456789012345678901234567890",
    b"-5", b"1.5e300", b"1e400", b"0." + b"1" * 3000,
])
def test_a_number_of_any_size_under_an_unknown_key_is_ignored(server: LiveServer,
                                                                number: bytes) -> None:
    """§3: unknown keys are ignored whatever their (valid JSON) value. A
    5000-digit integer used to be refused as "body is not UTF-8 JSON"."""
    sock = v2_login(server.port, USER, PASSWORD)
    body = _chat_body(b'"x":' + number)
    sock.sendall(f"CHAT {len(body)}".encode().ljust(64) + body)
    frames = _answer(sock, 1)
    assert frames[-1][0] == "END", frames


@pytest.mark.parametrize("number", [b"9" * 5000, b"9007199254740992", b"-1", b"1.0", b"1e0"])
def test_an_out_of_range_integer_in_a_known_key_is_refused_naming_the_key(
        server: LiveServer, number: bytes) -> None:
    """§3: a known integer outside 0..2^53-1 is a protocol_error, and the error
    says which key, whatever the literal's length (it used to say "body is not
    UTF-8 JSON" for more than 4300 digits, as if the JSON were broken)."""
    sock = v2_login(server.port, USER, PASSWORD)
    body = b'{"id":' + number + b',"text":"hi"}'
    sock.sendall(f"CHAT {len(body)}".encode().ljust(64) + body)
    frames = parse_v2(read_until_closed(sock))
    assert [kind for kind, _ in frames] == ["ERROR"]
    assert frames[0][1]["code"] == "protocol_error"
    assert "'id'" in frames[0][1]["message"]


def test_minus_zero_is_the_integer_zero(server: LiveServer) -> None:
    sock = v2_login(server.port, USER, PASSWORD)
    body = b'{"id":-0,"text":"hi"}'
    sock.sendall(f"CHAT {len(body)}".encode().ljust(64) + body)
    frames = _answer(sock, 0)
    assert frames[-1][0] == "END" and frames[-1][1]["id"] == 0


# -- §3: LENGTH 0 ----------------------------------------------------------------------


def test_a_frame_with_length_zero_is_a_protocol_error_and_ping_2_is_the_empty_ping(
        server: LiveServer) -> None:
    """§3: 0 passes the header check, but a body is a JSON object."""
    sock = v2_login(server.port, USER, PASSWORD)
    sock.sendall(b"PING 2".ljust(64) + b"{}")
    data = b""
    while not parse_v2(data):
        data += sock.recv(65536)
    assert parse_v2(data) == [("PONG", {"nonce": ""})]
    sock.sendall(b"PING 0".ljust(64))
    frames = parse_v2(read_until_closed(sock))
    assert [(kind, body["code"]) for kind, body in frames] == [("ERROR", "protocol_error")]


# -- §2: a connection that never speaks ------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_without_a_reply_at_the_login_deadline(
        server: LiveServer) -> None:
    sock = raw(server.port, timeout=AUTH_TIMEOUT + 10)
    started = time.monotonic()
    assert read_until_closed(sock, timeout=AUTH_TIMEOUT + 10) == b""
    assert time.monotonic() - started >= AUTH_TIMEOUT - 0.5


# -- §9: v1 has no message ids, so its replies come in the order of its messages ---------

#: About a second of answer from the stand-in.
SLOW = "[standin:tokens=40] [standin:delay-ms=25]"


def _v1_replies(sock: socket.socket, count: int) -> list[str]:
    """The next ``count`` replies, each up to its 64-space terminator, as the
    original client reads them."""
    replies: list[str] = []
    data = b""
    while True:
        chunks = v1_chunks(data[:len(data) - len(data) % 64])
        if V1_TERMINATOR in chunks:
            end = chunks.index(V1_TERMINATOR)
            replies.append(b"".join(chunks[:end]).decode("ascii").strip())
            data = data[(end + 1) * 64:]
            continue
        if len(replies) >= count:
            return replies
        chunk = sock.recv(65536)
        assert chunk, (replies, data)
        data += chunk


def test_v1_replies_come_in_the_order_of_the_messages(server_factory) -> None:
    """Errors too: a message refused by the rate limit while an earlier answer
    streamed got its [ERROR] chunks and terminator before that answer, so a v1
    client read the refusal as the answer to its first message."""
    live = server_factory(CHAT_RATE_LIMIT="2")
    sock = v1_login(live.port, USER, PASSWORD)
    sock.sendall(v1_frame(f"first {SLOW}") + b"".join(v1_frame(f"q{i}") for i in range(3)))
    replies = _v1_replies(sock, 4)
    assert replies[0].startswith("Echo: first"), replies
    assert replies[1].startswith("Echo: q0"), replies
    assert [r.split(":")[0] for r in replies[2:]] == ["[ERROR] rate_limited"] * 2, replies


def test_v1_frames_behind_a_waiting_message_are_not_read(server: LiveServer) -> None:
    """A v1 message that arrives during an answer waits for it, and the server
    reads nothing behind it meanwhile: a broken header behind it is refused
    after the first answer's terminator, not in the middle of it (so a v1
    client that pipelines waits in TCP instead of piling up messages in the
    server's memory)."""
    sock = v1_login(server.port, USER, PASSWORD)
    sock.sendall(v1_frame(f"first {SLOW}") + v1_frame(f"second {SLOW}") + b"x".ljust(64))
    chunks = v1_chunks(read_until_closed(sock))
    end = chunks.index(V1_TERMINATOR)
    assert b"".join(chunks[:end]).startswith(b"Echo: first"), chunks[:3]
    assert not any(c.startswith(b"[ERROR]") for c in chunks[:end]), chunks[:end]
    assert any(c.startswith(b"[ERROR] protocol_error") for c in chunks[end:]), chunks[end:]


# -- §3 and §10: the header grammar, property-based ------------------------------------

#: Bytes that may never appear in a header's padding (§3), and never in LENGTH.
JUNK = [b"\t", b"\x00", b"\r", b"\n", b"x", b"\xff", "٥".encode(), "５".encode(), b"+",
        b"-", b"_", b"."]


@st.composite
def headers(draw: st.DrawFn) -> tuple[list[bytes], str]:
    """A v2 first frame, cut into pieces, and the reply the document promises:
    ``HELLO`` (a valid header and body), ``frame_too_large`` or ``protocol_error``."""
    length = draw(st.one_of(st.integers(len(HELLO_BODY), UNAUTH_LIMIT),
                            st.integers(UNAUTH_LIMIT + 1, 10**10 - 1)))
    digits = str(length).encode()
    digits = b"0" * draw(st.integers(0, 10 - len(digits))) + digits
    kind = draw(st.sampled_from(["valid", "junk_padding", "junk_digits", "eleven_digits",
                                 "double_space", "no_space", "long_type", "lower_type"]))
    type_ = b"HELLO"
    sep = b" "
    if kind == "double_space":
        sep = b"  "
    elif kind == "no_space":
        sep = b""
    elif kind == "long_type":
        type_ = b"HELLO" + b"_" * 12  # 17 characters
    elif kind == "lower_type":
        type_ = b"HeLLO"
    elif kind == "junk_digits":
        at = draw(st.integers(0, len(digits)))
        digits = digits[:at] + draw(st.sampled_from(JUNK)) + digits[at:]
    elif kind == "eleven_digits":
        digits = b"0" * (11 - len(digits)) + digits if len(digits) < 11 else digits
    head = type_ + sep + digits
    header = head.ljust(64)
    if kind == "junk_padding":
        junk = draw(st.sampled_from(JUNK))
        at = draw(st.integers(len(head), 64 - len(junk)))
        header = (header[:at] + junk + header[at + len(junk):])[:64]
    # What §10 promises: the limit is judged on the valid prefix's first 10
    # digits, before the syntax; then the syntax; then the body.
    prefix_digits = b""
    if head.startswith(b"HELLO ") and kind not in ("double_space", "long_type", "lower_type"):
        for b in digits[:10]:
            if not 0x30 <= b <= 0x39:
                break
            prefix_digits += bytes([b])
    if prefix_digits and int(prefix_digits) > UNAUTH_LIMIT:
        expected = "frame_too_large"
    elif kind != "valid":
        expected = "protocol_error"
    else:
        expected = "HELLO"
    data = header + (HELLO_BODY.ljust(length) if expected == "HELLO" else b"")
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=6))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return pieces, expected


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=headers())
def test_every_header_gets_the_reply_the_grammar_promises_however_it_is_split(
        server: LiveServer, case: tuple[list[bytes], str]) -> None:
    pieces, expected = case
    sock = raw(server.port)
    try:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:  # refused early (§10): the rest is not read
                break
            time.sleep(0.001)
        data = b""
        while not parse_v2(data):
            chunk = sock.recv(65536)
            assert chunk, f"closed without a reply: {pieces!r}"
            data += chunk
        kind, body = parse_v2(data)[0]
        got = "HELLO" if kind == "HELLO" else body.get("code")
        assert got == expected, (pieces, kind, body)
    finally:
        sock.close()


@pytest.mark.parametrize(("header", "code"), [
    (b"HELLO 99999999999", "frame_too_large"),     # 11 digits; the first 10 are over
    (b"HELLO 00000000004097", "protocol_error"),   # 11+ digits; the first 10 are not
    (b"HELLO 5000\t", "frame_too_large"),          # the limit before the syntax
    (b"HELLO 0000000015 x", "protocol_error"),
])
def test_the_examples_of_early_refusal(server: LiveServer, header: bytes, code: str) -> None:
    """§10's examples, whole and byte by byte: the same code either way."""
    for pieces in ([header.ljust(64)], [bytes([b]) for b in header.ljust(64)]):
        sock = raw(server.port)
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break
        frames = parse_v2(read_until_closed(sock))
        assert [body["code"] for _, body in frames] == [code], pieces
