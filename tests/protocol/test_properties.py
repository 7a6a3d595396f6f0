"""Property tests (Hypothesis): splitting never matters, events round-trip,
and no input makes the codec raise anything but RemoteProtocolError."""

from __future__ import annotations

import re
from typing import Any

from chatcore import protocol as p
from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    Connection,
    ErrorCode,
    Event,
    NoticeKind,
    RemoteProtocolError,
    Role,
    to_v1_text,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import ConnectionPair, drain, feed, feed_split

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text without lone surrogates (they can't travel as UTF-8 at all).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
#: Names (agent, model, conversation) have no control characters (docs/PROTOCOL.md §4).
name = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=80)
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
ids = st.integers(min_value=0, max_value=2**53 - 1)
small = st.integers(min_value=0, max_value=10**9)

# -- every event, with arbitrary field values -------------------------------------

client_hello = st.builds(
    p.ClientHello,
    versions=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(lambda v: tuple([2, *v])),
    agent=name,
)
server_hello = st.builds(
    p.ServerHello,
    version=st.just(2),
    agent=name,
    model=name,
    limits=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda s: s.isprintable()), small, max_size=3
    ),
)
tokens = st.text(min_size=1, max_size=80)
authenticate = st.builds(p.Authenticate, user=text, password=text) | st.builds(
    p.Authenticate, user=text, token=tokens
)
auth_result = st.builds(p.AuthResult, ok=st.booleans(), user=text, message=text) | st.builds(
    p.AuthResult, ok=st.just(True), user=text, message=text, token=tokens
)
chat = st.builds(p.ChatMessage, text=text, conversation=name, message_id=ids)
delta = st.builds(p.AnswerDelta, text=text, message_id=ids)
end = st.builds(
    p.AnswerEnd,
    message_id=ids,
    reason=st.sampled_from(["stop", "length", "cancelled"]),
    prompt_tokens=small,
    answer_tokens=small,
    first_token_ms=small,
    total_ms=small,
)
nonfatal = [c for c in ErrorCode if c not in p.FATAL_CODES]
error = st.builds(p.Error, code=st.sampled_from(nonfatal), message=text, message_id=st.none() | ids)
notice = st.builds(
    p.Notice,
    kind=st.sampled_from(list(NoticeKind)),
    message=text,
    message_id=st.none() | ids,
    position=st.none() | st.integers(1, 1000),
)
cancel = st.builds(p.Cancel, message_id=ids)
ping = st.builds(p.Ping, nonce=text)
pong = st.builds(p.Pong, nonce=text)
bye = st.builds(p.Bye, reason=text)

CLIENT_CHAT_EVENTS = st.one_of(chat, cancel, ping, pong, error)
SERVER_CHAT_EVENTS = st.one_of(delta, end, notice, ping, pong, error)


# -- v2: round trip of every event ----------------------------------------------------


@FAST
@given(hello=client_hello, shello=server_hello, auth=authenticate, result=auth_result)
def test_v2_handshake_events_round_trip(
    hello: p.ClientHello, shello: p.ServerHello, auth: p.Authenticate, result: p.AuthResult
) -> None:
    pair = ConnectionPair(version=2)
    assert pair.send(Role.CLIENT, hello) == [hello]
    assert pair.send(Role.SERVER, shello) == [shello]
    assert pair.send(Role.CLIENT, auth) == [auth]
    assert pair.send(Role.SERVER, result) == [result]


@FAST
@given(
    client_events=st.lists(CLIENT_CHAT_EVENTS, max_size=6),
    server_events=st.lists(SERVER_CHAT_EVENTS, max_size=6),
    last=bye,
)
def test_v2_chat_events_round_trip(
    client_events: list[Event], server_events: list[Event], last: p.Bye
) -> None:
    pair = ConnectionPair(version=2)
    pair.login()
    assert pair.send(Role.CLIENT, *client_events) == client_events
    assert pair.send(Role.SERVER, *server_events) == server_events
    assert pair.send(Role.SERVER, last) == [last]


# -- v1: what survives the trip --------------------------------------------------------


def _expected_v1_answer(parts: list[str]) -> str:
    # Written from the spec, not from the codec: ASCII transliteration (the
    # anyascii table), no run of 64 spaces, trailing spaces are padding.
    ascii_answer = to_v1_text("".join(parts))
    return re.sub(" {64,}", " " * 63, ascii_answer).rstrip(" ")


