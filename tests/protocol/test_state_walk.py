"""Every (role, state, frame), both versions, through real codecs: the codec
does exactly what the state table of docs/PROTOCOL.md §5 says (tests/protocol/
spec_table.py writes it out), on the sending side (LocalProtocolError for an
illegal frame, as h11 does) and on the receiving side (RemoteProtocolError
unexpected_frame, or dropped when it crosses our close)."""

from __future__ import annotations

import pytest
from chatcore import protocol as p
from chatcore.protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
    encode_v1_frame,
)

from .helpers import ConnectionPair, feed
from .spec_table import SAMPLES, SPEC, STATES, V1_EXPRESSIBLE

_LOGIN_STEPS = {
    2: [(Role.CLIENT, p.ClientHello(agent="test")), (Role.SERVER, p.ServerHello(model="m")),
        (Role.CLIENT, p.Authenticate("alice", "secret")), (Role.SERVER, p.AuthResult(True, "alice"))],
    1: [(Role.CLIENT, p.Authenticate("alice", "secret")), (Role.SERVER, p.AuthResult(True, "alice"))],
}


def pair_in(version: int, state: State, *, closed_by: Role) -> ConnectionPair:
    """A client and a server codec in ``state``, walked there by the protocol
    (CLOSED: from CHATTING by ``closed_by``'s BYE)."""
    pair = ConnectionPair(version)
    order = STATES[version]
    target = len(order) - 1 if state is State.CLOSED else order.index(state)
    for sender, event in _LOGIN_STEPS[version][:target]:
        pair.send(sender, event)
    if state is State.CLOSED:
        pair.send(closed_by, p.Bye("bye"))
    if version == 1 and state is State.AUTHENTICATING:
        # A v1 server knows the version from the first byte of the user name.
        feed(pair.server, b"5")
    assert pair.client.state is pair.server.state is state
    return pair


def _cases(version: int) -> list[tuple[Role, State, str]]:
    return [(role, state, key) for role in Role for state in STATES[version] for key in SAMPLES]


@pytest.mark.parametrize("version", [1, 2])
def test_sending_every_frame_in_every_state_does_what_the_table_says(version: int) -> None:
    wrong: list[tuple[object, ...]] = []
    for role, state, key in _cases(version):
        conn = pair_in(version, state, closed_by=role.peer).conn(role)
        expected = SPEC[role][state].get(key)
        if version == 1 and key not in V1_EXPRESSIBLE[role]:
            expected = None  # v1 can't say it: refused the same way
        if version == 1 and role is Role.SERVER and key == "ERROR" and state in (
                State.AUTHENTICATING, State.VERIFYING):
            # §9: an ERROR during a v1 login is the login refusal, then close.
            expected = State.CLOSED
        try:
            conn.send(SAMPLES[key])
        except LocalProtocolError:
            if expected is not None:
                wrong.append((role.name, state.name, key, "refused", expected.name))
            elif conn.state is not state:
                wrong.append((role.name, state.name, key, "refused but moved", conn.state.name))
            continue
        if expected is None or conn.state is not expected:
            wrong.append((role.name, state.name, key, "sent", conn.state.name))
    assert wrong == []


def _frame_of(sender: Role, key: str) -> bytes:
    """The v2 bytes of a sample, from a real codec in a state where the table
    lets ``sender`` send it (v2 frames do not depend on the state)."""
    for state in STATES[2]:
        if key in SPEC[sender][state]:
            data = pair_in(2, state, closed_by=sender.peer).conn(sender).send(SAMPLES[key])
            if data:  # (a server in HANDSHAKE knows no version yet: it says nothing)
                return data
    raise AssertionError(f"{sender.name} never sends {key}")


