"""
chatcore.protocol._state
~~~~~~~~~~~~~~~~~~~~~~~~

Roles, connection states and the transition table of the chat protocol.

#####################################################################
# Rules of this file (after h11/_state.py):
#
# Rule 1: every state change of a session is written down here, as data.
#   The session has ONE state shared by both ends (a login/chat lifecycle
#   is not two independent half-duplex streams as in HTTP).
#   ``TRANSITIONS[sender][state][key] -> next_state`` where ``sender`` is the
#   role that SENDS the event (our role for ``send()``, the peer's role for
#   ``next_event()``) and ``key`` is ``transition_key(event)``.
#   An event whose key is missing for the current state is illegal:
#   LocalProtocolError when we send it, RemoteProtocolError(UNEXPECTED_FRAME)
#   when the peer does (except in CLOSED, see Rule 4).
#
# Rule 2: this file knows nothing about bytes or versions. The two
#   exceptions to Rule 1 are stated here so they are not hidden elsewhere:
#   - ENTRY_STATE: v1 has no HELLO exchange, so a v1 session starts in
#     AUTHENTICATING (a v1 client at construction, a v1 server once the first
#     byte of the peer is a digit); a v2 session starts in HANDSHAKE.
#   From there on both versions walk the same rows: the login is
#   AUTHENTICATING (credentials due) -> VERIFYING (credentials in, the
#   server's verdict due) -> CHATTING or CLOSED. v1 carries one Authenticate
#   in two client frames (user name, then password, with the server's bare
#   " username accepted" between them); that is framing of one event, like a
#   header block split over reads, not a state: the codec holds the user name
#   until the password frame completes the event.
#   - ERROR is entered when the peer breaks the protocol (RemoteProtocolError),
#     CLOSED when the adapter then calls ``error_reply()``.
#
# Rule 3: a few events change the state depending on a field, so they get a
#   pseudo-event key: AuthResult(ok=True) -> AuthAccepted, AuthResult(ok=False)
#   -> AuthRejected, an Error with a fatal code -> FatalError.
#
# Rule 4: CLOSED is sticky, and each side's end is tracked (h11's our_state
#   and their_state): a side has ended once it sent its LAST_WORDS (Bye, a
#   fatal Error, the server's refusing AuthResult; a peer also by its EOF).
#   In CLOSED only Bye / Error are still legal, for a side that has not ended
#   (our BYE answering theirs). After our own last word, sending Bye / Error
#   again is a no-op (b"", like h11's repeated ConnectionClosed), anything
#   else is refused. Frames the peer sent before it saw our close are parsed
#   but dropped by the connection, except Bye / Error / ConnectionClosed; a
#   frame the peer sends after its OWN last word crossed nothing: it is
#   refused (RemoteProtocolError) unless it is another Bye / Error.
#
# Rule 5: this table is the ONLY place that decides what is legal. The codecs
#   (_v1.py, _v2.py) turn bytes into events and back; they refuse what a
#   version cannot express or what breaks a version's own framing (a HELLO
#   that offers no common version), never an event that is merely out of
#   place. For example a v2 client's first frame must be HELLO: that is the
#   HANDSHAKE row below, where the client may send ClientHello and nothing else.
#####################################################################
"""

from __future__ import annotations

import enum

from ._events import (
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    ConnectionClosed,
    Error,
    Event,
    Notice,
    Ping,
    Pong,
    ServerHello,
)

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = ["Role", "State"]


class Role(enum.Enum):
    """Which end of the connection a :class:`Connection` plays."""

    #: The end that connects and logs in.
    CLIENT = "client"
    #: The end that accepts and answers.
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class State(enum.Enum):
    """The lifecycle of one session."""

    #: v2 only: the client's HELLO is due (a server also sits here until the
    #: first byte tells it the peer's version).
    HANDSHAKE = "handshake"
    #: v2 only: the client's HELLO arrived; the server's HELLO (or a refusal)
    #: is due. The client waits: it must not pipeline AUTH behind its HELLO.
    NEGOTIATING = "negotiating"
    #: The client's credentials (AUTH) are due; the server can't give a
    #: verdict yet.
    AUTHENTICATING = "authenticating"
    #: The client's AUTH arrived; the server's verdict (AUTH_RESULT, or a
    #: refusal) is due. The client waits: one AUTH, one verdict.
    VERIFYING = "verifying"
    #: Logged in: messages and answers flow.
    CHATTING = "chatting"
    #: The session is over (orderly, by a verdict, a fatal error or EOF).
    CLOSED = "closed"
    #: The peer broke the protocol; send ``error_reply()`` and close.
    ERROR = "error"