@FAST
@given(parts=st.lists(text | st.text(" \n\tab", max_size=150), max_size=8))
def test_v1_answer_round_trip(parts: list[str]) -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    got = pair.send(Role.SERVER, *(AnswerDelta(t, 1) for t in parts), AnswerEnd(1))
    assert got[-1] == AnswerEnd(message_id=1)
    assert all(isinstance(e, AnswerDelta) and e.text and e.message_id == 1 for e in got[:-1])
    answer = "".join(e.text for e in got[:-1])  # type: ignore[attr-defined]
    expected = _expected_v1_answer(parts)
    # The guards may change the case of one letter (<GoodBye>, [WARNING], [ERROR]).
    assert answer.lower() == expected.lower()


@FAST
@given(
    messages=st.lists(text.filter(lambda t: t != "<GoodBye>"), min_size=1, max_size=5),
    user=text,
    password=text,
)
def test_v1_client_frames_round_trip(messages: list[str], user: str, password: str) -> None:
    pair = ConnectionPair(version=1)
    pair.login(user, password)
    for n, message in enumerate(messages, 1):
        assert pair.send(Role.CLIENT, p.ChatMessage(message)) == [p.ChatMessage(message, "", n)]
        pair.send(Role.SERVER, AnswerEnd(n))


@FAST
@given(code=st.sampled_from(list(ErrorCode)), message=ascii_text)
def test_v1_error_round_trip(code: ErrorCode, message: str) -> None:
    pair = ConnectionPair(version=1)
    pair.login()
    pair.send(Role.CLIENT, p.ChatMessage("hi"))
    got = pair.send(Role.SERVER, p.Error(code, message, 1))
    wire = re.sub(" {64,}", " " * 63, f"[ERROR] {code.value}: {message}").rstrip()
    expected_message = wire[len(f"[ERROR] {code.value}: ") :]
    assert isinstance(got[0], p.Error)
    assert (got[0].code, got[0].message_id) == (code, 1)
    assert got[0].message.lower() == expected_message.lower()
    if code in p.FATAL_CODES:
        assert got[1:] == [p.Bye(reason="goodbye")]
    else:
        assert got[1:] == []


# -- any split gives the same events ------------------------------------------------


@st.composite
def sessions(draw: Any, version: int) -> list[tuple[Role, list[Event]]]:
    """A valid session script: who sends which events."""
    script: list[tuple[Role, list[Event]]] = []
    if version == 2:
        script += [(Role.CLIENT, [p.ClientHello()]), (Role.SERVER, [p.ServerHello(model="m")])]
    script += [(Role.CLIENT, [p.Authenticate("alice", "pw")])]
    script += [(Role.SERVER, [p.AuthResult(True, "alice")])]
    for n in range(1, draw(st.integers(0, 4)) + 1):
        script.append((Role.CLIENT, [p.ChatMessage(draw(text), "", n)]))
        answer: list[Event] = [AnswerDelta(t, n) for t in draw(st.lists(text, max_size=4))]
        if version == 2:
            answer = draw(st.lists(st.one_of(notice, ping), max_size=2)) + answer
        answer.append(draw(st.sampled_from([AnswerEnd(n), p.Error(ErrorCode.BUSY, "busy", n)])))
        script.append((Role.SERVER, answer))
    script.append(draw(st.sampled_from([
        (Role.CLIENT, [p.Bye()]),
        (Role.SERVER, [p.Error(ErrorCode.SHUTTING_DOWN, "bye")]),
        (Role.SERVER, [p.Notice(NoticeKind.MODERATION, "no")]),
    ])))  # fmt: skip
    return script


def _play(script: list[tuple[Role, list[Event]]], version: int, cuts: Any) -> list[list[Event]]:
    """Run the script; each receiver gets its bytes cut where ``cuts`` says."""
    pair = ConnectionPair(version=version)
    seen: list[list[Event]] = []
    for role, events in script:
        data = b"".join(pair.conn(role).send(e) for e in events)
        receiver = pair.conn(role.peer)
        got = feed_split(receiver, data, cuts(len(data)))
        # Automatic replies (v1 login) go back whole.
        while reply := receiver.data_to_send():
            got += feed(pair.conn(role), reply)
            receiver_reply = pair.conn(role).data_to_send()
            if receiver_reply:
                got += feed(receiver, receiver_reply)
        seen.append(got)
    for conn in (pair.client, pair.server):
        conn.receive_data(b"")
        seen.append(drain(conn))
    return seen


@FAST
@given(data=st.data(), version=st.sampled_from([1, 2]))
def test_any_split_gives_the_same_events(data: st.DataObject, version: int) -> None:
    script = data.draw(sessions(version))
    whole = _play(script, version, lambda n: [])
    one_by_one = _play(script, version, lambda n: range(n))
    random_cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=20))
    cut = _play(script, version, lambda n: [c % (n + 1) for c in random_cuts])
    assert whole == one_by_one == cut
    assert whole[-1] == [p.ConnectionClosed()] and whole[-2] == [p.ConnectionClosed()]


