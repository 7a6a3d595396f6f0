"""The Connection contract (docs/ARCHITECTURE.md, "The codec")."""

from __future__ import annotations

import ast
from pathlib import Path

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
from chatcore.protocol._state import TRANSITIONS, next_state

from .helpers import ConnectionPair, feed

PACKAGE = Path(p.__file__).parent


class TestPublicAPI:
    def test_all_names_exist(self) -> None:
        for name in p.__all__:
            assert hasattr(p, name), name

    def test_constants(self) -> None:
        assert p.HEADER_SIZE == 64
        assert p.DEFAULT_MAX_FRAME_SIZE == 65536
        assert p.DEFAULT_MAX_UNAUTH_FRAME_SIZE == 4096
        assert p.V1_USERNAME_ACCEPTED == b" username accepted"
        assert p.V1_INVALID_USERNAME == b"invalid username : closing connection"
        assert p.V1_GOODBYE == b"<GoodBye>"
        assert p.V1_DISCONNECTED == b"[DISCONNECTED]disconnected from server"
        assert p.V1_TERMINATOR == b" " * 64
        assert encode_v1_frame(b"alice") == b"5" + b" " * 63 + b"alice"

    def test_no_io_imports_in_the_codec(self) -> None:
        forbidden = {"socket", "asyncio", "time", "logging", "select", "threading"}
        for path in PACKAGE.glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module.split(".")[0]]
                assert not forbidden & set(names), f"{path.name} imports {names}"

    def test_need_data_is_a_sentinel(self) -> None:
        assert repr(NEED_DATA) == "NEED_DATA"
        assert Connection(Role.SERVER).next_event() is NEED_DATA


class TestStateTable:
    def test_every_state_but_error_has_rows_for_both_senders(self) -> None:
        for sender in Role:
            assert set(TRANSITIONS[sender]) == set(State) - {State.ERROR}

    def test_bye_and_fatal_errors_close_from_any_state(self) -> None:
        for sender in Role:
            for state in set(State) - {State.ERROR}:
                if sender is Role.CLIENT and state is State.HANDSHAKE:
                    continue  # a v2 client's first frame is HELLO, see below
                assert next_state(sender, state, p.Bye()) is State.CLOSED
                fatal = p.Error(ErrorCode.PROTOCOL_ERROR)
                assert next_state(sender, state, fatal) is State.CLOSED

    def test_the_table_alone_says_a_v2_clients_first_frame_is_hello(self) -> None:
        # One place decides what is legal: before its HELLO a client may send
        # nothing else, not even BYE or ERROR (it just closes the socket).
        for event in (p.Bye(), p.Error(ErrorCode.PROTOCOL_ERROR), p.Error(ErrorCode.BUSY),
                      p.Authenticate("a", "b"), p.Ping()):
            assert next_state(Role.CLIENT, State.HANDSHAKE, event) is None
            with pytest.raises(LocalProtocolError):
                Connection(Role.CLIENT, version=2).send(event)
        assert next_state(Role.CLIENT, State.HANDSHAKE, p.ClientHello()) is State.NEGOTIATING
        server = Connection(Role.SERVER)
        with pytest.raises(RemoteProtocolError) as info:
            feed(server, b"BYE 2".ljust(64) + b"{}")
        assert info.value.code is ErrorCode.UNEXPECTED_FRAME

    def test_the_server_hello_comes_only_after_the_clients(self) -> None:
        assert next_state(Role.SERVER, State.HANDSHAKE, p.ServerHello()) is None
        assert next_state(Role.SERVER, State.NEGOTIATING, p.ServerHello()) is State.AUTHENTICATING
        # A client must wait for the server's HELLO before it logs in.
        assert next_state(Role.CLIENT, State.NEGOTIATING, p.Authenticate("a", "b")) is None

    def test_only_the_server_sends_answers(self) -> None:
        assert next_state(Role.CLIENT, State.CHATTING, p.AnswerDelta("x")) is None
        assert next_state(Role.SERVER, State.CHATTING, p.ChatMessage("x")) is None


