"""
What an independent client sees when it gets the protocol wrong: the server's
ERROR texts name frames as docs/PROTOCOL.md names them (``HELLO``, ``AUTH``,
``CHAT``, ...) and JSON kinds, never a class of ours (``ClientHello``) or a
Python type. The walk sends each frame type out of order in each state a
client can reach, and each frame with a wrongly typed field, to a live server
over raw sockets, and reads every ERROR.
"""

from __future__ import annotations

import re

import pytest
from chatcore import protocol as p

from tests.fixtures.server import PASSWORD, USER

from ._support import Guard, parse_v2, raw, read_until_closed, v2_frame

INTERNAL_NAMES = {c.__name__ for c in vars(p).values() if isinstance(c, type)} | {
    "str", "int", "float", "bool", "dict", "list", "tuple", "NoneType", "bytes"}
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

HELLO = ("HELLO", {"versions": [2], "agent": "independent/1"})
AUTH = ("AUTH", {"user": USER, "password": PASSWORD})
#: Every frame type, with a valid body.
FRAMES = {
    "HELLO": {"versions": [2], "agent": "a"},
    "AUTH": {"user": USER, "password": PASSWORD},
    "AUTH_RESULT": {"ok": True, "user": USER, "message": "m"},
    "CHAT": {"id": 1, "conversation": "c", "text": "t"},
    "DELTA": {"id": 1, "text": "t"},
    "END": {"id": 1, "reason": "stop"},
    "NOTICE": {"kind": "info", "message": "m"},
    "CANCEL": {"id": 1},
}
#: What comes before the frame under test: nothing (HANDSHAKE), the HELLO
#: exchange (AUTHENTICATING), a login (CHATTING).
PREFIXES = {"HANDSHAKE": [], "AUTHENTICATING": [HELLO], "CHATTING": [HELLO, AUTH]}


def errors_after(port: int, frames: list[tuple[str, dict[str, object]]]) -> list[str]:
    """The ERROR messages the server sends for ``frames``, sent one after
    the other, each after the server's reply to the one before."""
    sock = raw(port)
    try:
        for frame_type, body in frames[:-1]:
            sock.sendall(v2_frame(frame_type, body))
            expect = "AUTH_RESULT" if frame_type == "AUTH" else "HELLO"
            data = b""
            while not any(kind == expect for kind, _ in parse_v2(data)):
                chunk = sock.recv(65536)
                assert chunk, f"closed early: {data!r}"
                data += chunk
        sock.sendall(v2_frame(*frames[-1]))
        data = read_until_closed(sock)
    finally:
        sock.close()
    return [body["message"] for kind, body in parse_v2(data) if kind == "ERROR"]


def assert_no_internal_name(text: str) -> None:
    leaked = INTERNAL_NAMES & set(_WORDS.findall(text))
    assert not leaked, f"the server's error text names internal classes {sorted(leaked)}: {text!r}"


@pytest.mark.parametrize("state", list(PREFIXES))
def test_an_out_of_order_frame_is_named_as_the_protocol_names_it(guard: Guard, state: str) -> None:
    port = guard.server.port
    refused = 0
    for frame_type, body in FRAMES.items():
        if (state, frame_type) in {("HANDSHAKE", "HELLO"), ("AUTHENTICATING", "AUTH"),
                                   ("CHATTING", "CHAT"), ("CHATTING", "CANCEL")}:
            continue  # legal there
        messages = errors_after(port, [*PREFIXES[state], (frame_type, body)])
        assert messages, f"{frame_type} in {state}: closed without an ERROR"
        for text in messages:
            assert_no_internal_name(text)
        assert any(f"unexpected {frame_type}" in t for t in messages), (frame_type, state, messages)
        refused += 1
    assert refused >= 5
    guard.check()


@pytest.mark.parametrize("frame_type", ["HELLO", "AUTH", "CHAT", "CANCEL", "PING"])
def test_a_wrongly_typed_field_is_described_without_internal_names(guard: Guard,
                                                                   frame_type: str) -> None:
    body = {**FRAMES.get(frame_type, {"nonce": "n"})}
    prefix = {"HELLO": [], "AUTH": [HELLO]}.get(frame_type, [HELLO, AUTH])
    for key in body:
        for wrong in ({"k": 1}, [1], True, 1.5, "x"):  # (null means absent: valid where optional)
            if type(wrong) is type(body[key]):
                continue
            messages = errors_after(guard.server.port, [*prefix, (frame_type, {**body, key: wrong})])
            for text in messages:
                assert_no_internal_name(text)
    guard.check()