class AuthAccepted:
    """Pseudo-event key: ``AuthResult(ok=True)``."""


class AuthRejected:
    """Pseudo-event key: ``AuthResult(ok=False)``."""


class FatalError:
    """Pseudo-event key: an :class:`Error` whose code is in ``FATAL_CODES``."""


TransitionKey = type


def transition_key(event: Event) -> TransitionKey:
    """The key of ``event`` in :data:`TRANSITIONS` (Rule 3)."""
    if isinstance(event, AuthResult):
        return AuthAccepted if event.ok else AuthRejected
    if isinstance(event, Error) and event.fatal:
        return FatalError
    return type(event)


HANDSHAKE = State.HANDSHAKE
NEGOTIATING = State.NEGOTIATING
AUTHENTICATING = State.AUTHENTICATING
VERIFYING = State.VERIFYING
CHATTING = State.CHATTING
CLOSED = State.CLOSED


def _open(state: State) -> dict[TransitionKey, State]:
    """What either side may send in any open state: a non-fatal Error keeps the
    state, a fatal one, a Bye or the peer's EOF end the session."""
    return {Error: state, FatalError: CLOSED, Bye: CLOSED, ConnectionClosed: CLOSED}


_CLOSED: dict[TransitionKey, State] = {
    Error: CLOSED,
    FatalError: CLOSED,
    Bye: CLOSED,
    ConnectionClosed: CLOSED,
}

TRANSITIONS: dict[Role, dict[State, dict[TransitionKey, State]]] = {
    # Events the CLIENT sends.
    Role.CLIENT: {
        # The first frame of a v2 client is HELLO, nothing else (not even BYE:
        # a client that wants to leave before its HELLO just closes).
        HANDSHAKE: {ClientHello: NEGOTIATING, ConnectionClosed: CLOSED},
        NEGOTIATING: _open(NEGOTIATING),
        AUTHENTICATING: {
            **_open(AUTHENTICATING),
            Authenticate: VERIFYING,
            Ping: AUTHENTICATING,
            Pong: AUTHENTICATING,
        },
        # One AUTH per verdict: a second AUTH before the AUTH_RESULT is
        # refused (docs/PROTOCOL.md §5, no pipelining across a state change).
        VERIFYING: {**_open(VERIFYING), Ping: VERIFYING, Pong: VERIFYING},
        CHATTING: {
            **_open(CHATTING),
            ChatMessage: CHATTING,
            Cancel: CHATTING,
            Ping: CHATTING,
            Pong: CHATTING,
        },
        CLOSED: _CLOSED,
    },
    # Events the SERVER sends.
    Role.SERVER: {
        # Before the client's HELLO the server can only refuse (connection
        # limit, shutdown) or close; its own HELLO answers the client's.
        HANDSHAKE: _open(HANDSHAKE),
        NEGOTIATING: {**_open(NEGOTIATING), ServerHello: AUTHENTICATING, Notice: NEGOTIATING},
        # No verdict before the client's AUTH: the server may refuse (a
        # fatal ERROR such as auth_timeout) or close, but not log anyone in.
        AUTHENTICATING: {
            **_open(AUTHENTICATING),
            Notice: AUTHENTICATING,
            Ping: AUTHENTICATING,
            Pong: AUTHENTICATING,
        },
        VERIFYING: {
            **_open(VERIFYING),
            AuthAccepted: CHATTING,
            AuthRejected: CLOSED,
            Notice: VERIFYING,
            Ping: VERIFYING,
            Pong: VERIFYING,
        },
        CHATTING: {
            **_open(CHATTING),
            AnswerDelta: CHATTING,
            AnswerEnd: CHATTING,
            Notice: CHATTING,
            Ping: CHATTING,
            Pong: CHATTING,
        },
        CLOSED: _CLOSED,
    },
}

#: Rule 4: the keys after which their sender has said its last word.
LAST_WORDS: frozenset[TransitionKey] = frozenset({Bye, FatalError, AuthRejected, ConnectionClosed})

#: Rule 2: where a session of each protocol version starts.
ENTRY_STATE: dict[int, State] = {1: AUTHENTICATING, 2: HANDSHAKE}


def next_state(sender: Role, state: State, event: Event) -> State | None:
    """The state after ``sender`` sends ``event`` in ``state``; None if illegal."""
    return TRANSITIONS[sender].get(state, {}).get(transition_key(event))