class TestVersionDetection:
    def test_digit_means_v1(self) -> None:
        conn = Connection(Role.SERVER)
        assert conn.version is None and conn.state is State.HANDSHAKE
        conn.receive_data(b"5")
        assert conn.next_event() is NEED_DATA
        assert conn.version == 1 and conn.state is State.AUTHENTICATING

    def test_uppercase_means_v2(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(b"H")
        assert conn.next_event() is NEED_DATA
        assert conn.version == 2 and conn.state is State.HANDSHAKE

    @pytest.mark.parametrize("first", [b"h", b"-", b" ", b"\x00", b"\xff", b"{", b"_"])
    def test_anything_else_is_refused(self, first: bytes) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(first)
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert info.value.code is ErrorCode.PROTOCOL_ERROR
        assert conn.error_reply(info.value) == b""  # no language to reply in
        assert conn.state is State.CLOSED

    def test_silent_peer_closes(self) -> None:
        conn = Connection(Role.SERVER)
        assert feed(conn, b"", eof=True) == [p.ConnectionClosed()]
        # Before the version is known, only closing is possible.
        assert conn.send(p.Error(ErrorCode.AUTH_TIMEOUT)) == b""
        with pytest.raises(LocalProtocolError):
            Connection(Role.SERVER).send(p.Notice(p.NoticeKind.INFO))

    def test_client_defaults_to_v2(self) -> None:
        assert Connection(Role.CLIENT).version == 2
        assert Connection(Role.CLIENT, version=1).state is State.AUTHENTICATING

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError):
            Connection(Role.CLIENT, version=3)
        with pytest.raises(TypeError):
            Connection("server")  # type: ignore[arg-type]


