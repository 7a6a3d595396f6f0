"""Countermeasures, each named after the attack it stops (docs/SECURITY.md §1)."""

from __future__ import annotations

import pytest
from chatcore import protocol as p
from chatcore.protocol import (
    V1_TERMINATOR,
    Connection,
    ErrorCode,
    RemoteProtocolError,
    Role,
    State,
    encode_v1_frame,
)

from .helpers import ConnectionPair, drain, feed


def v1_server_after_username() -> Connection:
    conn = Connection(Role.SERVER)
    assert feed(conn, encode_v1_frame(b"alice")) == []
    return conn


def v2_server_after_hello() -> Connection:
    conn = Connection(Role.SERVER)
    hello = b"HELLO 16".ljust(64) + b'{"versions":[2]}'
    assert feed(conn, hello) == [p.ClientHello(agent="")]
    return conn


def refuse(conn: Connection, data: bytes, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, data)
    assert info.value.code is code
    assert conn.state is State.ERROR


V1_AND_V2 = pytest.mark.parametrize(
    "make, prefix",
    [(v1_server_after_username, b""), (v2_server_after_hello, b"AUTH ")],
    ids=["v1", "v2"],
)


@V1_AND_V2
def test_negative_length_header_rejected(make, prefix) -> None:
    refuse(make(), (prefix + b"-5").ljust(64) + b"hello")


@V1_AND_V2
def test_plus_sign_length_header_rejected(make, prefix) -> None:
    refuse(make(), (prefix + b"+5").ljust(64) + b"hello")


@V1_AND_V2
def test_underscore_length_header_rejected(make, prefix) -> None:
    refuse(make(), (prefix + b"1_0").ljust(64) + b"0123456789")


@V1_AND_V2
@pytest.mark.parametrize("digits", ["٥", "５", "𝟓"], ids=["arabic-indic", "fullwidth", "math"])
def test_non_ascii_digit_header_rejected(make, prefix, digits) -> None:
    assert int(digits) == 5  # what a lenient int() parser would accept
    refuse(make(), (prefix + digits.encode()).ljust(64) + b"hello")


@V1_AND_V2
@pytest.mark.parametrize("junk", [b"\t5", b"5\t", b"5\x00", b"5\n", b"0x5", b"5e0", b" 5"])
def test_whitespace_nul_and_notation_in_header_rejected(make, prefix, junk) -> None:
    refuse(make(), (prefix + junk).ljust(64) + b"hello")


def test_empty_or_all_space_v1_header_rejected() -> None:
    refuse(v1_server_after_username(), b" " * 64 + b"hello")


@V1_AND_V2
def test_oversized_length_rejected_before_body_buffered(make, prefix) -> None:
    conn = make()
    header = (prefix + b"99999999").ljust(64)
    # Refused on the header alone: no body byte has been sent at all.
    refuse(conn, header, ErrorCode.FRAME_TOO_LARGE)


@V1_AND_V2
def test_oversized_length_rejected_before_header_complete(make, prefix) -> None:
    conn = make()
    refuse(conn, prefix + b"99999", ErrorCode.FRAME_TOO_LARGE)


@V1_AND_V2
def test_garbage_header_rejected_before_header_complete(make, prefix) -> None:
    refuse(make(), prefix + b"5x")


@pytest.mark.parametrize("version", [1, 2])
def test_unauthenticated_frame_limit_is_smaller(version: int) -> None:
    body = "x" * 5000
    # Before login, 5000 bytes are too many...
    pair = ConnectionPair(version=version)
    if version == 2:
        pair.send(Role.CLIENT, p.ClientHello())
        pair.send(Role.SERVER, p.ServerHello())
    with pytest.raises(RemoteProtocolError) as info:
        pair.send(Role.CLIENT, p.Authenticate(body, "pw"))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    # ...after login they are fine, and the larger limit still holds.
    pair = ConnectionPair(version=version, max_frame_size=6000)
    pair.login()
    assert pair.send(Role.CLIENT, p.ChatMessage(body, "", 1)) == [p.ChatMessage(body, "", 1)]
    with pytest.raises(RemoteProtocolError) as info:
        pair.send(Role.CLIENT, p.ChatMessage("x" * 6001, "", 2))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_failed_login_does_not_raise_the_frame_limit() -> None:
    pair = ConnectionPair(version=1)
    pair.send(Role.CLIENT, p.Authenticate("alice", "wrong"))
    pair.send(Role.SERVER, p.AuthResult(False))
    assert pair.server.frame_limit == p.DEFAULT_MAX_UNAUTH_FRAME_SIZE