# -- garbage never raises anything but RemoteProtocolError --------------------------


def _garbage_target(kind: str) -> Connection:
    if kind == "server-new":
        return Connection(Role.SERVER)
    if kind == "client-v1-login":
        conn = Connection(Role.CLIENT, version=1)
        conn.send(p.Authenticate("alice", "pw"))
        return conn
    if kind == "client-v2-hello":
        conn = Connection(Role.CLIENT, version=2)
        conn.send(p.ClientHello())
        return conn
    version = 1 if kind.endswith("v1") else 2
    pair = ConnectionPair(version=version)
    pair.login()
    return pair.server if kind.startswith("server") else pair.client


GARBAGE_TARGETS = [
    "server-new", "client-v1-login", "client-v2-hello",
    "server-chat-v1", "client-chat-v1", "server-chat-v2", "client-chat-v2",
]  # fmt: skip

# Bytes that look like frames often enough to get past the header.
framey = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda head, body: head.ljust(64, b" ") + body,
        st.sampled_from(
            [b"5", b"12", b"0", b"HELLO 20", b"CHAT 30", b"END 9", b"ERROR 40", b"AUTH 2"]
        ),
        st.binary(max_size=60) | st.sampled_from([b"{}", b'{"id":1}', b"<GoodBye>", b"[]"]),
    ),
    st.sampled_from(
        [b" " * 64, b"[ERROR] x".ljust(64), b"<GoodBye>".ljust(64), b" username accepted"]
    ),
)


@FAST
@given(
    kind=st.sampled_from(GARBAGE_TARGETS),
    chunks=st.lists(framey, max_size=6),
    bytewise=st.booleans(),
    eof=st.booleans(),
)
def test_garbage_raises_only_remote_protocol_error(
    kind: str, chunks: list[bytes], bytewise: bool, eof: bool
) -> None:
    conn = _garbage_target(kind)
    try:
        feed(conn, b"".join(chunks), bytewise=bytewise, eof=eof)
    except RemoteProtocolError as exc:
        assert conn.state is p.State.ERROR
        # And it stays broken, and the reply can always be built.
        try:
            conn.next_event()
        except RemoteProtocolError as again:
            assert again.code is exc.code
        else:
            raise AssertionError("next_event() must keep raising after an error")
        assert isinstance(conn.error_reply(exc), bytes)
        assert conn.state is p.State.CLOSED


def _chat_frame(body: bytes) -> bytes:
    return f"CHAT {len(body)}".encode().ljust(64) + body


@FAST
@given(digits=st.integers(1, 6000), negative=st.booleans(), fraction=st.booleans())
def test_a_number_of_any_length_under_an_unknown_key_is_ignored(
        digits: int, negative: bool, fraction: bool) -> None:
    """docs/PROTOCOL.md §3: unknown keys are ignored whatever their valid JSON
    value; CPython's int() refuses literals of more than 4300 digits, which
    must not make a valid body unreadable."""
    number = (b"-" if negative else b"") + b"9" * digits + (b".5" if fraction else b"")
    pair = ConnectionPair()
    pair.login()
    [event] = pair.deliver(Role.SERVER, _chat_frame(b'{"id":7,"x":' + number + b',"text":"t"}'))
    assert event == p.ChatMessage(text="t", message_id=7)


@FAST
@given(value=st.one_of(st.integers(-(10**30), 10**30), st.integers(2**53 - 3, 2**53 + 3)),
       padding=st.integers(0, 5000))
def test_a_known_integer_is_read_exactly_when_in_range_and_refused_naming_its_key_otherwise(
        value: int, padding: int) -> None:
    """§3: ``id`` is an integer in 0..2^53-1; anything else, however long its
    literal (leading zeros aside, which JSON forbids), is a protocol_error
    that names the key."""
    literal = str(value).encode()
    if padding and value > 0:
        literal = b"9" * padding + literal  # a longer literal, so a larger value
        value = int(literal.decode()) if padding < 4000 else 2**53
    pair = ConnectionPair()
    pair.login()
    frame = _chat_frame(b'{"id":' + literal + b',"text":"t"}')
    if 0 <= value <= 2**53 - 1:
        [event] = pair.deliver(Role.SERVER, frame)
        assert isinstance(event, p.ChatMessage) and event.message_id == value
    else:
        try:
            pair.deliver(Role.SERVER, frame)
        except RemoteProtocolError as exc:
            assert exc.code is p.ErrorCode.PROTOCOL_ERROR and "'id'" in str(exc), str(exc)
        else:
            raise AssertionError(f"id {literal[:40]!r} was accepted")