class TestErrorsAreSticky:
    def test_next_event_keeps_raising(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(b"?")
        for _ in range(3):
            with pytest.raises(RemoteProtocolError):
                conn.next_event()
        assert conn.state is State.ERROR
        with pytest.raises(LocalProtocolError):
            conn.send(p.Bye())

    def test_data_after_eof_is_a_bug(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(b"")
        conn.receive_data(b"")  # repeating EOF is harmless
        with pytest.raises(RuntimeError):
            conn.receive_data(b"x")

    def test_invalid_event_value_from_the_wire_is_remote(self) -> None:
        # A NOTICE position of 0 is refused by the event itself
        # (LocalProtocolError inside); it must surface as the peer's fault.
        pair = ConnectionPair(version=2)
        pair.login()
        body = b'{"kind":"queue","position":0}'
        with pytest.raises(RemoteProtocolError):
            feed(pair.client, (b"NOTICE %d" % len(body)).ljust(64) + body)


class TestSendRules:
    def test_illegal_event_for_state(self) -> None:
        pair = ConnectionPair(version=2)
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.ChatMessage("too early"))
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.Authenticate("a", "b"))  # before HELLO
        pair.login()
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.AnswerDelta("servers only"))
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.ClientHello())
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.ConnectionClosed())

    def test_server_hello_needs_the_client_hello(self) -> None:
        conn = Connection(Role.SERVER, version=2)
        with pytest.raises(LocalProtocolError):
            conn.send(p.ServerHello())

    @pytest.mark.parametrize("event", [p.ServerHello(), p.Pong(), p.Cancel(1)])
    def test_v1_server_cannot_express(self, event: p.Event) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        with pytest.raises(LocalProtocolError):
            pair.server.send(event)

    def test_v1_drops_informational_events(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        assert pair.server.send(p.Ping("x")) == b""
        assert pair.server.send(p.Notice(p.NoticeKind.QUEUE, "wait", 1, 1)) == b""
        assert pair.client.send(p.Ping("x")) == b""
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.Cancel(1))

    def test_v1_goodbye_text_is_not_a_chat_message(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        with pytest.raises(LocalProtocolError):
            pair.client.send(p.ChatMessage("<GoodBye>"))

    def test_v1_client_numbers_messages(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        pair.send(Role.CLIENT, p.ChatMessage("a"))
        assert pair.send(Role.SERVER, p.AnswerEnd(1)) == [p.AnswerEnd(1)]
        pair.send(Role.CLIENT, p.ChatMessage("b", message_id=7))
        assert pair.send(Role.SERVER, p.AnswerDelta("x"), p.AnswerEnd()) == [
            p.AnswerDelta("x", 7),
            p.AnswerEnd(7),
        ]

    def test_last_word_is_said_once(self) -> None:
        pair = ConnectionPair(version=2)
        pair.login()
        assert pair.server.send(p.Bye("shutdown")) != b""
        assert pair.server.send(p.Bye("again")) == b""
        assert pair.server.send(p.Error(ErrorCode.SHUTTING_DOWN)) == b""


class TestSessionTokens:
    """Login with a session token instead of a password (docs/PROTOCOL.md §4)."""

    def test_authenticate_takes_exactly_one_secret(self) -> None:
        with pytest.raises(LocalProtocolError):
            p.Authenticate("alice")
        with pytest.raises(LocalProtocolError):
            p.Authenticate("alice", password="pw", token="tok")
        with pytest.raises(LocalProtocolError):
            p.Authenticate("alice", token="")
        assert p.Authenticate("alice", password="").password == ""

    def test_a_failed_login_carries_no_token(self) -> None:
        with pytest.raises(LocalProtocolError):
            p.AuthResult(False, token="tok")
        with pytest.raises(LocalProtocolError):
            p.AuthResult(True, "alice", token="")

    def test_secrets_never_show_in_repr(self) -> None:
        for event in (p.Authenticate("alice", password="hunter2"),
                      p.Authenticate("alice", token="tok-secret-42"),
                      p.AuthResult(True, "alice", "welcome", token="tok-secret-42")):
            text = repr(event) + str(event)
            assert "hunter2" not in text and "tok-secret-42" not in text
            assert "<hidden>" in text

    def test_token_login_round_trip_v2(self) -> None:
        pair = ConnectionPair(version=2)
        pair.send(Role.CLIENT, p.ClientHello())
        pair.send(Role.SERVER, p.ServerHello())
        auth = p.Authenticate("alice", token="tok")
        assert pair.send(Role.CLIENT, auth) == [auth]
        result = p.AuthResult(True, "alice", "welcome", token="tok2")
        assert pair.send(Role.SERVER, result) == [result]
        assert pair.client.state is pair.server.state is State.CHATTING

    def test_v1_cannot_log_in_with_a_token(self) -> None:
        conn = Connection(Role.CLIENT, version=1)
        with pytest.raises(LocalProtocolError):
            conn.send(p.Authenticate("alice", token="tok"))

    def test_v1_server_cannot_issue_a_token(self) -> None:
        pair = ConnectionPair(version=1)
        pair.send(Role.CLIENT, p.Authenticate("alice", "pw"))
        with pytest.raises(LocalProtocolError):
            pair.server.send(p.AuthResult(True, "alice", token="tok"))


class TestAutomaticReplies:
    def test_v1_login_dance(self) -> None:
        server = Connection(Role.SERVER)
        client = Connection(Role.CLIENT, version=1)
        assert client.send(p.Authenticate("bob", "pw")) == encode_v1_frame(b"bob")
        server.receive_data(encode_v1_frame(b"bob"))
        assert server.next_event() is NEED_DATA
        assert server.data_to_send() == p.V1_USERNAME_ACCEPTED
        assert server.data_to_send() == b""  # handed out once
        client.receive_data(p.V1_USERNAME_ACCEPTED[:5])
        assert client.next_event() is NEED_DATA and client.data_to_send() == b""
        client.receive_data(p.V1_USERNAME_ACCEPTED[5:])
        assert client.next_event() is NEED_DATA
        assert client.data_to_send() == encode_v1_frame(b"pw")

    def test_nothing_automatic_in_v2(self) -> None:
        pair = ConnectionPair(version=2)
        pair.login()
        pair.send(Role.SERVER, p.Ping("n"))
        assert pair.client.data_to_send() == b""


class TestErrorReply:
    def test_v1_during_username_and_password(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(b"x")
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.error_reply(RemoteProtocolError("x")) == b""  # version unknown

        conn = Connection(Role.SERVER)
        conn.receive_data(b"5x")
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        assert conn.error_reply(info.value) == p.V1_INVALID_USERNAME
        assert conn.state is State.CLOSED

    def test_v1_while_chatting_ends_with_goodbye(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        pair.server.receive_data(b"5x")
        with pytest.raises(RemoteProtocolError) as info:
            pair.server.next_event()
        reply = pair.server.error_reply(info.value)
        assert reply.startswith(b"[ERROR] protocol_error: invalid frame header")
        assert reply.endswith(b"<GoodBye>".ljust(64))
        got = feed(pair.client, reply)
        assert got == [
            p.Error(ErrorCode.PROTOCOL_ERROR, "invalid frame header", 0),
            p.Bye("goodbye"),
        ]

    def test_v2_reply_is_an_error_frame(self) -> None:
        pair = ConnectionPair(version=2)
        pair.login()
        pair.server.receive_data(b"CHAT 5x")
        with pytest.raises(RemoteProtocolError) as info:
            pair.server.next_event()
        reply = pair.server.error_reply(info.value)
        assert feed(pair.client, reply) == [
            p.Error(ErrorCode.PROTOCOL_ERROR, "invalid frame header")
        ]
        assert pair.client.state is State.CLOSED


class TestClosedState:
    def test_frames_racing_our_close_are_dropped(self) -> None:
        pair = ConnectionPair(version=2)
        pair.login()
        late = pair.client.send(p.ChatMessage("late", "", 1))
        pair.server.send(p.Bye("shutdown"))
        assert pair.server.state is State.CLOSED
        assert feed(pair.server, late + pair.client.send(p.Bye())) == [p.Bye()]

    def test_v1_server_answers_the_clients_goodbye(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        assert pair.send(Role.CLIENT, p.Bye()) == [p.Bye()]
        assert pair.server.send(p.Bye()) == p.V1_DISCONNECTED

    def test_v1_server_own_goodbye_is_a_chunk(self) -> None:
        pair = ConnectionPair(version=1)
        pair.login()
        data = pair.server.send(p.Bye("shutdown"))
        assert data == b"<GoodBye>".ljust(64)
        assert feed(pair.client, data) == [p.Bye("goodbye")]


def test_trailing_data_is_what_was_received_and_not_parsed_yet():
    """The public view of the receive buffer (h11's ``trailing_data``), which the
    fuzz harness's memory bound reads: a partial frame stays, a parsed one goes."""
    server = Connection(Role.SERVER)
    hello = Connection(Role.CLIENT, version=2).send(p.ClientHello(agent="t"))
    server.receive_data(hello + b"AUTH 4")
    assert isinstance(server.next_event(), p.ClientHello)
    assert server.next_event() is NEED_DATA
    assert server.trailing_data == (b"AUTH 4", False)
    server.receive_data(b"")
    assert server.trailing_data == (b"AUTH 4", True)


class TestTableMatchesTheSpec:
    def test_the_table_answers_every_role_state_and_frame_as_the_spec_does(self) -> None:
        from .spec_table import SAMPLES, SPEC

        differ = {
            (sender.name, state.name, key): (got, SPEC[sender][state].get(key))
            for sender in Role
            for state in set(State) - {State.ERROR}
            for key, event in SAMPLES.items()
            if (got := next_state(sender, state, event)) is not SPEC[sender][state].get(key)
        }
        assert differ == {}
        assert next_state(Role.SERVER, State.AUTHENTICATING, p.AuthResult(True)) is None