@pytest.mark.parametrize("version", [1, 2])
def test_header_split_byte_by_byte(version: int) -> None:
    # The original server's defect: a header split across TCP segments broke
    # the session. Every byte arriving alone must change nothing.
    pair = ConnectionPair(version=version)
    pair.login()
    message = p.ChatMessage("hello there", "", 1)
    assert pair.send(Role.CLIENT, message, bytewise=True) == [message]


@pytest.mark.parametrize("version", [1, 2])
def test_eof_mid_frame(version: int) -> None:
    pair = ConnectionPair(version=version)
    pair.login()
    data = pair.client.send(p.ChatMessage("hello", "", 1))
    with pytest.raises(RemoteProtocolError, match="mid-frame"):
        feed(pair.server, data[:-1], eof=True)


@pytest.mark.parametrize("version", [1, 2])
def test_eof_mid_header(version: int) -> None:
    pair = ConnectionPair(version=version)
    pair.login()
    with pytest.raises(RemoteProtocolError, match="mid-frame"):
        feed(pair.server, pair.client.send(p.ChatMessage("hi", "", 1))[:10], eof=True)


def test_eof_between_frames_is_an_orderly_close() -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    assert feed(pair.server, b"", eof=True) == [p.ConnectionClosed()]
    assert pair.server.state is State.CLOSED


def test_non_ascii_answer_is_transliterated_for_v1() -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    data = pair.server.send(p.AnswerDelta("“Ça” coûte 5 € — voilà 😀\x1b[2J\r", 1))
    data += pair.server.send(p.AnswerEnd(1))
    assert data.isascii()
    assert b"\x1b" not in data and b"\r" not in data  # no terminal control
    got = feed(pair.client, data)
    assert got[0] == p.AnswerDelta('"Ca" coute 5 EUR - voila :grinning:[2J', 1)


def test_no_all_space_chunk_inside_v1_answer() -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    data = b""
    for delta in ["x", " " * 40, " " * 40, " " * 100, "y", " " * 64, " " * 200]:
        data += pair.server.send(p.AnswerDelta(delta, 1))
    data += pair.server.send(p.AnswerEnd(1))
    chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
    assert all(len(c) == 64 for c in chunks)
    assert chunks[-1] == V1_TERMINATOR
    assert V1_TERMINATOR not in chunks[:-1]
    got = feed(pair.client, data)
    assert got[-1] == p.AnswerEnd(1) and p.AnswerEnd(1) not in got[:-1]
    assert "".join(e.text for e in got[:-1]) == "x" + " " * 63 + "y"  # type: ignore[attr-defined]


def test_goodbye_text_in_answer_cannot_end_v1_stream() -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    for answer in ["<GoodBye>", "  <GoodBye>\n", "x" * 64 + "<GoodBye>", "x" * 60 + "<GoodBye>"]:
        data = pair.server.send(p.AnswerDelta(answer, 1)) + pair.server.send(p.AnswerEnd(1))
        chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
        assert all(c.strip() != b"<GoodBye>" for c in chunks)
        got = feed(pair.client, data)
        assert p.Bye(reason="goodbye") not in got
        assert got[-1] == p.AnswerEnd(1)
        assert pair.client.state is State.CHATTING


def test_forged_control_chunks_in_answer_are_defused() -> None:
    # An answer can't pose as the cuss-word warning or as an error either.
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    for answer in ["[WARNING] use of cuss words are not allowed", "[ERROR] busy: fake"]:
        data = pair.server.send(p.AnswerDelta(answer, 1)) + pair.server.send(p.AnswerEnd(1))
        got = feed(pair.client, data)
        assert [type(e) for e in got] == [p.AnswerDelta, p.AnswerEnd]
        assert got[0].text.lower() == answer.lower()  # type: ignore[attr-defined]


def test_username_reply_does_not_reveal_whether_the_user_exists() -> None:
    for name in [b"alice", b"no-such-user", b"", b"<GoodBye>"]:
        conn = Connection(Role.SERVER)
        assert feed(conn, encode_v1_frame(name)) == []
        assert conn.data_to_send() == p.V1_USERNAME_ACCEPTED


def test_v1_pipelined_frames_wait_for_the_login_verdict() -> None:
    conn = Connection(Role.SERVER)
    data = encode_v1_frame(b"alice") + encode_v1_frame(b"pw") + encode_v1_frame(b"x" * 5000)
    # The chat frame is bigger than the pre-login limit but must not be judged
    # by it (or read at all) before the verdict is sent.
    conn.receive_data(data[: 64 * 2 + 7 + 64])
    assert drain(conn) == [p.Authenticate("alice", "pw")]
    conn.send(p.AuthResult(True, "alice"))
    conn.receive_data(data[64 * 3 + 7 :])
    assert drain(conn) == [p.ChatMessage("x" * 5000, "", 1)]


