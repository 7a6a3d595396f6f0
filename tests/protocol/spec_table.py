"""
The state table of docs/PROTOCOL.md §5, written out here as the specification
says it, independently of ``chatcore/protocol/_state.py``: the tests compare
the codec's table (and the codec's behaviour, both versions) against it.

One sample event per row key. ``SPEC[sender][state][key]`` is the state after
``sender`` sends that frame in ``state``; a key that is missing is illegal.
"""

from __future__ import annotations

from chatcore import protocol as p
from chatcore.protocol import ErrorCode, NoticeKind, Role, State

HANDSHAKE = State.HANDSHAKE
NEGOTIATING = State.NEGOTIATING
AUTHENTICATING = State.AUTHENTICATING
VERIFYING = State.VERIFYING
CHATTING = State.CHATTING
CLOSED = State.CLOSED

#: A sample of every frame a peer can send, by the name the spec gives it.
SAMPLES: dict[str, p.Event] = {
    "HELLO (client)": p.ClientHello(agent="test"),
    "HELLO (server)": p.ServerHello(model="m"),
    "AUTH": p.Authenticate("alice", "secret"),
    "AUTH_RESULT ok": p.AuthResult(True, "alice", "welcome"),
    "AUTH_RESULT not ok": p.AuthResult(False, "", "login failed"),
    "CHAT": p.ChatMessage("hi", message_id=1),
    "CANCEL": p.Cancel(message_id=1),
    "DELTA": p.AnswerDelta("x", message_id=1),
    "END": p.AnswerEnd(message_id=1),
    "NOTICE": p.Notice(NoticeKind.INFO, "note"),
    "PING": p.Ping("n1"),
    "PONG": p.Pong("n1"),
    "ERROR": p.Error(ErrorCode.BUSY, "busy", message_id=1),
    "ERROR fatal": p.Error(ErrorCode.PROTOCOL_ERROR, "bad"),
    "BYE": p.Bye("bye"),
}


def _open(state: State) -> dict[str, State]:
    """§5: in every state but CLOSED (and the client's HANDSHAKE) both sides
    may send ERROR (a non-fatal one keeps the state) and BYE."""
    return {"ERROR": state, "ERROR fatal": CLOSED, "BYE": CLOSED}


_LAST_WORD = {"ERROR": CLOSED, "ERROR fatal": CLOSED, "BYE": CLOSED}

SPEC: dict[Role, dict[State, dict[str, State]]] = {
    Role.CLIENT: {
        HANDSHAKE: {"HELLO (client)": NEGOTIATING},
        NEGOTIATING: _open(NEGOTIATING),
        AUTHENTICATING: {**_open(AUTHENTICATING), "AUTH": VERIFYING,
                         "PING": AUTHENTICATING, "PONG": AUTHENTICATING},
        VERIFYING: {**_open(VERIFYING), "PING": VERIFYING, "PONG": VERIFYING},
        CHATTING: {**_open(CHATTING), "CHAT": CHATTING, "CANCEL": CHATTING,
                   "PING": CHATTING, "PONG": CHATTING},
        CLOSED: dict(_LAST_WORD),
    },
    Role.SERVER: {
        HANDSHAKE: _open(HANDSHAKE),
        NEGOTIATING: {**_open(NEGOTIATING), "HELLO (server)": AUTHENTICATING,
                      "NOTICE": NEGOTIATING},
        AUTHENTICATING: {**_open(AUTHENTICATING), "NOTICE": AUTHENTICATING,
                         "PING": AUTHENTICATING, "PONG": AUTHENTICATING},
        VERIFYING: {**_open(VERIFYING), "AUTH_RESULT ok": CHATTING,
                    "AUTH_RESULT not ok": CLOSED, "NOTICE": VERIFYING,
                    "PING": VERIFYING, "PONG": VERIFYING},
        CHATTING: {**_open(CHATTING), "DELTA": CHATTING, "END": CHATTING,
                   "NOTICE": CHATTING, "PING": CHATTING, "PONG": CHATTING},
        CLOSED: dict(_LAST_WORD),
    },
}

#: The states a session of each version passes through (v1 has no HELLO).
STATES = {
    1: (AUTHENTICATING, VERIFYING, CHATTING, CLOSED),
    2: (HANDSHAKE, NEGOTIATING, AUTHENTICATING, VERIFYING, CHATTING, CLOSED),
}

#: What v1 can say at all (docs/PROTOCOL.md §9): the rest raises
#: LocalProtocolError even where the table allows it.
V1_EXPRESSIBLE = {
    Role.CLIENT: {"AUTH", "CHAT", "PING", "ERROR", "ERROR fatal", "BYE"},
    Role.SERVER: {"AUTH_RESULT ok", "AUTH_RESULT not ok", "DELTA", "END", "NOTICE", "PING",
                  "ERROR", "ERROR fatal", "BYE"},
}
