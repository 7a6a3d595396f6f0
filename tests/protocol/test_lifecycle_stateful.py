"""
The session lifecycle as a Hypothesis state machine (RuleBasedStateMachine):
random sequences of events sent by either side of a v2 client/server codec
pair, checked against invariants rather than against a copy of the state table:

* both ends always agree on the session state;
* a send the codec refuses (LocalProtocolError) changes nothing, and the pair
  stays usable;
* the peer decodes exactly the event that was sent;
* nothing chat-related (a CHAT, a DELTA, an END) crosses before a successful
  login has: the codec-level half of "nothing reaches the model before
  authentication";
* CLOSED is final.
"""

from __future__ import annotations

from chatcore import protocol as p
from chatcore.protocol import LocalProtocolError, Role, State
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .helpers import ConnectionPair, drain

texts = st.text(max_size=20)
#: Names (agent, model, conversation) have no control characters (docs/PROTOCOL.md §4).
#: No lone surrogates either (st.text() leaves them out by itself; an explicit
#: category list must too): they can't travel as UTF-8 (§3).
names = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=20)
ids = st.integers(min_value=0, max_value=5)

CLIENT_EVENTS = st.one_of(
    st.builds(p.ClientHello, agent=names),
    st.builds(p.Authenticate, user=texts, password=texts),
    st.builds(p.ChatMessage, text=texts, conversation=names, message_id=ids),
    st.builds(p.Cancel, message_id=ids),
    st.builds(p.Ping, nonce=texts),
    st.builds(p.Pong, nonce=texts),
    st.builds(p.Bye, reason=texts),
)
SERVER_EVENTS = st.one_of(
    st.builds(p.ServerHello, agent=names, model=names),
    st.builds(p.AuthResult, ok=st.booleans(), user=texts, message=texts),
    st.builds(p.AnswerDelta, text=texts, message_id=ids),
    st.builds(p.AnswerEnd, message_id=ids),
    st.builds(p.Error, code=st.sampled_from(list(p.ErrorCode)), message=texts,
              message_id=st.none() | ids),
    st.builds(p.Notice, kind=st.sampled_from(list(p.NoticeKind)), message=texts,
              message_id=st.none() | ids),
    st.builds(p.Ping, nonce=texts),
    st.builds(p.Pong, nonce=texts),
    st.builds(p.Bye, reason=texts),
)
CHAT_ONLY = (p.ChatMessage, p.AnswerDelta, p.AnswerEnd, p.Cancel)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = ConnectionPair(version=2)
        self.logged_in = False
        self.closed = False

    def _send(self, role: Role, event: p.Event) -> None:
        conn = self.pair.conn(role)
        before = (self.pair.client.state, self.pair.server.state)
        try:
            data = conn.send(event)
        except LocalProtocolError:
            assert (self.pair.client.state, self.pair.server.state) == before
            return
        if isinstance(event, CHAT_ONLY):
            assert self.logged_in, f"{event!r} was accepted before a successful login"
        if self.closed:
            assert isinstance(event, (p.Bye, p.Error)), f"{event!r} sent after CLOSED"
        peer = self.pair.conn(role.peer)
        if not data:
            # Nothing can be said on the wire yet: a server that has not seen
            # the client's first byte does not know its version, and a BYE
            # before the HELLO exchange is just a close. A closing side's
            # adapter closes the socket: the peer sees EOF.
            silent_server = role is Role.SERVER and conn.version is None
            assert silent_server or conn.state is State.CLOSED, f"{event!r} produced no bytes"
            if conn.state is State.CLOSED:
                peer.receive_data(b"")
                assert drain(peer) == [p.ConnectionClosed()]
            return
        received = self.pair.deliver(role.peer, data, bytewise=False)
        if peer.state is not State.CLOSED or received:
            assert received == [event]
        if isinstance(event, p.AuthResult) and event.ok:
            self.logged_in = True

    # Random events rarely line up into a whole login, so one rule does it in
    # one step (from a fresh pair), and the random rules go on from there.
    @precondition(lambda self: self.pair.server.version is None
                  and self.pair.client.state is State.HANDSHAKE)
    @rule(user=texts, ok=st.booleans())
    def handshake_and_login(self, user: str, ok: bool) -> None:
        self._send(Role.CLIENT, p.ClientHello(agent="test"))
        self._send(Role.SERVER, p.ServerHello(model="m"))
        self._send(Role.CLIENT, p.Authenticate(user, "pw"))
        self._send(Role.SERVER, p.AuthResult(ok=ok, user=user if ok else ""))
        assert self.pair.client.state is (State.CHATTING if ok else State.CLOSED)

    @rule(event=CLIENT_EVENTS)
    def client_sends(self, event: p.Event) -> None:
        self._send(Role.CLIENT, event)

    @rule(event=SERVER_EVENTS)
    def server_sends(self, event: p.Event) -> None:
        self._send(Role.SERVER, event)

    @invariant()
    def both_ends_agree_on_the_state(self) -> None:
        assert self.pair.client.state is self.pair.server.state

    @invariant()
    def closed_is_final(self) -> None:
        if self.closed:
            assert self.pair.client.state is State.CLOSED
        self.closed = self.pair.client.state is State.CLOSED

    @invariant()
    def chatting_only_after_login(self) -> None:
        if self.pair.client.state is State.CHATTING:
            assert self.logged_in
            event("reached CHATTING")  # shown by --hypothesis-show-statistics


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_session_lifecycle = Lifecycle.TestCase