def test_v1_flood_before_the_login_verdict_rejected() -> None:
    conn = Connection(Role.SERVER)
    feed(conn, encode_v1_frame(b"alice") + encode_v1_frame(b"pw"))
    refuse(conn, b"9" * 10_000)


def test_deeply_nested_json_rejected() -> None:
    pair = ConnectionPair(version=2, max_frame_size=60_000)
    pair.login()
    body = b'{"id":1,"text":' + b"[" * 25_000 + b"]" * 25_000 + b"}"
    with pytest.raises(RemoteProtocolError, match="not UTF-8 JSON"):
        feed(pair.server, (b"CHAT %d" % len(body)).ljust(64) + body)


def test_lone_surrogate_in_json_rejected() -> None:
    pair = ConnectionPair(version=2)
    pair.login()
    body = b'{"id":1,"text":"\\udc80"}'
    refuse(pair.server, (b"CHAT %d" % len(body)).ljust(64) + body)


#: A valid body of every v2 frame type (HELLO as the client sends it).
_VALID_BODIES = {
    "HELLO": '"versions":[2]',
    "AUTH": '"user":"alice","password":"pw"',
    "AUTH_RESULT": '"ok":true',
    "CHAT": '"id":1,"text":"hi"',
    "DELTA": '"id":1,"text":"hi"',
    "END": '"id":1',
    "ERROR": '"code":"busy"',
    "NOTICE": '"kind":"info"',
    "CANCEL": '"id":1',
    "PING": '"nonce":"n"',
    "PONG": '"nonce":"n"',
    "BYE": '"reason":"quit"',
}
#: Where a lone surrogate can hide: in an unknown key's value, nested in an
#: unknown array or object, or in a key's name (docs/PROTOCOL.md §3).
_SURROGATE_PLACES = {
    "unknown key's value": ',"x":"\\udc80"',
    "nested in an unknown array": ',"x":[1,{"y":["\\ud800"]}]',
    "a key's name": ',"\\ud83d":1',
    "a high surrogate without its low half": ',"x":"\\ud83dA"',
}


@pytest.mark.parametrize("place", list(_SURROGATE_PLACES))
@pytest.mark.parametrize("frame_type", list(_VALID_BODIES))
def test_a_lone_surrogate_anywhere_in_any_frame_is_refused(frame_type: str, place: str) -> None:
    # Not only in the keys a frame type knows: the body as a whole is not valid
    # Unicode, and a strict JSON parser in another language refuses it.
    body = ("{" + _VALID_BODIES[frame_type] + _SURROGATE_PLACES[place] + "}").encode()
    refuse(v2_server_after_hello(), (b"%s %d" % (frame_type.encode(), len(body))).ljust(64) + body)


def test_a_surrogate_pair_and_an_escaped_backslash_u_are_not_lone_surrogates() -> None:
    pair = ConnectionPair(version=2)
    pair.login()
    body = b'{"id":1,"text":"\\ud83d\\ude00","x":"\\\\ud800"}'
    events = feed(pair.server, (b"CHAT %d" % len(body)).ljust(64) + body)
    assert events == [p.ChatMessage("\U0001f600", message_id=1)]


def test_error_reply_never_echoes_the_peer_bytes() -> None:
    conn = v2_server_after_hello()
    secret = b"SECRET_TOKEN"
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, b"AUTH 12".ljust(64) + secret)
    assert secret not in conn.error_reply(info.value)


@pytest.mark.parametrize("version", [1, 2])
def test_an_early_refusal_states_no_size_it_does_not_know(version: int) -> None:
    """Refused on a header still arriving (or with an 11th digit), the frame
    announces at least the digits seen so far: the message says so, instead
    of a size the peer never announced; a complete header gets its size."""
    prefix = b"" if version == 1 else b"CHAT "
    cases = [(prefix + b"99999", "at least 99999 bytes"),
             # v2's LENGTH has at most 10 digits, v1's 20.
             (prefix + b"9" * 11 + b" " * 40,
              "at least 9999999999 bytes" if version == 2 else "of 99999999999 bytes"),
             ((prefix + b"99999").ljust(64), "of 99999 bytes")]
    for data, said in cases:
        conn = Connection(Role.SERVER)
        conn.receive_data(data)
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert info.value.code is ErrorCode.FRAME_TOO_LARGE
        assert said in str(info.value), (data, str(info.value))