def test_receiving_every_v2_frame_in_every_state_does_what_the_table_says() -> None:
    wrong: list[tuple[object, ...]] = []
    for receiver, state, key in _cases(2):
        sender = receiver.peer
        if not any(key in SPEC[sender][s] for s in STATES[2]):
            continue  # the other role's frame: it decodes as that role's (HELLO) or not at all
        data = _frame_of(sender, key)
        conn = pair_in(2, state, closed_by=receiver).conn(receiver)
        expected = SPEC[sender][state].get(key)
        try:
            got = feed(conn, data)
        except RemoteProtocolError as exc:
            if expected is not None or state is State.CLOSED:
                wrong.append((receiver.name, state.name, key, "refused", exc.code.value))
            elif exc.code is not ErrorCode.UNEXPECTED_FRAME:
                wrong.append((receiver.name, state.name, key, "code", exc.code.value))
            continue
        if expected is None:
            # Only in CLOSED: a frame that crossed our close is dropped (§5).
            if state is not State.CLOSED or got != []:
                wrong.append((receiver.name, state.name, key, "accepted", got))
        elif got != [SAMPLES[key]] or conn.state is not expected:
            wrong.append((receiver.name, state.name, key, got, conn.state.name))
    assert wrong == []


@pytest.mark.parametrize("ok", [True, False])
def test_a_v2_server_cannot_send_a_login_result_before_the_clients_auth(ok: bool) -> None:
    pair = pair_in(2, State.AUTHENTICATING, closed_by=Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="AUTH_RESULT in state AUTHENTICATING"):
        pair.server.send(p.AuthResult(ok, "alice"))
    assert pair.server.state is State.AUTHENTICATING
    # The refused send changed nothing: the login goes on as usual.
    assert pair.send(Role.CLIENT, p.Authenticate("alice", "secret")) == [
        p.Authenticate("alice", "secret")]
    assert pair.send(Role.SERVER, p.AuthResult(ok, "alice")) == [p.AuthResult(ok, "alice")]


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize("received", [b"", b"5", encode_v1_frame(b"alice")],
                         ids=["no byte yet", "first byte", "user name only"])
def test_a_v1_server_cannot_send_a_login_result_before_the_password(ok: bool,
                                                                    received: bytes) -> None:
    server = Connection(Role.SERVER)
    assert feed(server, received) == []
    with pytest.raises(LocalProtocolError, match="AUTH_RESULT in state"):
        server.send(p.AuthResult(ok, "alice"))
    # Nothing was said: not " password accepted", not a refusal.
    name_in = received == encode_v1_frame(b"alice")
    assert server.data_to_send() == (p.V1_USERNAME_ACCEPTED if name_in else b"")
    assert server.state is (State.AUTHENTICATING if received else State.HANDSHAKE)
    # The refused send changed nothing: the login goes on as usual.
    rest = encode_v1_frame(b"alice")[len(received):] if not name_in else b""
    assert feed(server, rest + encode_v1_frame(b"secret")) == [p.Authenticate("alice", "secret")]
    assert server.send(p.AuthResult(ok, "alice")) == (
        p.V1_PASSWORD_ACCEPTED if ok else p.V1_INVALID_PASSWORD)


def test_a_v1_login_walks_authenticating_verifying_chatting_on_both_ends() -> None:
    client, server = Connection(Role.CLIENT, version=1), Connection(Role.SERVER)
    user_frame = client.send(p.Authenticate("alice", "secret"))
    assert client.state is State.VERIFYING
    assert feed(server, user_frame) == []
    assert server.state is State.AUTHENTICATING  # half of the AUTH is in
    assert feed(client, server.data_to_send()) == []
    assert feed(server, client.data_to_send()) == [p.Authenticate("alice", "secret")]
    assert server.state is State.VERIFYING
    # The verdict is due now; the server reads nothing meanwhile.
    assert feed(server, encode_v1_frame(b"hello")) == []
    assert feed(client, server.send(p.AuthResult(True, "alice"))) == [
        p.AuthResult(True, "alice", "password accepted")]
    assert client.state is server.state is State.CHATTING
    assert server.next_event() == p.ChatMessage("hello", message_id=1)
    assert server.next_event() is NEED_DATA


