"""
Error texts name what a peer can see: frame TYPEs as docs/PROTOCOL.md names
them (``HELLO``, ``CHAT``, ...), JSON kinds, states. Never a class of ours
(``ClientHello``) or a Python type (``str``, ``NoneType``): a client written
from the protocol document alone must be able to read them.

The walk: every v2 frame type a peer can send, in every state of both roles,
with a valid body and with each of its keys given every JSON kind; every event
sent locally in every state, over v2 and both v1 codecs. Every error text that
comes out is checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from chatcore import protocol as p
from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    LocalProtocolError,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    ProtocolError,
    Role,
    ServerHello,
    State,
    frame_name,
)

from .helpers import EVENT_TYPES

#: Our class names and the Python types a value may have: none may show up.
INTERNAL_NAMES = (
    set(EVENT_TYPES) | {c.__name__ for c in vars(p).values() if isinstance(c, type)}
    | {"str", "int", "float", "bool", "dict", "list", "tuple", "NoneType", "bytes"}
)
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: A valid body of every v2 frame type (docs/PROTOCOL.md §4).
BODIES: dict[str, dict[str, object]] = {
    "HELLO": {"versions": [2], "agent": "a", "version": 2, "model": "m", "limits": {}},
    "AUTH": {"user": "u", "password": "p"},
    "AUTH_RESULT": {"ok": True, "user": "u", "message": "m"},
    "CHAT": {"id": 1, "conversation": "c", "text": "t"},
    "DELTA": {"id": 1, "text": "t"},
    "END": {"id": 1, "reason": "stop"},
    "ERROR": {"code": "busy", "message": "m", "id": 1},
    "NOTICE": {"kind": "queue", "message": "m"},
    "CANCEL": {"id": 1},
    "PING": {"nonce": "n"},
    "PONG": {"nonce": "n"},
    "BYE": {"reason": "r"},
}
JSON_KINDS: tuple[object, ...] = ("s", 7, -1, 1.5, True, None, [1], {"k": 1})

EVENTS: list[Event] = [
    ClientHello(), ServerHello(model="m"), Authenticate("u", "p"),
    AuthResult(True, "u", "ok"), ChatMessage("t", "c", 1), AnswerDelta("t", 1),
    AnswerEnd(1), Error(ErrorCode.BUSY, "m", 1), Notice(NoticeKind.QUEUE, "m"),
    Cancel(1), Ping("n"), Pong("n"), Bye("r"),
]


def assert_no_internal_name(text: str) -> None:
    leaked = INTERNAL_NAMES & set(_WORDS.findall(text))
    assert not leaked, f"error text names internal classes {sorted(leaked)}: {text!r}"


def frame(frame_type: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    return f"{frame_type} {len(data)}".encode().ljust(64) + data


def v2_in_state(role: Role, state: State) -> Connection:
    """A v2 codec of ``role`` in ``state`` (as the peer's frames and its own
    replies would bring it there)."""
    conn = Connection(role)
    if role is Role.SERVER:
        steps: list[tuple[str, object]] = [
            ("recv", frame("HELLO", {"versions": [2], "agent": "a"})),
            ("send", ServerHello(model="m")),
            ("recv", frame("AUTH", {"user": "u", "password": "p"})),
            ("send", AuthResult(True, "u", "ok")),
        ]
        order = [State.HANDSHAKE, State.NEGOTIATING, State.AUTHENTICATING, State.AUTHENTICATING,
                 State.CHATTING]
    else:
        steps = [
            ("send", ClientHello()),
            ("recv", frame("HELLO", {"version": 2, "agent": "s", "model": "m", "limits": {}})),
            ("send", Authenticate("u", "p")),
            ("recv", frame("AUTH_RESULT", {"ok": True, "user": "u", "message": "ok"})),
        ]
        order = [State.HANDSHAKE, State.NEGOTIATING, State.AUTHENTICATING, State.AUTHENTICATING,
                 State.CHATTING]
    if state is State.CLOSED:
        for kind, what in steps:
            _step(conn, kind, what)
        conn.send(Bye("done"))
        assert conn.state is State.CLOSED
        return conn
    for (kind, what), at in zip(steps, order, strict=False):
        if conn.state is state and at is state:
            return conn
        _step(conn, kind, what)
    assert conn.state is state, (conn.state, state)
    return conn


def _step(conn: Connection, kind: str, what: object) -> None:
    if kind == "send":
        assert isinstance(what, Event)
        conn.send(what)
    else:
        assert isinstance(what, bytes)
        conn.receive_data(what)
        assert isinstance(conn.next_event(), Event)


def remote_errors(role: Role, state: State) -> Iterator[tuple[str, str]]:
    """(what was sent, the error text) for every frame the peer may send."""
    for frame_type, body in BODIES.items():
        bodies = [body] + [{**body, key: kind} for key in body for kind in JSON_KINDS]
        for b in bodies:
            conn = v2_in_state(role, state)
            conn.receive_data(frame(frame_type, b))
            try:
                conn.next_event()
            except ProtocolError as exc:
                yield f"{frame_type} {b}", str(exc)


STATES = [State.HANDSHAKE, State.NEGOTIATING, State.AUTHENTICATING, State.CHATTING, State.CLOSED]


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.name)
@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_errors_about_received_frames_name_no_internal_class(role: Role, state: State) -> None:
    seen = list(remote_errors(role, state))
    assert seen, "the walk produced no error at all"
    for _sent, text in seen:
        assert_no_internal_name(text)


@pytest.mark.parametrize("state", [State.NEGOTIATING, State.AUTHENTICATING, State.CHATTING])
def test_an_unexpected_frame_is_named_by_its_frame_type(state: State) -> None:
    named = 0
    for sent, text in remote_errors(Role.SERVER, state):
        if text.startswith("unexpected "):
            frame_type = sent.split(" ", 1)[0]
            assert text.startswith(f"unexpected {frame_type} in state {state.name}"), (sent, text)
            named += 1
    assert named, "no frame was unexpected in this state"


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.name)
@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_errors_about_sending_name_no_internal_class(role: Role, state: State) -> None:
    refused = 0
    for event in EVENTS:
        conn = v2_in_state(role, state)
        try:
            conn.send(event)
        except LocalProtocolError as exc:
            refused += 1
            assert_no_internal_name(str(exc))
    assert refused, "nothing was refused: the walk did not reach the error paths"


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.name)
def test_v1_errors_about_sending_name_no_internal_class(role: Role) -> None:
    refused = 0
    for event in EVENTS:
        conn = Connection(role, version=1)
        try:
            conn.send(event)
        except LocalProtocolError as exc:
            refused += 1
            assert_no_internal_name(str(exc))
    assert refused


@pytest.mark.parametrize("value", (*JSON_KINDS[1:], b"x", object()), ids=repr)
def test_a_wrongly_typed_field_is_described_in_json_terms(value: object) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Ping(value)  # type: ignore[arg-type]
    assert_no_internal_name(str(info.value))
    with pytest.raises(LocalProtocolError) as info:
        Cancel("7")  # type: ignore[arg-type]
    assert_no_internal_name(str(info.value))


def test_every_event_has_its_frame_type_name() -> None:
    assert {frame_name(e) for e in EVENTS} == set(BODIES)
    assert frame_name(ConnectionClosed()) == "EOF"
    assert frame_name("HELLO") == "a value that is not a frame"