def test_a_second_auth_before_the_verdict_is_refused_on_both_sides() -> None:
    pair = pair_in(2, State.VERIFYING, closed_by=Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        pair.client.send(p.Authenticate("alice", "secret"))
    forged = _frame_of(Role.CLIENT, "AUTH")
    with pytest.raises(RemoteProtocolError) as info:
        feed(pair.server, forged)
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME


# -- each side's end (h11's our_state / their_state; _state.py Rule 4) --------------


@pytest.mark.parametrize("version", [1, 2])
def test_a_refusing_verdict_is_the_servers_last_word_in_both_versions(version: int) -> None:
    pair = pair_in(version, State.VERIFYING, closed_by=Role.CLIENT)
    assert pair.server.send(p.AuthResult(False, "", "login failed"))
    # Nothing more goes out: not a BYE, not an ERROR (v2 sent both before).
    assert pair.server.send(p.Bye("goodbye")) == b""
    assert pair.server.send(p.Error(ErrorCode.AUTH_THROTTLED, "later")) == b""
    assert pair.server.error_reply(RemoteProtocolError("late")) == b""
    with pytest.raises(LocalProtocolError, match="after our last word"):
        pair.server.send(p.Notice(p.NoticeKind.INFO, "x"))


@pytest.mark.parametrize("last_word", ["BYE", "ERROR fatal"])
@pytest.mark.parametrize("version", [1, 2])
def test_every_last_word_is_said_once_whatever_follows(version: int, last_word: str) -> None:
    pair = pair_in(version, State.CHATTING, closed_by=Role.CLIENT)
    assert pair.server.send(SAMPLES[last_word])
    for key in ("BYE", "ERROR", "ERROR fatal"):
        assert pair.server.send(SAMPLES[key]) == b"", key
    assert pair.server.error_reply(RemoteProtocolError("late")) == b""
    for key in ("DELTA", "END", "NOTICE", "PING"):
        with pytest.raises(LocalProtocolError, match="after our last word"):
            pair.server.send(SAMPLES[key])


@pytest.mark.parametrize("sender", list(Role))
def test_a_frame_after_the_peers_own_bye_is_refused_not_dropped(sender: Role) -> None:
    # Frames crossing OUR close are dropped; but a peer that said BYE itself and
    # then goes on sending crossed nothing: it breaks the protocol.
    pair = pair_in(2, State.CHATTING, closed_by=Role.CLIENT)
    receiver = pair.conn(sender.peer)
    key = "CHAT" if sender is Role.CLIENT else "DELTA"
    data = pair.conn(sender).send(SAMPLES[key])
    assert feed(receiver, pair.conn(sender).send(p.Bye("bye"))) == [p.Bye("bye")]
    with pytest.raises(RemoteProtocolError, match="after the peer's last word") as info:
        feed(receiver, data)
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME


def test_a_v1_chat_frame_after_the_clients_goodbye_is_refused() -> None:
    pair = pair_in(1, State.CHATTING, closed_by=Role.CLIENT)
    assert feed(pair.server, encode_v1_frame(p.V1_GOODBYE)) == [p.Bye()]
    with pytest.raises(RemoteProtocolError) as info:
        feed(pair.server, encode_v1_frame(b"one more thing"))
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME


@pytest.mark.parametrize("version", [1, 2])
def test_frames_that_cross_our_close_are_still_dropped_and_the_peers_bye_read(
        version: int) -> None:
    pair = pair_in(version, State.CHATTING, closed_by=Role.CLIENT)
    late = pair.client.send(p.ChatMessage("late", message_id=1))
    pair.server.send(p.Bye("shutting down"))
    assert feed(pair.server, late) == []
    # (v1's <GoodBye> carries no reason)
    assert feed(pair.server, pair.client.send(p.Bye("bye"))) == [p.Bye("bye" if version == 2 else "")]


def test_after_error_reply_the_connection_refuses_further_use_clearly() -> None:
    pair = pair_in(2, State.CHATTING, closed_by=Role.CLIENT)
    with pytest.raises(RemoteProtocolError) as info:
        feed(pair.server, b"NOT A FRAME".ljust(64) + b"{}")
    with pytest.raises(LocalProtocolError, match="use error_reply"):
        pair.server.send(p.AnswerEnd(1))
    assert pair.server.error_reply(info.value)
    assert pair.server.state is State.CLOSED
    assert pair.server.error_reply(info.value) == b""  # said once
    assert pair.server.send(p.Bye("bye")) == b""
    with pytest.raises(LocalProtocolError, match="after our last word"):
        pair.server.send(p.AnswerEnd(1))
    with pytest.raises(RemoteProtocolError, match=str(info.value)):
        pair.server.next_event()
